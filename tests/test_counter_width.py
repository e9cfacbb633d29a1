"""Each native source publishes, per channel, the width of the counter behind it (and the energy
after which it wraps); it flows into the recording, is saved and streamed with it, and decides
whether a window across a sampler pause may have missed a wrap. Recordings from before it was
published still load, and fall back to the width their source's name implied."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import jouletrace
from jouletrace.energy.blocks import BlockRecording
from jouletrace.energy.recording import Recording
from jouletrace.errors import RecordingFormatError
from jouletrace.sampling.counters import CounterWidth, counter_width, inferred
from jouletrace.sampling.rapl import INTEL_MSR
from jouletrace.testing.rapl import FakeRapl


def _wait(s: jouletrace.Sampler, n: int) -> None:
    target, end = s.reads + n, time.monotonic() + 20
    while s.reads < target:
        assert time.monotonic() < end, "the sampler stopped reading"
        time.sleep(0.0005)


def _msr_machine(root: Path) -> FakeRapl:
    f = FakeRapl(root, family=6, model=0x55)
    f.set_energy_unit(0, 14)
    f.set_counter(0, INTEL_MSR["package"], 1000)
    f.set_counter(0, INTEL_MSR["dram"], 1000)  # Skylake-SP: DRAM in fixed 15.3 uJ units
    return f


def test_msr_channels_are_32_bit_wrapping_after_2_32_units(tmp_path):
    f = _msr_machine(tmp_path / "m")
    s = jouletrace.Sampler("rapl-msr", rate_hz=200, **f.options())
    info = {c.name: c for c in s._native.channel_info}
    assert {n: (c.cumulative, c.counter_bits) for n, c in info.items()} == {
        "cpu0.package.energy_j": (True, 32), "cpu0.dram.energy_j": (True, 32)}
    assert info["cpu0.package.energy_j"].wrap_j == 2.0**32 * 2.0**-14  # 262 kJ
    assert info["cpu0.dram.energy_j"].wrap_j == pytest.approx(2.0**32 * 15.3e-6)
    with s:
        _wait(s, 3)
    rec = s.recording()
    assert rec.metadata["counters"]["cpu0.package.energy_j"] == {"counter_bits": 32, "wrap_j": 2.0**18}
    assert rec.counter_width("cpu0.package.energy_j") == CounterWidth(32, 2.0**18, "published")
    assert rec.counter_width("cpu0.package.energy_j").wraps


def test_powercap_width_is_the_bits_of_its_range(tmp_path):
    f = FakeRapl(tmp_path / "m", packages=3)
    f.add_zone("intel-rapl:0", "package-0", 5, 262143328850)  # a Xeon's range: 38 bits of uJ
    f.add_zone("intel-rapl:1", "package-1", 5, 2**64 - 1)  # a whole 64-bit counter
    zone = f.add_zone("intel-rapl:2", "package-2", 5, 2**32 - 1)
    (zone / "max_energy_range_uj").unlink()  # unknown range: not unwrapped, width unknown
    s = jouletrace.Sampler("rapl-powercap", rate_hz=200, **f.options())
    got = {c.name: (c.counter_bits, c.wrap_j) for c in s._native.channel_info}
    assert got["cpu0.package.energy_j"] == (38, pytest.approx((262143328850 + 1) * 1e-6, rel=1e-15))
    assert got["cpu1.package.energy_j"] == (64, 2.0**64 * 1e-6)
    assert got["cpu2.package.energy_j"] == (0, 0.0)
    with s:
        _wait(s, 2)
    rec = s.recording()
    assert rec.counter_width("cpu0.package.energy_j").wraps
    assert not rec.counter_width("cpu1.package.energy_j").wraps
    assert rec.counter_width("cpu2.package.energy_j").wraps  # unknown: assumed to wrap


def test_nvml_energy_is_a_64_bit_millijoule_counter_and_levels_have_none(make_sim):
    with jouletrace.Sampler("sim", rate_hz=200, sim=make_sim()) as s:
        _wait(s, 3)
    info = {c.name: (c.cumulative, c.counter_bits, c.wrap_j) for c in s._native.channel_info}
    assert info == {"gpu0.energy_j": (True, 64, 2.0**64 * 1e-3), "gpu0.power_w": (False, 0, 0.0),
                    "gpu0.energy_ts_us": (False, 0, 0.0), "gpu0.power_ts_us": (False, 0, 0.0)}
    rec = s.recording()
    assert rec.metadata["counters"] == {"gpu0.energy_j": {"counter_bits": 64, "wrap_j": 2.0**64 * 1e-3}}
    assert not rec.counter_width("gpu0.energy_j").wraps
    assert rec.counter_width("gpu0.power_w") is None


def _paused_sim_recording(make_sim, monkeypatch) -> Recording:
    for cls in (Recording, BlockRecording):
        monkeypatch.setattr(cls, "PAUSE_WRAP_RISK_NS", 50_000_000)
    s = jouletrace.Sampler("sim", rate_hz=500, sim=make_sim(update_period_s=0.005))
    with s:
        _wait(s, 20)
    time.sleep(0.1)
    with s:
        _wait(s, 20)
    return s.recording()


def test_the_pause_flag_follows_the_published_width_not_the_source_name(make_sim, monkeypatch):
    rec = _paused_sim_recording(make_sim, monkeypatch)
    a, b = int(rec.t_ns[5]), int(rec.t_ns[-5])
    for r in (rec, BlockRecording.of(rec, rows=64)):  # in memory, and block by block
        assert "spans_unsampled_pause" not in r.energy(a, b).flags  # 64-bit: cannot wrap unseen
    rec.metadata["source"] = "rapl-msr"  # the name says nothing any more
    assert "spans_unsampled_pause" not in rec.energy(a, b).flags
    rec.metadata["counters"]["gpu0.energy_j"]["counter_bits"] = 32  # a narrow counter does
    for r in (rec, BlockRecording.of(rec, rows=64)):
        m = r.energy(a, b)
        assert "spans_unsampled_pause" in m.flags and m.uncertainty_j["gpu0"] == float("inf")


def test_saved_and_streamed_recordings_keep_the_widths(make_sim, tmp_path):
    pytest.importorskip("pyarrow")
    sim = make_sim(update_period_s=0.005)
    with jouletrace.Sampler("sim", rate_hz=500, sim=sim, stream_to=tmp_path / "run.jt") as s:
        _wait(s, 30)
    rec = s.recording()
    want = rec.metadata["counters"]
    saved = jouletrace.load(rec.save(tmp_path / "run.npz"))
    streamed = jouletrace.load(tmp_path / "run.jt")
    for r in (saved, streamed):
        assert r.metadata["counters"] == want
        assert r.counter_width("gpu0.energy_j") == CounterWidth(64, 2.0**64 * 1e-3, "published")


def _without_counters(src: Path, dst: Path, **metadata: object) -> Path:
    """A copy of a saved recording as an older jouletrace wrote it: no ``counters``."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    header = json.loads(np.load(io.BytesIO(members["metadata_json.npy"])).tobytes())
    del header["metadata"]["counters"]
    header["metadata"].update(metadata)
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    members["metadata_json.npy"] = buf.getvalue()
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    return dst


def test_an_older_file_without_widths_loads_and_infers_them_from_the_source(tmp_path, monkeypatch):
    monkeypatch.setattr(Recording, "PAUSE_WRAP_RISK_NS", 50_000_000)
    f = _msr_machine(tmp_path / "m")
    s = jouletrace.Sampler("rapl-msr", rate_hz=500, **f.options())
    ticks = 1000
    for _ in range(2):  # two runs with a pause between
        with s:
            for _ in range(3):
                ticks += 1 << 16
                f.set_counter(0, INTEL_MSR["package"], ticks)
                _wait(s, 3)
        time.sleep(0.1)
    old = jouletrace.load(_without_counters(Path(s.recording().save(tmp_path / "new.npz")), tmp_path / "old.npz"))
    assert "counters" not in old.metadata
    assert old.counter_width("cpu0.package.energy_j") == CounterWidth(32, 0.0, "inferred")
    m = old.energy(int(old.t_ns[1]), int(old.t_ns[-1]))
    assert "spans_unsampled_pause" in m.flags  # as before widths were published
    # an older NVML recording: 64-bit, never flagged
    assert inferred("nvml") == inferred("sim") == inferred("rapl-perf") == CounterWidth(64, 0.0, "inferred")
    assert inferred("rapl-powercap").wraps and inferred("rapl-msr").wraps
    assert counter_width({"source": "rapl-msr", "counters": {}}, "x.energy_j").origin == "inferred"


@pytest.mark.parametrize("bad", [{"cpu0.package.energy_j": {"counter_bits": 65, "wrap_j": 1.0}},
                                 {"cpu0.package.energy_j": {"counter_bits": 32}},
                                 {"cpu0.package.energy_j": {"counter_bits": "32", "wrap_j": 1.0}},
                                 {"cpu0.package.energy_j": 32}, [32]])
def test_malformed_widths_in_a_file_are_refused(tmp_path, bad):
    f = _msr_machine(tmp_path / "m")
    with jouletrace.Sampler("rapl-msr", rate_hz=500, **f.options()) as s:
        _wait(s, 3)
    path = _without_counters(Path(s.recording().save(tmp_path / "new.npz")), tmp_path / "bad.npz", counters=bad)
    with pytest.raises(RecordingFormatError, match="counters"):
        jouletrace.load(path)
