"""Simulated "models" whose energy per category is known exactly, for compare and breakdown.

A model is a training-like loop: each step loads data (the GPU idles), then runs
a varying number of layers of GEMM, attention, normalisation, element-wise and
communication kernels on one stream. A model differs from the baseline by a
factor on the kernel *durations* (``time_scale``: slower at equal power) and/or
on their *power* above idle (``power_scale``: hotter at equal time), per
category. The truth follows the attribution's rule (a kernel's energy is the
GPU's power while it runs, idle included; no overlap on one stream), so
breakdowns can be checked against it.

:func:`synthetic_model_run` makes a recording without real time
(:func:`jouletrace.testing.workloads.synthetic_recording`: perfect timing,
simulated counter); figures measured on it say so.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import _core
from ..analysis.breakdown import IDLE, categorize
from ..energy.sampler import Sampler
from ..kernels.traces import KernelTable
from ..sampling.sim import SimGPU
from .workloads import EPOCH_OFFSET, kernel_table, synthetic_recording

__all__ = ["MODEL_KERNELS", "model_schedule", "category_truth", "synthetic_model_run", "IDLE_W"]

IDLE_W = 70.0

#: name -> (typical duration µs, watts above idle)
MODEL_KERNELS: dict[str, tuple[float, float]] = {
    "ampere_sgemm_128x64_nn": (900.0, 300.0),
    "flash_attn_fwd_kernel": (1400.0, 250.0),
    "layer_norm_fwd_kernel": (80.0, 120.0),
    "vectorized_elementwise_kernel<gelu>": (40.0, 90.0),
    "ncclAllReduceRingLLKernel": (1500.0, 50.0),
}


def model_schedule(t0_ns: int, seconds: float, rng: np.random.Generator, *,
                   time_scale: Mapping[str, float] | None = None, power_scale: Mapping[str, float] | None = None,
                   tokens_per_step: int = 512, load_ns: tuple[int, int] = (5_000_000, 20_000_000)) -> dict[str, Any]:
    """Launches (CLOCK_MONOTONIC) and contiguous step windows with ``{"tokens", "samples"}`` work."""
    names = list(MODEL_KERNELS)
    cats = categorize(names)
    ts = np.array([(time_scale or {}).get(c, 1.0) for c in cats])
    ps = np.array([(power_scale or {}).get(c, 1.0) for c in cats])
    dur = np.array([MODEL_KERNELS[n][0] for n in names]) * 1e3 * ts
    watts = np.array([MODEL_KERNELS[n][1] for n in names]) * ps
    S, N, steps = [], [], []
    t = int(t0_ns)
    end = t + int(seconds * 1e9)
    k = 0
    while True:
        w0 = t
        t += int(rng.integers(*load_ns))  # data loading: the GPU idles
        seq: list[int] = []
        for _ in range(int(rng.integers(2, 8))):
            seq += [2, 0]
            if rng.random() < 0.7:
                seq += [1]
            seq += [3] * int(rng.integers(1, 4))
            if rng.random() < 0.5:
                seq += [0, 3]
        if rng.random() < 0.8:
            seq += [4]
        seq_a = np.asarray(seq)
        d = (dur[seq_a] * rng.lognormal(0.0, 0.1, seq_a.size)).astype(np.int64)
        gaps = rng.integers(3_000, 15_000, seq_a.size)
        st = t + np.concatenate([[0], np.cumsum(d + gaps)[:-1]])
        step_end = int(st[-1] + d[-1]) + 2_000
        if step_end > end:
            break
        S.append(np.stack([st, st + d]))
        N.append(seq_a)
        k += 1
        steps.append({"name": "step", "t0_ns": w0, "t1_ns": step_end,
                      "work": {"tokens": tokens_per_step, "samples": tokens_per_step // 128}})
        t = step_end
    se = np.concatenate(S, axis=1)
    nid = np.concatenate(N).astype(np.int32)
    kw = watts[nid] * np.maximum(rng.normal(1.0, 0.03, nid.size), 0.0)
    return {"names": names, "categories": cats, "start": se[0], "end": se[1], "name_id": nid, "watts": kw,
            "windows": steps}


def category_truth(plan: Mapping[str, Any], idle_w: float = IDLE_W) -> dict[str, float]:
    """Exact energy per category over the trace's span (first start to last end), idle included."""
    dur = (plan["end"] - plan["start"]) * 1e-9
    e = (plan["watts"] + idle_w) * dur
    cats = np.asarray(plan["categories"], dtype=object)[plan["name_id"]]
    out: dict[str, float] = {}
    for c in sorted(set(cats.tolist())):
        out[c] = float(e[cats == c].sum())
    span = (int(plan["end"].max()) - int(plan["start"].min())) * 1e-9
    out[IDLE] = idle_w * (span - float(dur.sum()))
    return out


def synthetic_model_run(seconds: float, seed: int, *, time_scale: Mapping[str, float] | None = None,
                        power_scale: Mapping[str, float] | None = None, update_period_s: float = 0.02,
                        tokens_per_step: int = 512, sim: Any = None) -> dict[str, Any]:
    """A recording (synthetic timing, simulated counter), its trace and the truth, for one model.

    Returns ``rec`` (windows with work in its metadata), ``kernels`` (epoch KernelTable),
    ``plan``, ``truth`` (per category), ``true_energy_j`` (the windows' exact energy),
    ``tokens``. The caller owns the simulated GPU when passing ``sim``; otherwise it is closed.
    """
    rng = np.random.default_rng(seed)
    t0 = 10_000_000_000
    plan = model_schedule(t0, seconds, rng, time_scale=time_scale, power_scale=power_scale,
                          tokens_per_step=tokens_per_step)
    own = sim is None
    if own:
        sim = SimGPU(update_period_s=update_period_s, avg_window_s=update_period_s / 2, idle_w=IDLE_W,
                     phase_ns=int(rng.integers(0, int(update_period_s * 1e9))))
    try:
        sim.add_segments(plan["start"], plan["end"], plan["watts"])
        t_end = int(plan["windows"][-1]["t1_ns"])
        rec = synthetic_recording(sim, t0 - 300_000_000, t_end + 300_000_000, rng)
        a = np.array([w["t0_ns"] for w in plan["windows"]])
        b = np.array([w["t1_ns"] for w in plan["windows"]])
        true_e = float(np.sum(sim.true_energy(a, b)))
    finally:
        if own:
            sim.close()
    rec.metadata["windows"] = [dict(w) for w in plan["windows"]]
    rec.metadata["source"] = "synthetic"
    kernels = kernel_table(plan["start"], plan["end"], plan["name_id"], plan["names"], epoch_offset=EPOCH_OFFSET)
    return {"rec": rec, "kernels": kernels, "plan": plan, "truth": category_truth(plan),
            "true_energy_j": true_e, "tokens": tokens_per_step * len(plan["windows"])}


def realtime_model_runs(seconds: float, specs: Sequence[Mapping[str, Any]], *, update_period_s: float = 0.02,
                        tokens_per_step: int = 512, rate_hz: float = 1000.0) -> list[dict[str, Any]]:
    """The same as :func:`synthetic_model_run` for several models at once, in real time.

    Each spec (``{"seed": int, "time_scale": {...}, "power_scale": {...}}``) is a model played
    by its own simulated GPU while its own real :class:`jouletrace.Sampler` thread records it
    (all at once, from ~1.5 s from now); the kernels come back on the wall clock through the
    recording's clock pairs, as a profiler's trace would. Nothing is synthesised.
    """
    t0 = int(_core.monotonic_ns()) + 1_500_000_000
    sims, plans, samplers = [], [], []
    try:
        for spec in specs:
            rng = np.random.default_rng(int(spec["seed"]))
            plan = model_schedule(t0, seconds, rng, time_scale=spec.get("time_scale"),
                                  power_scale=spec.get("power_scale"), tokens_per_step=tokens_per_step)
            sim = SimGPU(update_period_s=update_period_s, avg_window_s=update_period_s / 2, idle_w=IDLE_W,
                         phase_ns=int(rng.integers(0, int(update_period_s * 1e9))))
            sim.add_segments(plan["start"], plan["end"], plan["watts"])
            sims.append(sim)
            plans.append(plan)
        samplers = [Sampler("sim", sim=sim, rate_hz=rate_hz) for sim in sims]
        for s in samplers:
            s.start()
        t_end = max(int(p["windows"][-1]["t1_ns"]) for p in plans)
        while _core.monotonic_ns() < t_end + 4 * int(update_period_s * 1e9) + 100_000_000:
            time.sleep(0.05)
        for s in samplers:
            s.stop()
        out = []
        for sim, plan, s in zip(sims, plans, samplers, strict=True):
            rec = s.recording()
            rec.metadata["windows"] = [dict(w) for w in plan["windows"]]
            a = np.array([w["t0_ns"] for w in plan["windows"]])
            b = np.array([w["t1_ns"] for w in plan["windows"]])
            order = np.argsort(plan["start"], kind="stable")
            kernels = KernelTable(rec.to_epoch_ns(plan["start"][order]), rec.to_epoch_ns(plan["end"][order]),
                                  np.zeros(order.size, np.int32), np.asarray(plan["name_id"])[order],
                                  list(plan["names"]), correlation=np.arange(order.size, dtype=np.int64) + 1)
            out.append({"rec": rec, "kernels": kernels, "plan": plan, "truth": category_truth(plan),
                        "true_energy_j": float(np.sum(sim.true_energy(a, b))),
                        "tokens": tokens_per_step * len(plan["windows"])})
        return out
    finally:
        for s in samplers:
            s.stop()
        for sim in sims:
            sim.close()
