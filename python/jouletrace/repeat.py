"""``jouletrace.repeat``, kept for imports: it lives in :mod:`jouletrace.energy.repeat` now."""

from __future__ import annotations

from .energy.repeat import *  # noqa: F403
from .energy.repeat import __all__ as __all__
