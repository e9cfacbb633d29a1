"""Process faults: signals at every phase of `record`, its command's process group, kill -9, fork.

Nothing here asserts on speed: "exits" means within a generous timeout on a busy machine.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import time

import pytest

import jouletrace

JT = [sys.executable, "-m", "jouletrace"]


def _wait_for(cond, timeout: float = 60, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _gone(pid: int) -> bool:
    """The process has ended (a zombie nobody reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def _catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler installed for `sig` (SigCgt in /proc)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except FileNotFoundError:
        pass
    return False


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` stopped (SIGSTOP is delivered asynchronously), or the process gone."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] not in ("T", "t", "Z", "X"):
                    return False
    except (FileNotFoundError, ProcessLookupError):
        pass
    return True


def _has_children(pid: int) -> bool:
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                if fh.read().split():
                    return True
    except (FileNotFoundError, ProcessLookupError):
        pass
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_before_the_command_starts_means_it_never_starts(tmp_path, sig):  # type: ignore[no-untyped-def]
    """record is frozen (SIGSTOP) once its handlers are in, the signal is sent, then it continues:
    the signal is certain to precede the command's start. Should this machine be so slow that the
    command had already started when the freeze landed, that attempt proves nothing and is redone."""
    for attempt in range(5):
        d = tmp_path / f"try{attempt}"
        d.mkdir()
        marker = d / "ran"
        p = subprocess.Popen([*JT, "record", "--source", "sim", "-o", str(d / "r.npz"), "--",
                              sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda p=p: _catches(p.pid, sig) or p.poll() is not None, what="record to install its handlers")
        p.send_signal(signal.SIGSTOP)
        # Only once it is stopped does "no child yet" mean the command cannot start before the signal.
        _wait_for(lambda p=p: _stopped(p.pid), what="record to stop")
        started = _has_children(p.pid) or p.poll() is not None
        p.send_signal(sig)
        p.send_signal(signal.SIGCONT)
        _, err = p.communicate(timeout=60)
        if started:
            continue
        assert p.returncode in (128 + sig, -sig), err
        assert not marker.exists(), "the command ran although record was told to stop before it started"
        assert not (d / "r.npz").exists()
        assert "Traceback" not in err
        return
    pytest.fail("record started its command before it could be frozen, five times over")


def test_signal_during_save_is_absorbed(tmp_path):  # type: ignore[no-untyped-def]
    fifo = tmp_path / "out.npz"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so the save streams into the FIFO
    fcntl.fcntl(rfd, 1031, 4096)  # F_SETPIPE_SZ: a one-page pipe, so any recording blocks the save
    p = subprocess.Popen([*JT, "record", "--source", "sim", "-o", str(fifo), "--", "sh", "-c", "exit 5"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r, _, _ = select.select([rfd], [], [], 60)  # bytes arrive: record is saving (and blocks: nobody reads)
        assert r, "record never started saving"
        p.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        os.set_blocking(rfd, True)
        data = b""
        while chunk := os.read(rfd, 1 << 16):
            data += chunk
    finally:
        os.close(rfd)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 5, err  # the command's status, not the signal's
    (tmp_path / "copy.npz").write_bytes(data)
    rec = jouletrace.load(tmp_path / "copy.npz")  # whole
    assert rec.metadata["exit_code"] == 5 and len(rec) > 10


def test_sigterm_reaches_every_process_of_the_command(tmp_path):  # type: ignore[no-untyped-def]
    pids_file = tmp_path / "pids"
    script = f"sleep 100 & echo $! >> {pids_file}; sleep 100 & echo $! >> {pids_file}; wait"
    p = subprocess.Popen([*JT, "record", "--source", "sim", "-o", str(tmp_path / "r.npz"), "--", "sh", "-c", script],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        _wait_for(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2, what="the shell's children")
        pids = [int(x) for x in pids_file.read_text().split()]
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 128 + signal.SIGTERM, err
        _wait_for(lambda: all(_gone(x) for x in pids), timeout=30, what="the shell's children to end")
        assert jouletrace.load(tmp_path / "r.npz").metadata["signals"] == ["SIGTERM"]
    finally:
        _kill_all(pids)
        if p.poll() is None:
            p.kill()


def test_sigkill_of_record_ends_the_command(tmp_path):  # type: ignore[no-untyped-def]
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(100)"
    p = subprocess.Popen([*JT, "record", "--source", "sim", "-o", str(tmp_path / "r.npz"), "--",
                          sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = 0
    try:
        _wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", what="the command to start")
        child = int(pid_file.read_text())
        p.kill()
        p.wait(timeout=60)
        _wait_for(lambda: _gone(child), timeout=30, what="the command to end after record was killed")
    finally:
        if child:
            _kill_all([child])


# --- fork() while sampling: the child must exit normally and sample on its own ---------------

_FORK_CHILD = r"""
import os, sys, time
import jouletrace
from jouletrace.sim import SimGPU

mode = sys.argv[1]
sim = SimGPU(gpus=1, update_period_s=0.01)
if mode == "sampler":
    s = jouletrace.Sampler("sim", sim=sim, rate_hz=2000)
    s.start()
else:  # the process-wide default Monitor behind jouletrace.window
    jouletrace.configure(sim=sim, rate_hz=2000)
    with jouletrace.window("before"):
        time.sleep(0.05)
time.sleep(0.1)
pid = os.fork()
if pid == 0:
    # The child: the parent's sampler is stopped here; a new one works.
    code = 0
    try:
        with jouletrace.Sampler("sim", sim=sim, rate_hz=2000) as mine:
            time.sleep(0.2)
        if len(mine.recording()) < 20:
            code = 3
    except BaseException as e:
        print("child failed:", repr(e), file=sys.stderr)
        code = 4
    sys.stdout.flush()
    sys.exit(code)  # a normal exit: atexit, destructors of the parent's samplers
_, status = os.waitpid(pid, 0)
if mode == "sampler":
    s.stop()
    assert len(s.recording()) > 100
print("child status", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize("mode", ["sampler", "monitor"])
def test_fork_while_sampling(tmp_path, mode):  # type: ignore[no-untyped-def]
    script = tmp_path / "fork.py"
    script.write_text(_FORK_CHILD)
    p = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the parent and the hung child
        p.communicate()
        pytest.fail("the forked child (or its parent) hung")
    assert p.returncode == 0, err
    assert "child status 0" in out, out + err


# --- address space: a Sampler reserves in proportion to what it records ----------------------

_AS_SCRIPT = r"""
import resource, sys
import numpy as np
import jouletrace
from jouletrace.sim import SimGPU

sim = SimGPU(gpus=1)
def vm_bytes():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
# Room for 1 GiB more than what runs now: an old Sampler reserved ~2.4 GB on its own.
limit = vm_bytes() + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
samplers = [jouletrace.Sampler("sim", sim=sim, rate_hz=1000) for _ in range(6)]
for s in samplers:
    s.start()
big = np.ones(64 << 20, dtype=np.uint8)  # and other allocations still succeed
for s in samplers:
    s.stop()
    assert len(s.recording()) > 0
# A column outgrows its first mapping: views handed out before stay valid and unchanged.
s = samplers[0]
s._native.inject_for_test(10)
before = s.recording()
t_before = np.array(before.t_ns)
s._native.inject_for_test(1_200_000)  # > 4 MiB of int64 per column
after = s.recording()
assert np.array_equal(before.t_ns, t_before)
assert np.array_equal(after.t_ns[: len(before)], before.t_ns)
assert len(after) == len(before) + 1_200_000 and after.dropped == 0
print("ok")
"""


def test_samplers_under_an_address_space_limit(tmp_path):  # type: ignore[no-untyped-def]
    script = tmp_path / "as.py"
    script.write_text(_AS_SCRIPT)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
