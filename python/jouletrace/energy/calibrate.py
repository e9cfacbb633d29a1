"""Calibration: find a GPU's sensor update period, averaging window, and whether its energy counter is part-time.

Method (real time, through the real sampler at 2 kHz):

1. Sample the idle GPU for a few update periods and place the counter's updates
   (:meth:`jouletrace.Recording.updates`): the update period ``P`` and the phase
   of its grid (exact to the µs where NVML timestamps its fields).
2. Drive a *load whose phase against the updates is known*: in every other
   period one pulse of length ``d = P / 20`` ending ``o`` before the period's
   last update, for offsets ``o = 1 ms, 1 ms + d, ...`` across the period; the
   periods between stay idle, for the baseline.
3. For each pulse, the excess over the idle baseline of (a) the instant-power
   reading that follows the period and (b) the counter's increment over it.
   A sensor that averages the last ``W`` of each period sees a pulse in
   proportion to its overlap with ``[u - W, u]``; the pulse that straddles
   ``u - W`` gives ``W = o + d * seen / full``. A *full-period* counter adds
   the same energy for every pulse; a *part-time* one adds nothing for pulses
   outside the window (``far / near`` below 0.3: part-time; above 0.7: full;
   between: unknown).

The load is a :class:`LoadDriver`: :class:`SimLoad` appends live segments to a
simulated GPU (exact times), :class:`CallableLoad` runs ``busy(seconds)`` at the
planned times (a CUDA busy loop from torch or cupy: :func:`cuda_load`), which the
GPU honours to within its launch latency. The result is a
:class:`~jouletrace.sampling.sensor_model.SensorModel` with source ``"measured"``, saved
by UUID (:func:`jouletrace.sampling.sensor_model.save_model`) when asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .. import _core
from ..errors import InvalidArgumentError, SourceUnavailableError
from ..sampling.sensor_model import SensorModel, save_model
from .sampler import Sampler

__all__ = ["LoadDriver", "SimLoad", "CallableLoad", "cuda_load", "calibrate", "Calibration"]


class LoadDriver(Protocol):
    """Makes a GPU busy over planned CLOCK_MONOTONIC spans."""

    def run(self, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Load the GPU over each ``(start_ns, end_ns)`` in order; block until done; return the spans achieved."""
        ...


@dataclass
class SimLoad:
    """Pulses on a simulated GPU: live segments of ``watts`` at exactly the planned times."""

    sim: Any
    gpu: int = 0
    watts: float = 200.0

    def run(self, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        done = [self.sim.live_segment(a, b, self.watts, gpu=self.gpu) for a, b in spans]
        _sleep_until(max(b for _, b in spans))
        return done


@dataclass
class CallableLoad:
    """Pulses from ``busy(seconds)``: a callable that keeps the GPU busy that long and returns when it is idle."""

    busy: Callable[[float], Any]
    achieved: list[tuple[int, int]] = field(default_factory=list)

    def run(self, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        out = []
        for a, b in spans:
            _sleep_until(a)
            t0 = _core.monotonic_ns()
            self.busy(max(b - t0, 0) * 1e-9)
            out.append((t0, _core.monotonic_ns()))
        return out


def _sleep_until(t_ns: int) -> None:
    while True:
        left = t_ns - _core.monotonic_ns()
        if left <= 0:
            return
        time.sleep(min(left * 1e-9, 0.05) if left > 2_000_000 else 0.0)


#: How long a wait on the sampler's progress may take before the sampler counts as starved (s).
LIVENESS_S = 60.0
#: Least time from planning the pulses to the first one (ns).
_LEAD_NS = 500_000_000


def _clean_median(v: np.ndarray, t_before: np.ndarray, t_after: np.ndarray, a: int, b: int) -> float:
    """Median of the finite values of the reads wholly inside [a, b] (NaN if there is none)."""
    i, j = np.searchsorted(t_before, a), np.searchsorted(t_before, b, side="right")
    x = v[i:j][(t_after[i:j] <= b) & np.isfinite(v[i:j])]
    return float(np.median(x)) if x.size else float("nan")


def _starved(s: Any, what: str) -> str:
    return (f"calibration: the sampler did not read {what} within {LIVENESS_S:g} s of wall clock "
            f"({s.reads} reads, {s.missed_deadlines} missed deadlines): its thread is starved of the CPU; "
            "calibrate on a less loaded machine")


def _wait_for_reads_past(s: Any, t_ns: int, what: str) -> None:
    """Return once the sampler ``s`` has begun a read after CLOCK_MONOTONIC ``t_ns``."""
    deadline = time.monotonic() + LIVENESS_S
    while True:
        s.check()
        latest = s.last_read_ns()
        if latest is not None and latest > t_ns:
            return
        if time.monotonic() > deadline:
            raise SourceUnavailableError(_starved(s, what))
        time.sleep(0.005)


def cuda_load(device: int = 0) -> CallableLoad:
    """A CUDA busy loop through torch or cupy, whichever is installed (else says what to install)."""
    try:
        import torch

        if torch.cuda.is_available():
            dev = torch.device(f"cuda:{device}")
            x = torch.randn(2048, 2048, device=dev)

            def busy_torch(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    x.matmul(x)
                    torch.cuda.synchronize(dev)

            return CallableLoad(busy_torch)
    except ImportError:
        pass
    try:
        import cupy

        with cupy.cuda.Device(device):
            y = cupy.random.rand(2048, 2048, dtype=cupy.float32)

        def busy_cupy(seconds: float) -> None:
            end = time.monotonic() + seconds
            with cupy.cuda.Device(device):
                while time.monotonic() < end:
                    y.dot(y)
                    cupy.cuda.Stream.null.synchronize()

        return CallableLoad(busy_cupy)
    except ImportError:
        pass
    raise SourceUnavailableError(
        "calibration needs a GPU load: install torch (pip install torch) or cupy (pip install cupy-cuda12x), "
        "or pass load=CallableLoad(busy) with your own busy(seconds)"
    )


@dataclass
class Calibration:
    """What a calibration found (``model``) and the evidence (per-pulse excesses, in ``evidence``)."""

    model: SensorModel
    uuid: str | None
    evidence: dict[str, Any]
    saved_to: str | None = None

    def __str__(self) -> str:
        m = self.model
        p = f"{m.update_period_ns / 1e6:.3f} ms" if m.update_period_ns else "?"
        w = f"{m.avg_window_ns / 1e6:.3f} ms" if m.avg_window_ns else "?"
        return (f"update period {p}, averaging window {w}, energy counter: {m.counter} "
                f"(measured; far/near pulse ratio {self.evidence.get('far_near_ratio', float('nan')):.2f})")


def calibrate(*, sim: Any = None, gpu: int = 0, load: LoadDriver | None = None, save: bool = False,
              rate_hz: float = 2000.0) -> Calibration:
    """Calibrate GPU ``gpu`` (module docstring); ``sim=SimGPU`` calibrates a simulated one.

    ``load`` defaults to :class:`SimLoad` on a simulation, else :func:`cuda_load`.
    ``save=True`` keeps the result for later recordings of this GPU (by UUID).
    """
    if load is None:
        load = SimLoad(sim, gpu=gpu) if sim is not None else cuda_load(gpu)
    key = f"gpu{gpu}"
    kwargs: dict[str, Any] = {"sim": sim} if sim is not None else {}
    with Sampler("sim" if sim is not None else "nvml", rate_hz=rate_hz, **kwargs) as s:
        # The idle look lasts 5 s of *recording* (what the sampler read), however long the wall
        # clock takes to give it that on a loaded machine; LIVENESS_S only catches a stuck thread.
        liveness = time.monotonic() + LIVENESS_S
        u = None
        while u is None or u.period_ns is None or len(u) < 4:
            time.sleep(0.05)
            s.check()
            rec = s.recording()
            u = rec.updates(key)
            if rec.duration_s > 5.0:
                raise SourceUnavailableError(f"{key}'s energy counter did not update within 5 s")
            if time.monotonic() > liveness:
                raise SourceUnavailableError(_starved(s, f"5 s of idle readings of {key}"))
        period = int(round(u.period_ns / 1000.0)) * 1000
        last = int(u.t_ns[-1])
        d = max(period // 20, 100_000)
        margin = min(1_000_000, period // 50)
        offsets = list(range(margin, period - margin - d + 1, d))
        # The first pulse starts at least _LEAD_NS from now (and 2 periods past the last update):
        # a simulated load must be appended before its start, which a stalled caller could miss.
        lead = max(_core.monotonic_ns() + _LEAD_NS - last, 0)
        first = last + 2 * period * (1 + lead // (2 * period))
        ends = [first + (2 * i + 1) * period - o for i, o in enumerate(offsets)]  # pulses end o before an update
        planned = [(e - d, e) for e in ends]
        achieved = load.run(planned)
        # Wait for the sampler, not the clock: the update after the last pulse and the power
        # reading shown after it (up to half a period on) must have been read, however late.
        _wait_for_reads_past(s, max(b for _, b in achieved) + period + period // 2,
                             f"the update after the last calibration pulse of {key}")
    rec = s.recording()
    upd = rec.updates(key)
    t_up, v_up = upd.t_ns, upd.value

    def value_at_update(t: int) -> float:
        j = int(np.argmin(np.abs(t_up - t)))
        if abs(int(t_up[j]) - t) > period // 4:
            raise SourceUnavailableError(f"{key}: no counter update near a planned one; the sensor's period moved")
        return float(v_up[j])

    # Refine the grid over every update of the run (a least-squares line through them), then
    # measure each pulse's offset against it: the plan used the short idle look only.
    n_k = np.rint((t_up - t_up[0]) / period)
    slope, phase0 = np.polyfit(n_k, (t_up - t_up[0]).astype(np.float64), 1)
    period = int(round(slope / 1000.0)) * 1000
    grid0 = int(t_up[0]) + float(phase0)
    ends_got = np.array([b for _, b in achieved], dtype=np.float64)
    d = int(np.median([b - a for a, b in achieved]))
    k_end = np.ceil((ends_got - grid0) / slope)
    u_end_f = grid0 + k_end * slope
    offsets = list(np.rint(u_end_f - ends_got).astype(np.int64))
    # Pulse i lies in the period (u_end - P, u_end]; the idle one before it is the baseline.
    u_end = [int(round(x)) for x in u_end_f]
    pulse_e = np.array([value_at_update(t) - value_at_update(t - period) for t in u_end])
    idle_e = np.array([value_at_update(t - period) - value_at_update(t - 2 * period) for t in u_end])
    excess_e = pulse_e - np.median(idle_e)
    pw_ch = f"{key}.power_w"
    excess_p = None
    unread = 0
    if pw_ch in rec:
        pw = np.asarray(rec[pw_ch])
        tb, ta = np.asarray(rec.t_before_ns), np.asarray(rec.t_after_ns)
        # The reading shown after the pulse's update (it holds until the next one), and the idle one
        # shown before it: only reads wholly inside those spans, so that a read made late (its thread
        # starved) or one that took long cannot show the neighbouring period's value.
        shown = np.array([_clean_median(pw, tb, ta, u + period // 10, u + period - period // 10) for u in u_end])
        idle = np.array([_clean_median(pw, tb, ta, u - period + period // 10, u - period // 10) for u in u_end])
        unread = int(np.count_nonzero(~np.isfinite(shown)))
        if np.isfinite(idle).any() and unread < len(u_end):
            excess_p = shown - np.nanmedian(idle)
    seen = excess_p if excess_p is not None else excess_e
    full_seen = float(np.nanmax(seen))
    if not full_seen > 0:
        raise SourceUnavailableError(f"{key}: the calibration load did not show in the sensor; is the load on this GPU?")
    ratio = np.clip(seen / full_seen, 0.0, 1.0)
    off = np.array(offsets, dtype=np.float64)
    visible = np.isfinite(ratio) & (ratio > 0.02)  # a pulse without a clean reading (unread) says nothing
    window = float(np.max(off[visible] + ratio[visible] * d)) if visible.any() else float("nan")
    window = float(round(window / 1000.0) * 1000.0)
    near = (off + d) <= window
    far = off >= window + d / 2
    far_near = (float(np.median(excess_e[far]) / np.median(excess_e[near]))
                if far.any() and near.any() and np.median(excess_e[near]) > 0 else float("nan"))
    if not far.any():
        counter = "full"  # the window spans the period: nothing is unseen
    elif far_near < 0.3:
        counter = "part_time"
    elif far_near > 0.7:
        counter = "full"
    else:
        counter = "unknown"
    model = SensorModel(counter, "measured", float(period), window,
                        detail=f"calibrated {time.strftime('%Y-%m-%d')}: {len(offsets)} pulses of {d / 1e6:g} ms")
    uuid = (rec.metadata.get("device") or {}).get(f"{key}.uuid")
    cal = Calibration(model, uuid, {
        "offsets_ns": offsets, "pulse_ns": d, "counter_excess_j": excess_e.tolist(),
        "power_excess_w": None if excess_p is None else excess_p.tolist(), "far_near_ratio": far_near,
        "update_timing": upd.method, "unread_pulses": unread,
    })
    if save:
        if not uuid:
            raise InvalidArgumentError(f"{key} reports no UUID: the calibration cannot be kept for it")
        cal.saved_to = str(save_model(uuid, model))
    return cal
