"""Hardware check on a machine with a real NVIDIA GPU (self-contained).

Records 10 s idle and 10 s under a matmul load (torch, if installed) at 1 kHz
through jouletrace, then prints:

* NVML call latency as jouletrace saw it (t_after - t_before of each read);
* the observed update period of the energy counter and of instant power
  (time between value changes);
* the sensor calibration (``jouletrace.calibrate``: update period, averaging
  window, whether the energy counter is full-period or part-time);
* per phase, energy four ways: jouletrace's window energy (``Recording.energy``:
  located counter updates, interpolation, its bound), the counter channel read
  by plain interpolation at the phase edges, jouletrace's power channel
  integrated (trapezoid), and pynvml's own nvmlDeviceGetTotalEnergyConsumption
  read at both ends.

    python bench/device_check.py [--gpu 0] [--seconds 10] [--rate 1000] [--out FILE.json]
    python bench/device_check.py --sim --seconds 1      # rehearsal on the simulated GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

import numpy as np

import jouletrace


def _changes(t_ns: np.ndarray, v: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(v)
    t, v = t_ns[ok], v[ok]
    return t[1:][np.diff(v) != 0]


def _period_ms(t_ns: np.ndarray, v: np.ndarray) -> dict[str, float | None]:
    ch = _changes(t_ns, v)
    if len(ch) < 3:
        return {"median_ms": None, "p10_ms": None, "p90_ms": None, "changes": int(len(ch))}
    d = np.diff(ch) / 1e6
    return {
        "median_ms": float(np.median(d)),
        "p10_ms": float(np.percentile(d, 10)),
        "p90_ms": float(np.percentile(d, 90)),
        "changes": int(len(ch)),
    }


def _trapezoid(t_ns: np.ndarray, w: np.ndarray, t0: int, t1: int) -> float:
    ok = ~np.isnan(w)
    t, w = t_ns[ok], w[ok]
    grid = np.concatenate([[t0], t[(t > t0) & (t < t1)], [t1]])
    vals = np.interp(grid, t, w)
    return float(np.sum((vals[1:] + vals[:-1]) / 2 * np.diff(grid)) * 1e-9)


def _counter_at(t_ns: np.ndarray, e: np.ndarray, t: int) -> float:
    ok = ~np.isnan(e)
    return float(np.interp(t, t_ns[ok], e[ok]))


class _Load:
    """A matmul loop on the GPU (torch), or nothing if torch/CUDA is missing."""

    def __init__(self, gpu: int) -> None:
        self.gpu = gpu
        self.available = False
        self.note = ""
        try:
            import torch

            if torch.cuda.is_available():
                self.torch = torch
                self.available = True
            else:
                self.note = "torch has no CUDA device"
        except ImportError:
            self.note = "torch not installed"

    def run(self, seconds: float) -> None:
        torch = self.torch
        dev = torch.device("cuda", self.gpu)
        a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(20):
                a @ b
            torch.cuda.synchronize(dev)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--sim", action="store_true", help="rehearse on the simulated GPU (no hardware)")
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args(argv)

    import pynvml

    sim = None
    opts: dict[str, Any] = {"gpus": [args.gpu]}
    if args.sim:
        from jouletrace.sampling.sim import SimGPU

        sim = SimGPU(gpus=args.gpu + 1, update_period_s=0.1, avg_window_s=0.025, idle_w=70.0)
        sim.use_in_pynvml()
        source = "sim"
        opts["sim"] = sim
    else:
        source = "nvml"
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(args.gpu)

    load = _Load(args.gpu) if not args.sim else None
    result: dict[str, Any] = {
        "host": platform.node(),
        "gpu": pynvml.nvmlDeviceGetName(h),
        "driver": pynvml.nvmlSystemGetDriverVersion(),
        "nvml": pynvml.nvmlSystemGetNVMLVersion(),
        "source": source,
        "rate_hz": args.rate,
    }
    phases: list[tuple[str, int, int, int, int]] = []
    with jouletrace.Sampler(source, rate_hz=args.rate, **opts) as s:
        for name in ("idle", "load"):
            e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
            t0 = time.monotonic_ns()
            if name == "load" and load is not None and load.available:
                load.run(args.seconds)
            elif name == "load" and sim is not None:  # the simulated load, from now on (live log)
                sim.live_segment(t0 + 1_000_000, t0 + 1_000_000 + int(args.seconds * 1e9), 550.0, gpu=args.gpu)
                time.sleep(args.seconds + 0.002)
            else:
                time.sleep(args.seconds + (0.5 if name == "idle" else 0.0))
            t1 = time.monotonic_ns()
            e1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
            phases.append((name, t0, t1, e0, e1))
            time.sleep(0.3)  # let the counter update that covers t1 land in the recording
    rec = s.recording()
    pynvml.nvmlShutdown()

    g = f"gpu{args.gpu}"
    lat = (rec.t_after_ns - rec.t_before_ns) / 1000.0
    iv = np.diff(rec.t_before_ns) / 1000.0
    result["samples"] = len(rec)
    result["dropped"] = rec.dropped
    result["missed_deadlines"] = rec.missed_deadlines
    result["feeds"] = {k: v for k, v in rec.metadata["device"].items() if ".feed" in k or ".note" in k}
    result["read_latency_us"] = {q: float(np.percentile(lat, p)) for q, p in (("p50", 50), ("p99", 99), ("max", 100))}
    result["interval_dev_us"] = {
        q: float(np.percentile(np.abs(iv - 1e6 / args.rate), p)) for q, p in (("p50", 50), ("p99", 99), ("max", 100))
    }
    result["energy_update_period"] = _period_ms(rec.t_ns, rec[f"{g}.energy_j"])
    pch = f"{g}.power_w" if f"{g}.power_w" in rec else f"{g}.power_avg_w"  # instant, else NVML's average
    if pch in rec:
        result["power_update_period"] = _period_ms(rec.t_ns, rec[pch])
    result["phases"] = []
    for name, t0, t1, e0, e1 in phases:
        counter = _counter_at(rec.t_ns, rec[f"{g}.energy_j"], t1) - _counter_at(rec.t_ns, rec[f"{g}.energy_j"], t0)
        power = _trapezoid(rec.t_ns, rec[pch], t0, t1) if pch in rec else None
        window = rec.energy(t0, t1, [g])  # jouletrace's own method: located updates, bound
        result["phases"].append(
            {
                "phase": name,
                "seconds": (t1 - t0) / 1e9,
                "pynvml_counter_j": (e1 - e0) / 1000.0,
                "jouletrace_window_j": window.energy_j[g],
                "jouletrace_window_bound_j": window.uncertainty_j[g],
                "jouletrace_window_flags": list(window.flags),
                "jouletrace_counter_j": counter,
                "jouletrace_power_integral_j": power,
                "load": (load.available if load else "simulated") if name == "load" else None,
            }
        )
    if load is not None and not load.available:
        result["load_note"] = load.note
    # The sensor calibration (issue 10): update period, averaging window, full-period or
    # part-time counter, found by pulses at known phases against the updates.
    try:
        cal = jouletrace.calibrate(sim=sim, gpu=args.gpu) if sim is not None else jouletrace.calibrate(gpu=args.gpu)
        result["calibration"] = json.loads(json.dumps(
            {"summary": str(cal), "model": cal.model.to_dict(), "uuid": cal.uuid, "evidence": cal.evidence},
            default=lambda x: x.item() if hasattr(x, "item") else (x.tolist() if hasattr(x, "tolist") else str(x))))
    except jouletrace.JouletraceError as e:  # no torch/cupy for the load, or the counter did not update
        result["calibration"] = {"error": str(e)}
    if sim is not None:
        result["phases_truth_j"] = [float(sim.true_energy(t0, t1, gpu=args.gpu)) for _, t0, t1, _, _ in phases]
        sim.close()

    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
