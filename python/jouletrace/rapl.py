"""``jouletrace.rapl``, kept for imports: it lives in :mod:`jouletrace.sampling.rapl` now
(and ``FakeRapl`` in :mod:`jouletrace.testing.rapl`)."""

from __future__ import annotations

from .sampling.rapl import *  # noqa: F403
from .sampling.rapl import __all__ as _moved
from .testing.rapl import FakeRapl as FakeRapl

__all__ = _moved + ["FakeRapl"]
