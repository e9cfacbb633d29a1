"""Recording.save / jouletrace.load: exact round trips, atomic writes, clear errors for bad files."""

from __future__ import annotations

import json
import os
import time
import zipfile

import numpy as np
import pytest

import jouletrace
from jouletrace.energy import storage as io
from jouletrace.energy.recording import Recording
from jouletrace.errors import RecordingFormatError
from jouletrace.testing.waiting import wait_for_reads


@pytest.fixture
def recorded(make_sim, now_ns):  # type: ignore[no-untyped-def]
    """A real recording of the simulated GPU (two GPUs, a load, NVML timestamps)."""
    sim = make_sim(gpus=2, update_period_s=0.01, idle_w=[50.0, 70.0])
    sim.add_segment(now_ns + 50_000_000, now_ns + 250_000_000, 300.0, gpu=1)
    with jouletrace.Sampler("sim", rate_hz=1000, sim=sim) as s:
        time.sleep(0.25)
        wait_for_reads(s, 250)  # the tests index up to sample 150: counted, not assumed from the sleep
    return s.recording()


def _same(a: Recording, b: Recording) -> None:
    for name in ("t_ns", "t_before_ns", "t_after_ns", "seq", "status", "clock_pairs"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert a.channels == b.channels
    for ch in a.channels:
        assert np.array_equal(a[ch], b[ch], equal_nan=True), ch
        assert a.is_cumulative(ch) == b.is_cumulative(ch)
    assert (a.dropped, a.missed_deadlines) == (b.dropped, b.missed_deadlines)


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_is_exact(recorded, tmp_path, compress):  # type: ignore[no-untyped-def]
    path = tmp_path / "run.npz"
    assert recorded.save(path, compress=compress) == str(path)
    back = jouletrace.load(path)
    _same(recorded, back)
    # The metadata travels whole, with the sensor characterisation computed before saving: the
    # same as the recording's own, and a plausible 10 ms period. The period is a median of ~25
    # bracket midpoints: exact on a quiet machine (1 kHz polling and a 10 ms sensor keep the same
    # phase), but a loaded one's jitter and skipped reads scatter it by ~1 % (seen: 10.14 ms), so
    # 5 % (five of those) is the plausibility bar.
    assert back.metadata["sensors"] == recorded.characterize()
    assert back.metadata["sensors"]["gpu1.energy_j"]["update_period_ns"] == pytest.approx(1e7, rel=0.05)
    assert back.metadata["device"] == recorded.metadata["device"]
    assert back.metadata["source"] == "sim" and back.metadata["rate_hz"] == 1000.0
    # Arrays come back read-only, and give the same energies.
    assert not back.t_ns.flags.writeable and not back["gpu0.energy_j"].flags.writeable
    t = back.t_ns
    a = np.array([t[10], t[50]])
    b = np.array([t[-20], t[150]])
    want, got = recorded.energies(a, b), back.energies(a, b)
    for k in want.energy_j:
        np.testing.assert_array_equal(want.energy_j[k], got.energy_j[k])
        np.testing.assert_array_equal(want.uncertainty_j[k], got.uncertainty_j[k])
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_metadata_summary(recorded, tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "run.npz"
    recorded.save(path)
    with np.load(path) as z:
        header = json.loads(z["metadata_json"].tobytes().decode())
        assert z["clock_pairs"].shape == recorded.clock_pairs.shape
    assert header["format"] == "jouletrace.recording" and header["schema_version"] == io.SCHEMA_VERSION
    s = header["summary"]
    assert s["host"] == recorded.metadata["host"] and s["cpu_model"] == recorded.metadata["cpu_model"]
    assert s["gpu_names"] == ["NVIDIA H100 80GB HBM3 (simulated)"] * 2
    assert s["driver_version"] == "999.99.99-sim" and s["nvml_version"] == "13.999.99-sim"
    assert s["jouletrace_version"] == jouletrace.__version__ and s["saved_by"] == jouletrace.__version__
    assert s["sources"] == ["sim"] and s["rates_hz"] == [1000.0]
    assert s["drops"]["dropped"] == recorded.dropped and s["clock_pairs"] == len(recorded.clock_pairs)
    assert [c["name"] for c in header["channels"]] == recorded.channels


def test_plain_arrays_with_nans_round_trip(tmp_path):  # type: ignore[no-untyped-def]
    n = 1000
    t = np.arange(n, dtype=np.int64) * 1_000_000 + 5
    e = np.floor(np.arange(n) / 20) * 0.123
    e[[3, 500]] = np.nan
    rec = Recording(
        t_ns=t,
        t_before_ns=t - 1,
        t_after_ns=t + 1,
        seq=np.arange(n, dtype=np.uint64),
        status=np.where(np.isnan(e), 1, 0).astype(np.int32),
        values={"cpu0.package.energy_j": e, "cpu0.temp_c": np.full(n, 40.5)},
        cumulative={"cpu0.package.energy_j": True, "cpu0.temp_c": False},
        dropped=7,
        missed_deadlines=2,
        metadata={"source": "test", "note": np.float64(1.5), "flags": np.array([1, 2])},
    )
    path = tmp_path / "plain.jtr"  # any name: no suffix is added
    rec.save(path)
    back = jouletrace.load(path)
    _same(rec, back)
    assert back.metadata["note"] == 1.5 and back.metadata["flags"] == [1, 2]
    assert back.clock_pairs.shape == (0, 3)


def test_saving_never_leaves_a_half_written_file(recorded, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    path = tmp_path / "run.npz"
    recorded.save(path)
    before = path.read_bytes()

    def broken(f, **arrays):  # type: ignore[no-untyped-def]
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        recorded.save(path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]  # and no temporary is left


def _valid_file(recorded, tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "ok.npz"
    recorded.save(path)
    return path


def test_truncated_file(recorded, tmp_path):  # type: ignore[no-untyped-def]
    data = _valid_file(recorded, tmp_path).read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(RecordingFormatError, match=f"cut{cut}.npz: not a readable jouletrace recording"):
            jouletrace.load(bad)


def test_corrupt_bytes_fail_the_crc(recorded, tmp_path):  # type: ignore[no-untyped-def]
    path = _valid_file(recorded, tmp_path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("t_ns.npy")
    start = info.header_offset + 30 + len(info.filename) + 200  # inside the t_ns data
    data[start : start + 8] = b"\xff" * 8
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(RecordingFormatError, match="truncated or corrupt"):
        jouletrace.load(bad)


def test_garbage_and_foreign_files(tmp_path):  # type: ignore[no-untyped-def]
    junk = tmp_path / "junk.npz"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(RecordingFormatError, match="junk.npz"):
        jouletrace.load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    with pytest.raises(RecordingFormatError, match="no jouletrace metadata"):
        jouletrace.load(other)
    single = tmp_path / "single.npy"
    np.save(single, np.arange(3))
    with pytest.raises(RecordingFormatError, match="single array"):
        jouletrace.load(single)
    with pytest.raises(FileNotFoundError):
        jouletrace.load(tmp_path / "missing.npz")


def _rewrite(path, out, header_edit=None, drop=None, replace=None):  # type: ignore[no-untyped-def]
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["metadata_json"].tobytes().decode())
    if header_edit:
        header_edit(header)
    arrays["metadata_json"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    for k in drop or ():
        del arrays[k]
    arrays.update(replace or {})
    np.savez(out, **arrays)
    return out


def test_newer_schema_is_refused_with_the_fix(recorded, tmp_path):  # type: ignore[no-untyped-def]
    path = _valid_file(recorded, tmp_path)
    newer = _rewrite(path, tmp_path / "newer.npz", header_edit=lambda h: h.update(schema_version=2))
    with pytest.raises(RecordingFormatError, match=r"schema version 2 by a newer jouletrace.*pip install -U jouletrace"):
        jouletrace.load(newer)


def test_missing_or_inconsistent_members(recorded, tmp_path):  # type: ignore[no-untyped-def]
    path = _valid_file(recorded, tmp_path)
    n = len(recorded)
    cases = {
        "missing": dict(drop=["channel_001"]),
        "short": dict(replace={"t_after_ns": np.zeros(n - 1, dtype=np.int64)}),
        "dtype": dict(replace={"channel_000": np.zeros(n, dtype=np.float32)}),
        "pairs": dict(replace={"clock_pairs": np.zeros((2, 2), dtype=np.int64)}),
        "count": dict(header_edit=lambda h: h.update(n_samples="many")),
        "format": dict(header_edit=lambda h: h.update(format="something else")),
    }
    for name, kw in cases.items():
        bad = _rewrite(path, tmp_path / f"{name}.npz", **kw)
        with pytest.raises(RecordingFormatError, match=f"{name}.npz"):
            jouletrace.load(bad)
    with pytest.raises(RecordingFormatError, match="'channel_001' is missing"):
        jouletrace.load(tmp_path / "missing.npz")
    with pytest.raises(RecordingFormatError, match="shape"):
        jouletrace.load(tmp_path / "short.npz")
