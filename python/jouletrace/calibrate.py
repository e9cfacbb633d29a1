"""``jouletrace.calibrate``, kept for imports: it lives in :mod:`jouletrace.sampling.calibrate` now."""

from __future__ import annotations

from .sampling.calibrate import *  # noqa: F403
from .sampling.calibrate import __all__ as __all__
