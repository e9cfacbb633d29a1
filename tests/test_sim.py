"""The simulated GPU as a library: its sensor model, and pynvml in another process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jouletrace import _core
from jouletrace.errors import InvalidArgumentError
from jouletrace.sampling.sim import SimGPU
from jouletrace.testing.waiting import wait_for_reads

CHILD = textwrap.dedent(
    """
    import json, time
    import pynvml
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(1)
    out = {
        "count": pynvml.nvmlDeviceGetCount(),
        "name": pynvml.nvmlDeviceGetName(h),
        "uuid": pynvml.nvmlDeviceGetUUID(h),
        "driver": pynvml.nvmlSystemGetDriverVersion(),
        "samples": [],
    }
    for _ in range(20):
        t0 = time.monotonic_ns()
        e = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        t1 = time.monotonic_ns()
        p = pynvml.nvmlDeviceGetPowerUsage(h)
        fv = pynvml.nvmlDeviceGetFieldValues(h, [83, 186])
        out["samples"].append([t0, t1, e, p, fv[0].nvmlReturn, fv[0].value.ullVal, fv[1].value.uiVal])
        time.sleep(0.003)
    pynvml.nvmlShutdown()
    print(json.dumps(out))
    """
)


def test_pynvml_in_another_process_sees_the_same_gpu(make_sim, now_ns):
    pytest.importorskip("pynvml")
    sim = make_sim(gpus=2, update_period_s=0.005, idle_w=[40.0, 80.0], names=["Sim A", "Sim B"])
    sim.add_segment(now_ns - 2_000_000_000, now_ns + 60_000_000_000, 120.0, gpu=1)  # 1 s average settled
    r = subprocess.run([sys.executable, "-c", CHILD], env=sim.env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["count"] == 2 and out["name"] == "Sim B"
    assert out["uuid"] == "GPU-5117e000-0000-4000-8000-000000000001"
    assert out["driver"] == "999.99.99-sim"
    s = np.array(out["samples"], dtype=np.float64)
    t0, t1 = s[:, 0].astype(np.int64), s[:, 1].astype(np.int64)
    # Counter in mJ lies between the sensor model at the call's two edges.
    lo = sim.sensor_energy_j(t0, gpu=1) * 1000
    hi = sim.sensor_energy_j(t1, gpu=1) * 1000
    assert np.all(s[:, 2] >= lo - 1e-6) and np.all(s[:, 2] <= hi + 1e-6)
    assert np.all(s[:, 3] == 200_000)  # mW, 80 W idle + 120 W
    assert np.all(s[:, 4] == 0) and np.all(s[:, 6] == 200_000)
    assert np.all(s[:, 5] >= s[:, 2])  # field 83 read after the call


def test_truth_matches_hand_computation(make_sim):
    sim = make_sim(idle_w=10.0, load_ns=1_000_000_000, update_period_s=0.5)
    sim.add_segment(2_000_000_000, 3_000_000_000, 100.0)
    sim.add_segment(2_500_000_000, 4_000_000_000, 50.0)  # overlaps: watts add
    # [1 s, 5 s]: idle 4 s * 10 W + 1 s * 100 W + 1.5 s * 50 W
    assert sim.true_energy(1_000_000_000, 5_000_000_000) == pytest.approx(40 + 100 + 75)
    assert sim.true_energy_at(500_000_000) == 0.0  # before driver load
    assert sim.true_power(2_700_000_000) == pytest.approx(160.0)
    assert sim.true_power(3_500_000_000) == pytest.approx(60.0)
    np.testing.assert_array_equal(sim.last_update_ns([2_400_000_000, 2_500_000_000]), [2_000_000_000, 2_500_000_000])
    # The counter holds the value of the last update, in whole mJ.
    assert sim.sensor_energy_j(2_499_999_999) == pytest.approx(np.floor(sim.true_energy_at(2_000_000_000) * 1000) / 1000)


def test_native_sensor_agrees_with_python_model(make_sim, now_ns):
    """The C library and jouletrace.sim compute the same counter for the same schedule."""
    import jouletrace

    sim = make_sim(update_period_s=0.003, offset_mj=5_000)
    rng = np.random.default_rng(1)
    st = now_ns + np.sort(rng.integers(0, 300_000_000, 100))
    sim.add_segments(st, st + rng.integers(10_000, 5_000_000, 100), rng.uniform(1, 500, 100))
    import time

    with jouletrace.Sampler("sim", rate_hz=2000, sim=sim) as s:
        time.sleep(0.3)
        wait_for_reads(s, 100)  # however loaded the machine
    rec = s.recording()
    v = rec["gpu0.energy_j"]
    same_update = sim.last_update_ns(rec.t_before_ns) == sim.last_update_ns(rec.t_after_ns)
    assert same_update.sum() > 0.5 * len(rec)
    np.testing.assert_allclose(v[same_update], sim.sensor_energy_j(rec.t_before_ns[same_update]), rtol=0, atol=1e-6)


def test_bad_sim_arguments(make_sim):
    with pytest.raises(InvalidArgumentError):
        SimGPU(gpus=0)
    with pytest.raises(InvalidArgumentError, match="idle_w"):
        SimGPU(gpus=2, idle_w=[1.0])
    sim = make_sim()
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        sim.add_segment(0, 1, 1.0, gpu=3)
    with pytest.raises(InvalidArgumentError):
        sim.unsupported_call(0, "clocks")


def test_corrupt_config_fails_init_cleanly(make_sim):
    import jouletrace
    from jouletrace.errors import SourceUnavailableError

    sim = make_sim()
    sim.config_path.write_text("gpu_count 1\nwhat is this\n")
    with pytest.raises(SourceUnavailableError, match="nvmlInit failed.*line 2: unknown key"):
        jouletrace.Sampler("sim", sim=sim)
    # Values with units, negative watts and non-numbers are refused, naming the line.
    for bad, why in (("idle_w 0 100W", "unexpected text"), ("update_period_ns 1e8", "unexpected text"),
                     ("idle_w 0 -100", "idle_w must be >= 0"), ("latency_ns fast", "not a number")):
        sim.config_path.write_text(f"gpu_count 1\n{bad}\n")
        with pytest.raises(SourceUnavailableError, match=why):
            jouletrace.Sampler("sim", sim=sim)
    sim.config_path.unlink()
    with pytest.raises(SourceUnavailableError, match="driver is not loaded"):
        jouletrace.Sampler("sim", sim=sim)


def test_private_copies_are_independent(make_sim):
    a = make_sim(idle_w=10.0)
    b = make_sim(idle_w=20.0)
    assert a.library_path != b.library_path
    import jouletrace

    sa = jouletrace.Sampler("sim", sim=a, rate_hz=100)
    sb = jouletrace.Sampler("sim", sim=b, rate_hz=100)
    sa._native.start(), sb._native.start()
    wait_for_reads(sa, 2), wait_for_reads(sb, 2)  # not a fixed sleep: a busy machine may not run them
    sa.stop(), sb.stop()
    assert set(sa.recording()["gpu0.power_w"]) == {10.0}
    assert set(sb.recording()["gpu0.power_w"]) == {20.0}
    assert _core.monotonic_ns() > 0
