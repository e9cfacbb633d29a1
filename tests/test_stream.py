"""Streaming recordings (jouletrace.energy.stream): kill -9 mid-run, lossless compaction, bounded memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import jouletrace
from jouletrace import _core
from jouletrace.attribute import attribute
from jouletrace.cli._summary import summarize
from jouletrace.energy.compact import keep_mask
from jouletrace.errors import InvalidArgumentError, RecordingFormatError
from jouletrace.testing import workloads as wl
from jouletrace.testing.waiting import wait_for_reads, wait_until

pytest.importorskip("pyarrow")


def jt(*args: str, **kw):  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "jouletrace", *args], capture_output=True, text=True,
                          timeout=120, **kw)


# -- compaction -------------------------------------------------------------------------------
def test_keep_mask_keeps_both_brackets_of_every_change_and_status_and_drops():
    v = np.array([1, 1, 1, 2, 2, 2, 2, 3, np.nan, np.nan, 3, 3], dtype=float)
    st = np.zeros(v.size, np.int32)
    st[5] = 1
    seq = np.arange(v.size, dtype=np.uint64)
    seq[10:] += 5  # a drop before row 10
    k = keep_mask(st, seq, [v])
    assert k.tolist() == [True, False, True, True, True, True, True, True, True, True, True, True]
    assert keep_mask(np.zeros(4, np.int32), np.arange(4, dtype=np.uint64), [np.ones(4)]).tolist() == \
        [True, False, False, True]
    # A chunked writer: the row before the chunk is context, the last row waits for the next.
    k = keep_mask(np.zeros(4, np.int32), np.arange(4, dtype=np.uint64), [np.ones(4)], first=False, last=False)
    assert not k.any()


def _run_two(make_sim, tmp_path, seconds=3.5):  # type: ignore[no-untyped-def]
    """One real-time run of a kernel mix on the simulated GPU, recorded in memory and streamed compacted,
    with and without NVML's timestamps (the 'timestamps' and 'periodic' placements)."""
    rng = np.random.default_rng(7)
    sim = make_sim(gpus=1, update_period_s=0.02, avg_window_s=0.005, idle_w=60)
    now = _core.monotonic_ns()
    launches = wl.synthetic_launches(rng, now + 300_000_000, seconds - 0.5, n_names=4)
    sim.add_segments(*wl.sharing_segments(launches["start"], launches["end"], launches["watts"]), gpu=0)
    runs = []
    for ts in (True, False):
        path = tmp_path / f"run{ts}.jt"
        runs.append((jouletrace.Sampler("sim", sim=sim, rate_hz=1000, stream_to=path, keep_s=None, timestamps=ts),
                     path))
    for s, _ in runs:
        s.start()
    time.sleep(seconds + 0.3)
    for s, _ in runs:
        s.stop()
    return launches, [(s.recording(), jouletrace.load(p)) for s, p in runs]


def test_compacted_and_full_recordings_give_identical_results(make_sim, tmp_path):
    launches, pairs = _run_two(make_sim, tmp_path)
    rng = np.random.default_rng(3)
    methods = set()
    for full, comp in pairs:
        assert comp.metadata["stream"]["compacted"] and comp.metadata["stream"]["ended"] == "normally"
        # Compaction keeps both brackets of every change (and the two ends), nothing else; and most
        # polls repeat the previous one (20 ms updates at 1 kHz: ~20 polls each; 5 needs a quarter
        # of the rate, which even a loaded machine gives the sampler).
        changed = int(np.count_nonzero(np.any(np.diff(np.stack([np.asarray(full[c]) for c in full.channels]),
                                                      axis=1) != 0, axis=0)))
        assert len(comp) <= 2 * changed + 2
        assert changed < len(full) / 5
        assert comp.metadata["stream"]["polls"] == len(full)
        methods.add(full.updates("gpu0").method)
        # Windows and their bounds, every edge model.
        t0 = rng.integers(full.t_ns[0] - 10_000_000, full.t_ns[-1], 3000)
        t1 = t0 + rng.integers(0, 800_000_000, t0.size)
        for edges in ("aligned", "independent", "auto"):
            a, b = full.energies(t0, t1, edges=edges), comp.energies(t0, t1, edges=edges)
            np.testing.assert_array_equal(a.energy_j["gpu0"], b.energy_j["gpu0"])
            np.testing.assert_array_equal(a.uncertainty_j["gpu0"], b.uncertainty_j["gpu0"])
            np.testing.assert_array_equal(a.flags["gpu0"], b.flags["gpu0"])
        uf, uc = full.updates("gpu0"), comp.updates("gpu0")
        for f in ("t_ns", "value", "h_ns", "hc_ns", "lo_ns", "hi_ns"):
            np.testing.assert_array_equal(getattr(uf, f), getattr(uc, f))
        assert full.characterize(refresh=True) == comp.characterize(refresh=True)
        # The report (but for the polls it counts, which the file keeps) and the plotted power curve.
        sf, sc = summarize(full, "x"), summarize(comp, "x")
        assert sf == sc
        tf, wf = full.power("gpu0")
        tc, wc = comp.power("gpu0")
        np.testing.assert_array_equal(np.interp(tf, tc, wc), wf)  # the same polyline, collinear points left out
        # Per launch and per name.
        off = int(full.clock_pairs[0, 1] - full.clock_pairs[0, 0])
        kt = wl.kernel_table(launches["start"], launches["end"], launches["name_id"], launches["names"],
                             epoch_offset=off)
        ra, rb = attribute(full, kt, bootstrap=40), attribute(comp, kt, bootstrap=40)
        for table_a, table_b in ((ra.names, rb.names), (ra.launches, rb.launches)):
            assert table_a.columns == table_b.columns
            for col in table_a.columns:
                np.testing.assert_array_equal(table_a[col], table_b[col], err_msg=col)
    assert methods == {"timestamps", "periodic"}


def test_every_poll_stream_round_trips_exactly(make_sim, tmp_path):
    sim = make_sim(update_period_s=0.05)
    s = jouletrace.Sampler("sim", sim=sim, rate_hz=2000, stream_to=tmp_path / "all.jt", compact=False, keep_s=None)
    with s:
        wait_for_reads(s, 1200)  # 0.6 s at 2 kHz: counted, not slept
    full, back = s.recording(), jouletrace.load(tmp_path / "all.jt")
    assert len(back) == len(full) > 500
    for col in ("t_ns", "t_before_ns", "t_after_ns", "seq", "status"):
        np.testing.assert_array_equal(getattr(full, col), getattr(back, col))
    for ch in full.channels:
        np.testing.assert_array_equal(full[ch], back[ch])
        assert back.is_cumulative(ch) == full.is_cumulative(ch)
    np.testing.assert_array_equal(full.clock_pairs, back.clock_pairs)
    assert not back.metadata["stream"]["compacted"]


# -- crash safety -------------------------------------------------------------------------------
def _peek(path):  # type: ignore[no-untyped-def]
    """The recording as far as it is on disk now (None while there is nothing readable yet)."""
    try:
        return jouletrace.load(path)
    except Exception:  # noqa: BLE001  (not there yet, or a flush under way: look again)
        return None


def _kill_and_load(proc: subprocess.Popen, path, ready):  # type: ignore[no-untyped-def]
    """SIGKILL ``proc`` once what it has written to ``path`` satisfies ``ready`` (a liveness wait on
    the file, not a fixed sleep: a loaded machine only makes it slower); the recording read back
    and the kill time."""
    def written() -> bool:
        assert proc.poll() is None, proc.communicate()
        rec = _peek(path) if os.path.exists(os.path.join(path, "samples", "part-000000.arrow")) else None
        return rec is not None and bool(ready(rec))

    wait_until(written, f"{path} to hold enough", poll_s=0.1)
    time.sleep(0.5)  # then kill at a moment unrelated to the flush that made it ready
    killed_at = time.monotonic_ns()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    return jouletrace.load(path), killed_at


def test_sigkill_of_record_keeps_all_but_the_last_second(tmp_path):
    out = tmp_path / "killed.jt"
    proc = subprocess.Popen([sys.executable, "-m", "jouletrace", "record", "--source", "sim", "-o", str(out),
                             "--", sys.executable, "-c", "import time; time.sleep(30)"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rec, killed_at = _kill_and_load(proc, out, lambda r: len(r) and int(r.seq[-1]) > 1600 and r.duration_s > 1.6)
    st = rec.metadata["stream"]
    assert st["ended"] == "abnormally" and rec.metadata["ended_abnormally"]
    assert killed_at - int(rec.t_ns[-1]) < 1_000_000_000  # at most the last second is missing
    assert st["polls"] > 1500 and rec.duration_s > 1.5
    # What a user runs on it: a table, and a warning that the run was killed.
    r = jt("report", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert "ended abnormally" in r.stderr and "Traceback" not in r.stderr
    summary = json.loads(r.stdout)
    assert summary["devices"][0]["energy_j"] > 0


def test_sigkill_of_a_python_process_streaming_a_monitor(tmp_path):
    out = tmp_path / "mon.jt"
    script = textwrap.dedent(f"""
        import time, jouletrace
        from jouletrace.sim import SimGPU
        sim = SimGPU(update_period_s=0.1)
        mon = jouletrace.Monitor(sim=sim, cpu=False, stream_to={str(out)!r})
        mon.start()
        while True:
            with mon.window("step", work={{"tokens": 5}}):
                time.sleep(0.05)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rec, killed_at = _kill_and_load(proc, out, lambda r: len(r.metadata.get("windows") or []) > 20)
    assert rec.metadata["stream"]["ended"] == "abnormally"
    assert killed_at - int(rec.t_ns[-1]) < 1_000_000_000
    wins = rec.metadata["windows"]
    assert len(wins) > 15 and all(w["name"] == "step" and w["work"] == {"tokens": 5} for w in wins)
    assert killed_at - wins[-1]["t1_ns"] < 1_000_000_000
    m = rec.energies([w["t0_ns"] for w in wins[:-5]], [w["t1_ns"] for w in wins[:-5]])
    assert np.all(m.energy_j["gpu0"] > 0)


def test_a_batch_cut_in_half_is_left_out(tmp_path):
    """A crash while a flush was being written: the rows of earlier flushes (in the journal) are kept."""
    from jouletrace.energy.stream import StreamWriter

    path = tmp_path / "cut.jt"
    w = StreamWriter(path, [("gpu0.energy_j", True)], {"source": "sim"}, commit_every=3)
    for k in range(5):  # a commit after flush 3: rows 0-299 in the part file, 300-499 in the journal
        i = np.arange(100 * k, 100 * (k + 1))
        w.append("samples", {"t_ns": i * 1000, "t_before_ns": i * 1000 - 5, "t_after_ns": i * 1000 + 5,
                             "seq": i.astype(np.uint64), "status": np.zeros(100, np.int32),
                             "gpu0.energy_j": i * 0.5})
        w.flush()
    (journal,) = [p for p in os.listdir(path / "samples") if p.startswith("_journal-")]
    assert journal == "_journal-000000-300.arrows"
    journal = os.path.join("samples", journal)
    size = os.path.getsize(path / journal)
    with open(path / journal, "r+b") as f:  # the last flush, cut in half
        f.truncate(size - 300)
    rec = jouletrace.load(path)
    np.testing.assert_array_equal(rec.t_ns, np.arange(400) * 1000)
    assert rec.metadata["stream"]["truncated"] == ["samples"]
    assert rec.metadata["stream"]["ended"] == "abnormally"
    w.close()


# -- memory --------------------------------------------------------------------------------------
def test_memory_stays_bounded_while_the_file_keeps_everything(make_sim, tmp_path):
    path = tmp_path / "long.jt"
    s = jouletrace.Sampler("sim", sim=make_sim(update_period_s=0.01), rate_hz=20_000, stream_to=path,
                           keep_s=0.5, flush_s=0.1)
    seen = []
    with s:
        for _ in range(12):
            time.sleep(0.25)
            seen.append(s.memory_bytes)
        wait_for_reads(s, 20_001)  # the polls asserted below: counted, not assumed from the time slept
    rec = s.recording()
    polls = rec.metadata["stream"]["polls"]
    assert polls > 20_000
    assert len(rec) < 0.5 * polls  # the recent span only
    assert rec.metadata["stream"]["first_poll"] > 0
    assert max(seen[4:]) <= 2 * seen[3] + (1 << 21)  # flat, not growing with the run
    back = jouletrace.load(path)
    assert back.metadata["stream"]["polls"] == polls
    assert back.t_ns[0] < rec.t_ns[0] and back.t_ns[-1] == rec.t_ns[-1]


# -- paths and errors ---------------------------------------------------------------------------------
def test_never_writes_over_what_is_there(make_sim, tmp_path):
    there = tmp_path / "there.jt"
    there.mkdir()
    (there / "keep").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="already exists"):
        jouletrace.Sampler("sim", sim=make_sim(), stream_to=there).start()
    assert (there / "keep").read_text() == "mine"
    r = jt("record", "--source", "sim", "-o", str(there), "--", "true")
    assert r.returncode == 1 and "already exists" in r.stderr and "Traceback" not in r.stderr
    assert sorted(os.listdir(there)) == ["keep"]
    with pytest.raises(RecordingFormatError, match="folder, not a recording"):
        jouletrace.load(there)


def test_record_streams_by_default_and_merges_the_commands_windows(tmp_path):
    child = textwrap.dedent("""
        import time, jouletrace
        from jouletrace.sim import SimGPU
        jouletrace.configure(sim=SimGPU(update_period_s=0.02), cpu=False)
        for i in range(3):
            with jouletrace.window("step"):
                time.sleep(0.1)
    """)
    r = jt("record", "--source", "sim", "--", sys.executable, "-c", child, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r2 = jt("record", "--source", "sim", "--", "true", cwd=tmp_path)  # a second run: a new name
    assert r2.returncode == 0, r2.stderr
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".jt")) == ["jouletrace-2.jt", "jouletrace.jt"]
    rec = jouletrace.load(tmp_path / "jouletrace.jt")
    names = [w["name"] for w in rec.metadata["windows"]]
    assert names == ["command", "step", "step", "step"]
    cmd = rec.metadata["windows"][0]
    assert all(cmd["t0_ns"] < w["t0_ns"] < w["t1_ns"] < cmd["t1_ns"] for w in rec.metadata["windows"][1:])
    assert rec.metadata["stream"]["ended"] == "normally"


def test_a_program_that_exits_without_stopping_ends_its_recording_normally(tmp_path):
    out = tmp_path / "exit.jt"
    script = textwrap.dedent(f"""
        import time, jouletrace
        from jouletrace.sim import SimGPU
        s = jouletrace.Sampler("sim", sim=SimGPU(), stream_to={str(out)!r}).start()
        deadline = time.monotonic() + 60  # 400 polls (0.4 s at 1 kHz), counted: a loaded machine is slower
        while s.reads < 400 and time.monotonic() < deadline:
            time.sleep(0.01)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rec = jouletrace.load(out)
    assert rec.metadata["stream"]["ended"] == "normally" and rec.metadata["stream"]["polls"] > 300
    assert not [p for _, _, files in os.walk(out) for p in files if "journal-" in p]


def test_clock_pairs_stay_bounded_and_convert_as_with_every_pair(make_sim, tmp_path):
    """A long run's clock pairs, fed faster than real time (a pair per 1,000 polls, as at 1 kHz): the
    streaming writer writes them all out and holds only those its recent view needs; conversions of
    that view equal those through every pair, within the uncertainty the alignment states."""
    from jouletrace.kernels.alignment import _pairs_uncertainty
    from jouletrace.sampling.clock import nearest as _nearest

    path = tmp_path / "pairs.jt"
    from jouletrace.energy.stream import Streamer

    s = jouletrace.Sampler("sim", sim=make_sim(), rate_hz=1000)
    s.stream = st = Streamer(s, path, keep_s=5.0)  # what start() makes, driven here without its thread
    nat = s._native
    epoch, m0 = 1_700_000_000 * 10**9, 0
    rng = np.random.default_rng(5)
    every: list[tuple[int, int, int]] = []
    held_most = 0
    for k in range(800):  # 800 "seconds": 800 k polls (1 us apart in injected time) and 800 pairs
        mono = m0 + k * 1_000_000 + 500_000
        unc = int(rng.integers(30, 200))
        # The wall clock slews (NTP) by 2 us per pair, then steps by 1 ms once.
        real = mono + epoch + 2_000 * k + (1_000_000 if k >= 500 else 0) + int(rng.integers(-unc // 2, unc // 2 + 1))
        nat.inject_for_test(1000)
        nat.add_clock_pair_for_test(mono, real, unc)
        every.append((mono, real, unc))
        st.tick(final=False)
        assert st.error is None
        held_most = max(held_most, len(nat.clock_pairs(0)))
    assert nat.clock_pairs_taken == 800 and nat.clock_pairs_released > 780
    assert held_most <= 8  # keep_s = 5 "seconds" of polls: about 5 pairs, plus the one before them
    full = np.array(every, dtype=np.int64)
    rec = s.recording()
    assert rec.metadata["stream"]["first_poll"] > 790_000
    np.testing.assert_array_equal(rec.clock_pairs, full[nat.clock_pairs_released:])
    q = np.asarray(rec.t_ns)
    want = q + (full[:, 1] - full[:, 0])[_nearest(full[:, 0], q)]
    got = rec.to_epoch_ns(q)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(rec.to_monotonic_ns(want), q)
    # Within the stated uncertainty of the truth (the wall clock without the pairs' read noise).
    truth = q + epoch + 2_000 * ((q - m0 - 500_000) / 1_000_000) + 1_000_000
    stated, _ = _pairs_uncertainty(rec.clock_pairs, int(got.min()), int(got.max()))
    assert np.abs(got - truth).max() <= stated
    st.finish({"source": "sim"})
    back = jouletrace.load(path)
    np.testing.assert_array_equal(back.clock_pairs, full)  # the file keeps every pair
    assert len(back) == 800_000
    np.testing.assert_array_equal(back.to_epoch_ns(q), want)
    with pytest.raises(InvalidArgumentError, match="uncertainty_ns"):
        nat.add_clock_pair_for_test(0, 0, -1)
