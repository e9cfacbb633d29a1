"""``jouletrace.sensor_model``, kept for imports: it lives in :mod:`jouletrace.sampling.sensor_model` now."""

from __future__ import annotations

from .sampling.sensor_model import *  # noqa: F403
from .sampling.sensor_model import __all__ as __all__
