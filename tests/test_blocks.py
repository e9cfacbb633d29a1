"""Recordings read block by block (jouletrace.energy.blocks): the same results as in memory, bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jouletrace
from jouletrace.energy import updates as up
from jouletrace.energy.blocks import BlockRecording, open_recording
from jouletrace.energy.stream import StreamWriter

# The jouletrace this test imports (the installed one in CI, the source tree with its built
# extension in a dev tree): a child process must import the same one.
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(jouletrace.__file__)))

EPOCH = 1_700_000_000_000_000_000
P = 100_000_000


def compacted(n_upd: int, *, seed: int = 0, stamps: bool = True, drift: float = 0.0, poll_ns: int = 1_000_000,
              nan_every: int = 0) -> jouletrace.Recording:
    """The rows compaction keeps of one GPU polled every ``poll_ns`` against a 100 ms sensor:
    the last poll before each update and the first after it (synthetic)."""
    rng = np.random.default_rng(seed)
    k = np.arange(n_upd, dtype=np.int64)
    upd = 1_000_000_000 + 37_000_000 + (k * P * (1 + drift)).astype(np.int64)
    before = upd - rng.integers(1_000, poll_ns - 1_000, n_upd)
    t = np.empty(2 * n_upd, np.int64)
    t[0::2], t[1::2] = before, before + poll_ns
    p = 150.0 + 300.0 * rng.random(n_upd)
    e_after = np.floor(np.cumsum(p * 0.1) * 1000.0) / 1000.0
    e = np.empty(t.size)
    e[1::2], e[0::2] = e_after, np.concatenate([[0.0], e_after[:-1]])
    pw = np.empty(t.size)
    pw[1::2], pw[0::2] = p, np.concatenate([[p[0]], p[:-1]])
    values = {"gpu0.energy_j": e, "gpu0.power_w": pw}
    if stamps:
        st = ((upd + EPOCH) // 1000).astype(np.float64)
        ts = np.empty(t.size)
        ts[1::2], ts[0::2] = st, np.concatenate([[np.nan], st[:-1]])
        values["gpu0.energy_ts_us"] = ts
    if nan_every:
        e[5::nan_every] = np.nan
    seq = np.cumsum(rng.integers(1, 100, t.size)).astype(np.uint64)
    return jouletrace.Recording(
        t_ns=t, t_before_ns=t - 10_000, t_after_ns=t + 10_000, seq=seq, status=np.zeros(t.size, np.int32),
        values=values, cumulative={c: c.endswith("energy_j") for c in values},
        clock_pairs=np.array([[t[0], t[0] + EPOCH, 40], [t[-1], t[-1] + EPOCH, 40]]),
        metadata={"source": "sim", "rate_hz": 1000.0, "device": {"gpu0.power_limit_w": "700"}})


def windows_over(rec: jouletrace.Recording, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.asarray(rec.t_ns)
    a = rng.integers(int(t[0]) - 200_000_000, int(t[-1]), n)  # some before the first sample
    return a, a + rng.integers(1_000_000, 5_000_000_000, n)


def assert_same(ref, got) -> None:  # type: ignore[no-untyped-def]
    assert ref.keys == got.keys
    for key in ref.keys:
        np.testing.assert_allclose(got.energy_j[key], ref.energy_j[key], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.uncertainty_j[key], ref.uncertainty_j[key], rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(got.flags[key], ref.flags[key])
        assert got.edges[key] == ref.edges[key] and got.method[key] == ref.method[key]


@pytest.fixture
def small_segments(monkeypatch):  # type: ignore[no-untyped-def]
    """Grid segments of 4 blocks (256 periods) and medians over the first 300 changes, so that a
    test-sized recording spans many segments, and blocks cut through them."""
    monkeypatch.setattr(up, "SEGMENT_BLOCKS", 4)
    monkeypatch.setattr(up, "MEDIAN_CHANGES", 300)


@pytest.mark.parametrize("kind", ["timestamps", "periodic", "drifting", "nan", "brackets", "part_time"])
def test_block_energies_equal_the_in_memory_ones(kind, small_segments):  # type: ignore[no-untyped-def]
    rec = {
        "timestamps": lambda: compacted(4000, stamps=True),
        "periodic": lambda: compacted(4000, stamps=False),
        "drifting": lambda: compacted(4000, stamps=False, drift=2e-5),
        "nan": lambda: compacted(4000, stamps=False, nan_every=97),
        "brackets": lambda: compacted(3000, stamps=False, poll_ns=60_000_000),
        "part_time": lambda: compacted(3000, stamps=False, drift=1e-5),
    }[kind]()
    if kind == "part_time":
        rec.set_sensor_model("gpu0", "part_time")
    expected = {"timestamps": "timestamps", "brackets": "brackets"}.get(kind, "periodic")
    assert rec.updates("gpu0").method == expected
    a, b = windows_over(rec, 3000)
    for rows in (333, 1777):
        br = BlockRecording.of(rec, rows)
        for edges in ("auto", "aligned"):
            assert_same(rec.energies(a, b, edges=edges), br.energies(a, b, edges=edges))
        assert br.update_method("gpu0") == expected
    if kind == "periodic":  # the grid was fitted per segment, some of them whole
        assert len(np.unique(rec.updates("gpu0").block)) > 10


def test_block_power_timelines_equal_the_in_memory_ones(small_segments):  # type: ignore[no-untyped-def]
    rec = compacted(3000, stamps=False, drift=1e-5)
    br = BlockRecording.of(rec, 500)
    t = np.asarray(rec.t_ns)
    t0, t1 = int(t[100]), int(t[4000])
    for key in ("gpu0", "gpu0.energy_j"):
        tt, w = rec.power(key)
        sel = (tt >= t0) & (tt <= t1)
        assert br.peak_power_w(key, t0, t1) == pytest.approx(float(w[sel].max()), rel=1e-12)
        grid, wi = br.power_timeline(key, t0, t1, 400)
        np.testing.assert_allclose(wi, np.interp(grid, tt[sel].astype(np.float64), w[sel]), rtol=1e-12)
    assert (len(br), br.t_first_ns, br.t_last_ns) == (len(rec), int(t[0]), int(t[-1]))


def write_stream(rec: jouletrace.Recording, path, *, windows=None) -> None:  # type: ignore[no-untyped-def]
    """``rec`` as a streamed recording, in batches as a streaming sampler writes them."""
    w = StreamWriter(path, [(c, rec.is_cumulative(c)) for c in rec.channels], dict(rec.metadata), compact=False,
                     commit_every=3)
    n = len(rec)
    for a in range(0, n, 1500):
        cols = {k: np.asarray(getattr(rec, k))[a:a + 1500] for k in ("t_ns", "t_before_ns", "t_after_ns", "seq", "status")}
        cols.update({c: np.asarray(rec[c])[a:a + 1500] for c in rec.channels})
        w.append("samples", cols)
        w.flush()
    cp = rec.clock_pairs
    w.append("clock_pairs", {"monotonic_ns": cp[:, 0], "realtime_ns": cp[:, 1], "uncertainty_ns": cp[:, 2]})
    if windows:
        w.append("windows", {"name": [x["name"] for x in windows], "t0_ns": [x["t0_ns"] for x in windows],
                             "t1_ns": [x["t1_ns"] for x in windows],
                             "work_json": [json.dumps(x["work"]) if x.get("work") else "" for x in windows]})
    w.append("stats", {"t_ns": [0], "polls": [n], "rows": [n], "reads": [n], "dropped_ring": [0],
                       "dropped_storage": [0], "missed_deadlines": [0]})
    w.end(dict(rec.metadata, windows=windows or []))


def jt(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=PKG_PARENT, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "jouletrace", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_report_and_compare_of_a_streamed_recording_read_block_by_block(tmp_path):  # type: ignore[no-untyped-def]
    rec = compacted(6000, stamps=True)
    t = np.asarray(rec.t_ns)
    steps = [{"name": "step", "t0_ns": int(t[i]), "t1_ns": int(t[i + 200]), "work": {"tokens": 512}}
             for i in range(100, 11000, 250)]
    path = tmp_path / "run.jt"
    write_stream(rec, path, windows=steps)
    assert isinstance(open_recording(path), jouletrace.Recording)
    assert isinstance(open_recording(path, max_memory_bytes=0), BlockRecording)
    whole = jt("report", "--json", str(path))
    by_block = jt("report", "--json", str(path), env_extra={"JOULETRACE_IN_MEMORY_BYTES": "0"})
    assert whole.returncode == 0 and by_block.returncode == 0, by_block.stderr
    assert json.loads(by_block.stdout) == json.loads(whole.stdout)
    assert json.loads(whole.stdout)["devices"][0]["energy_j"] > 0
    whole = jt("compare", "--json", str(path), str(path))
    by_block = jt("compare", "--json", str(path), str(path), env_extra={"JOULETRACE_IN_MEMORY_BYTES": "0"})
    assert by_block.returncode == 0, by_block.stderr
    assert json.loads(by_block.stdout) == json.loads(whole.stdout)
    plot = jt("report", "--plot", str(tmp_path / "p.png"), str(path), env_extra={"JOULETRACE_IN_MEMORY_BYTES": "0"})
    assert plot.returncode != 0 and "block by block" in plot.stderr and "Traceback" not in plot.stderr


def test_report_memory_stays_bounded_on_a_recording_larger_than_its_blocks(tmp_path):  # type: ignore[no-untyped-def]
    """Peak resident memory (VmHWM, which starts again at exec; ru_maxrss keeps the forked parent's) of a
    report in a child process on 4 M rows read 64 k rows at a time, against the same report with the
    recording in memory: the block path holds a fraction of it."""
    rec = compacted(2_000_000, stamps=True)
    path = tmp_path / "long.jt"
    write_stream(rec, path)
    del rec
    code = textwrap.dedent(f"""
        import json, sys
        from jouletrace.energy import blocks
        from jouletrace.cli._summary import summarize
        rec = blocks.open_recording({str(path)!r}, max_memory_bytes=int(sys.argv[1]), block_rows=1 << 16)
        s = summarize(rec, "x")
        hwm = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")][0]
        print(json.dumps([type(rec).__name__, s["devices"][0]["energy_j"], hwm / 1024]))
    """)
    env = dict(os.environ, PYTHONPATH=PKG_PARENT)
    out = {}
    for limit in (0, 1 << 40):
        r = subprocess.run([sys.executable, "-c", code, str(limit)], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        out[limit] = json.loads(r.stdout)
    (kind_b, e_b, rss_b), (kind_m, e_m, rss_m) = out[0], out[1 << 40]
    assert (kind_b, kind_m) == ("BlockRecording", "Recording")
    assert e_b == pytest.approx(e_m, rel=1e-12)
    # 4 M rows of 8 columns are 256 MB as arrays alone: the in-memory report holds them and the
    # placement of 2 M updates; the block path a 64 k-row block and one segment's updates.
    assert rss_m > 400
    assert rss_b < 0.5 * rss_m and rss_b < 300
