"""Per-step overhead of the torch integration: a window that is also a record_function / NVTX range.

    python -m pytest bench/bench_torch.py          # pytest-benchmark timings
    python bench/bench_torch.py                    # the "Torch integration" table of RESULTS.md

Bar (issue 14): under 20 µs per step over a bare step. A "step" here is a tiny
CPU tensor op, so what is measured is the overhead itself; the Monitor samples
the simulated GPU at 1 kHz in the background, as in a training run. On a CPU
build of torch there is no NVTX (CUDA is not initialised), so the figure is the
window plus the record_function range; with CUDA, ``torch.cuda.nvtx`` push/pop
add about 1 µs each (not measured here).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
import jouletrace.torch as jt  # noqa: E402
from jouletrace.energy.monitor import Monitor  # noqa: E402
from jouletrace.sampling.sim import SimGPU  # noqa: E402

X = None


def _step() -> Any:
    return X.add_(1.0)  # type: ignore[union-attr]


def _bare() -> None:
    _step()


def _make(mon: Monitor) -> Any:
    def wrapped() -> None:
        with jt.window("step", mon, sync=False):
            _step()
        if len(mon._finished) > 10_000:  # noqa: SLF001  (keep the ended-window list bounded)
            mon.clear()

    return wrapped


@pytest.fixture(scope="module")
def monitor():  # type: ignore[no-untyped-def]
    global X
    X = torch.zeros(4)
    with SimGPU(update_period_s=0.01) as sim, Monitor(sim=sim, cpu=False, rate_hz=1000, wait_updates=0) as mon:
        yield mon


def test_bare_step(benchmark, monitor) -> None:  # type: ignore[no-untyped-def]
    benchmark(_bare)


def test_step_in_torch_window(benchmark, monitor) -> None:  # type: ignore[no-untyped-def]
    benchmark(_make(monitor))


def _per_call_us(fn: Any, n: int = 20000, repeats: int = 7) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def main() -> None:
    global X
    X = torch.zeros(4)
    with SimGPU(update_period_s=0.01) as sim, Monitor(sim=sim, cpu=False, rate_hz=1000, wait_updates=0) as mon:
        bare = _per_call_us(_bare)
        wrapped = _per_call_us(_make(mon))

        def plain() -> None:
            with mon.window("step"):
                _step()
            if len(mon._finished) > 10_000:  # noqa: SLF001
                mon.clear()

        window_only = _per_call_us(plain)
        rf = torch.autograd.profiler.record_function

        def rf_only() -> None:
            with rf("step"):
                _step()

        rf_us = _per_call_us(rf_only)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
            prof_us = _per_call_us(_make(mon), n=2000, repeats=3)
    print(f"torch {torch.__version__}; CUDA initialised: {torch.cuda.is_available() and torch.cuda.is_initialized()}")
    print("| step | µs per step (median of 7 × 20 000) | overhead over bare (µs) |")
    print("| --- | --- | --- |")
    for name, v in (("bare (x.add_(1) on a 4-element CPU tensor)", bare),
                    ("inside Monitor.window", window_only),
                    ("inside record_function only", rf_us),
                    ("inside jouletrace.torch.window, no profiler running (window only)", wrapped),
                    ("inside jouletrace.torch.window under torch.profiler (window + record_function)", prof_us)):
        print(f"| {name} | {v:.2f} | {v - bare:+.2f} |")


if __name__ == "__main__":
    main()
