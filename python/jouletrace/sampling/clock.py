"""Clock pairs: CLOCK_MONOTONIC <-> epoch (CLOCK_REALTIME) nanoseconds, the one converter.

A sampler takes (CLOCK_MONOTONIC ns, CLOCK_REALTIME ns, uncertainty ns) pairs during a run
(``Recording.clock_pairs``). A time converts through the pair nearest to it in time: the
offset between the clocks moves only when NTP slews the wall clock. The arithmetic is exact,
in int64. ``Recording.to_epoch_ns`` / ``to_monotonic_ns`` and the trace alignment
(:class:`jouletrace.kernels.alignment.Alignment`) both use these functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidArgumentError

__all__ = ["as_pairs", "nearest", "to_epoch_ns", "to_monotonic_ns"]


def as_pairs(clock_pairs: Any) -> np.ndarray:
    """``clock_pairs`` as an int64 array of shape (n, 3); None is no pairs."""
    if clock_pairs is None:
        return np.zeros((0, 3), dtype=np.int64)
    return np.asarray(clock_pairs, dtype=np.int64)


def nearest(sorted_keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Index of the key nearest to each of ``q`` in ``sorted_keys`` (ties go to the earlier key)."""
    if sorted_keys.size == 1:
        return np.zeros(np.shape(q), dtype=np.intp)
    i = np.clip(np.searchsorted(sorted_keys, q), 1, sorted_keys.size - 1)
    return np.where(np.abs(q - sorted_keys[i - 1]) <= np.abs(sorted_keys[i] - q), i - 1, i)


def _columns(clock_pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(clock_pairs) == 0:
        raise InvalidArgumentError("this recording holds no clock pairs to convert times with")
    return clock_pairs[:, 0], clock_pairs[:, 1]


def to_epoch_ns(clock_pairs: np.ndarray, t_mono_ns: Any) -> np.ndarray:
    """CLOCK_MONOTONIC ns -> epoch ns, through the pair nearest in monotonic time (int64, exact)."""
    mono, real = _columns(clock_pairs)
    q = np.asarray(t_mono_ns, dtype=np.int64)
    return q + (real - mono)[nearest(mono, q)]


def to_monotonic_ns(clock_pairs: np.ndarray, t_epoch_ns: Any) -> np.ndarray:
    """Epoch ns -> CLOCK_MONOTONIC ns, through the pair nearest in epoch time (inverse of :func:`to_epoch_ns`)."""
    mono, real = _columns(clock_pairs)
    q = np.asarray(t_epoch_ns, dtype=np.int64)
    return q - (real - mono)[nearest(real, q)]
