"""Samples: the columns a sampler hands over, with their channels, clock pairs and metadata.

Arrays are the native sample columns themselves (read-only numpy views, no
copy): ``t_ns`` is CLOCK_MONOTONIC in integer ns, the midpoint of each source
read, whose edges are ``t_before_ns`` and ``t_after_ns``. ``rec["gpu0.energy_j"]``
is a channel: cumulative joules (float64, monotone non-decreasing) or a level
such as watts; NaN where the read failed (``status`` says why).

This is the column part of :class:`jouletrace.Recording`
(:mod:`jouletrace.energy.recording` adds the energy methods); times convert between
the clocks through :mod:`.clock`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from . import clock
from .counters import CounterWidth, counter_width

__all__ = ["Samples", "STATUS_NAMES"]

#: Meaning of the per-sample ``status`` values.
STATUS_NAMES = {0: "ok", 1: "partial (some channels NaN)", 2: "device lost (its channels NaN)", 3: "error"}


class Samples:
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
        self.clock_pairs = clock.as_pairs(clock_pairs)
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

    def counter_width(self, channel: str) -> CounterWidth | None:
        """The hardware counter behind a counter channel (width, wrap), as its source published it.

        None for a level. A recording that states none (made before sources published it)
        gets the width its source's name implies (``origin="inferred"``); see
        :mod:`jouletrace.sampling.counters`.
        """
        return counter_width(self.metadata, channel) if self.is_cumulative(channel) else None

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

    def to_epoch_ns(self, t_mono_ns: Any) -> np.ndarray:
        """CLOCK_MONOTONIC ns -> epoch (CLOCK_REALTIME) ns, through the nearest clock pair.

        The offset between the clocks is taken from the pair closest in time
        (it moves only when NTP slews the wall clock). Exact integer arithmetic
        (:func:`jouletrace.sampling.clock.to_epoch_ns`).
        """
        return clock.to_epoch_ns(self.clock_pairs, t_mono_ns)

    def to_monotonic_ns(self, t_epoch_ns: Any) -> np.ndarray:
        """Epoch ns -> CLOCK_MONOTONIC ns (inverse of :meth:`to_epoch_ns`)."""
        return clock.to_monotonic_ns(self.clock_pairs, t_epoch_ns)

    def __repr__(self) -> str:
        src = self.metadata.get("source", "?")
        return (
            f"<{type(self).__name__} source={src} samples={len(self)} duration={self.duration_s:.3f}s "
            f"channels={self.channels} dropped={self.dropped} missed={self.missed_deadlines}>"
        )
