"""``jouletrace.integrate``, kept for imports: it lives in :mod:`jouletrace.energy.windows` now."""

from __future__ import annotations

from .energy.windows import *  # noqa: F403
from .energy.windows import __all__ as __all__
