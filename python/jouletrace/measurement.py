"""``jouletrace.measurement``, kept for imports: it lives in :mod:`jouletrace.energy.measurement` now."""

from __future__ import annotations

from .energy.measurement import *  # noqa: F403
from .energy.measurement import __all__ as __all__
