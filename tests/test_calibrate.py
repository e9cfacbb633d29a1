"""Calibration on the simulated GPU, in real time through the real sampler: it recovers the sensor."""

from __future__ import annotations

import time

import pytest

import jouletrace
from jouletrace.energy.calibrate import SimLoad, calibrate
from jouletrace.sampling.sensor_model import load_saved, sensor_file

# Recorded in real time, with claims that hold under load (the recording's own quality is in them),
# so scripts/test.sh runs them beside the other tests (the `realtime` marker, pyproject.toml).


@pytest.mark.parametrize("counter", ["full", "part_time"])
def test_calibration_recovers_the_configured_sensor(make_sim, counter):
    sim = make_sim(update_period_s=0.1, avg_window_s=0.025, counter=counter, phase_ns=31_415_926,
                   publish_counter=False)
    cal = calibrate(sim=sim, load=SimLoad(sim, watts=150.0), save=True)
    m = cal.model
    assert (m.counter, m.source) == (counter, "measured")
    assert m.update_period_ns == pytest.approx(100e6, abs=2e3)  # to the µs the fit is rounded to
    assert m.avg_window_ns == pytest.approx(25e6, abs=2e3)
    assert cal.saved_to == str(sensor_file()) and load_saved(cal.uuid) == m
    # A later recording of that GPU assumes what was measured.
    with jouletrace.Sampler("sim", sim=sim, rate_hz=200) as s:
        time.sleep(0.05)
    assert s.recording().sensor_model("gpu0") == m
