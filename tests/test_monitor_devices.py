"""Monitor for training scripts: GPUs as the framework numbers them, degrading without a source,
windows in the recording, options honoured, provisional reads, stopped monitors."""

from __future__ import annotations

import math
import sys
import time
import warnings

import numpy as np
import pytest

import jouletrace
from jouletrace import _default
from jouletrace.energy import storage as io
from jouletrace.energy.measurement import WindowEnergies
from jouletrace.energy.monitor import Monitor
from jouletrace.errors import (
    InvalidArgumentError,
    MeasurementUnavailableWarning,
    SourceUnavailableError,
)
from jouletrace.sampling.devices import select_gpus
from jouletrace.sampling.sources import SourceInfo

sources_module = sys.modules["jouletrace.sampling.sources"]

DEVS = [(0, "GPU-aaaa-0", "A"), (1, "GPU-bbbb-1", "B"), (2, "GPU-cccc-2", "C"), (3, "GPU-cccd-3", "D")]


def _pick(gpus, **env):  # type: ignore[no-untyped-def]
    return [(d.key, d.nvml_index, d.uuid, d.mig) for d in select_gpus(gpus, env=env, devices=DEVS)]


def test_visible_devices_map_to_nvml() -> None:
    assert [k[:2] for k in _pick("visible")] == [("gpu0", 0), ("gpu1", 1), ("gpu2", 2), ("gpu3", 3)]
    assert _pick("visible", CUDA_VISIBLE_DEVICES="2,0") == [("gpu0", 2, "GPU-cccc-2", None), ("gpu1", 0, "GPU-aaaa-0", None)]
    # UUIDs and unique prefixes, as CUDA takes them; an ambiguous prefix stops the list, like CUDA.
    assert [k[1] for k in _pick("visible", CUDA_VISIBLE_DEVICES="GPU-bbbb,GPU-cccd-3")] == [1, 3]
    assert [k[1] for k in _pick("visible", CUDA_VISIBLE_DEVICES="1,GPU-ccc,0")] == [1]
    # CUDA stops at the first entry it cannot use; "" and -1 hide every GPU.
    assert [k[1] for k in _pick("visible", CUDA_VISIBLE_DEVICES="3,7,0")] == [3]
    assert _pick("visible", CUDA_VISIBLE_DEVICES="") == []
    assert _pick("visible", CUDA_VISIBLE_DEVICES="-1") == []
    # A MIG instance (driver < 470 form) is measured as its whole GPU; two instances of one GPU: once.
    mig = _pick("visible", CUDA_VISIBLE_DEVICES="MIG-GPU-bbbb-1/1/0,MIG-GPU-bbbb-1/2/0")
    assert mig == [("gpu0", 1, "GPU-bbbb-1", "MIG-GPU-bbbb-1/1/0")]
    assert [k[1] for k in _pick("all", CUDA_VISIBLE_DEVICES="2")] == [0, 1, 2, 3]
    assert [k[:2] for k in _pick([1], CUDA_VISIBLE_DEVICES="3,1")] == [("gpu1", 1)]


def test_local_rank_picks_the_ranks_gpu() -> None:
    assert [k[:2] for k in _pick("local", LOCAL_RANK="1", CUDA_VISIBLE_DEVICES="2,3")] == [("gpu1", 3)]
    assert [k[:2] for k in _pick("local", SLURM_LOCALID="2")] == [("gpu2", 2)]
    # One GPU per rank (the launcher already narrowed CUDA_VISIBLE_DEVICES): that one, as cuda:0.
    assert [k[:2] for k in _pick("local", LOCAL_RANK="3", CUDA_VISIBLE_DEVICES="1")] == [("gpu0", 1)]
    assert len(_pick("local")) == 4  # no launcher: as "visible"
    with pytest.raises(InvalidArgumentError, match=r"GPU 5 \(local rank 5\) is not visible.*indices 0..1"):
        _pick("local", LOCAL_RANK="5", CUDA_VISIBLE_DEVICES="0,1")
    with pytest.raises(InvalidArgumentError, match="not an integer"):
        _pick("local", LOCAL_RANK="x")
    with pytest.raises(InvalidArgumentError, match="gpus must be"):
        _pick("some")


def test_monitor_keys_results_by_framework_index(make_sim, now_ns, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sim = make_sim(gpus=3, update_period_s=0.01, idle_w=[50.0, 70.0, 90.0])
    sim.add_segment(now_ns, now_ns + 10**10, 200.0, gpu=2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    with Monitor(sim=sim, cpu=False, rate_hz=500) as mon:
        with mon.window("step") as m:
            time.sleep(0.15)
        we = mon.energies([m.t0_ns], [m.t1_ns])
    assert [(d.key, d.nvml_index) for d in mon.devices] == [("gpu0", 2), ("gpu1", 0)]
    assert set(m.energy_j) == {"gpu0", "gpu1"}
    assert m.uuid == {"gpu0": sim._gpus[2].uuid, "gpu1": sim._gpus[0].uuid} == we.uuid
    for key, g in (("gpu0", 2), ("gpu1", 0)):
        truth = float(sim.true_energy(m.t0_ns, m.t1_ns, gpu=g))
        assert abs(m.energy_j[key] - truth) <= m.uncertainty_j[key]
    # GPU 2 (cuda:0) runs at 290 W, GPU 0 (cuda:1) at 50 W: the keys cannot have been swapped.
    assert m.energy_j["gpu0"] > 4 * m.energy_j["gpu1"]
    monkeypatch.setenv("LOCAL_RANK", "1")
    with Monitor(sim=sim, cpu=False, gpus="local", rate_hz=200) as mon:
        assert [(d.key, d.nvml_index) for d in mon.devices] == [("gpu1", 0)]


def test_monitor_honours_nvml_library_and_refuses_unknown_options(make_sim, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sim = make_sim(gpus=2, update_period_s=0.01)
    fake = [SourceInfo("nvml", "", False, "libnvidia-ml.so.1: not found", "install the driver"),
            SourceInfo("rapl", "", False, "no RAPL here", "")]
    monkeypatch.setattr(sources_module, "sources", lambda refresh=False: fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("JOULETRACE_NVML_LIBRARY", raising=False)
    with Monitor(nvml_library=sim.library_path, gpus=[1], rate_hz=200) as mon:
        assert [s.source for s in mon.samplers] == ["nvml"] and mon.skipped == {"rapl": "no RAPL here"}
        assert mon.recording().metadata["device"]["nvml.library"] == str(sim.library_path)
        assert mon.uuids == {"gpu1": sim._gpus[1].uuid}
    with pytest.raises(InvalidArgumentError, match=r"unknown Monitor option\(s\): nvml_libary"):
        Monitor(nvml_libary=sim.library_path)


@pytest.fixture
def nothing_usable(monkeypatch):  # type: ignore[no-untyped-def]
    fake = [SourceInfo("nvml", "", False, "no NVIDIA driver", "install it"),
            SourceInfo("rapl", "", False, "no RAPL here", "")]
    monkeypatch.setattr(sources_module, "sources", lambda refresh=False: fake)
    monkeypatch.delenv("JOULETRACE_NVML_LIBRARY", raising=False)
    monkeypatch.setattr(sys.modules["jouletrace.energy.monitor"], "_warned_unavailable", False)
    _default.configure()
    yield
    _default.configure()


def test_default_window_degrades_with_one_warning(nothing_usable) -> None:  # type: ignore[no-untyped-def]
    with pytest.warns(MeasurementUnavailableWarning, match="no NVIDIA driver.*no RAPL here"):
        with jouletrace.window("step") as m:
            pass
    assert not m.available and "no NVIDIA driver" in m.unavailable_reason
    assert math.isnan(m.total_j) and m.total_uncertainty_j == math.inf and m.energy_j == {}
    assert "unavailable" in m.flags and "energy unavailable" in str(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: a second window, or a new default Monitor, is quiet
        with jouletrace.window("step") as m2:
            pass
        _default.configure()
        with jouletrace.window("step"):
            pass
    assert not m2.available
    # What the user asked for by name still raises.
    _default.configure(sources=["nvml"])
    with pytest.raises(SourceUnavailableError, match="'nvml' is not usable here"):
        jouletrace.window("step")
    with pytest.raises(SourceUnavailableError):
        Monitor()  # a Monitor made by hand raises unless told unavailable="warn"


def test_windows_are_kept_in_the_recording(make_sim, now_ns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sim = make_sim(gpus=1, update_period_s=0.01)
    sim.add_segment(now_ns, now_ns + 10**10, 100.0)
    with Monitor(sim=sim, cpu=False, rate_hz=500) as mon:
        for i in range(3):
            with mon.window("step", work={"tokens": 100 * (i + 1)}) as m:
                time.sleep(0.03)
            m.add_work(samples=2)
        outer = mon.begin_window("epoch")
    # After stop(): all ended windows are final; the recording shows them, the open one without an end.
    rec = mon.recording()
    wins = rec.metadata["windows"]
    steps = mon.measurements("step")
    assert [w["name"] for w in wins] == ["step", "step", "step", "epoch"]
    assert wins[-1]["t0_ns"] == outer.t0_ns and wins[-1]["t1_ns"] is None
    for w, m in zip(wins, steps, strict=False):
        assert (w["t0_ns"], w["t1_ns"]) == (m.t0_ns, m.t1_ns)
        assert w["energy_j"] == {"gpu0": m.energy_j["gpu0"]} and w["uncertainty_j"] == {"gpu0": m.uncertainty_j["gpu0"]}
    assert [w["work"] for w in wins[:3]] == [{"tokens": 100.0, "samples": 2.0}, {"tokens": 200.0, "samples": 2.0},
                                            {"tokens": 300.0, "samples": 2.0}]
    assert steps[2].energy_per("tokens") == pytest.approx(steps[2].total_j / 300)
    # Saved and read back, the windows stay (report --plot reads them from here).
    back = io.load(io.save(rec, tmp_path / "run.npz"))
    assert [w["name"] for w in back.metadata["windows"]] == ["step", "step", "step", "epoch"]
    assert back.metadata["windows"][1]["energy_j"]["gpu0"] == pytest.approx(steps[1].energy_j["gpu0"])


def test_non_blocking_read_is_provisional_and_stopped_monitor_refuses(make_sim, now_ns) -> None:  # type: ignore[no-untyped-def]
    # Three 100 ms updates cannot have followed an end microseconds ago, even if this thread loses
    # the CPU for a while in between (a loaded machine: ~0.1 s seen, 0.2 s is far rarer).
    sim = make_sim(update_period_s=0.1)
    sim.add_segment(now_ns, now_ns + 10**10, 100.0)
    mon = Monitor(sim=sim, cpu=False, rate_hz=200, wait_updates=3).start()
    try:
        time.sleep(0.15)  # a counter update before the window opens
        with mon.window("step") as m:
            time.sleep(0.01)
        assert not m.ready
        m.resolve(wait=False)
        assert m.provisional and "provisional" in m.flags and "provisional" in str(m)
        assert mon.ready() == []
        m.resolve()  # waits, then replaces the values with final ones
        assert not m.provisional and m.ready and "provisional" not in m.flags
        truth = float(sim.true_energy(m.t0_ns, m.t1_ns))
        assert abs(m.total_j - truth) <= m.total_uncertainty_j
    finally:
        mon.stop()
    with pytest.raises(InvalidArgumentError, match="Monitor was stopped.*start()"):
        mon.begin_window("late")
    mon.start()  # resumes: the gap is a recorded pause
    try:
        with mon.window("again") as m2:
            time.sleep(0.01)
    finally:
        mon.stop()
    assert m2.resolved and mon.recording().metadata["pauses"]


def test_window_energies_to_pandas() -> None:
    we = WindowEnergies(t0_ns=np.array([0, 10]), t1_ns=np.array([10, 30]),
                        energy_j={"gpu0": np.array([1.0, 2.0])}, uncertainty_j={"gpu0": np.array([0.1, 0.2])},
                        flags={"gpu0": np.array([0, 1], dtype=np.uint8)}, method={"gpu0": "counter"},
                        names=["a", "b"])
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            we.to_pandas()
        return
    df = we.to_pandas()
    assert list(df.columns) == ["name", "t0_ns", "t1_ns", "duration_s", "total_j", "total_uncertainty_j",
                                "gpu0.energy_j", "gpu0.uncertainty_j", "gpu0.flags"]
    assert df["total_j"].tolist() == [1.0, 2.0] and df["gpu0.flags"].tolist() == ["", "below_sensor_resolution"]
