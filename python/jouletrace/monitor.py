"""``jouletrace.monitor``, kept for imports: it lives in :mod:`jouletrace.energy.monitor` now."""

from __future__ import annotations

from .energy.monitor import *  # noqa: F403
from .energy.monitor import __all__ as __all__
