"""``jouletrace.traces.table``, kept for imports: it lives in :mod:`jouletrace.kernels.traces.table` now."""

from __future__ import annotations

from ..kernels.traces.table import *  # noqa: F403
from ..kernels.traces.table import __all__ as __all__
