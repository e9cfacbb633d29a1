"""``jouletrace.markers``, kept for imports: it lives in :mod:`jouletrace.kernels.markers` now."""

from __future__ import annotations

from .kernels.markers import *  # noqa: F403
from .kernels.markers import __all__ as __all__
