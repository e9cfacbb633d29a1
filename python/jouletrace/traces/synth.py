"""``jouletrace.traces.synth``, kept for imports: it lives in :mod:`jouletrace.testing.traces` now."""

from __future__ import annotations

from ..testing.traces import *  # noqa: F403
from ..testing.traces import __all__ as __all__
