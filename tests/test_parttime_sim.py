"""The simulated GPU's part-time energy counter and live load (real time, through the real sampler)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import jouletrace
from jouletrace import _core
from jouletrace.testing.waiting import wait_for_reads


@pytest.mark.parametrize("counter", ["full", "part_time"])
def test_native_counter_matches_python_model_exactly(make_sim, now_ns, counter):
    """Schedule and live segments: the library and ``sensor_energy_j`` agree to the mJ, both kinds."""
    sim = make_sim(update_period_s=0.004, avg_window_s=0.001, offset_mj=7_000, counter=counter, phase_ns=123_457)
    rng = np.random.default_rng(3)
    st = now_ns + np.sort(rng.integers(0, 250_000_000, 80))
    sim.add_segments(st, st + rng.integers(10_000, 6_000_000, 80), rng.uniform(1, 500, 80))
    with jouletrace.Sampler("sim", rate_hz=2000, sim=sim) as s:
        # Live segments decided while the sampler runs, each appended before it starts: the first
        # 100 ms ahead, so that this thread losing the CPU (a loaded machine) cannot append a segment
        # after the sampler has read past its start (the native counter would miss it).
        t = _core.monotonic_ns() + 100_000_000
        for _ in range(60):
            d = int(rng.integers(50_000, 3_000_000))
            sim.live_segment(t, t + d, float(rng.uniform(10, 300)))
            t += d + int(rng.integers(0, 2_000_000))
        time.sleep(max(0.3, (t - _core.monotonic_ns()) * 1e-9 + 0.02))
        wait_for_reads(s, 200)
    rec = s.recording()
    v = rec["gpu0.energy_j"]
    same_update = sim.last_update_ns(rec.t_before_ns) == sim.last_update_ns(rec.t_after_ns)
    assert same_update.sum() > 0.5 * len(rec)
    np.testing.assert_array_equal(np.rint(v[same_update] * 1000),
                                  np.rint(sim.sensor_energy_j(rec.t_before_ns[same_update]) * 1000))


def test_part_time_counter_counts_only_the_averaging_window(make_sim):
    """A pulse outside the window is invisible; one inside counts P/W times over (hand computation)."""
    p, w = 100_000_000, 25_000_000
    sim = make_sim(update_period_s=0.1, avg_window_s=0.025, idle_w=10.0, counter="part_time", load_ns=0)
    base = 50 * p
    sim.add_segment(base + 10_000_000, base + 20_000_000, 100.0)  # early in the period: unseen
    sim.add_segment(base + p + 80_000_000, base + p + 85_000_000, 100.0)  # in the last 25 ms: seen
    e = sim.sensor_energy_j([base, base + p, base + 2 * p])
    assert e[1] - e[0] == pytest.approx(10.0 * 0.1, abs=1e-3)
    assert e[2] - e[1] == pytest.approx(10.0 * 0.1 + 100.0 * 0.005 * p / w, abs=1e-3)
    assert sim.true_energy(base, base + 2 * p) == pytest.approx(2.0 + 1.0 + 0.5)


def test_live_segments_follow_each_other(make_sim):
    sim = make_sim(idle_w=0.0)
    assert sim.live_segment(1_000, 2_000, 5.0) == (1_000, 2_000)
    assert sim.live_segment(1_500, 3_000, 5.0) == (2_000, 3_000)  # clipped to the previous end
    assert sim.live_segment(2_500, 2_900, 5.0) == (3_000, 3_000)  # nothing left
    assert sim.true_energy(0, 10_000) == pytest.approx(5.0 * 2_000e-9)
    np.testing.assert_array_equal(sim.true_power([999, 1_000, 2_999, 3_000]), [0.0, 5.0, 5.0, 0.0])
