"""``jouletrace.traces.plain``, kept for imports: it lives in :mod:`jouletrace.kernels.traces.plain` now."""

from __future__ import annotations

from ..kernels.traces.plain import *  # noqa: F403
from ..kernels.traces.plain import __all__ as __all__
