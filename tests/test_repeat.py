"""measure(): short calls on the simulated GPU, in real time (the callable appends a live segment when it
runs and busy-waits its duration; the truth is the simulation's energy over the calls' own spans)."""

from __future__ import annotations

import numpy as np
import pytest

import jouletrace
from jouletrace.energy.repeat import InsufficientDataError
from jouletrace.testing.loads import live_call


@pytest.mark.parametrize(("counter", "d_ns"), [("full", 50_000), ("part_time", 5_000_000)])
def test_measure_per_call_energy_within_2_percent(make_sim, counter, d_ns):
    sim = make_sim(update_period_s=0.1, avg_window_s=0.025, counter=counter, idle_w=60.0)
    r = jouletrace.measure(live_call(sim, d_ns), sim=sim, keep_spans=True, seed=7, max_rel_ci=0.1)
    spans = r.call_spans_ns
    truth = float(np.mean(sim.true_energy(spans[:, 0], spans[:, 1])))
    assert r.kind == "statistical" and r.sensor_model["counter"] == counter
    assert r.calls == spans.shape[0] and r.trials == 5
    assert abs(r.energy_j - truth) <= 0.02 * truth
    assert abs(r.energy_j - truth) <= r.energy_ci_j
    assert r.idle_power_w == pytest.approx(60.0, rel=0.01)


def test_measure_refuses_an_unsupported_number(make_sim):
    sim = make_sim(update_period_s=0.1, counter="part_time", idle_w=60.0)
    with pytest.raises(InsufficientDataError, match="wider than"):
        jouletrace.measure(live_call(sim, 2_000_000), sim=sim, trials=3, periods_per_trial=1, warmup_s=0.0,
                           max_rel_ci=1e-4, seed=1)
