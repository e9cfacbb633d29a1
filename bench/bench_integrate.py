"""Window energy: 1 M windows over 10 M samples, and the cost of begin_window + end_window.

    python -m pytest bench/bench_integrate.py        # pytest-benchmark timings
    python bench/bench_integrate.py                  # the "Windows" tables of RESULTS.md

Bars (DESIGN.md §6 and issue 4): 1 M windows over 10 M samples in under 1 s;
begin_window + end_window under 20 µs.

Recordings are synthesised from the simulated GPU's sensor model (reading a real
10 M-sample recording would take hours): ``Recording.energies`` on them runs the
same code as on a sampler's. Two shapes: an NVML-like counter (100 ms updates,
polled at 1 kHz: 2.8 h) and a RAPL-like one (1 ms updates, polled at 10 kHz: 17 min).
The baseline is the same answer computed one window at a time (``Recording.energy``
in a Python loop), timed on 2 000 windows and scaled to 1 M.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jouletrace
from jouletrace.energy.recording import Recording
from jouletrace.sampling.sim import SimGPU

N_SAMPLES = 10_000_000
N_WINDOWS = 1_000_000
T0 = 10_000_000_000

CASES = {
    "nvml-like": dict(update_period_s=0.1, rate_hz=1000.0),
    "rapl-like": dict(update_period_s=0.001, rate_hz=10000.0),
}


def make_recording(update_period_s: float, rate_hz: float, n: int = N_SAMPLES, seed: int = 0) -> tuple[Recording, SimGPU]:
    """``n`` samples of a simulated GPU with a load that changes every 0.2 ms to 2 s."""
    rng = np.random.default_rng(seed)
    sim = SimGPU(update_period_s=update_period_s, phase_ns=int(rng.integers(0, int(update_period_s * 1e9))))
    span = int(n / rate_hz * 1e9)
    d = np.exp(rng.uniform(np.log(2e5), np.log(2e9), int(span / 2e8) + 1000)).astype(np.int64)
    starts = T0 - 10**9 + np.concatenate([[0], np.cumsum(d)[:-1]])
    busy = rng.random(d.size) < 0.6
    keep = busy & (starts < T0 + span + 10**9)
    sim.add_segments(starts[keep], (starts + d)[keep], rng.uniform(50, 600, int(keep.sum())))
    step = 1e9 / rate_hz
    t = T0 + np.rint(np.arange(n) * step).astype(np.int64) + rng.integers(-int(step * 0.05), int(step * 0.05) + 1, n)
    t.sort()
    rec = Recording(
        t_ns=t,
        t_before_ns=t,
        t_after_ns=t,
        seq=np.arange(n, dtype=np.uint64),
        status=np.zeros(n, dtype=np.int32),
        values={"gpu0.energy_j": sim.sensor_energy_j(t)},
        cumulative={"gpu0.energy_j": True},
    )
    return rec, sim


def make_windows(rec: Recording, m: int = N_WINDOWS, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``m`` windows of 1 ms to 10 s (log-uniform) at random places, in start order."""
    rng = np.random.default_rng(seed)
    t = rec.t_ns
    length = np.exp(rng.uniform(np.log(1e6), np.log(1e10), m)).astype(np.int64)
    a = np.sort(rng.integers(int(t[0]), int(t[-1]) - length))
    return a, a + length


def fresh(rec: Recording) -> Recording:
    """The same samples without the cached update placement."""
    return Recording(
        t_ns=rec.t_ns,
        t_before_ns=rec.t_before_ns,
        t_after_ns=rec.t_after_ns,
        seq=rec.seq,
        status=rec.status,
        values={c: rec[c] for c in rec.channels},
        cumulative={c: rec.is_cumulative(c) for c in rec.channels},
    )


def time_windows(rec: Recording, a: np.ndarray, b: np.ndarray, repeats: int = 3) -> dict[str, float]:
    cold, warm = [], []
    for _ in range(repeats):
        r = fresh(rec)
        t0 = time.perf_counter()
        r.energies(a, b)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        r.energies(a, b)
        warm.append(time.perf_counter() - t0)
    # Baseline: one window at a time through the same code.
    r = fresh(rec)
    r.energies(a[:1], b[:1])  # place the updates once, as a per-window user would
    k = 2000
    t0 = time.perf_counter()
    for i in range(k):
        r.energy(int(a[i]), int(b[i]))
    per_window = (time.perf_counter() - t0) / k
    return {
        "first_call_s": min(cold),
        "cached_s": min(warm),
        "updates": len(r.updates("gpu0.energy_j").t_ns),
        "loop_per_window_us": per_window * 1e6,
        "loop_1M_s": per_window * len(a),
    }


def time_begin_end(n: int = 100_000, repeats: int = 5) -> dict[str, float]:
    """µs per begin_window + end_window pair, with a running Monitor over the simulated GPU."""
    with SimGPU(update_period_s=0.01) as sim, jouletrace.Monitor(sim=sim, cpu=False, rate_hz=1000) as mon:
        per_pair = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                mon.begin_window("step")
                mon.end_window("step")
            per_pair.append((time.perf_counter() - t0) / n * 1e6)
            mon.clear()
        ctx = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n // 10):
                with mon.window("step"):
                    pass
            ctx.append((time.perf_counter() - t0) / (n // 10) * 1e6)
            mon.clear()
        # Resolving them afterwards, all at once (vectorised): per window.
        for _ in range(10_000):
            mon.begin_window("step")
            mon.end_window("step")
        t0 = time.perf_counter()
        mon.measurements(wait=False)
        resolve_us = (time.perf_counter() - t0) / 10_000 * 1e6
    return {
        "begin_end_us_median": statistics.median(per_pair),
        "begin_end_us_min": min(per_pair),
        "context_manager_us_median": statistics.median(ctx),
        "resolve_batch_us_per_window": resolve_us,
    }


def accuracy(period_s: float, rate_hz: float, seeds: int = 4, drift_ppm: float = 20.0) -> dict[str, float]:
    """Coverage and looseness of the bound on the sensor model (the tests' figures)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import test_integrate as ti

    made: list[SimGPU] = []

    def make_sim(**kw: Any) -> SimGPU:
        s = SimGPU(**kw)
        made.append(s)
        return s

    out = {}
    for name, sched in (("ml", ti._ml), ("flicker", ti._flicker)):
        err, bound, length = ti._model_errors(
            make_sim, period_s, rate_hz, range(seeds) if name == "ml" else range(10, 10 + seeds), sched, drift_ppm=drift_ppm
        )
        cov, pooled, med_class = ti.coverage_and_looseness(err, bound, length)
        out[name] = {
            "coverage": cov,
            "looseness_pooled": pooled,
            "median_vs_class_need": med_class,
            "median_bound_over_own_error": float(np.median(bound / np.maximum(np.abs(err), 1e-12))),
        }
    for s in made:
        s.close()
    return out


# -- pytest-benchmark ------------------------------------------------------------------------
@pytest.fixture(scope="module", params=list(CASES))
def big(request):  # type: ignore[no-untyped-def]
    rec, sim = make_recording(**CASES[request.param])
    a, b = make_windows(rec)
    yield request.param, rec, a, b
    sim.close()


def test_one_million_windows_over_ten_million_samples(benchmark, big):  # type: ignore[no-untyped-def]
    """Recording.energies: 1 M windows, update placement included (a fresh Recording each round)."""
    name, rec, a, b = big

    def run():  # type: ignore[no-untyped-def]
        return fresh(rec).energies(a, b)

    we = benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info["case"] = name
    assert len(we) == N_WINDOWS and np.isfinite(we.total_j).all()


def test_begin_end_window(benchmark):  # type: ignore[no-untyped-def]
    with SimGPU(update_period_s=0.01) as sim, jouletrace.Monitor(sim=sim, cpu=False) as mon:

        def pair() -> None:
            mon.begin_window("step")
            mon.end_window("step")

        benchmark(pair)
        mon.clear()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=N_SAMPLES)
    p.add_argument("--windows", type=int, default=N_WINDOWS)
    p.add_argument("--no-accuracy", action="store_true")
    args = p.parse_args(argv)
    res: dict[str, Any] = {"windows": {}, "accuracy": {}}
    print(f"| recording | samples | counter updates | 1 M windows, first call | cached | Python loop (x{args.windows}) | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, case in CASES.items():
        rec, sim = make_recording(n=args.samples, **case)
        a, b = make_windows(rec, args.windows)
        r = time_windows(rec, a, b)
        res["windows"][name] = r
        print(
            f"| {name} | {args.samples:,} | {r['updates']:,} | {r['first_call_s']:.3f} s | {r['cached_s']:.3f} s "
            f"| {r['loop_1M_s']:.0f} s ({r['loop_per_window_us']:.0f} µs/window) | {r['loop_1M_s'] / r['first_call_s']:.0f}x |"
        )
        sim.close()
    be = time_begin_end()
    res["begin_end"] = be
    print(
        f"\nbegin_window + end_window: median {be['begin_end_us_median']:.2f} µs (min {be['begin_end_us_min']:.2f}); "
        f"`with window()`: {be['context_manager_us_median']:.2f} µs; "
        f"computing them later in one batch: {be['resolve_batch_us_per_window']:.2f} µs per window"
    )
    if not args.no_accuracy:
        print("\n| update period | load | coverage | looseness (pooled) | median bound / class need | median bound / own error |")
        print("| --- | --- | --- | --- | --- | --- |")
        for period_s, rate in ((0.001, 10000.0), (0.02, 1000.0), (0.1, 1000.0)):
            acc = accuracy(period_s, rate)
            res["accuracy"][period_s] = acc
            for load, v in acc.items():
                print(
                    f"| {period_s * 1e3:g} ms | {load} | {v['coverage']:.3f} | {v['looseness_pooled']:.2f} "
                    f"| {v['median_vs_class_need']:.2f} | {v['median_bound_over_own_error']:.0f} |"
                )
    return res


if __name__ == "__main__":
    main()
