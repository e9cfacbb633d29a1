"""``jouletrace demo``: the whole tool on a simulated GPU — no GPU, no driver, no root needed.

A simulated GPU runs a training-like kernel mix (forward, backward and
optimizer kernels, data-loading gaps, a batch-size change and an evaluation
phase) while jouletrace samples it at 1 kHz through the same NVML code path a
real GPU uses. The demo then prints what the other commands print: the energy
table (``report``), energy per training step (windows), and energy per kernel
name (``attribute``) next to the simulation's exact truth; and writes the
recording, a profiler trace of the kernels (PyTorch-profiler JSON), a power
plot and a Perfetto timeline into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from .._core import monotonic_ns
from .._safe_output import write_bytes
from ..analysis.compare import Run, compare
from ..analysis.compare import format_text as format_comparison
from ..analysis.report_html import render
from ..attribute import attribute
from ..energy.sampler import Sampler
from ..energy.storage import load as jouletrace_load
from ..kernels import traces
from ..kernels.export import merge_kineto
from ..sampling.sim import SimGPU
from ..testing.traces import write_kineto_json
from . import attribute as attribute_cmd
from ._summary import format_table, summarize
from .report import plot

#: name -> (typical duration µs, watts above idle, phase)
KERNELS: dict[str, tuple[float, float, str]] = {
    "ampere_sgemm_128x64_nn (fwd matmul)": (900.0, 310.0, "fwd"),
    "layer_norm_fwd_kernel": (60.0, 120.0, "fwd"),
    "softmax_warp_forward": (45.0, 150.0, "fwd"),
    "vectorized_gelu_kernel": (30.0, 90.0, "fwd"),
    "flash_attn_fwd_kernel": (1400.0, 280.0, "fwd"),
    "ampere_sgemm_128x64_tn (bwd matmul)": (1800.0, 330.0, "bwd"),
    "layer_norm_bwd_kernel": (110.0, 140.0, "bwd"),
    "flash_attn_bwd_kernel": (2600.0, 300.0, "bwd"),
    "multi_tensor_apply_kernel (adam)": (700.0, 200.0, "opt"),
    "ncclAllReduceRingLLKernel": (2200.0, 60.0, "opt"),
}


def add_parser(sub: Any, help: str) -> None:
    p = sub.add_parser("demo", help=help,
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="jouletrace-demo", help="folder for the files (default ./jouletrace-demo)")
    p.add_argument("--seconds", type=float, default=12.0, help="length of the simulated run (default 12)")
    p.add_argument("--rate", type=float, default=1000.0, help="sampling rate (default 1000 Hz)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--level", type=float, default=0.999,
                   help="confidence level of the per-name intervals (default 0.999: the demo checks every name "
                        "against the truth, so one in a thousand may miss)")


#: The second, cheaper configuration: mixed precision makes the matmul and attention kernels
#: run this much faster, at about the same power (a time effect in `compare`).
CHEAPER = {"sgemm": 0.55, "flash_attn": 0.6}

#: Tokens per sample (sequence length) and samples per step (batch size) before the batch grows.
SEQ_LEN, BATCH = 512, 8


class Schedule(TypedDict):
    """What :func:`schedule` plans: the launches (one entry per launch in the arrays) and the steps."""

    names: list[str]
    start: np.ndarray
    end: np.ndarray
    name_id: np.ndarray
    watts: np.ndarray
    #: (name, t0_ns, t1_ns) per step, and its work ({"tokens", "samples"}).
    steps: list[tuple[str, int, int]]
    work: list[dict[str, int]]


def schedule(t0_ns: int, seconds: float, rng: np.random.Generator,
             speed: dict[str, float] | None = None) -> Schedule:
    """Kernel launches of a training-like run from ``t0_ns`` (CLOCK_MONOTONIC), and its steps.

    ``speed`` maps a substring of kernel names to a factor on their durations (a cheaper
    configuration). Each step carries its work: ``(name, t0, t1, {"tokens", "samples"})``.
    """
    names = list(KERNELS)
    dur = np.array([KERNELS[n][0] for n in names]) * 1e3
    for key, f in (speed or {}).items():
        dur *= np.array([f if key in n else 1.0 for n in names])
    watts = np.array([KERNELS[n][1] for n in names])
    phase = [KERNELS[n][2] for n in names]
    fwd = [i for i, p in enumerate(phase) if p == "fwd"]
    bwd = [i for i, p in enumerate(phase) if p == "bwd"]
    opt = [i for i, p in enumerate(phase) if p == "opt"]
    S: list[np.ndarray] = []
    E: list[np.ndarray] = []
    N: list[np.ndarray] = []
    labels: list[str] = []
    spans: list[tuple[int, int, dict[str, int]]] = []
    t = int(t0_ns)
    end = t0_ns + int(seconds * 1e9)
    step = 0
    win_start = t
    while True:
        frac = (t - t0_ns) / max(end - t0_ns, 1)
        scale = 1.0 if frac < 0.5 else 1.6  # batch size grows halfway: longer kernels
        evaluating = 0.75 <= frac < 0.85  # an evaluation phase: forward only
        # Each step differs (sequence length, optional ops, how many layers run the
        # attention path): the mix of kernel names varies, which is what lets the
        # per-name regression tell the names apart.
        seq: list[int] = []
        for _ in range(int(rng.integers(3, 9))):
            layer = [fwd[1], fwd[0]]
            if rng.random() < 0.6:
                layer += [fwd[4]] if rng.random() < 0.5 else [fwd[2], fwd[0]]
            if rng.random() < 0.7:
                layer += [fwd[3]] * int(rng.integers(1, 4))
            seq += layer
        if not evaluating:
            for _ in range(int(rng.integers(2, 8))):
                layer = [bwd[0]] * int(rng.integers(1, 3)) + [bwd[1]] * int(rng.integers(0, 3))
                if rng.random() < 0.5:
                    layer.append(bwd[2])
                seq += layer
            seq += opt if rng.random() < 0.8 else opt[:1]
        d = (dur[seq] * scale * rng.lognormal(0.0, 0.15, len(seq))).astype(np.int64)
        d = np.clip(d, 20_000, 5_000_000)
        gaps = rng.integers(3_000, 25_000, len(seq))  # launch gaps on one stream
        st = t + np.concatenate([[0], np.cumsum(d + gaps)[:-1]])
        step_end = int(st[-1] + d[-1])
        if step_end > end:
            break
        S.append(st)
        E.append(st + d)
        N.append(np.asarray(seq))
        labels.append(("eval " if evaluating else "step ") + str(step + 1))
        batch = int(BATCH * scale)
        # A step's window opens where the previous one closed: it holds the data loading
        # before its kernels, as `with window("step")` around the whole loop body would.
        spans.append((win_start, step_end, {"tokens": batch * SEQ_LEN, "samples": batch}))
        win_start = step_end
        step += 1
        t = step_end + int(rng.integers(8_000_000, 30_000_000))  # data loading: the GPU idles
    start, stop, nid = np.concatenate(S), np.concatenate(E), np.concatenate(N).astype(np.int32)
    kernel_w = watts[nid] * np.maximum(rng.normal(1.0, 0.05, nid.size), 0.0)
    return {
        "names": names, "start": start, "end": stop, "name_id": nid, "watts": kernel_w,
        "steps": [(label, a, b) for label, (a, b, _) in zip(labels, spans, strict=True)],
        "work": [w for _, _, w in spans],
    }


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    idle_w = 70.0
    # An A100-like sensor: counter and instant power every 20 ms, power averaged over 10 ms.
    with SimGPU(update_period_s=0.02, avg_window_s=0.01, idle_w=idle_w,
                names=["NVIDIA A100-SXM4-80GB (simulated)"]) as sim:
        t0 = monotonic_ns() + 400_000_000
        plan = schedule(t0, args.seconds, rng)
        sim.add_segments(plan["start"], plan["end"], plan["watts"])
        print(f"jouletrace demo: simulating {len(plan['start'])} kernel launches of {len(plan['names'])} names "
              f"in {len(plan['steps'])} training steps over {args.seconds:g} s; sampling at {args.rate:g} Hz ...")
        with Sampler("sim", rate_hz=args.rate, sim=sim) as s:
            time.sleep(max(0.0, (int(plan["end"].max()) - monotonic_ns()) * 1e-9) + 0.3)
        rec = s.recording()
        t_run = (int(plan["start"][0]) - 50_000_000, int(plan["end"][-1]) + 50_000_000)
        rec.metadata["command"] = ["jouletrace", "demo"]
        rec.metadata["exit_code"] = 0
        rec.metadata["windows"] = [{"name": "command", "t0_ns": t_run[0], "t1_ns": t_run[1]}] + [
            {"name": n, "t0_ns": a, "t1_ns": b, "work": w} for (n, a, b), w in zip(plan["steps"], plan["work"], strict=True)
        ]
        rec_path = rec.save(out / "demo.npz")

        # The profiler trace a user would have: the kernels in epoch time, PyTorch-profiler JSON.
        epoch = rec.to_epoch_ns(plan["start"])
        table = traces.KernelTable(epoch, rec.to_epoch_ns(plan["end"]), np.zeros(epoch.size, np.int32),
                                   plan["name_id"], plan["names"], stream=np.full(epoch.size, 7),
                                   correlation=np.arange(epoch.size, dtype=np.int64) + 1)
        trace_path = out / "demo-trace.json.gz"
        write_kineto_json(trace_path, table, base_time_ns=int(epoch.min()) // 10**9 * 10**9, gz=True)

        # 1. The report table (what `jouletrace report demo.npz` prints).
        print(format_table([summarize(rec, rec_path)]))

        # 2. Energy per training step: one vectorised call over every window.
        names = [n for n, _, _ in plan["steps"]]
        a = np.array([x for _, x, _ in plan["steps"]])
        b = np.array([x for _, _, x in plan["steps"]])
        we = rec.energies(a, b)
        e, u = we.energy_j["gpu0"], we.uncertainty_j["gpu0"]
        truth = sim.true_energy(a, b)
        print(f" Energy per step ({len(names)} windows; truth from the simulation):")
        print(f"   {'window':<9} {'duration':>9} {'measured J':>11} {'± bound':>9} {'true J':>9}")
        show = list(range(min(3, len(names)))) + [i for i, n in enumerate(names) if n.startswith("eval")][:1] + [
            len(names) - 1]
        for i in dict.fromkeys(show):
            print(f"   {names[i]:<9} {(b[i] - a[i]) / 1e9:8.3f}s {e[i]:11.2f} {u[i]:9.2f} {truth[i]:9.2f}")
        covered = np.mean(np.abs(e - truth) <= u)
        print(f"   error within the bound in {covered:.0%} of the {len(names)} steps; mean |error| "
              f"{np.mean(np.abs(e - truth)):.2f} J on steps of {np.mean(truth):.1f} J on average\n")

        # 3. Energy per kernel name (what `jouletrace attribute demo.npz --trace demo-trace.json.gz` prints).
        kernels = traces.load(trace_path)
        result = attribute(rec, kernels, level=args.level, bootstrap=2000)
        rows = attribute_cmd.rows(result)
        print(" Energy per kernel name:")
        print(attribute_cmd.format_text(result, rows, top=len(rows)))
        # The simulation's truth, under the documented rule (a name's energy: the GPU's
        # power while it runs, idle included).
        dur_s = (plan["end"] - plan["start"]) * 1e-9
        true_total = np.bincount(plan["name_id"], weights=(plan["watts"] + idle_w) * dur_s, minlength=len(plan["names"]))
        print(f"\n   kernel name                                    statistical J   true J   error  truth in {100 * args.level:g}% CI")
        misses = 0
        for r in rows:
            i = plan["names"].index(r["name"])
            st = r["statistical"]
            est = st["total_energy_j"]
            inside = st["ci_low_j"] <= true_total[i] <= st["ci_high_j"]
            verdict = "yes" if inside else ("no" if st["resolved"] else "no (unresolved)")
            misses += int(st["resolved"] and not inside)
            print(f"   {attribute_cmd._short(r['name']):<44} {est:13.2f} {true_total[i]:9.2f} "
                  f"{(est - true_total[i]) / true_total[i]:+7.1%}  {verdict:>11}")
        n_res = sum(r["statistical"]["resolved"] for r in rows)
        print(f"   {n_res} of {len(rows)} names resolved; the truth is inside the interval of "
              f"{n_res - misses} of them ({100 * args.level:g} % intervals); unresolved names say why above\n")

        # 4. Files: a plot and a Perfetto timeline.
        print()
        try:
            plot([rec], str(out / "demo.png"))
            print(f"wrote {out / 'demo.png'} (power timeline, steps shaded)")
        except Exception as exc:  # noqa: BLE001  (matplotlib is optional)
            print(f"no plot: {exc}")
        merge_kineto(trace_path, out / "demo-perfetto.json.gz", rec, kernels=kernels, alignment=result.alignment,
                     launches=result.launches, names=result.names)
        print(f"wrote {out / 'demo-perfetto.json.gz'} (open it in https://ui.perfetto.dev)")
        print(f"wrote {rec_path} and {trace_path}: try `jouletrace report {rec_path}` and "
              f"`jouletrace attribute {rec_path} --trace {trace_path}`")
        truth_a = _true_per_token(sim, plan)
    # 5. A second model: the same loop in a cheaper configuration, then `compare` of the two.
    seconds_b = max(3.0, args.seconds / 3)
    print(f"\n Second run: the same training loop with faster matmul and attention kernels "
          f"(mixed precision), {seconds_b:g} s ...")
    b_rec, b_trace, truth_b = _record(out / "demo-cheaper", seconds_b, args.rate, np.random.default_rng(args.seed + 100),
                                      idle_w, speed=CHEAPER)
    doc = compare([Run(jouletrace_load(rec_path), traces.load(trace_path), label="demo", path=rec_path,
                       trace_path=str(trace_path)),
                   Run(jouletrace_load(b_rec), traces.load(b_trace), label="demo-cheaper", path=b_rec,
                       trace_path=str(b_trace))],
                  projection={"rate_per_s": 1e4, "price_per_kwh": 0.15, "currency": "USD", "region": "WORLD"})
    print(" Compare (what `jouletrace compare demo.npz:demo-trace.json.gz demo-cheaper.npz:demo-cheaper-trace.json.gz "
          "--rate 1e4/s --price 0.15 --region WORLD` prints):")
    print(format_comparison(doc))
    ratio = doc["runs"][1]["ratio"]["value"]
    true_ratio = truth_b / truth_a
    print(f"\n   energy per token, cheaper / baseline: measured {ratio:.4f}, truth {true_ratio:.4f} "
          f"(error {(ratio - true_ratio) / true_ratio:+.2%}; truth from the simulation)")
    write_bytes(str(out / "demo-compare.html"), render(doc).encode("utf-8"))
    print(f"wrote {out / 'demo-compare.html'} (the comparison as a self-contained page)")
    if os.environ.get("JOULETRACE_DEMO_STRICT"):
        return 0 if covered >= 0.9 and misses == 0 and abs(ratio / true_ratio - 1) < 0.02 else 1
    return 0


def _true_per_token(sim: SimGPU, plan: Schedule) -> float:
    a = np.array([x for _, x, _ in plan["steps"]])
    b = np.array([x for _, _, x in plan["steps"]])
    return float(np.sum(sim.true_energy(a, b))) / sum(w["tokens"] for w in plan["work"])


def _record(stem: Path, seconds: float, rate: float, rng: np.random.Generator, idle_w: float,
            speed: dict[str, float] | None = None) -> tuple[str, Path, float]:
    """One simulated run: the recording (windows with work) and its trace; the true J per token."""
    with SimGPU(update_period_s=0.02, avg_window_s=0.01, idle_w=idle_w,
                names=["NVIDIA A100-SXM4-80GB (simulated)"]) as sim:
        t0 = monotonic_ns() + 300_000_000
        plan = schedule(t0, seconds, rng, speed=speed)
        sim.add_segments(plan["start"], plan["end"], plan["watts"])
        with Sampler("sim", rate_hz=rate, sim=sim) as s:
            time.sleep(max(0.0, (int(plan["end"].max()) - monotonic_ns()) * 1e-9) + 0.3)
        rec = s.recording()
        rec.metadata["windows"] = [
            {"name": n, "t0_ns": a, "t1_ns": b, "work": w} for (n, a, b), w in zip(plan["steps"], plan["work"], strict=True)]
        path = rec.save(str(stem) + ".npz")
        epoch = rec.to_epoch_ns(plan["start"])
        table = traces.KernelTable(epoch, rec.to_epoch_ns(plan["end"]), np.zeros(epoch.size, np.int32),
                                   plan["name_id"], plan["names"], stream=np.full(epoch.size, 7),
                                   correlation=np.arange(epoch.size, dtype=np.int64) + 1)
        trace = Path(str(stem) + "-trace.json.gz")
        write_kineto_json(trace, table, base_time_ns=int(epoch.min()) // 10**9 * 10**9, gz=True)
        return path, trace, _true_per_token(sim, plan)
