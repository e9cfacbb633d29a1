"""``jouletrace.measure`` against the naive one-window measurement of the same callable.

    python bench/bench_measure.py

Real time on the simulated GPU (100 ms updates, 25 ms averaging window, 60 W idle),
both counter kinds. The callable appends a 200 W segment of ``d`` to the simulated
GPU's live schedule and busy-waits ``d`` (50 µs and 5 ms). Truth: the simulation's
energy over the calls' own spans (idle included). *Naive*: one call inside a
``Recording.energy`` window, 20 times at random phases — a direct number with its
bound. *measure()*: 5 trials x 10 periods by repetition — a statistical number
with a 95 % interval. Prints the markdown table of bench/RESULTS.md.

    python bench/bench_measure.py --coverage 20

Runs ``measure()`` (defaults: 5 trials x 10 periods) 20 times per counter kind and
call length, each with its own seed, and prints how often the 95 % interval covered
the truth and the 99.9 % one (``RepeatResult.interval``), with the spread of the errors.
A single run's 95 % interval misses 1 time in 20 by design: coverage is a rate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pytest

import jouletrace
from jouletrace import _core
from jouletrace.sampling.sim import SimGPU
from jouletrace.testing.loads import live_call


def naive(counter: str, d_ns: int, n: int = 20) -> dict[str, float]:
    """One call per window, ``n`` windows at random phases: error and bound relative to the truth."""
    rng = np.random.default_rng(1)
    with SimGPU(update_period_s=0.1, avg_window_s=0.025, idle_w=60.0, counter=counter) as sim:
        fn = live_call(sim, d_ns)
        spans = []
        with jouletrace.Sampler("sim", sim=sim, rate_hz=1000) as s:
            time.sleep(0.3)
            for _ in range(n):
                time.sleep(rng.uniform(0.15, 0.25))
                a = _core.monotonic_ns()
                fn()
                spans.append((a, _core.monotonic_ns()))
            time.sleep(0.4)
        rec = s.recording()
        a, b = np.array(spans).T
        we = rec.energies(a, b)
        truth = sim.true_energy(a, b)
        err = np.abs(we.energy_j["gpu0"] - truth) / truth
        bound = we.uncertainty_j["gpu0"] / truth
        return {"median_error": float(np.median(err)), "median_bound": float(np.median(bound)),
                "covered": float(np.mean(err <= bound))}


def repeated(counter: str, d_ns: int, seed: int = 7) -> dict[str, float]:
    with SimGPU(update_period_s=0.1, avg_window_s=0.025, idle_w=60.0, counter=counter) as sim:
        r = jouletrace.measure(live_call(sim, d_ns), sim=sim, keep_spans=True, seed=seed, max_rel_ci=1.0)
        spans = r.call_spans_ns
        truth = float(np.mean(sim.true_energy(spans[:, 0], spans[:, 1])))
        t_call = (spans[:, 1] - spans[:, 0]) * 1e-9
        lo, hi = r.interval(0.999)
        return {"error": (r.energy_j - truth) / truth, "half_width": r.energy_ci_j / r.energy_j,
                "calls": r.calls, "time_cv": float(np.std(t_call) / np.mean(t_call)),
                "covered95": float(abs(r.energy_j - truth) <= r.energy_ci_j), "covered999": float(lo <= truth <= hi)}


def coverage(runs: int) -> None:
    print("| counter | call | runs | 95 % interval covered | 99.9 % covered | median abs error | p90 abs error "
          "| median 95 % half-width | within 2 % |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for counter in ("full", "part_time"):
        for d in (50_000, 5_000_000):
            rs = [repeated(counter, d, seed=100 + i) for i in range(runs)]
            err = np.abs([r["error"] for r in rs])
            hw = np.array([r["half_width"] for r in rs])
            print(f"| {counter} | {d / 1e3:g} µs | {runs} | {100 * np.mean([r['covered95'] for r in rs]):.0f} % "
                  f"| {100 * np.mean([r['covered999'] for r in rs]):.0f} % | {100 * np.median(err):.2f} % "
                  f"| {100 * np.quantile(err, 0.9):.2f} % | ±{100 * np.median(hw):.2f} % "
                  f"| {100 * np.mean(err <= 0.02):.0f} % |", flush=True)


def main() -> None:
    print("| counter | call | naive: median error / bound, coverage (1 call per window) "
          "| measure(): error, 95 % half-width, calls | spread of the call's own duration |")
    print("| --- | --- | --- | --- | --- |")
    for counter in ("full", "part_time"):
        for d in (50_000, 5_000_000):
            nv = naive(counter, d)
            rp = repeated(counter, d)
            print(f"| {counter} | {d / 1e3:g} µs | {100 * nv['median_error']:.0f} % / {100 * nv['median_bound']:.0f} %, "
                  f"{100 * nv['covered']:.0f} % | {100 * rp['error']:+.2f} %, ±{100 * rp['half_width']:.2f} %, "
                  f"{rp['calls']:,} | {100 * rp['time_cv']:.0f} % (CV) |", flush=True)


@pytest.mark.realtime
def test_measure_bench_runs():
    """The code path of the table (one short naive case; figures come from the script)."""
    nv = naive("full", 5_000_000, n=3)
    assert nv["covered"] >= 2 / 3 and nv["median_bound"] > 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coverage", type=int, metavar="RUNS", help="coverage of the intervals over RUNS runs per case")
    args = ap.parse_args()
    if args.coverage:
        coverage(args.coverage)
    else:
        main()
