"""``jouletrace.sources``, kept for imports: it lives in :mod:`jouletrace.sampling.sources` now."""

from __future__ import annotations

from .sampling.sources import *  # noqa: F403
from .sampling.sources import __all__ as __all__
