"""``jouletrace.traces``, kept for imports: it lives in :mod:`jouletrace.kernels.traces` now."""

from __future__ import annotations

from ..kernels.traces import *  # noqa: F403
from ..kernels.traces import __all__ as __all__
