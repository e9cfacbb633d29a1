"""measure(): short calls on the simulated GPU, in real time (the callable appends a live segment when it
runs and busy-waits its duration; the truth is the simulation's energy over the calls' own spans)."""

from __future__ import annotations

import numpy as np
import pytest

import jouletrace
from jouletrace.energy.repeat import InsufficientDataError, t_quantile
from jouletrace.testing.loads import live_call


@pytest.mark.realtime
@pytest.mark.parametrize(("counter", "d_ns", "trials"), [("full", 50_000, 5), ("part_time", 5_000_000, 10)])
def test_measure_per_call_energy_within_2_percent(make_sim, counter, d_ns, trials):
    """One real-time run. Its 95 % interval misses the truth in 1 run of 20 by design, so a single run
    is checked against the 99.9 % interval (a calibrated interval fails this 1 run in 1000); the rate
    at which the 95 % interval covers is measured over many runs by bench/bench_measure.py --coverage.
    Ten trials make the 2 % claim hold at the same odds for a part-time counter's 5 ms call (standard
    error ~0.4 %); a full counter's is exact to ~0.1 % in five (bench/RESULTS.md, 20 runs)."""
    sim = make_sim(update_period_s=0.1, avg_window_s=0.025, counter=counter, idle_w=60.0)
    r = jouletrace.measure(live_call(sim, d_ns), sim=sim, keep_spans=True, seed=7, max_rel_ci=0.1, trials=trials)
    spans = r.call_spans_ns
    truth = float(np.mean(sim.true_energy(spans[:, 0], spans[:, 1])))
    assert r.kind == "statistical" and r.sensor_model["counter"] == counter
    assert r.calls == spans.shape[0] and r.trials == trials and r.dof == trials - 1
    assert abs(r.energy_j - truth) <= 0.02 * truth
    lo, hi = r.interval(0.999)
    assert lo <= truth <= hi, (r, truth)
    assert r.interval(0.95) == pytest.approx((r.energy_j - r.energy_ci_j, r.energy_j + r.energy_ci_j), rel=1e-9)
    assert r.idle_power_w == pytest.approx(60.0, rel=0.01)


@pytest.mark.realtime
def test_measure_refuses_an_unsupported_number(make_sim):
    sim = make_sim(update_period_s=0.1, counter="part_time", idle_w=60.0)
    with pytest.raises(InsufficientDataError, match="wider than"):
        jouletrace.measure(live_call(sim, 2_000_000), sim=sim, trials=3, periods_per_trial=1, warmup_s=0.0,
                           max_rel_ci=1e-4, seed=1)


@pytest.mark.parametrize(("level", "dof", "table"), [(0.95, 1, 12.706), (0.95, 4, 2.776), (0.999, 4, 8.610),
                                                     (0.95, 9, 2.262), (0.99, 2, 9.925), (0.95, 500, 1.965)])
def test_t_quantile_matches_the_tables(level, dof, table):
    assert t_quantile(level, dof) == pytest.approx(table, abs=1e-3)


def test_t_quantile_refuses_bad_levels():
    with pytest.raises(jouletrace.errors.InvalidArgumentError, match="level"):
        t_quantile(1.0, 4)
    with pytest.raises(jouletrace.errors.InvalidArgumentError, match="dof"):
        t_quantile(0.95, 0)
