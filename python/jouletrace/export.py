"""``jouletrace.export``, kept for imports: it lives in :mod:`jouletrace.kernels.export` now."""

from __future__ import annotations

from .kernels.export import *  # noqa: F403
from .kernels.export import __all__ as __all__
