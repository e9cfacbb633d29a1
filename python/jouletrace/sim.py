"""``jouletrace.sim``, kept for imports: it lives in :mod:`jouletrace.sampling.sim` now."""

from __future__ import annotations

from .sampling.sim import *  # noqa: F403
from .sampling.sim import __all__ as __all__
