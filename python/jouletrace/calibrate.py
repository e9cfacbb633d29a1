"""``jouletrace.calibrate``, kept for imports: it lives in :mod:`jouletrace.energy.calibrate` now."""

from __future__ import annotations

from .energy.calibrate import *  # noqa: F403
from .energy.calibrate import __all__ as __all__
