"""``jouletrace report FILE ...``: the summary table of saved recordings, as text, CSV or JSON, and a plot."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .._optional import require
from .._safe_output import check_output, write_output
from ..energy.blocks import open_recording
from ..energy.recording import Recording
from ..errors import InvalidArgumentError, JouletraceError
from ._summary import abnormal_end_note, format_csv, format_details, format_table, summarize


def add_parser(sub: Any, help: str) -> None:
    p = sub.add_parser("report", help=help)
    p.add_argument("files", nargs="+", metavar="FILE", help="recordings written by `jouletrace record` or Recording.save")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="one CSV row per device")
    fmt.add_argument("--json", action="store_true", help="JSON (schema in jouletrace.cli._summary)")
    p.add_argument("--plot", metavar="PNG", help="write a power timeline per device, windows shaded")
    p.add_argument("--size", default="12x5", metavar="WxH", help="plot size in inches (default 12x5, 100 dpi)")


def plot(recordings: list[Recording], path: str, size: tuple[float, float] = (12.0, 5.0), dpi: int = 100) -> Any:
    """Power over time, one line per device, windows shaded and labelled. Returns the figure."""
    require("matplotlib", "--plot", error=JouletraceError).use("Agg")
    plt = require("matplotlib.pyplot", "--plot", error=JouletraceError)
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    t_origin = min((int(r.t_ns[0]) for r in recordings if len(r)), default=0)
    for rec in recordings:
        for key in rec.energy_sources():
            t, w = rec.power(key)
            if len(t) == 0:
                continue
            ax.plot((t - t_origin) * 1e-9, w, lw=1.0, label=f"{key} ({rec.metadata.get('source', '?')})")
    wins: dict[tuple[str, int, int], None] = {}
    for rec in recordings:
        for win in rec.metadata.get("windows") or []:
            if win.get("t1_ns") is not None and win.get("name") != "command":
                wins[(str(win.get("name")), int(win["t0_ns"]), int(win["t1_ns"]))] = None
    # Many windows (training steps): shade them alternately and label about 20 of them.
    every = max(1, -(-len(wins) // 20))
    for i, (name, t0, t1) in enumerate(sorted(wins, key=lambda w: w[1])):
        a, b = (t0 - t_origin) * 1e-9, (t1 - t_origin) * 1e-9
        ax.axvspan(a, b, alpha=0.10 if i % 2 == 0 else 0.20, color="tab:gray", lw=0)
        if i % every == 0:
            ax.annotate(name, xy=(a, 1.0), xycoords=("data", "axes fraction"), va="top", fontsize=7, rotation=90)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("power (W)")
    ax.set_title("jouletrace power timeline")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fmt = os.path.splitext(path)[1][1:].lower() or "png"
    try:
        write_output(path, lambda fh: fig.savefig(fh, dpi=dpi, format=fmt))
    finally:
        plt.close(fig)
    return fig


def run(args: argparse.Namespace) -> int:
    if args.plot:
        check_output(args.plot)  # a path it would refuse is refused before any work
    # A streamed recording too large for memory is read block by block (jouletrace.energy.blocks).
    recs = [open_recording(f) for f in args.files]
    for r, f in zip(recs, args.files, strict=True):
        note = abnormal_end_note(r, f)
        if note:
            print(f"jouletrace report: warning: {note}", file=sys.stderr)
    summaries = [summarize(r, f) for r, f in zip(recs, args.files, strict=True)]
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2))
    elif args.csv:
        print(format_csv(summaries), end="")
    else:
        print(format_table(summaries))
        if args.verbose:
            for r in recs:
                print(format_details(r))
    if args.plot:
        try:
            w, h = (float(x) for x in args.size.lower().split("x"))
        except ValueError:
            raise InvalidArgumentError(f"--size takes WxH in inches, e.g. 12x5; got {args.size!r}") from None
        if not (0 < w <= 100 and 0 < h <= 100):
            raise InvalidArgumentError(f"--size needs 0 < W, H <= 100 inches; got {args.size!r}")
        if any(not isinstance(r, Recording) for r in recs):
            raise InvalidArgumentError(
                "--plot draws every sample and needs the recording in memory; this one is read block by block "
                "(it is large): plot a part of it from Python (jouletrace.load(path), then Recording.power)")
        plot(recs, args.plot, (w, h))
        print(f"wrote {args.plot}")
    return 0
