"""``jouletrace record [-o FILE] [--source S ...] [--rate HZ] -- CMD ARGS``: like ``perf stat``.

Runs CMD as a child while every usable source (or the named ones) samples,
streaming the recording to a new folder as it goes (``jouletrace.jt``; see
:mod:`jouletrace.energy.stream`: a killed run keeps all but its last second), or
with ``-o NAME.npz`` / ``--no-stream`` saving one file at the end; then prints
the energy table. The command's environment names a file in
``JOULETRACE_WINDOWS_FILE``: the windows its default Monitor (``jouletrace.window``)
writes there at exit are merged into the recording's ``metadata["windows"]``. Exits with the
child's exit status (128 + N if a signal N ended it). When the command
succeeded but no recording could be saved (disk full, file size limit), it
exits 74 (EX_IOERR); the energy table is printed either way.

Signals: the command runs in its own process group. SIGINT, SIGTERM and SIGHUP
sent to jouletrace are forwarded to that whole group (a shell's children too),
and the recording is still saved. A signal that arrives before the command
has started means it is not started: jouletrace exits 128 + N without
recording. At a terminal the command's group is made the foreground group, so
Ctrl-C reaches the command (once) and the command can read the terminal;
jouletrace takes the terminal back when it ends. If jouletrace itself is
killed (even with SIGKILL), the command receives SIGTERM.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._input import read_regular
from .._safe_output import check_output, fallback_path
from ..energy.measurement import counts_in_total
from ..energy.monitor import Monitor
from ..energy.recording import Recording
from ..energy.sampler import Sampler
from ..energy.storage import _window_ok, load
from ..energy.stream import require_pyarrow
from ..errors import (
    InvalidArgumentError,
    JouletraceError,
    RecordingFormatError,
    SourceUnavailableError,
)
from ..sampling import registry
from ..sampling.sources import sources
from ._summary import format_details, format_table, summarize

# The command succeeded but a recording could not be saved anywhere (sysexits EX_IOERR).
EXIT_NOT_SAVED = 74


def add_parser(sub: Any, help: str) -> None:
    p = sub.add_parser(
        "record",
        help=help,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--output", default=None,
                   help="where the recording goes. By default it is streamed to disk as it is made, into a "
                        "new folder (default: jouletrace.jt, or jouletrace-N.jt when that exists), so a "
                        "killed run keeps all but its last second; NAME.npz (or --no-stream) saves one .npz "
                        "file at the end instead. With several sources, one each: NAME.<source>.jt")
    p.add_argument("--no-stream", action="store_true",
                   help="keep the recording in memory and save it at the end (.npz)")
    p.add_argument("--every-poll", action="store_true",
                   help="stream every poll (by default only the polls that carry information are "
                        "written; every result is the same)")
    p.add_argument("-s", "--source", action="append", dest="sources", metavar="SOURCE",
                   help=f"source to sample (repeatable): {', '.join(registry.names())}; "
                        "default: every usable hardware source")
    p.add_argument("-r", "--rate", type=float, default=1000.0, help="samples per second (default 1000)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--no-status", action="store_true", help="no live status line on a terminal")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command to run")


def _pick_sources(names: list[str] | None) -> list[str]:
    infos = {i.name: i for i in sources(refresh=True)}
    if names:
        names = list(dict.fromkeys(names))  # a source named twice is sampled once
        for n in names:
            if n not in infos:
                raise InvalidArgumentError(f"unknown source {n!r}; known: {', '.join(infos)}")
            if not infos[n].usable:
                fix = f" Fix: {infos[n].fix}." if infos[n].fix else ""
                raise SourceUnavailableError(f"source {n} is not usable here: {infos[n].reason}.{fix}")
        return names
    specs = registry.specs()
    picked = [s.name for s in specs if s.default and s.name in infos and infos[s.name].usable]
    if not picked:
        lines = ["no hardware energy source is usable here, so there is nothing to record:"]
        for s in specs:  # each hardware source says why (one that picks among others, through them)
            i = infos.get(s.name)
            if i is None or not s.hardware or s.parts:
                continue
            lines.append(f"  {s.name}: {i.reason}")
            if i.fix:
                lines.append(f"      fix: {i.fix}")
        lines.append("Run `jouletrace info` for details, or `jouletrace record --source sim -- CMD` to try it "
                     "with the simulated GPU.")
        raise SourceUnavailableError("\n".join(lines))
    return picked


def _save(rec: Recording, path: str, warnings: list[str]) -> str | None:
    """Save; if that fails (disk full, folder removed), save in a new private folder instead.

    Returns where the recording went, or None (and a warning saying so) when
    neither place could take it.
    """
    try:
        return rec.save(path)
    except OSError as e:
        first = f"could not write {path} ({e.strerror or e})"
    fallback = None
    try:
        fallback = fallback_path(path)
        saved = rec.save(fallback)
    except OSError as e:
        if fallback is not None:
            try:
                os.rmdir(os.path.dirname(fallback))  # the private folder, empty again
            except OSError:
                pass
        warnings.append(f"{first}, nor a copy in the temporary folder ({e.strerror or e}): "
                        "this recording is lost; the summary below is all that remains")
        return None
    warnings.append(f"{first}; saved the recording to {saved} instead")
    return saved


def _stream_output(args: argparse.Namespace, names: list[str]) -> str | None:
    """The folder to stream into, or None for a .npz saved at the end."""
    out = args.output
    if args.no_stream or (out is not None and out.endswith(".npz")):
        return None
    if out is not None and os.path.lexists(out):
        if os.path.isdir(out):
            raise InvalidArgumentError(
                f"{out} is a folder that already exists; a streamed recording never writes into or over "
                "anything: choose a new name, remove it, or pass NAME.npz to save one file at the end")
        return None  # a file, a device, a FIFO: the .npz rules (never half-written, devices stay devices)
    parent = os.path.dirname(os.path.abspath(out)) if out is not None else os.getcwd()
    if not os.path.isdir(parent):
        raise InvalidArgumentError(f"{out}: the folder {parent} does not exist")
    try:
        require_pyarrow()
    except JouletraceError as e:
        if out is None:  # the default: say so, and save a .npz at the end as before
            print(f"jouletrace record: note: {e}; saving jouletrace.npz at the end instead", file=sys.stderr)
            args.output = "jouletrace.npz"
            return None
        raise
    if out is None:  # the first free name: a second run never stops on the first one's folder
        n = 1
        while True:
            stem = "jouletrace" if n == 1 else f"jouletrace-{n}"
            if not any(os.path.lexists(p) for p in [f"{stem}.jt"] + [f"{stem}.{x}.jt" for x in names]):
                break
            n += 1
        out = args.output = f"{stem}.jt"
    return out


def _child_windows(path: str, warnings: list[str]) -> list[dict[str, Any]]:
    """The windows the command's default Monitor wrote to ``JOULETRACE_WINDOWS_FILE`` (if any)."""
    try:
        raw = read_regular(path, 1 << 26, RecordingFormatError, "windows file")
    except FileNotFoundError:
        return []
    except JouletraceError as e:
        warnings.append(f"the command's windows could not be read: {e}")
        return []
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        warnings.append(f"the command's windows file is not JSON ({type(e).__name__}); its windows are left out")
        return []
    wins = doc.get("windows") if isinstance(doc, dict) else None
    if not isinstance(wins, list):
        return []
    ok = [w for w in wins if _window_ok(w) and w.get("t1_ns") is not None]
    if len(ok) < len(wins):
        warnings.append(f"{len(wins) - len(ok)} of the command's windows were malformed and left out")
    return [{k: w[k] for k in ("name", "t0_ns", "t1_ns", "work") if k in w} for w in ok]


def _finish_stream(s: Sampler, rec: Recording, path: str, warnings: list[str]) -> str | None:
    """Write the final metadata into the stream; if streaming failed, save what memory holds."""
    st = s.stream
    if st is None:  # never started
        return _save(rec, path + ".npz", warnings)
    st.annotate(rec.metadata)
    if st.error is None:
        return path
    warnings.append(f"streaming to {path} failed ({st.error}); it holds the run up to then")
    return _save(rec, fallback_path(os.path.basename(path) + ".npz"), warnings)


def _reload(path: str | None, rec: Recording, warnings: list[str]) -> Recording:
    if path is None or not os.path.isdir(path):
        return rec
    try:
        return load(path)
    except JouletraceError as e:
        warnings.append(f"could not read back {path}: {e}")
        return rec


def _outputs(output: str, samplers: list[Sampler]) -> list[str]:
    if len(samplers) == 1:
        return [output]
    p = Path(output)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return [str(p.with_name(f"{stem}.{s.source}{p.suffix or '.npz'}")) for s in samplers]


def _wait_first_update(samplers: list[Sampler], timeout_s: float = 0.5) -> None:
    """Wait (at most ``timeout_s``) until every energy counter has been seen to update once."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending = False
        for s in samplers:
            rec = s.recording()
            for ch in rec.channels:
                if ch.endswith(".energy_j") and rec.is_cumulative(ch):
                    v = rec[ch]
                    v = v[np.isfinite(v)]
                    if len(v) < 2 or v[-1] == v[0]:
                        pending = True
        if not pending:
            return
        time.sleep(0.002)


class _Status:
    """The live one-line status on a terminal: elapsed, watts per device, joules so far."""

    def __init__(self, samplers: list[Sampler], t0_ns: int) -> None:
        self.samplers = samplers
        self.t0 = t0_ns
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="jouletrace-status", daemon=True)

    def _line(self) -> str:
        now = time.monotonic_ns()
        parts = [f"{(now - self.t0) / 1e9:7.1f} s"]
        total = 0.0
        for s in self.samplers:
            rec = s.recording()
            if len(rec) < 2:
                continue
            for ch in rec.channels:
                v = rec[ch]
                ok = np.isfinite(v)
                if not ok.any():
                    continue
                if ch.endswith((".power_w", ".power_avg_w")):
                    parts.append(f"{ch.rsplit('.', 1)[0]} {v[ok][-1]:6.1f} W")
                elif (ch.endswith(".energy_j") and rec.is_cumulative(ch)
                      and counts_in_total(ch[: -len(".energy_j")])):  # not core/uncore/psys again
                    total += float(v[ok][-1] - v[ok][0])
        parts.append(f"{total:10.1f} J so far")
        return "[jouletrace] " + "  ".join(parts)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                sys.stderr.write("\r" + self._line()[:200] + "\x1b[K")
                sys.stderr.flush()
            except Exception:  # noqa: BLE001  (the status line must never break a recording)
                return

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


# PR_SET_PDEATHSIG from <sys/prctl.h>.
_PR_SET_PDEATHSIG = 1


def _child_setup(parent_pid: int, mask: Any = None) -> Any:
    """What the child does between fork and exec (kept to system calls: threads run in the parent).

    ``mask``: the signal mask to restore in the child (the parent blocks the forwarded
    signals around the fork)."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, in the parent, before any fork
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

    def setup() -> None:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.setpgid(0, 0)  # its own process group: signals reach it and everything it starts
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)  # jouletrace dies, even by SIGKILL -> SIGTERM
        if os.getppid() != parent_pid:  # jouletrace died before the line above took effect
            os._exit(128 + signal.SIGTERM)

    return setup


def _terminal_fd() -> int | None:
    """Our controlling terminal's fd when jouletrace is in its foreground group, else None."""
    for f in (sys.stdin, sys.stderr, sys.stdout):
        try:
            fd = f.fileno()
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return fd
        except (OSError, ValueError, AttributeError):
            continue
    return None


def _give_terminal(fd: int | None, pgid: int) -> None:
    """Make ``pgid`` the terminal's foreground group (ignoring SIGTTOU, as shells do)."""
    if fd is None:
        return
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass  # the terminal went away, or the group already ended: nothing to hand over
    finally:
        signal.signal(signal.SIGTTOU, old)


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Child:
    """The command's process, shared between run() and the signal handler."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.signals: list[int] = []  # every SIGINT/SIGTERM/SIGHUP received, in order
        self.forwarded = 0  # how many of them reached the child's group

    def on_signal(self, signum: int, _frame: Any) -> None:
        self.signals.append(signum)
        self.forward_pending()

    def forward_pending(self) -> None:
        p = self.proc
        if p is None or p.returncode is not None:
            return  # not started (run() sees the flag) or already ended
        while self.forwarded < len(self.signals):
            sig = self.signals[self.forwarded]
            self.forwarded += 1
            _killpg(p.pid, sig)


def run(args: argparse.Namespace) -> int:
    child = _Child()
    # Installed first of all, and kept until the files are written: from here on an
    # interrupt ends the command (or keeps it from starting), never the recording.
    old = {sig: signal.signal(sig, child.on_signal) for sig in _SIGNALS}
    try:
        return _run(args, child)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _interrupted_before_start(child: _Child, samplers: list[Sampler]) -> int:
    for s in samplers:
        s._stop_native()
    sig = child.signals[0]
    print(f"jouletrace record: {signal.Signals(sig).name} before the command started: not started, "
          "nothing recorded", file=sys.stderr)
    return 128 + sig


def _run(args: argparse.Namespace, child: _Child) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("jouletrace record: error: no command given; usage: jouletrace record [options] -- CMD ARGS",
              file=sys.stderr)
        return 2
    names = _pick_sources(args.sources)
    streaming = _stream_output(args, names)
    if streaming is None:
        args.output = args.output or "jouletrace.npz"
        check_output(args.output)  # before the command runs, not after
    if child.signals:
        return _interrupted_before_start(child, [])
    if streaming is not None:
        mon = Monitor(sources=names, rate_hz=args.rate, stream_to=streaming, compact=not args.every_poll)
        outputs = mon.stream_paths
        for path in outputs:
            if os.path.lexists(path):
                raise InvalidArgumentError(f"{path} already exists; a streamed recording never writes over "
                                           "anything: choose a new name with -o, or remove it")
    else:
        mon = Monitor(sources=names, rate_hz=args.rate)
        outputs = _outputs(args.output, mon.samplers)
        for path in outputs:
            check_output(path)
    samplers = mon.samplers
    # The command's own windows (jouletrace.window in it) come back through this file.
    windows_dir = tempfile.mkdtemp(prefix="jouletrace-windows-")
    windows_file = os.path.join(windows_dir, "windows.json")

    mon.start()
    _wait_first_update(samplers)  # so the command's start lies between two located counter updates
    window = mon.begin_window("command")
    t0 = window.t0_ns
    tty = _terminal_fd()
    # The forwarded signals are blocked from the last check to the fork: one that comes
    # before it stays pending and is seen here (the command is then not started); one that
    # comes during the fork is delivered after it, to a started command, and forwarded.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        pending = signal.sigpending() & set(_SIGNALS)
        if child.signals or pending:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # the pending handlers run now
            if not child.signals:
                child.signals.append(int(min(pending)))
            return _interrupted_before_start(child, samplers)
        setup = _child_setup(os.getpid(), mask)
        try:
            env = dict(os.environ, JOULETRACE_WINDOWS_FILE=windows_file)
            child.proc = subprocess.Popen(cmd, preexec_fn=setup, env=env)
        except OSError as e:
            for s in samplers:
                s._stop_native()
            print(f"jouletrace record: error: cannot run {cmd[0]!r}: {e.strerror or e}", file=sys.stderr)
            return 127 if isinstance(e, FileNotFoundError) else 126
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        os.setpgid(child.proc.pid, child.proc.pid)  # also here, so no signal can beat the child's own call
    except OSError:
        pass  # it has exec'd (and set it) already, or has ended
    child.forward_pending()  # a signal that came while it was being started
    if tty is not None:
        _give_terminal(tty, child.proc.pid)
        _killpg(child.proc.pid, signal.SIGCONT)  # had it touched the terminal before that, it stopped

    status = None
    if not args.no_status and not args.json and sys.stderr.isatty():
        status = _Status(samplers, t0)
        status.start()
    try:
        rc = child.proc.wait()
    finally:
        _give_terminal(tty, os.getpgrp())
        mon.end_window("command")
        t1 = window.t1_ns
        if status is not None:
            status.finish()
    # Keep sampling until the counter updates that bracket the end have landed (a few
    # sensor periods at most: ~0.3 s on NVML, ~3 ms on RAPL). Interrupts meanwhile are
    # absorbed by the handler: the files are written regardless.
    window.resolve(wait=True)

    exit_code = rc if rc >= 0 else 128 - rc
    recordings: list[Recording] = []
    warnings: list[str] = []
    child_windows = _child_windows(windows_file, warnings)
    shutil.rmtree(windows_dir, ignore_errors=True)
    for s in samplers:
        try:
            s.stop()
            rec = s.recording()
        except JouletraceError as e:  # a device lost, a permission revoked: keep what was read
            warnings.append(str(e))
            got = getattr(e, "recording", None)
            rec = got if isinstance(got, Recording) else s.recording()
        rec.metadata["command"] = cmd
        rec.metadata["exit_code"] = exit_code
        rec.metadata["signals"] = [signal.Signals(x).name for x in child.signals]
        rec.metadata["windows"] = [{"name": "command", "t0_ns": t0, "t1_ns": t1}] + child_windows
        recordings.append(rec)
    if streaming is not None:
        saved = [_finish_stream(s, rec, path, warnings) for s, rec, path in zip(samplers, recordings, outputs,
                                                                                  strict=True)]
        # The summary covers the whole run: the file, not the recent span kept in memory.
        recordings = [_reload(p, rec, warnings) for p, rec in zip(saved, recordings, strict=True)]
    else:
        saved = [_save(rec, path, warnings) for path, rec in zip(outputs, recordings, strict=True)]
    try:
        summaries = [summarize(r, p or "(not saved)") for r, p in zip(recordings, saved, strict=True)]
    except Exception as e:  # noqa: BLE001  (a summary must never cost the child's exit status)
        warnings.append(f"could not compute the summary: {e}")
        summaries = []
    for w in warnings:
        print(f"jouletrace record: warning: {w}", file=sys.stderr)
    if summaries:
        if args.json:
            print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2))
        else:
            print(format_table(summaries), file=sys.stderr)
            if args.verbose:
                for rec in recordings:
                    print(format_details(rec), file=sys.stderr)
    done = [p for p in saved if p is not None]
    if done:
        print(f"jouletrace record: saved {', '.join(done)}", file=sys.stderr)
    if len(done) < len(saved):
        print("jouletrace record: error: not every recording could be saved (see above)", file=sys.stderr)
        if exit_code == 0:
            return EXIT_NOT_SAVED
    return exit_code
