"""The hardware counter behind each energy channel: its width, and the energy after which it wraps.

Every native source publishes it per channel (``_core.ChannelInfo.counter_bits`` and
``wrap_j``): 32 bits for the RAPL MSRs (wrapping after 2**32 energy units), the bits of
``max_energy_range_uj + 1`` µJ for powercap, 64 bits for perf counts and for NVML's total
energy in mJ. A sampler keeps it in the recording's ``metadata["counters"]``
(``{channel: {"counter_bits": int, "wrap_j": float}}``, 0 = unknown), so a saved or streamed
recording carries it too.

The source unwraps its counter on every read; what no reader can tell is how many wraps
happened while nothing read it (a sampler stopped and started again). A counter narrower
than 64 bits, or of unknown width, is one that can wrap within a run
(:attr:`CounterWidth.wraps`).

Recordings made before sources published this state nothing; for them the width is inferred
as it was then, from the source's name (:func:`inferred`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["CounterWidth", "published", "counter_width", "inferred"]


class _Channel(Protocol):  # a _core.ChannelInfo
    @property
    def name(self) -> str: ...
    @property
    def cumulative(self) -> bool: ...
    @property
    def counter_bits(self) -> int: ...
    @property
    def wrap_j(self) -> float: ...


@dataclass(frozen=True)
class CounterWidth:
    """One channel's hardware counter."""

    #: Width in bits (the bits its range needs); 0 = unknown.
    bits: int
    #: Energy after which it wraps, in joules; 0 = unknown.
    wrap_j: float
    #: "published" (by the native source) or "inferred" (a recording that states none: from the
    #: source's name).
    origin: str = "published"

    @property
    def wraps(self) -> bool:
        """Whether it can wrap within a run: narrower than 64 bits, or of unknown width."""
        return self.bits < 64


def published(channels: Iterable[_Channel]) -> dict[str, dict[str, Any]]:
    """``metadata["counters"]`` from a source's channels (``_core.Sampler.channel_info``): counters only."""
    return {c.name: {"counter_bits": int(c.counter_bits), "wrap_j": float(c.wrap_j)}
            for c in channels if c.cumulative}


def inferred(source: str) -> CounterWidth:
    """The width a recording that states none was taken to have: from its source's name.

    RAPL through the MSRs (32-bit) or powercap (``max_energy_range_uj``) wraps; perf counts
    and NVML's counter (64-bit) do not.
    """
    if source == "rapl-msr":
        return CounterWidth(32, 0.0, "inferred")
    if source.startswith("rapl") and source != "rapl-perf":
        return CounterWidth(0, 0.0, "inferred")
    return CounterWidth(64, 0.0, "inferred")


def counter_width(metadata: Mapping[str, Any], channel: str) -> CounterWidth:
    """The counter behind ``channel`` as ``metadata`` states it, else :func:`inferred` from its source."""
    stated = metadata.get("counters")
    entry = stated.get(channel) if isinstance(stated, Mapping) else None
    if isinstance(entry, Mapping):
        try:
            return CounterWidth(int(entry["counter_bits"]), float(entry["wrap_j"]))
        except (KeyError, TypeError, ValueError):
            pass
    return inferred(str(metadata.get("source", "")))
