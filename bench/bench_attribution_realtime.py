"""Per-name kernel energy through the real sampler in real time: accuracy and interval coverage.

    python bench/bench_attribution_realtime.py [--runs 3] [--seconds 20]

Each run replays every real export in tests/data/traces (kernel timelines tiled
with random idle gaps) on simulated GPUs with an H100-like (100 ms / 25 ms) and
an A100-like (20 ms) sensor while one real Sampler per sensor polls at 1 kHz
(:mod:`jouletrace.testing.replay`; nothing synthesised). Each device is then
attributed three ways: with the recording's update placement from NVML's
timestamps (the default), from the fitted grid alone (timestamps dropped), and
from the exact update instants (the oracle: the limit of any placement).
Prints the markdown table of bench/RESULTS.md. Under pytest, one short run checks
the code path (``-m "not slow"``); the table comes from running it as a script.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from jouletrace import attribute as at
from jouletrace.kernels.traces import load
from jouletrace.testing.replay import oracle_updates, replay, score, summarize, without_timestamps

TRACES = Path(__file__).resolve().parent.parent / "tests" / "data" / "traces"
MODES = ("timestamps", "grid", "oracle")


def _tables() -> dict:
    return {p.name: load(p) for p in sorted(TRACES.iterdir()) if p.suffix in (".gz", ".sqlite")}


def attribute_run(run, modes=MODES, bootstrap: int = 200) -> dict:  # type: ignore[no-untyped-def]
    """{(mode, sensor, trace): score} for one replay."""
    out = {}
    for dev in run.devices:
        base = run.recordings[dev.sensor]
        for mode in modes:
            rec = without_timestamps(base) if mode == "grid" else base
            kw = {}
            if mode == "oracle":
                kw["updates"] = {dev.channel: oracle_updates(base.updates(dev.channel), run.grids[dev.sensor])}
            names = at.attribute_names(rec, dev.kernels(rec), device_map={0: dev.channel}, bootstrap=bootstrap, **kw)
            out[(mode, dev.sensor, dev.trace)] = score(names, dev)
    return out


def table(all_scores: list[dict]) -> str:
    groups: dict = defaultdict(list)
    for sc in all_scores:
        for key, s in sc.items():
            groups[key].append(s)
    lines = ["| sensor | trace | placement | big names resolved | max / median error of resolved big names "
             "| resolved names | coverage of their 95 % intervals |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for (mode, sensor, trace), ss in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], MODES.index(kv[0][0]))):
        p = summarize(ss)
        err = ("—" if not np.isfinite(p["max_error_big_resolved"]) else
               f"{100 * p['max_error_big_resolved']:.2f} % / {100 * p['median_error_big_resolved']:.2f} %")
        lines.append(f"| {sensor} | {trace} | {mode} | {p['big_resolved']}/{p['big_names']} | {err} | "
                     f"{p['resolved_names']} | {p['coverage_resolved']:.3f} |")
    for mode in MODES:
        p = summarize([s for sc in all_scores for (m, _, _), s in sc.items() if m == mode])
        lines.append(f"| all | all | {mode} | {p['big_resolved']}/{p['big_names']} | "
                     f"{100 * p['max_error_big_resolved']:.2f} % / {100 * p['median_error_big_resolved']:.2f} % | "
                     f"{p['resolved_names']} | {p['coverage_resolved']:.3f} |")
    return "\n".join(lines)


def test_realtime_attribution_harness_runs():
    """The code path of the table, once and short (no figures: those come from the script)."""
    tables = {k: v for k, v in _tables().items() if "saxpy" in k}
    run = replay(tables, 3.0, sensors={"a100": {"update_period_s": 0.02, "avg_window_s": 0.02}})
    sc = attribute_run(run, bootstrap=20)
    assert {k[0] for k in sc} == set(MODES)
    assert "| a100 |" in table([sc])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args(argv)
    scores = []
    tables = _tables()
    for r in range(args.runs):
        run = replay(tables, args.seconds, seed=100 + r)
        print(f"run {r + 1}: missed deadlines {run.missed_deadlines}", flush=True)
        scores.append(attribute_run(run))
    print(table(scores))


if __name__ == "__main__":
    main()
