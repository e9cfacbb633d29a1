"""Window bounds on full-period, part-time and unknown counters (synthetic recordings for the maths,
one real-time run through the real sampler)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import jouletrace
from jouletrace import _core
from jouletrace.sampling.sim import SimGPU
from jouletrace.testing.loads import random_load, synthetic_recording
from jouletrace.testing.stats import coverage_floor

T0 = 10**12
LENGTHS_S = (0.005, 0.02, 0.1, 1.0, 10.0)


@pytest.fixture(scope="module")
def runs():
    """40 s of 1–50 ms segments under a 100 ms sensor, per counter kind; synthetic 1 kHz polling."""
    out = {}
    for counter in ("full", "part_time"):
        rng = np.random.default_rng(11 if counter == "full" else 12)
        sim = SimGPU(update_period_s=0.1, avg_window_s=0.025, idle_w=60.0, counter=counter,
                     phase_ns=int(rng.integers(0, 100_000_000)))
        random_load(sim, T0, T0 + 42 * 10**9, rng)
        out[counter] = (sim, rng)
    yield out
    for sim, _ in out.values():
        sim.close()


@pytest.mark.parametrize(("counter", "stated"), [("full", True), ("part_time", True), ("part_time", False)])
def test_bound_covers_truth_per_window_length(runs, counter, stated):
    sim, rng = runs[counter]
    rec = synthetic_recording(sim, T0 - 10**9, T0 + 43 * 10**9, rng, state_model=stated)
    model = rec.sensor_model("gpu0")
    assert (model.counter, model.source) == ((counter, "simulated") if stated else ("unknown", "published"))
    for length in LENGTHS_S:
        a = T0 + rng.integers(0, int((40 - length) * 1e9), 300)
        b = a + int(length * 1e9)
        we = rec.energies(a, b)
        assert we.sensor_model["gpu0"]["counter"] == model.counter
        err = np.abs(we.energy_j["gpu0"] - sim.true_energy(a, b))
        coverage = np.mean(err <= we.uncertainty_j["gpu0"])
        assert coverage >= 0.95, (counter, stated, length, coverage)
        if counter == "full" and length >= 1.0:
            # Random windows: the independent edges are chosen, and the bound is within a few
            # times the error's 90th percentile (today's aligned default was ~4x looser).
            assert we.edges["gpu0"] == "independent"
            rel = we.uncertainty_j["gpu0"] / sim.true_energy(a, b)
            assert np.median(rel) < 2.5 * np.quantile(err / sim.true_energy(a, b), 0.9)


def test_part_time_bound_is_needed_and_grows_with_the_window(runs):
    """Bounded as full-period, a part-time counter's 1 s and 10 s windows are not covered."""
    sim, rng = runs["part_time"]
    rec = synthetic_recording(sim, T0 - 10**9, T0 + 43 * 10**9, rng)
    a = T0 + rng.integers(0, int(30e9), 300)
    b = a + 10**10
    truth = sim.true_energy(a, b)
    rec.set_sensor_model("gpu0", "full")
    wrong = rec.energies(a, b)
    assert wrong.sensor_model["gpu0"]["source"] == "user"
    assert np.mean(np.abs(wrong.energy_j["gpu0"] - truth) <= wrong.uncertainty_j["gpu0"]) < 0.8
    rec.set_sensor_model("gpu0", "part_time", update_period_ns=1e8, avg_window_ns=2.5e7)
    right = rec.energies(a, b)
    assert np.mean(np.abs(right.energy_j["gpu0"] - truth) <= right.uncertainty_j["gpu0"]) >= 0.95
    short = rec.energies(a, a + 10**9)
    assert np.median(right.uncertainty_j["gpu0"]) > 2 * np.median(short.uncertainty_j["gpu0"])


def test_auto_edges_choose_aligned_for_windows_locked_to_the_sensor(make_sim):
    """Steps of a load repeating at the sensor period (the case the aligned bound exists for)."""
    sim = make_sim(update_period_s=0.1, idle_w=60.0)
    starts = T0 + np.arange(300) * 100_000_000
    sim.add_segments(starts, starts + 70_000_000, 300.0)
    rec = synthetic_recording(sim, T0 - 10**9, T0 + 31 * 10**9, np.random.default_rng(1))
    a = starts[10:250:10]
    b = a + 10 * 100_000_000 + 70_000_000
    we = rec.energies(np.tile(a, 1), np.tile(b, 1))
    assert we.edges["gpu0"] == "aligned" and "phase" in we.edges_reason["gpu0"]
    assert np.all(np.abs(we.energy_j["gpu0"] - sim.true_energy(a, b)) <= we.uncertainty_j["gpu0"])
    m = rec.energy(int(a[0]), int(b[0]))
    assert m.edges["gpu0"] == "aligned" and m.sensor_model["gpu0"]["counter"] == "full"


def test_real_time_part_time_counter_through_the_sampler(make_sim):
    """Real time: a part-time counter read by the sampler thread at 1 kHz, 4 s of random load."""
    sim = make_sim(update_period_s=0.05, avg_window_s=0.0125, idle_w=60.0, counter="part_time")
    rng = np.random.default_rng(5)
    now = _core.monotonic_ns()
    random_load(sim, now + 300_000_000, now + 4_600_000_000, rng)
    with jouletrace.Sampler("sim", rate_hz=1000, sim=sim) as s:
        time.sleep(4.8)
    rec = s.recording()
    assert rec.sensor_model("gpu0").counter == "part_time"
    # The instant power sees the same quarter of each period as the counter: their agreement is
    # no evidence of a full-period average, and characterize() must not claim one.
    power = rec.characterize(refresh=True)["gpu0.power_w"]
    assert power["averaged"] is not True, power
    t_lo, t_hi = now + 400_000_000, now + 4_500_000_000
    checked = 0
    for length in (0.02, 0.1, 1.0):
        a = rng.integers(t_lo, t_hi - int(length * 1e9), 200)
        b = a + int(length * 1e9)
        we = rec.energies(a, b)
        err = np.abs(we.energy_j["gpu0"] - sim.true_energy(a, b))
        # One real-time run's 200 windows: a bound covering 95 % covers fewer than 88.5 % of them in
        # 1 run of 10^4 (binomial), while ">= 95 %" would fail ~4 runs in 10 of such a bound. Measured:
        # 98.5-100 % per length over 10 loaded runs (the rate itself is bench's to report).
        coverage = float(np.mean(err <= we.uncertainty_j["gpu0"]))
        assert coverage >= coverage_floor(a.size, 0.95), (length, coverage)
        checked += a.size
    assert checked == 600
