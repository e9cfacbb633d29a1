"""``jouletrace.traces.kineto``, kept for imports: it lives in :mod:`jouletrace.kernels.traces.kineto` now."""

from __future__ import annotations

from ..kernels.traces.kineto import *  # noqa: F403
from ..kernels.traces.kineto import __all__ as __all__
