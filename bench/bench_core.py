"""pytest-benchmark: ring push, zero-copy hand-off, and a short run of the timing comparison.

    pytest bench/bench_core.py                     # timings
    python bench/sampler_timing.py --seconds 3     # the sampler timing table of RESULTS.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import jouletrace
from jouletrace import _core
from jouletrace.sampling.sim import SimGPU

sys.path.insert(0, str(Path(__file__).resolve().parent))


def test_ring_push_ns(benchmark):
    """ns per record pushed (claim, fill 4 channels, publish) with a consumer thread popping."""
    result = benchmark.pedantic(lambda: _core.bench.ring_push(2_000_000, 65536, 4), rounds=3, iterations=1)
    benchmark.extra_info["ns_per_push"] = result["ns_per_push"]
    assert result["records"] == 2_000_000


@pytest.mark.parametrize("n", [1_000, 1_000_000])
def test_handoff_is_constant_time(benchmark, n):
    """recording() for 1 k and 1 M stored records: the same cost (views, no copy)."""
    with SimGPU() as sim:
        s = jouletrace.Sampler("sim", sim=sim, ring_capacity=65536)
        s._native.inject_for_test(n)
        rec = benchmark(s.recording)
        assert len(rec) == n


def test_sampler_timing_script_runs():
    import sampler_timing

    res = sampler_timing.main(["--seconds", "0.3"])
    assert len(res["timing"]) == 4


@pytest.mark.realtime
def test_device_check_rehearsal_on_sim():
    """bench/device_check.py end to end on the simulated GPU, so the hardware script cannot rot."""
    import device_check

    res = device_check.main(["--sim", "--seconds", "0.5"])
    idle, load = res["phases"]
    truth_idle, truth_load = res["phases_truth_j"]
    # The counter difference between the phase edges is within one 100 ms update of the truth.
    assert abs(idle["jouletrace_counter_j"] - truth_idle) <= 70.0 * 0.1 + 0.01
    assert abs(load["jouletrace_counter_j"] - truth_load) <= 620.0 * 0.1 * 2 + 0.01
    assert 90 <= res["energy_update_period"]["median_ms"] <= 110
    for phase, truth in zip(res["phases"], res["phases_truth_j"], strict=True):
        assert abs(phase["jouletrace_window_j"] - truth) <= phase["jouletrace_window_bound_j"]
    # The calibration recovers the simulated sensor (100 ms updates, 25 ms window, full-period).
    cal = res["calibration"]
    assert "error" not in cal, cal
    assert cal["model"]["counter"] == "full"
    assert abs(cal["model"]["update_period_ns"] - 100e6) <= 1e5
    assert abs(cal["model"]["avg_window_ns"] - 25e6) <= 1e5
