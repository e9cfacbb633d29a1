"""``jouletrace.recording``, kept for imports: it lives in :mod:`jouletrace.energy.recording` now."""

from __future__ import annotations

from .energy.recording import *  # noqa: F403
from .energy.recording import __all__ as __all__
