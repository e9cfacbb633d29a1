"""Trace times onto a recording's CLOCK_MONOTONIC, and trace devices onto its channels.


A trace's kernel times are epoch nanoseconds (Nsight Systems: session start +
offset; Kineto: ``baseTimeNanoseconds`` + µs). The recording holds
(CLOCK_MONOTONIC, CLOCK_REALTIME) pairs taken during the run, so an epoch time
maps to CLOCK_MONOTONIC through the pair nearest in time (exact integers). The
stated uncertainty is the pairs' own read bracket plus the change of the
clock offset (NTP slew) between pairs around the trace. It assumes the trace's
epoch times are right, i.e. the profiler and jouletrace ran on one host with one
wall clock and the profiler converted its GPU timestamps correctly.

*Sync markers* check and correct that assumption. :class:`jouletrace.kernels.markers.SyncMarkers`
emits ranges with unique names (an NVTX range, a ``record_function``
annotation) at CLOCK_MONOTONIC times it records, bracketed by clock reads.
The trace holds them as ranges; matching them by name gives one offset per
range edge; the median is the correction, the largest deviation from it plus
the markers' brackets is the uncertainty.

Device matching (:func:`device_channels`): a trace device's kernels ran on the
recording channel whose GPU has the same UUID, else the same PCI bus id, else
(said so) the one with the same index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..energy.recording import Recording
from ..errors import InvalidArgumentError
from ..sampling.clock import nearest, to_epoch_ns, to_monotonic_ns
from .traces._util import normalize_pci, normalize_uuid
from .traces.table import KernelTable

__all__ = ["Alignment", "align", "device_channels"]


@dataclass(frozen=True)
class Alignment:
    """How a trace's times map onto a recording's CLOCK_MONOTONIC.

    ``to_monotonic(t_trace)``: the clock pairs' epoch -> monotonic conversion
    (for an epoch-clock trace; the identity for a monotonic-clock table), then
    ``+ correction_ns`` (from sync markers; 0 without). ``uncertainty_ns`` is
    the half-width within which a trace time lands on CLOCK_MONOTONIC.
    """

    #: "clock_pairs", "markers" (clock pairs corrected by sync markers) or "identity".
    method: str
    #: The clock of the trace times this maps: "epoch" or "monotonic".
    trace_clock: str
    #: Added after the clock-pair conversion (ns).
    correction_ns: int
    #: Half-width of the alignment's uncertainty (ns).
    uncertainty_ns: int
    #: (CLOCK_MONOTONIC ns, CLOCK_REALTIME ns, uncertainty ns) pairs used.
    clock_pairs: np.ndarray = field(repr=False)
    #: Sync marker edges matched in the trace.
    markers_matched: int = 0
    #: Each matched marker edge's offset minus the correction (ns).
    residuals_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    notes: tuple[str, ...] = ()

    def to_monotonic(self, t_trace_ns: Any) -> np.ndarray:
        """Trace times (int64 ns on ``trace_clock``) -> CLOCK_MONOTONIC ns (int64, exact).

        An epoch-clock trace goes through the clock pairs (:func:`jouletrace.sampling.clock.to_monotonic_ns`,
        the conversion ``Recording.to_monotonic_ns`` makes), then ``+ correction_ns``.
        """
        q = np.asarray(t_trace_ns, dtype=np.int64)
        if self.trace_clock == "monotonic":
            return q + self.correction_ns
        return to_monotonic_ns(self.clock_pairs, q) + self.correction_ns

    def to_trace(self, t_mono_ns: Any) -> np.ndarray:
        """CLOCK_MONOTONIC ns -> the trace's clock (inverse of :meth:`to_monotonic`)."""
        q = np.asarray(t_mono_ns, dtype=np.int64) - self.correction_ns
        if self.trace_clock == "monotonic":
            return q
        return to_epoch_ns(self.clock_pairs, q)


def _pairs_uncertainty(pairs: np.ndarray, lo: int, hi: int) -> tuple[int, list[str]]:
    """Uncertainty (ns) of converting epoch times in [lo, hi] through ``pairs``."""
    notes: list[str] = []
    real = pairs[:, 1]
    off = pairs[:, 1] - pairs[:, 0]
    i0 = max(int(np.searchsorted(real, lo)) - 1, 0)
    i1 = min(int(np.searchsorted(real, hi)) + 1, len(pairs))
    near = off[i0:i1] if i1 > i0 else off[[nearest(real, np.array([lo]))[0]]]
    slew = int(near.max() - near.min())
    read = int(pairs[:, 2].max()) if pairs.shape[1] > 2 else 0
    if slew:
        notes.append(f"the wall clock moved by {slew} ns against CLOCK_MONOTONIC during the run")
    return read + slew, notes


def align(
    kernels: KernelTable,
    recording: Recording,
    *,
    markers: Any = None,
    clock_pairs: np.ndarray | None = None,
) -> Alignment:
    """Line up a trace (a :class:`~jouletrace.kernels.traces.KernelTable`) with a recording.

    Epoch-clock traces go through the recording's clock pairs; monotonic-clock
    tables map as they are. With ``markers`` (a
    :class:`jouletrace.kernels.markers.SyncMarkers` or its :class:`~jouletrace.kernels.markers.MarkerLog`),
    the trace's ranges named like the markers give a correction and an
    uncertainty measured from the trace itself (module docstring). Raises
    :class:`InvalidArgumentError` when the trace and the recording cannot share
    a time base or do not overlap in time.
    """
    clock = getattr(kernels, "clock", "epoch")
    if clock_pairs is None:
        clock_pairs = getattr(recording, "clock_pairs", np.zeros((0, 3), np.int64))
    pairs = np.asarray(clock_pairs, dtype=np.int64).reshape(-1, 3)
    notes: list[str] = []
    if clock == "monotonic":
        al = Alignment("identity", "monotonic", 0, 0, pairs, notes=("trace times are CLOCK_MONOTONIC",))
    else:
        if len(pairs) == 0:
            raise InvalidArgumentError(
                "the trace's times are epoch ns, but the recording holds no clock pairs to "
                "convert them to CLOCK_MONOTONIC; record with a jouletrace Sampler (it takes "
                "them), or pass clock_pairs="
            )
        pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
        lo, hi = _trace_extent(kernels)
        unc, notes = _pairs_uncertainty(pairs, lo, hi)
        notes.append(
            "assumes the trace's epoch times come from this host's wall clock "
            "(use sync markers to check)"
        )
        al = Alignment("clock_pairs", "epoch", 0, unc, pairs, notes=tuple(notes))
    if markers is not None:
        al = _refine_with_markers(al, kernels, markers)
    _check_overlap(al, kernels, recording)
    return al


def _trace_extent(kernels: KernelTable) -> tuple[int, int]:
    parts = [kernels.start_ns, kernels.end_ns]
    ranges = getattr(kernels, "ranges", None)
    if ranges is not None and len(ranges):
        parts += [ranges.start_ns, ranges.end_ns]
    allt = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
    if allt.size == 0:
        raise InvalidArgumentError("the trace holds no kernels and no ranges to align")
    return int(allt.min()), int(allt.max())


def _check_overlap(al: Alignment, kernels: KernelTable, recording: Recording) -> None:
    t = getattr(recording, "t_ns", None)
    if t is None or len(t) == 0 or len(kernels) == 0:
        return
    k0 = int(al.to_monotonic(kernels.start_ns.min()))
    k1 = int(al.to_monotonic(kernels.end_ns.max()))
    r0, r1 = int(t[0]), int(t[-1])
    if k1 < r0 or k0 > r1:
        gap = (r0 - k1) if k1 < r0 else (k0 - r1)
        where = "before" if k1 < r0 else "after"
        raise InvalidArgumentError(
            f"the trace's kernels lie entirely {where} the recording ({gap / 1e9:.3f} s apart "
            "on CLOCK_MONOTONIC): was the trace taken during this recording, on this host? "
            "Sync markers (jouletrace.kernels.markers) align traces from another clock."
        )


def _refine_with_markers(al: Alignment, kernels: KernelTable, markers: Any) -> Alignment:
    log = markers.log() if hasattr(markers, "log") and callable(markers.log) else markers
    ranges = getattr(kernels, "ranges", None)
    if ranges is None or len(ranges) == 0:
        raise InvalidArgumentError(
            "sync markers were given but the trace holds no ranges (NVTX / user annotations); "
            "was NVTX (nsys -t nvtx) or record_function capture on while the markers were emitted?"
        )
    want = {name: i for i, name in enumerate(log.names)}
    rnames = ranges.names
    r_marker = np.array([want.get(rnames[j], -1) for j in range(len(rnames))], dtype=np.int64)
    m_idx = r_marker[ranges.name_id] if len(rnames) else np.zeros(0, np.int64)
    hit = np.flatnonzero(m_idx >= 0)
    if hit.size == 0:
        raise InvalidArgumentError(
            f"none of the {len(log.names)} sync markers ({log.names[0] if log.names else '-'} ...) "
            "is among the trace's ranges; was the trace taken while the markers were emitted?"
        )
    # One range per marker: the first of each name (a marker emitted through two
    # annotation APIs can appear twice with the same start).
    mi = m_idx[hit]
    _, first = np.unique(mi, return_index=True)
    hit, mi = hit[first], mi[first]
    base = al.to_monotonic(np.concatenate([ranges.start_ns[hit], ranges.end_ns[hit]])) - al.correction_ns
    mark_t = np.concatenate([log.start_ns[mi], log.end_ns[mi]])
    mark_h = np.concatenate([log.start_half_ns[mi], log.end_half_ns[mi]])
    offs = mark_t - base
    corr = int(np.median(offs))
    res = offs - corr
    unc = int(np.abs(res).max() + mark_h.max()) + (int(al.clock_pairs[:, 2].max()) if len(al.clock_pairs) else 0)
    notes = [n for n in al.notes if "sync markers" not in n]
    notes.append(
        f"{hit.size} sync marker(s) matched; trace clock corrected by {corr} ns "
        f"(residuals up to {int(np.abs(res).max())} ns)"
    )
    return Alignment("markers", al.trace_clock, corr, unc, al.clock_pairs, int(offs.size),
                     res.astype(np.int64), tuple(notes))


def device_channels(
    kernels: KernelTable, recording: Recording, device_map: dict[int, str] | None = None
) -> dict[int, tuple[str, str]]:
    """Which energy channel of the recording each trace device's kernels ran on.

    ``{trace_device_id: (channel, how)}`` with ``how`` = "given", "uuid", "pci"
    or "guessed" (trace device N -> ``gpuN.energy_j``, or the only GPU channel
    when both sides have one device). Devices with no channel are left out.
    """
    channels = list(getattr(recording, "channels", []))
    gpu_ch = [c for c in channels if c.startswith("gpu") and c.endswith(".energy_j")]
    meta = getattr(recording, "metadata", {}).get("device", {}) or {}
    by_uuid: dict[str, str] = {}
    by_pci: dict[str, str] = {}
    for c in gpu_ch:
        dev = c.split(".", 1)[0]
        u = normalize_uuid(meta.get(f"{dev}.uuid"))
        p = normalize_pci(meta.get(f"{dev}.pci_bus_id"))
        if u:
            by_uuid[u] = c
        if p:
            by_pci[p] = c
    out: dict[int, tuple[str, str]] = {}
    devs = sorted({int(d) for d in np.unique(kernels.device)}) if len(kernels) else []
    for d in devs:
        if device_map and d in device_map:
            ch = device_map[d]
            ch = ch if ch.endswith("_j") else f"{ch}.energy_j"
            if ch not in channels:
                raise InvalidArgumentError(f"device_map names {ch!r}, which the recording lacks")
            out[d] = (ch, "given")
            continue
        info = kernels.device_info(d) if hasattr(kernels, "device_info") else None
        info = info or {}
        u = normalize_uuid(info.get("uuid"))
        p = normalize_pci(info.get("pci_bus_id"))
        if u and u in by_uuid:
            out[d] = (by_uuid[u], "uuid")
        elif p and p in by_pci:
            out[d] = (by_pci[p], "pci")
        elif f"gpu{d}.energy_j" in channels:
            out[d] = (f"gpu{d}.energy_j", "guessed")
        elif len(devs) == 1 and len(gpu_ch) == 1:
            out[d] = (gpu_ch[0], "guessed")
    return out
