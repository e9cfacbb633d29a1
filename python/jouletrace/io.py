"""``jouletrace.io``, kept for imports: it lives in :mod:`jouletrace.energy.storage` now."""

from __future__ import annotations

from .energy.storage import *  # noqa: F403
from .energy.storage import __all__ as __all__
