"""``jouletrace.sensors``, kept for imports: it lives in :mod:`jouletrace.sampling.sensors` now."""

from __future__ import annotations

from .sampling.sensors import *  # noqa: F403
from .sampling.sensors import __all__ as __all__
