"""The one conversion of jouletrace's values to JSON: numpy scalars and arrays to plain Python.

``plain(x)`` keeps NaN and infinities as floats (``json.dump(..., allow_nan=True)`` writes them
as the NaN/Infinity extensions our own readers accept); ``plain(x, nonfinite=None)`` turns them
into ``null`` for strict JSON that other tools read (the documented meaning of a ``null`` is
stated by each schema). Keys become strings; anything else unknown becomes its ``str``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["plain"]

_KEEP = object()


def plain(x: Any, nonfinite: Any = _KEEP) -> Any:
    """``x`` as plain JSON-able Python (module docstring)."""
    if isinstance(x, dict):
        return {str(k): plain(v, nonfinite) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v, nonfinite) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist(), nonfinite)
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return x if nonfinite is _KEEP or math.isfinite(x) else nonfinite
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)
