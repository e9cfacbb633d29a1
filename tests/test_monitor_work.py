"""Units of work on Monitor windows: given at either edge, checked, stored in the recording,
carried by the Measurement with its bound, and read back by `compare` end to end."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import jouletrace
from jouletrace.analysis.compare import Run, compare
from jouletrace.energy.monitor import Monitor
from jouletrace.errors import InvalidArgumentError


def _steps(mon: Monitor, n: int, tokens: int, seconds: float) -> list:
    """n steps of a loop: tokens known at the start in even steps, at the end in odd ones."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            with mon.window("step", work={"tokens": tokens, "samples": 2}) as m:
                time.sleep(seconds)
        else:
            mon.begin_window("step", work={"samples": 2})
            time.sleep(seconds)
            m = mon.end_window("step", work={"tokens": tokens})  # generated tokens: known at the end
        out.append(m)
    return out


def test_work_given_at_either_edge_is_stored_and_carried_with_its_bound(make_sim, now_ns, tmp_path):
    sim = make_sim(update_period_s=0.01, idle_w=50.0)
    sim.add_segment(now_ns, now_ns + 60_000_000_000, 150.0)
    with Monitor(sim=sim, cpu=False, rate_hz=1000) as mon:
        ms = _steps(mon, 6, 512, 0.06)
        m = mon.begin_window("extra")
        m.add_work(tokens=10)
        mon.end_measurement(m, work={"tokens": 5.5})
        mon.measurements()
        rec = mon.recording()
    for m in ms:
        assert m.work == {"tokens": 512.0, "samples": 2.0}
        p = m.per("tokens")
        assert p.energy_j == pytest.approx(m.total_j / 512) and p.bound_j == pytest.approx(m.total_uncertainty_j / 512)
        truth = sim.true_energy(m.t0_ns, m.t1_ns) / 512
        assert abs(p.energy_j - truth) <= p.bound_j
        assert m.energy_per("samples") == pytest.approx(m.total_j / 2)
    assert mon.measurements("extra")[0].work == {"tokens": 15.5}
    stored = [w for w in rec.metadata["windows"] if w["name"] == "step"]
    assert [w["work"] for w in stored] == [{"tokens": 512.0, "samples": 2.0}] * 6
    assert [(w["t0_ns"], w["t1_ns"]) for w in stored] == [(m.t0_ns, m.t1_ns) for m in ms]
    back = jouletrace.load(rec.save(tmp_path / "run.npz"))
    assert [w.get("work") for w in back.metadata["windows"]] == [w.get("work") for w in rec.metadata["windows"]]


@pytest.mark.parametrize("work, match", [
    ({"tokens": -1}, "finite number >= 0"),
    ({"tokens": float("nan")}, "finite number >= 0"),
    ({"tokens": float("inf")}, "finite number >= 0"),
    ({"tokens": True}, "must be a number"),
    ({"tokens": "512"}, "must be a number"),
    ({"": 3}, "non-empty string"),
    ({7: 3}, "non-empty string"),
])
def test_bad_work_is_refused_clearly_and_opens_or_closes_nothing(make_sim, work, match):
    sim = make_sim(update_period_s=0.01)
    with Monitor(sim=sim, cpu=False, rate_hz=1000) as mon:
        with pytest.raises(InvalidArgumentError, match=match):
            mon.begin_window("step", work=work)
        assert mon.open_windows() == []
        with pytest.raises(InvalidArgumentError, match=match):
            with mon.window("step", work=work):
                pass
        assert mon.open_windows() == []
        mon.begin_window("step")
        with pytest.raises(InvalidArgumentError, match=match):
            mon.end_window("step", work=work)
        assert mon.open_windows() == ["step"]  # still open: the caller can end it properly
        m = mon.end_window("step", work={"tokens": 3})
        if all(isinstance(k, str) and k for k in work):
            with pytest.raises(InvalidArgumentError, match=match):
                m.add_work(**work)
        assert m.work == {"tokens": 3.0}
        with pytest.raises(InvalidArgumentError, match="recorded no 'images'.*tokens"):
            m.per("images")
        assert math.isnan(m.energy_per("images"))


def test_module_level_window_takes_work(make_sim, now_ns):
    sim = make_sim(update_period_s=0.01, idle_w=40.0)
    sim.add_segment(now_ns, now_ns + 60_000_000_000, 160.0)
    jouletrace.configure(sim=sim, cpu=False, rate_hz=1000)
    try:
        with jouletrace.window("step", work={"tokens": 100}) as m:
            time.sleep(0.2)
            m.add_work(tokens=28)
        p = m.per("tokens")
        assert p.work == 128.0
        assert abs(p.energy_j - sim.true_energy(m.t0_ns, m.t1_ns) / 128) <= p.bound_j
    finally:
        jouletrace.configure()


def test_compare_reads_monitor_windows_end_to_end(make_sim, now_ns, tmp_path):
    """Two 'models' on the simulated GPU (150 W and 400 W while busy), steps of a Monitor with
    tokens, saved, loaded and compared: the per-token ratio's interval holds the truth."""
    paths, truths = [], []
    for k, watts in enumerate((150.0, 400.0)):
        sim = make_sim(update_period_s=0.01, idle_w=50.0)
        t = int(jouletrace._core.monotonic_ns())
        sim.add_segment(t, t + 60_000_000_000, watts - 50.0)
        with Monitor(sim=sim, cpu=False, rate_hz=1000) as mon:
            time.sleep(0.03)
            ms = _steps(mon, 8, 256, 0.04)
            with mon.window("eval"):  # no work: not part of the run
                time.sleep(0.02)
            mon.measurements()
            rec = mon.recording()
        truths.append(sum(sim.true_energy(m.t0_ns, m.t1_ns) for m in ms) / (8 * 256))
        paths.append(rec.save(tmp_path / f"m{k}.npz"))
    doc = compare([Run(jouletrace.load(p), label=f"m{k}", path=str(p)) for k, p in enumerate(paths)])
    assert doc["unit"] == "tokens"
    for run, truth in zip(doc["runs"], truths, strict=True):
        assert run["windows"] == 8 and run["work"]["tokens"] == 8 * 256 and run["work"]["samples"] == 16
        assert abs(run["per_unit"]["energy_j"] - truth) <= run["per_unit"]["bound_j"]
    r = doc["runs"][1]["ratio"]
    assert r["low"] <= truths[1] / truths[0] <= r["high"]
    assert np.isfinite(r["value"]) and not r["within_uncertainty"]
