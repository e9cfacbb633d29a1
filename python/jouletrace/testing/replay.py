"""Real kernel timelines replayed by simulated GPUs in real time, recorded by the real sampler.

The end-to-end accuracy harness for kernel attribution: each trace's kernel
timeline is tiled (random idle gaps between copies) into a power schedule of
one simulated GPU (a fixed power per kernel name above idle, shared equally by
overlapping kernels: the rule the estimator assumes), every simulated GPU of a
sensor kind is sampled by one real :class:`jouletrace.Sampler` thread at
``rate_hz`` while the schedule plays on CLOCK_MONOTONIC, and the kernels are
handed back on the wall clock through the recording's own clock pairs, as a
profiler's trace would be. Nothing is synthesised after the fact: thread jitter,
missed deadlines and clock reads are the real ones.

The truth per name is known exactly: ``idle_w + watts[name]`` while it runs.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from .._core import monotonic_ns
from ..energy.recording import Recording
from ..energy.sampler import Sampler
from ..energy.updates import Updates
from ..kernels.traces import KernelTable
from ..sampling.sim import SimGPU
from .workloads import name_watts, sharing_segments, tile

__all__ = ["SENSORS", "ReplayDevice", "Replay", "replay", "recording_quality", "score", "summarize", "oracle_updates",
           "without_timestamps"]

class _SensorPeriod(TypedDict):
    update_period_s: float


class SensorConfig(_SensorPeriod, total=False):
    """A simulated sensor kind: :class:`~jouletrace.sampling.sim.SimGPU`'s sensor options
    (``update_period_s`` required)."""

    avg_window_s: float
    power_usage_window_s: float
    latency_s: float
    counter: str
    publish_counter: bool


#: Sensor kinds: H100-like (100 ms updates, 25 ms averaging) and A100-like (20 ms).
SENSORS: dict[str, SensorConfig] = {
    "h100": {"update_period_s": 0.1, "avg_window_s": 0.025},
    "a100": {"update_period_s": 0.02, "avg_window_s": 0.02},
}


@dataclass
class ReplayDevice:
    """One simulated GPU's share of a replay: which trace it played, and the truth."""

    sensor: str
    trace: str
    channel: str
    start_ns: np.ndarray  # CLOCK_MONOTONIC
    end_ns: np.ndarray
    name_id: np.ndarray
    stream: np.ndarray
    names: list[str]
    watts: np.ndarray  # above idle, per name
    idle_w: float

    def kernels(self, recording: Recording) -> KernelTable:
        """The replayed kernels as a profiler would give them: epoch ns, through the clock pairs."""
        order = np.argsort(self.start_ns, kind="stable")
        s, e = self.start_ns[order], self.end_ns[order]
        return KernelTable(
            recording.to_epoch_ns(s), recording.to_epoch_ns(e), np.zeros(s.size, np.int32),
            self.name_id[order], list(self.names), stream=self.stream[order],
            correlation=np.arange(s.size, dtype=np.int64) + 1,
        )

    def true_power_w(self, name_id: np.ndarray) -> np.ndarray:
        """The GPU's power while each name runs (W, idle included); NaN for lumped rows (-1)."""
        nid = np.asarray(name_id, dtype=np.int64)
        return np.where(nid >= 0, self.idle_w + self.watts[np.maximum(nid, 0)], np.nan)


@dataclass
class Replay:
    """Recordings per sensor kind, the devices they hold, and each sensor's update grid."""

    recordings: dict[str, Recording]
    devices: list[ReplayDevice]
    #: sensor -> (update period ns, phase ns): the simulated sensors' exact update instants.
    grids: dict[str, tuple[int, int]] = field(default_factory=dict)
    missed_deadlines: dict[str, int] = field(default_factory=dict)

    def quality(self) -> dict[str, dict[str, float]]:
        """Per sensor kind: :func:`recording_quality` of its recording, against its update period."""
        return {k: recording_quality(r, self.grids[k][0] if k in self.grids else None)
                for k, r in self.recordings.items()}


def recording_quality(recording: Recording, update_period_ns: float | None = None) -> dict[str, float]:
    """How well the sampler kept its schedule, measured from the recording alone.

    ``missed_fraction``: deadlines missed (the thread ran a whole period late) over deadlines due;
    ``longest_gap_s``: the longest time between the starts of two consecutive reads;
    ``gap_periods``: that gap in sensor update periods (``update_period_ns``, else the recording's
    own estimate): below 1, no two counter updates fell between two reads, so no counter interval
    was merged with the next.
    """
    t = np.asarray(recording.t_before_ns, dtype=np.int64)
    reads = int(t.size)
    missed = int(recording.missed_deadlines)
    gap = float(np.diff(t).max()) if reads > 1 else float("inf")
    if update_period_ns is None:
        seen = [recording.update_period_ns(c) for c in recording.channels if c.endswith(".energy_j")]
        update_period_ns = min((p for p in seen if p), default=None)
    return {
        "reads": reads,
        "missed_deadlines": missed,
        "missed_fraction": missed / max(reads + missed, 1),
        "longest_gap_s": gap * 1e-9,
        "gap_periods": gap / update_period_ns if update_period_ns else float("nan"),
    }


def replay(tables: Mapping[str, KernelTable], seconds: float, *, sensors: Mapping[str, SensorConfig] = SENSORS,
           rate_hz: float = 1000.0, seed: int = 0, idle_w: float = 60.0,
           gap_ns: tuple[int, int] = (5_000_000, 80_000_000), **sampler_options: Any) -> Replay:
    """Replay every table on its own simulated GPU, for every sensor kind, recording in real time.

    All samplers run at once (one per sensor kind, one simulated GPU per trace);
    the call returns after ``seconds`` of schedule plus the sensor updates that
    close it. ``sampler_options`` go to :class:`jouletrace.Sampler` (e.g.
    ``timestamps=False`` to record without NVML's timestamps).
    """
    if not tables:
        raise ValueError("no traces to replay")
    # The schedule begins ``lead`` after it is planned: writing it and starting the samplers must fit
    # in that, which a loaded machine may not grant (a few seconds, measured); a schedule whose start
    # the samplers missed is played again with a longer lead, so that every replay is recorded whole.
    lead_ns = 1_500_000_000
    for _ in range(3):
        t0 = monotonic_ns()
        r = _replay_once(tables, seconds, sensors, rate_hz, seed, idle_w, gap_ns, lead_ns, sampler_options)
        if r is not None:
            return r
        lead_ns = max(2 * lead_ns, 2 * (monotonic_ns() - t0))  # the setup just measured, twice over
    raise TimeoutError(f"the samplers were not reading by the schedule's start, three times (the setup took up to {lead_ns / 2e9:g} s)")


def _replay_once(tables: Mapping[str, KernelTable], seconds: float, sensors: Mapping[str, SensorConfig],
                 rate_hz: float, seed: int, idle_w: float, gap_ns: tuple[int, int], lead_ns: int,
                 sampler_options: dict[str, Any]) -> Replay | None:
    """One replay (``replay``), or None when the samplers were not reading by the schedule's start."""
    rng_phase = np.random.default_rng([seed, 7])
    start = monotonic_ns() + lead_ns  # time to write the schedules before it begins
    sims: dict[str, SimGPU] = {}
    devices: list[ReplayDevice] = []
    try:
        for si, (sname, cfg) in enumerate(sensors.items()):
            period_ns = int(round(cfg["update_period_s"] * 1e9))
            sim = SimGPU(gpus=len(tables), idle_w=idle_w, phase_ns=int(rng_phase.integers(0, period_ns)),
                         **cfg)
            for g, (tname, table) in enumerate(tables.items()):
                rng = np.random.default_rng([seed, si, zlib.crc32(tname.encode())])
                s, e, nid, stream = tile(table, start, seconds, rng, gap_ns=gap_ns)
                w = name_watts(table.names)
                a, b, ww = sharing_segments(s, e, w[nid])
                sim.add_segments(a, b, ww, gpu=g)
                devices.append(ReplayDevice(sname, tname, f"gpu{g}.energy_j", s, e, nid.astype(np.int64),
                                            np.asarray(stream), list(table.names), w, idle_w))
            sims[sname] = sim
        end = max(int(d.end_ns.max()) for d in devices)
        samplers = {k: Sampler("sim", sim=v, rate_hz=rate_hz, **sampler_options) for k, v in sims.items()}
        for smp in samplers.values():
            smp.start()
        try:
            # Started before the schedule, but is each reading by then? (A sampler's first read is
            # the start of its recording: a schedule begun earlier would be recorded in part.)
            while not all(smp.last_read_ns() is not None for smp in samplers.values()):
                if monotonic_ns() > start:
                    return None
                time.sleep(0.001)
            if not all((smp.last_read_ns() or start) < start for smp in samplers.values()):
                return None
            # Until every sampler has *read* past the updates that close the schedule: on a loaded
            # machine a starved thread reads late, so the wall clock alone would cut its tail off.
            longest = max(v.update_period_ns for v in sims.values())
            until = end + 3 * longest + 100_000_000
            deadline = time.monotonic() + seconds + 60.0  # liveness only
            while not all((smp.last_read_ns() or 0) > until for smp in samplers.values()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the samplers did not read past the schedule's end within {seconds + 60:g} s")
                time.sleep(0.05)
        finally:
            for smp in samplers.values():
                smp.stop()
        recs = {k: smp.recording() for k, smp in samplers.items()}
        grids = {k: (v.update_period_ns, v.phase_ns) for k, v in sims.items()}
        missed = {k: int(r.metadata.get("missed_deadlines", 0) or 0) for k, r in recs.items()}
        return Replay(recs, devices, grids, missed)
    finally:
        for v in sims.values():
            v.close()


def oracle_updates(updates: Updates, grid: tuple[int, int]) -> Updates:
    """The same updates at their exact instants (the simulated sensor's grid), with no uncertainty:
    the limit any placement can reach."""
    period, phase = grid
    exact = phase + np.floor_divide(updates.t_ns - phase + period // 2, period) * period
    z = np.zeros(updates.t_ns.size)
    return Updates(exact.astype(np.int64), updates.value, z, z.copy(), np.full(z.size, -1, np.int64),
                   updates.first_value, float(period), "exact", 1.0, z.copy(), exact.copy(), exact.copy(),
                   z.copy(), z.copy())


def without_timestamps(recording: Recording) -> Recording:
    """The same recording without NVML's per-field timestamps (the placement falls back to the grid)."""
    vals = {c: recording[c] for c in recording.channels if not c.endswith("_ts_us")}
    return Recording(
        t_ns=recording.t_ns, t_before_ns=recording.t_before_ns, t_after_ns=recording.t_after_ns,
        seq=recording.seq, status=recording.status, values=vals,
        cumulative={c: recording.is_cumulative(c) for c in vals}, clock_pairs=recording.clock_pairs,
        metadata={k: v for k, v in recording.metadata.items() if k not in ("sensors", "observed_update_period_ns")},
    )


def score(names: Any, device: ReplayDevice, big_fraction: float = 0.05) -> dict[str, np.ndarray]:
    """Per row of a :class:`~jouletrace.kernels.attribution.NameEnergies`: the truth and how the
    estimate did. ``big``: the name carries at least ``big_fraction`` of the kernel energy."""
    truth = device.true_power_w(names["name_id"])
    share = np.asarray(names["share_s"], dtype=np.float64)
    e_true = np.nan_to_num(truth) * share
    frac = e_true / max(float(e_true.sum()), 1e-300)
    est = np.asarray(names["power_w"], dtype=np.float64)
    lo, hi = names["power_ci_low_w"], names["power_ci_high_w"]
    return {
        "truth_w": truth,
        "fraction": frac,
        "big": frac >= big_fraction,
        "error": est / truth - 1.0,
        "covered": (lo <= truth) & (truth <= hi),
        "resolved": np.asarray(names["resolved"], dtype=bool),
        "reason": np.asarray(names["unresolved_reason"], dtype=object),
    }


def summarize(scores: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """Pooled figures over several devices' scores."""
    res = np.concatenate([s["resolved"] & np.isfinite(s["truth_w"]) for s in scores])
    cov = np.concatenate([s["covered"] for s in scores])[res]
    big = np.concatenate([s["big"] for s in scores])
    err = np.abs(np.concatenate([s["error"] for s in scores]))
    return {
        "resolved_names": int(res.sum()),
        "coverage_resolved": float(cov.mean()) if cov.size else float("nan"),
        "big_names": int(big.sum()),
        "big_resolved": int((big & res).sum()),
        "max_error_big_resolved": float(err[big & res].max()) if (big & res).any() else float("nan"),
        "median_error_big_resolved": float(np.median(err[big & res])) if (big & res).any() else float("nan"),
    }
