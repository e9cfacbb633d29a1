"""Compaction without loss: which polls of a recording say something the others do not.

A counter that updates every 100 ms, polled at 1 kHz, repeats its previous value
in ~99 % of the polls. Everything jouletrace computes from a recording (the update
placement of :mod:`jouletrace.energy.updates` and so windows, per-launch and
per-name energies, power timelines, the sensor characterisation) reads a channel
only where it changes: the last sample before each change and the first after it
(their ``t_before_ns`` / ``t_after_ns`` bracket the update), the values, and the
first and last sample. So a poll is kept when its row (``status`` and every
channel, NaN equal to NaN) differs from the row before it or from the row after
it, or when ``seq`` jumps next to it (drops). A poll that is dropped lies inside
a run of identical rows whose first and last members are kept: every value at
any time is still the same, and every change keeps both of its brackets.

Known difference: ``counter_quantum`` looks at a spread subset of at most 4,096
readings, which is a different subset of the same values (it asks whether every
reading is a multiple of a quantum, so the answer is the same for a quantised
counter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["changed", "keep_mask"]


def changed(status: np.ndarray, seq: np.ndarray, values: Sequence[np.ndarray]) -> np.ndarray:
    """``out[i]`` is True where row ``i + 1`` differs from row ``i`` (len n - 1)."""
    st = np.asarray(status)
    out = st[1:] != st[:-1]
    sq = np.asarray(seq, dtype=np.uint64)
    out |= sq[1:] != sq[:-1] + np.uint64(1)
    for v in values:
        a = np.asarray(v, dtype=np.float64)
        x, y = a[1:], a[:-1]
        out |= (x != y) & ~(np.isnan(x) & np.isnan(y))
    return out


def keep_mask(status: np.ndarray, seq: np.ndarray, values: Mapping[str, np.ndarray] | Sequence[np.ndarray],
              *, first: bool = True, last: bool = True) -> np.ndarray:
    """Which rows of ``[0, n)`` to keep (module docstring).

    ``first``/``last``: whether row 0 / row n-1 is an end of the recording (always
    kept). A writer that sees a recording in chunks passes the row before the
    chunk as row 0 (``first=False``, and drops it from the result) and holds the
    chunk's last row back until the next row is known.
    """
    vals = list(values.values()) if isinstance(values, Mapping) else list(values)
    n = len(status)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    d = changed(status, seq, vals)
    keep[1:] |= d
    keep[:-1] |= d
    if first:
        keep[0] = True
    if last:
        keep[-1] = True
    return keep
