"""Sampler timing and CPU cost, side by side with a Python thread polling NVML.

Both read the same simulated GPU in this process: jouletrace through its native
sampler thread, the baseline through pynvml from a Python thread with an
absolute-deadline loop (what most energy tools do). Each runs at 1 kHz and
10 kHz with the main thread idle, then busy in pure-Python code.

Reported: p50, p99 and max of |interval - period| between consecutive reads
(µs), and the sampler thread's CPU time per second at 1 kHz (from
/proc/self/task/<tid>/schedstat), split into time inside source reads and
the overhead around them, next to the floor: a native thread that only sleeps
on the same deadlines (the wake-up itself costs CPU, most of all in a VM).

    python bench/sampler_timing.py [--seconds 3] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from collections.abc import Callable

import numpy as np

import jouletrace
from jouletrace import _core
from jouletrace.sampling.sim import SimGPU


def _stats(t_ns: np.ndarray, period_ns: int) -> tuple[float, float, float, int]:
    dev = np.abs(np.diff(t_ns) - period_ns) / 1000.0
    return float(np.percentile(dev, 50)), float(np.percentile(dev, 99)), float(dev.max()), len(t_ns)


def _busy(stop: threading.Event) -> None:
    """Pure-Python work on the main thread: holds the GIL except at switch intervals."""
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x += i * i % 7


def _with_main(load: bool, seconds: float, work: Callable[[], None]) -> None:
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    if load:
        _busy(stop)
    else:
        stop.wait()
    work()


def jouletrace_run(sim: SimGPU, rate: float, seconds: float, load: bool) -> np.ndarray:
    s = jouletrace.Sampler("sim", rate_hz=rate, sim=sim, timestamps=False)
    s.start()
    _with_main(load, seconds, s.stop)
    return np.asarray(s.recording().t_before_ns)


def pynvml_run(sim: SimGPU, rate: float, seconds: float, load: bool) -> np.ndarray:
    import pynvml

    sim.use_in_pynvml()  # the same simulated GPU
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    period = int(1e9 / rate)
    stamps: list[int] = []
    done = threading.Event()

    def poll() -> None:
        deadline = time.monotonic_ns()
        while not done.is_set():
            now = time.monotonic_ns()
            if deadline > now:
                time.sleep((deadline - now) / 1e9)
            stamps.append(time.monotonic_ns())
            pynvml.nvmlDeviceGetFieldValues(h, [83, 186])
            deadline += period

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    _with_main(load, seconds, done.set)
    t.join()
    pynvml.nvmlShutdown()
    return np.asarray(stamps, dtype=np.int64)


def _thread_cpu_ns(name: str) -> int:
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                return int(f.read().split()[0])
        except OSError:
            continue
    return -1


def cpu_cost(sim: SimGPU, rate: float, seconds: float) -> dict[str, float]:
    s = jouletrace.Sampler("sim", rate_hz=rate, sim=sim, timestamps=False)
    s.start()
    time.sleep(0.2)
    c0 = _thread_cpu_ns("jt-sampler")
    d0 = _thread_cpu_ns("jt-drain")
    r0 = len(s.recording())
    t0 = time.monotonic_ns()
    time.sleep(seconds)
    c1 = _thread_cpu_ns("jt-sampler")
    d1 = _thread_cpu_ns("jt-drain")
    t1 = time.monotonic_ns()
    rec = s.recording()
    s.stop()
    reads = (rec.t_after_ns[r0:] - rec.t_before_ns[r0:]).sum()
    wall = t1 - t0
    floor = _core.bench.sleep_loop_cpu_pct(rate, max(seconds, 1.0))
    return {
        "sleep_floor_pct": floor,
        "beyond_floor_pct": 100.0 * ((c1 - c0) - reads) / wall - floor,
        "sampler_pct": 100.0 * (c1 - c0) / wall,
        "reads_pct": 100.0 * reads / wall,
        "overhead_pct": 100.0 * ((c1 - c0) - reads) / wall,
        "drain_pct": 100.0 * (d1 - d0) / wall,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    results: dict[str, object] = {}
    with SimGPU(update_period_s=0.001) as sim:
        rows = []
        for rate in (1000.0, 10000.0):
            for load in (False, True):
                period = int(1e9 / rate)
                j = _stats(jouletrace_run(sim, rate, args.seconds, load), period)
                p = _stats(pynvml_run(sim, rate, args.seconds, load), period)
                rows.append((rate, load, j, p))
        cpu = cpu_cost(sim, 1000.0, max(args.seconds, 1.0))
    results["timing"] = rows
    results["cpu"] = cpu
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}")
    print("|interval - period| in µs: p50 / p99 / max (reads)")
    hdr = "| rate | main thread | jouletrace p50 | p99 | max | pynvml thread p50 | p99 | max | p99 ratio |"
    print(hdr)
    print("|" + "---|" * 9)
    for rate, load, j, p in rows:
        ratio = p[1] / j[1] if j[1] > 0 else float("inf")
        print(
            f"| {rate / 1000:g} kHz | {'busy' if load else 'idle'} | {j[0]:.1f} | {j[1]:.1f} | {j[2]:.0f} | "
            f"{p[0]:.1f} | {p[1]:.1f} | {p[2]:.0f} | {ratio:.0f}x |"
        )
    print(
        f"sampler thread CPU at 1 kHz: {cpu['sampler_pct']:.2f} % of a core "
        f"(inside source reads {cpu['reads_pct']:.2f} %, overhead {cpu['overhead_pct']:.2f} %); "
        f"drain thread {cpu['drain_pct']:.2f} %"
    )
    print(
        f"  a thread that only sleeps on the same 1 kHz deadlines costs {cpu['sleep_floor_pct']:.2f} % here; "
        f"jouletrace beyond that floor and the reads: {cpu['beyond_floor_pct']:.2f} %"
    )
    return results


if __name__ == "__main__":
    main()
