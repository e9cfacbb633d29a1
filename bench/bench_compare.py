"""Cost of `compare`: two runs of 10 M samples each with traces of 1 M kernels.

Three figures: the direct pass alone (``basis="direct"``: windows, per-launch energies,
category and name sums), the default (one category regression per run, top names direct),
and ``names="statistical"`` (a second, per-name regression per run, as before).

Synthetic recordings (jouletrace.testing.models: perfect timing, simulated counter at
10 kHz polling for 1000 s -> 10 M samples; the kernel mix of the simulated models).
Run: .venv/bin/python bench/bench_compare.py [--seconds 1000] [--rate 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from jouletrace.analysis.compare import Run, compare
from jouletrace.sampling.sim import SimGPU
from jouletrace.testing.models import IDLE_W, model_schedule
from jouletrace.testing.workloads import kernel_table, synthetic_recording


def make(seconds: float, rate: float, seed: int, **scale):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    t0 = 10_000_000_000
    plan = model_schedule(t0, seconds, rng, load_ns=(1_000_000, 3_000_000), **scale)
    with SimGPU(update_period_s=0.02, avg_window_s=0.01, idle_w=IDLE_W) as sim:
        sim.add_segments(plan["start"], plan["end"], plan["watts"])
        rec = synthetic_recording(sim, t0 - 100_000_000, int(plan["windows"][-1]["t1_ns"]) + 100_000_000, rng,
                                  rate_hz=rate)
    rec.metadata["windows"] = plan["windows"]
    return rec, kernel_table(plan["start"], plan["end"], plan["name_id"], plan["names"])


def test_compare_small(benchmark=None):  # type: ignore[no-untyped-def]
    a = make(5, 1000, 1)
    b = make(5, 1000, 2, time_scale={"gemm": 1.3})
    doc = compare([Run(*a, label="a"), Run(*b, label="b")], bootstrap=20)
    assert doc["differences"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1000)
    ap.add_argument("--rate", type=float, default=10000)
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    t = time.perf_counter()
    a = make(args.seconds, args.rate, 1)
    b = make(args.seconds, args.rate, 2, time_scale={"gemm": 1.3})
    print(f"made: {len(a[0]):,} and {len(b[0]):,} samples, {len(a[1]):,} and {len(b[1]):,} kernels "
          f"in {time.perf_counter() - t:.1f} s")
    for basis, names in (("direct", "direct"), ("auto", "direct"), ("auto", "statistical")):
        t = time.perf_counter()
        doc = compare([Run(*a, label="a"), Run(*b, label="b")], bootstrap=args.bootstrap, basis=basis, names=names)
        print(f"compare (2 runs, basis={basis} -> {doc['basis']}, top names {names}, {args.bootstrap} bootstrap): "
              f"{time.perf_counter() - t:.2f} s")

if __name__ == "__main__":
    main()
