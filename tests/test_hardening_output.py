"""Writing output under faults: nothing at the output path is destroyed, temporaries are safe and cleaned.

Every writer (recordings, Perfetto/Chrome JSON, plots) goes through
``jouletrace._safe_output.write_output``; these tests drive it through the real
writers and the CLI.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import jouletrace
from jouletrace import _safe_output
from jouletrace._safe_output import OutputPathError
from jouletrace.energy.recording import Recording
from jouletrace.kernels import export


def _rec(n: int = 200) -> Recording:
    t = np.arange(n, dtype=np.int64) * 1_000_000
    return Recording(
        t_ns=t, t_before_ns=t - 1, t_after_ns=t + 1, seq=np.arange(n, dtype=np.uint64),
        status=np.zeros(n, np.int32), values={"cpu0.package.energy_j": np.arange(n) * 0.5},
        cumulative={"cpu0.package.energy_j": True}, dropped=0, missed_deadlines=0, metadata={"source": "test"},
    )


def _read_fifo(path: Path, into: list[bytes]) -> threading.Thread:
    def run() -> None:
        with open(path, "rb") as fh:
            into.append(fh.read())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_fifo_is_streamed_into_never_replaced(tmp_path):  # type: ignore[no-untyped-def]
    fifo = tmp_path / "out.npz"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _read_fifo(fifo, got)
    deadline = time.monotonic() + 30
    while True:  # wait until the reader has the FIFO open, so the writer finds one
        try:
            _rec().save(fifo)
            break
        except OutputPathError:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    reader.join(30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    (tmp_path / "copy.npz").write_bytes(got[0])
    assert len(jouletrace.load(tmp_path / "copy.npz")) == 200


def test_fifo_without_reader_and_folders_are_refused(tmp_path):  # type: ignore[no-untyped-def]
    fifo = tmp_path / "lonely"
    os.mkfifo(fifo)
    with pytest.raises(OutputPathError, match="no reader"):
        _rec().save(fifo)  # refused at once, not blocked forever
    with pytest.raises(OutputPathError, match="is a folder"):
        _rec().save(tmp_path)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and sorted(os.listdir(tmp_path)) == ["lonely"]


def test_dev_null_stays_a_device(tmp_path):  # type: ignore[no-untyped-def]
    before = os.stat("/dev/null")
    _rec().save("/dev/null")
    export._write("/dev/null", "{}")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino


@pytest.mark.parametrize("writer", ["recording", "export"])
def test_symlinks_at_predictable_temporary_names_are_not_written_through(tmp_path, writer):  # type: ignore[no-untyped-def]
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "run.npz"
    # Every name the old writers used: <path>.tmp-<pid> and <path>.tmp.
    for name in (f"run.npz.tmp-{os.getpid()}", "run.npz.tmp"):
        (tmp_path / name).symlink_to(victim)
    if writer == "recording":
        _rec().save(out)
        assert len(jouletrace.load(out)) == 200
    else:
        export._write(out, '{"traceEvents": []}')
        assert out.read_text() == '{"traceEvents": []}'
    assert victim.read_bytes() == b"precious"
    assert stat.S_ISREG(os.lstat(out).st_mode)


def test_own_symlink_is_followed_and_stays_a_link(tmp_path):  # type: ignore[no-untyped-def]
    target = tmp_path / "real.npz"
    target.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to("real.npz")
    _rec().save(link)
    assert os.path.islink(link) and len(jouletrace.load(target)) == 200


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a link owned by another user needs root")
def test_someone_elses_symlink_is_refused(tmp_path):  # type: ignore[no-untyped-def]
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "out.npz"
    link.symlink_to(victim)
    os.lchown(link, 12345, 12345)
    with pytest.raises(OutputPathError, match="owned by another user"):
        _rec().save(link)
    assert victim.read_bytes() == b"precious"


def test_replaced_file_keeps_its_mode_and_failures_leave_it_whole(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    out = tmp_path / "run.npz"
    out.write_bytes(b"old contents")
    os.chmod(out, 0o640)
    _rec().save(out)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640

    def boom(fh, **_arrays):  # type: ignore[no-untyped-def]
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", boom)
    before = out.read_bytes()
    with pytest.raises(OSError):
        _rec().save(out)
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["run.npz"]


def test_stale_temporaries_of_dead_writers_are_cleaned(tmp_path):  # type: ignore[no-untyped-def]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    old = time.time() - 2 * _safe_output.STALE_AFTER_S
    stale = tmp_path / f".run.npz.jt-tmp-{dead_pid}-abc123"
    alive = tmp_path / f".run.npz.jt-tmp-{os.getpid()}-def456"  # a writer still running
    fresh = tmp_path / f".other.npz.jt-tmp-{dead_pid}-ghi789"  # maybe still being written
    foreign = tmp_path / f"notes.jt-tmp-{dead_pid}-x"  # not our pattern
    for p in (stale, alive, fresh, foreign):
        p.write_bytes(b"x" * 100)
    for p in (stale, alive, foreign):
        os.utime(p, (old, old))
    _rec().save(tmp_path / "new.npz")
    left = set(os.listdir(tmp_path))
    assert stale.name not in left
    assert {alive.name, fresh.name, foreign.name, "new.npz"} <= left


def test_fallback_folder_is_private(tmp_path):  # type: ignore[no-untyped-def]
    path = _safe_output.fallback_path(str(tmp_path / "run.npz"))
    try:
        folder = os.path.dirname(path)
        st = os.lstat(folder)
        assert os.path.basename(path) == "run.npz"
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    finally:
        os.rmdir(os.path.dirname(path))


def _jt(*args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "jouletrace", *args], capture_output=True, text=True,
                          timeout=120, **kw)


def test_record_to_dev_null(tmp_path):  # type: ignore[no-untyped-def]
    before = os.stat("/dev/null")
    r = _jt("record", "--source", "sim", "-o", "/dev/null", "--", "true")
    assert r.returncode == 0, r.stderr
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino
    assert "Energy of" in r.stderr


@pytest.mark.parametrize("code,expect", [(0, 74), (3, 3)])
def test_record_when_no_save_succeeds_still_reports_and_exits(tmp_path, code, expect):  # type: ignore[no-untyped-def]
    # The command sets `ulimit -f 4` on jouletrace itself: neither -o nor the fallback can take a recording.
    limit = ("import os, resource, sys; resource.prlimit(os.getppid(), resource.RLIMIT_FSIZE, (4096, 4096)); "
             f"sys.exit({code})")
    r = _jt("record", "--source", "sim", "-o", str(tmp_path / "run.npz"), "--", sys.executable, "-c", limit)
    assert r.returncode == expect, r.stderr
    assert "Energy of" in r.stderr and "this recording is lost" in r.stderr and "Traceback" not in r.stderr
    assert os.listdir(tmp_path) == []


def test_setcap_advice_says_what_it_grants_and_the_narrower_way():  # type: ignore[no-untyped-def]
    from jouletrace import _core

    for paranoid in (2, -1):
        _, fix = _core.rapl_perf_open_failure(1, paranoid, "perf_event_open", "/x/py")
        assert "`sudo setcap cap_perfmon=ep /x/py`" in fix
        assert "every script that interpreter runs" in fix and "venv --copies" in fix
