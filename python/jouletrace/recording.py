"""Recording: the samples a sampler hands over, with their metadata.

Arrays are the native sample columns themselves (read-only numpy views, no
copy): ``t_ns`` is CLOCK_MONOTONIC in integer ns, the midpoint of each source
read, whose edges are ``t_before_ns`` and ``t_after_ns``. ``rec["gpu0.energy_j"]``
is a channel: cumulative joules (float64, monotone non-decreasing) or a level
such as watts; NaN where the read failed (``status`` says why).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["Recording", "STATUS_NAMES"]

#: Meaning of the per-sample ``status`` values.
STATUS_NAMES = {0: "ok", 1: "partial (some channels NaN)", 2: "device lost (its channels NaN)", 3: "error"}


class Recording:
    """Samples of one source: times, channels, units, drops and metadata."""

    def __init__(
        self,
        *,
        t_ns: np.ndarray,
        t_before_ns: np.ndarray,
        t_after_ns: np.ndarray,
        seq: np.ndarray,
        status: np.ndarray,
        values: Mapping[str, np.ndarray],
        cumulative: Mapping[str, bool],
        dropped: int = 0,
        missed_deadlines: int = 0,
        clock_pairs: np.ndarray | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.t_ns = t_ns
        self.t_before_ns = t_before_ns
        self.t_after_ns = t_after_ns
        self.seq = seq
        self.status = status
        self._values = dict(values)
        self._cumulative = dict(cumulative)
        #: Records lost: ring full (consumer stalled) or storage bound reached.
        self.dropped = int(dropped)
        #: Sampling deadlines skipped because the thread ran late by a whole period.
        self.missed_deadlines = int(missed_deadlines)
        #: (CLOCK_MONOTONIC ns, CLOCK_REALTIME ns, uncertainty ns) pairs taken during the run.
        self.clock_pairs = (
            np.zeros((0, 3), dtype=np.int64) if clock_pairs is None else np.asarray(clock_pairs, dtype=np.int64)
        )
        self.metadata: dict[str, Any] = dict(metadata or {})

    # -- channels ---------------------------------------------------------------
    @property
    def channels(self) -> list[str]:
        """Channel names, ``<device>.<quantity>_<unit>``."""
        return list(self._values)

    def is_cumulative(self, channel: str) -> bool:
        """True for counters (energy in J), False for levels (power in W, timestamps)."""
        self[channel]
        return self._cumulative[channel]

    def __getitem__(self, channel: str) -> np.ndarray:
        try:
            return self._values[channel]
        except KeyError:
            raise KeyError(
                f"no channel {channel!r} in this recording; it has: {', '.join(self._values) or 'none'}"
            ) from None

    def __contains__(self, channel: object) -> bool:
        return channel in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return int(self.t_ns.shape[0])

    # -- time ---------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        return float(self.t_ns[-1] - self.t_ns[0]) * 1e-9 if len(self) > 1 else 0.0

    def _pairs(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self.clock_pairs) == 0:
            raise InvalidArgumentError("this recording holds no clock pairs to convert times with")
        return self.clock_pairs[:, 0], self.clock_pairs[:, 1]

    def to_epoch_ns(self, t_mono_ns: Any) -> np.ndarray:
        """CLOCK_MONOTONIC ns -> epoch (CLOCK_REALTIME) ns, through the nearest clock pair.

        The offset between the clocks is taken from the pair closest in time
        (it moves only when NTP slews the wall clock). Exact integer arithmetic.
        """
        mono, real = self._pairs()
        q = np.asarray(t_mono_ns, dtype=np.int64)
        idx = _nearest(mono, q)
        return q + (real - mono)[idx]

    def to_monotonic_ns(self, t_epoch_ns: Any) -> np.ndarray:
        """Epoch ns -> CLOCK_MONOTONIC ns (inverse of :meth:`to_epoch_ns`)."""
        mono, real = self._pairs()
        q = np.asarray(t_epoch_ns, dtype=np.int64)
        idx = _nearest(real, q)
        return q - (real - mono)[idx]

    def update_period_ns(self, channel: str) -> float | None:
        """The sensor update period seen on ``channel`` (median time between value changes).

        Computed on first use (O(n)) and cached in ``metadata["observed_update_period_ns"]``.
        """
        cache = self.metadata.setdefault("observed_update_period_ns", {})
        if channel not in cache:
            cache[channel] = observed_update_period_ns(self.t_ns, self[channel])
        return cache[channel]

    def __repr__(self) -> str:
        src = self.metadata.get("source", "?")
        return (
            f"<Recording source={src} samples={len(self)} duration={self.duration_s:.3f}s "
            f"channels={self.channels} dropped={self.dropped} missed={self.missed_deadlines}>"
        )


def _nearest(sorted_keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    i = np.clip(np.searchsorted(sorted_keys, q), 1, max(len(sorted_keys) - 1, 1))
    if len(sorted_keys) == 1:
        return np.zeros_like(q, dtype=np.intp)
    left = sorted_keys[i - 1]
    right = sorted_keys[i]
    return np.where(np.abs(q - left) <= np.abs(right - q), i - 1, i)


def observed_update_period_ns(t_ns: np.ndarray, values: np.ndarray) -> float | None:
    """Median time between changes of a channel's value (its sensor update period, as seen).

    None when the channel changed fewer than three times. A change is located
    at the first sample that shows the new value, so the estimate is good to
    about one sampling period.
    """
    v = np.asarray(values)
    ok = ~np.isnan(v)
    t, v = t_ns[ok], v[ok]
    if len(v) < 3:
        return None
    change_t = t[1:][np.diff(v) != 0]
    if len(change_t) < 3:
        return None
    return float(np.median(np.diff(change_t)))
