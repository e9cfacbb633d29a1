"""``jouletrace.traces.nsys``, kept for imports: it lives in :mod:`jouletrace.kernels.traces.nsys` now."""

from __future__ import annotations

from ..kernels.traces.nsys import *  # noqa: F403
from ..kernels.traces.nsys import __all__ as __all__
