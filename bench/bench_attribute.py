"""Kernel attribution and trace import: timings.

    pytest bench/bench_attribute.py                # pytest-benchmark timings (1 M cases: -m slow)
    python bench/bench_attribute.py                # the "Kernel attribution" table of RESULTS.md

The workload: launches of 8 kernel names (20 µs .. 5 ms, a mix that changes
over time) replayed on the simulated GPU (100 ms counter updates); a recording
polled at 1 kHz (1 M samples over 1000 s); the launches as an epoch-clock
KernelTable, aligned through the recording's clock pairs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from jouletrace import attribute as at
from jouletrace.kernels.traces import load_kineto, load_nsys
from jouletrace.sampling.sim import SimGPU
from jouletrace.testing.traces import write_kineto_json, write_nsys_sqlite
from jouletrace.testing.workloads import kernel_table, synthetic_launches, synthetic_recording

_HERE = Path(__file__).resolve().parent

T0 = 5_000_000_000_000
TRACES = _HERE.parent / "tests" / "data" / "traces"


def make_case(launches: int, samples: int, seed: int = 1):  # type: ignore[no-untyped-def]
    """About ``launches`` launches over ``samples`` ms of recording at 1 kHz."""
    rng = np.random.default_rng(seed)
    seconds = samples / 1000.0 - 2.0
    rate = launches / seconds
    w = synthetic_launches(np.random.default_rng(seed), T0, seconds, n_names=8, rate_hz=rate)
    if w["start"].size < launches:  # phases vary their rate: scale to reach the count
        rate *= 1.02 * launches / w["start"].size
        w = synthetic_launches(rng, T0, seconds, n_names=8, rate_hz=rate)
    with SimGPU(update_period_s=0.1, avg_window_s=0.025, idle_w=60.0, phase_ns=1_234_567) as sim:
        sim.add_segments(w["start"], w["end"], w["watts"])
        rec = synthetic_recording(sim, T0 - 1_000_000_000, T0 - 1_000_000_000 + samples * 1_000_000, rng)
    return rec, kernel_table(w["start"], w["end"], w["name_id"], w["names"])


def _fresh(rec):  # type: ignore[no-untyped-def]
    """The same samples in a new Recording (no cached counter updates): a cold start."""
    from jouletrace import Recording

    return Recording(t_ns=rec.t_ns, t_before_ns=rec.t_before_ns, t_after_ns=rec.t_after_ns, seq=rec.seq,
                     status=rec.status, values={c: rec[c] for c in rec.channels},
                     cumulative={c: rec.is_cumulative(c) for c in rec.channels},
                     clock_pairs=rec.clock_pairs, metadata=dict(rec.metadata))


_SIZES = [pytest.param(100_000, 100_000, id="100k"),
          pytest.param(1_000_000, 1_000_000, id="1M", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def cases():  # type: ignore[no-untyped-def]
    made: dict = {}

    def get(n, m):  # type: ignore[no-untyped-def]
        if (n, m) not in made:
            made[(n, m)] = make_case(n, m)
        return made[(n, m)]

    return get


@pytest.mark.parametrize(("launches", "samples"), _SIZES)
def test_attribute_names(benchmark, cases, launches, samples):
    rec, kernels = cases(launches, samples)
    res = benchmark.pedantic(lambda: at.attribute_names(rec, kernels), rounds=3, iterations=1)
    assert res["launches"].sum() == len(kernels)


@pytest.mark.parametrize(("launches", "samples"), _SIZES)
def test_attribute_launches(benchmark, cases, launches, samples):
    rec, kernels = cases(launches, samples)
    res = benchmark.pedantic(lambda: at.attribute_launches(rec, kernels), rounds=3, iterations=1)
    assert len(res) == len(kernels)


@pytest.mark.parametrize(("launches", "samples"), _SIZES)
def test_attribute_everything_cold(benchmark, cases, launches, samples):
    """align + per name + per launch on a recording seen for the first time."""
    rec, kernels = cases(launches, samples)
    res = benchmark.pedantic(lambda: at.attribute(_fresh(rec), kernels), rounds=3, iterations=1)
    assert len(res.launches) == len(kernels)


@pytest.mark.parametrize("fmt", ["nsys", "kineto"])
def test_import_throughput(benchmark, cases, tmp_path, fmt):
    _, kernels = cases(100_000, 100_000)
    path = tmp_path / ("t.sqlite" if fmt == "nsys" else "t.json")
    if fmt == "nsys":
        write_nsys_sqlite(path, kernels, int(kernels.start_ns.min()) - 10**9)
        loader = load_nsys
    else:
        write_kineto_json(path, kernels, base_time_ns=int(kernels.start_ns.min()) // 10**9 * 10**9)
        loader = load_kineto
    back = benchmark.pedantic(lambda: loader(path), rounds=3, iterations=1)
    assert len(back) == len(kernels)


# -- the table of RESULTS.md ----------------------------------------------------------------
def _time(f, rounds: int = 3) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    ts = []
    out = None
    for _ in range(rounds):
        t = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--launches", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--import-kernels", type=int, default=200_000)
    args = ap.parse_args(argv)
    rec, kernels = make_case(args.launches, args.samples)
    print(f"{len(kernels):,} launches, {len(rec):,} samples, 8 names, 100 ms counter updates\n")
    out: dict = {}
    rows = []
    t_cold, _ = _time(lambda: at.attribute(_fresh(rec), kernels))
    t_align, al = _time(lambda: at.align(kernels, rec))
    t_names, names = _time(lambda: at.attribute_names(rec, kernels, alignment=al))
    t_names_nb, _ = _time(lambda: at.attribute_names(rec, kernels, alignment=al, bootstrap=0, timing=False))
    t_launch_cold, _ = _time(lambda: at.attribute_launches(_fresh(rec), kernels, alignment=al))
    t_launch, _ = _time(lambda: at.attribute_launches(rec, kernels, alignment=al))
    rows += [
        ("align (clock pairs)", t_align),
        ("per name, statistical (NNLS, 400 bootstrap replicates, offset search)", t_names),
        ("per name, without bootstrap and timing widening", t_names_nb),
        ("per launch, direct, counter updates already located", t_launch),
        ("per launch, direct, first use of the recording", t_launch_cold),
        ("everything (attribute(): align + per name + per launch), first use", t_cold),
    ]
    print("| step | seconds |\n| --- | --- |")
    for name, t in rows:
        print(f"| {name} | {t:.3f} |")
    out["attribution"] = dict(rows)
    out["update_timing"] = names.meta["devices"][0].get("update_timing")
    # Importers.
    _, big = make_case(args.import_kernels, max(args.import_kernels, 100_000), seed=2)
    print(f"\nimporters, {len(big):,} synthetic kernels (+ the real exports):\n")
    print("| file | kernels | seconds | kernels/s |\n| --- | --- | --- | --- |")
    imp = {}
    with tempfile.TemporaryDirectory() as d:
        p_n = Path(d) / "synthetic.sqlite"
        p_k = Path(d) / "synthetic.pt.trace.json"
        write_nsys_sqlite(p_n, big, int(big.start_ns.min()) - 10**9)
        write_kineto_json(p_k, big, base_time_ns=int(big.start_ns.min()) // 10**9 * 10**9)
        files = [(p_n, load_nsys), (p_k, load_kineto)] + [
            (TRACES / f, load_nsys if f.endswith(".sqlite") else load_kineto)
            for f in ("nsys-2022.2-a100-saxpy.sqlite", "kineto-a100-nccl.json.gz", "kineto-2021-resnet50.json.gz")
        ]
        for path, loader in files:
            t, k = _time(lambda path=path, loader=loader: loader(path))
            n = len(k)  # type: ignore[arg-type]
            imp[path.name] = (n, t)
            print(f"| {path.name} | {n:,} | {t:.3f} | {n / t:,.0f} |")
    out["import"] = imp
    return out


if __name__ == "__main__":
    main()
