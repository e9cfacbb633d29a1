"""``jouletrace record [-o FILE] [--source S ...] [--rate HZ] -- CMD ARGS``: like ``perf stat``.

Runs CMD as a child while every usable source (or the named ones) samples;
at the end saves the recording and prints the energy table. Exits with the
child's exit status (128 + N if a signal N ended it).

Signals: Ctrl-C at a terminal reaches the child directly (same process
group); jouletrace waits for it to finish and still saves. SIGINT sent to
jouletrace alone (not from the terminal), SIGTERM and SIGHUP are forwarded to
the child. Either way the recording is saved.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._sampler import Sampler
from ..errors import InvalidArgumentError, JouletraceError, SourceUnavailableError
from ..measurement import counts_in_total
from ..monitor import Monitor
from ..recording import Recording
from ..sources import sources
from ._summary import format_details, format_table, summarize

_HARDWARE = ("nvml", "rapl")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "record",
        help="run a command and record its energy (like perf stat)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--output", default="jouletrace.npz",
                   help="recording file (default jouletrace.npz; with several sources, one file each: "
                        "NAME.<source>.npz)")
    p.add_argument("-s", "--source", action="append", dest="sources", metavar="SOURCE",
                   help="source to sample (repeatable): nvml, rapl, rapl-perf, rapl-msr, rapl-powercap, sim; "
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
    picked = [n for n in _HARDWARE if infos.get(n) is not None and infos[n].usable]
    if not picked:
        lines = ["no hardware energy source is usable here, so there is nothing to record:"]
        for n in ("nvml", "rapl-perf", "rapl-msr", "rapl-powercap"):
            i = infos.get(n)
            if i is None:
                continue
            lines.append(f"  {n}: {i.reason}")
            if i.fix:
                lines.append(f"      fix: {i.fix}")
        lines.append("Run `jouletrace info` for details, or `jouletrace record --source sim -- CMD` to try it "
                     "with the simulated GPU.")
        raise SourceUnavailableError("\n".join(lines))
    return picked


def _check_output(output: str) -> str:
    """Refuse an output path that cannot be written, before anything runs."""
    p = Path(output)
    if p.is_dir():
        raise InvalidArgumentError(f"-o {output}: is a folder; name a file, e.g. -o {p / 'run.npz'}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InvalidArgumentError(f"-o {output}: the folder {parent} does not exist; create it or pick another path")
    if not os.access(parent, os.W_OK):
        raise InvalidArgumentError(f"-o {output}: the folder {parent} is not writable; pick another path")
    return output


def _save(rec: Recording, path: str, warnings: list[str]) -> str:
    """Save; if that fails (disk full, folder removed), save in the temporary folder instead."""
    try:
        return rec.save(path)
    except OSError as e:
        fallback = os.path.join(tempfile.gettempdir(), f"jouletrace-{os.getpid()}-{Path(path).name}")
        warnings.append(f"could not write {path} ({e.strerror or e}); saved the recording to {fallback} instead")
        return rec.save(fallback)


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


def _in_terminal_foreground() -> bool:
    """True when Ctrl-C at our terminal would also reach the child (same foreground group)."""
    try:
        fd = sys.stdin.fileno()
        return os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
    except (OSError, ValueError):
        return False


def run(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("jouletrace record: error: no command given; usage: jouletrace record [options] -- CMD ARGS",
              file=sys.stderr)
        return 2
    names = _pick_sources(args.sources)
    outputs_check = _check_output(args.output)  # before the command runs, not after
    mon = Monitor(sources=names, rate_hz=args.rate)
    samplers = mon.samplers
    outputs = _outputs(outputs_check, samplers)

    interrupted: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: Any) -> None:
        interrupted.append(signum)
        if child is None or child.poll() is not None:
            return  # no child (yet, or any more): the recording is saved as usual
        if signum == signal.SIGINT and _in_terminal_foreground():
            return  # the terminal sent it to the child as well
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    # Installed before the child starts and kept until the files are written: an
    # interrupt at any moment ends the command, never the recording.
    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        mon.start()
        _wait_first_update(samplers)  # so the command's start lies between two located counter updates
        window = mon.begin_window("command")
        t0 = window.t0_ns
        try:
            child = subprocess.Popen(cmd)
        except OSError as e:
            for s in samplers:
                s._stop_native()
            print(f"jouletrace record: error: cannot run {cmd[0]!r}: {e.strerror or e}", file=sys.stderr)
            return 127 if isinstance(e, FileNotFoundError) else 126

        status = None
        if not args.no_status and not args.json and sys.stderr.isatty():
            status = _Status(samplers, t0)
            status.start()
        try:
            rc = child.wait()
        finally:
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
            rec.metadata["signals"] = [signal.Signals(x).name for x in interrupted]
            rec.metadata["windows"] = [{"name": "command", "t0_ns": t0, "t1_ns": t1}]
            recordings.append(rec)
        saved = []
        for path, rec in zip(outputs, recordings, strict=True):
            saved.append(_save(rec, path, warnings))
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    summaries = [summarize(r, p) for r, p in zip(recordings, saved, strict=True)]
    for w in warnings:
        print(f"jouletrace record: warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2))
    else:
        print(format_table(summaries), file=sys.stderr)
        if args.verbose:
            for rec in recordings:
                print(format_details(rec), file=sys.stderr)
        print(f"jouletrace record: saved {', '.join(saved)}", file=sys.stderr)
    return exit_code
