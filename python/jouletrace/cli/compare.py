"""``jouletrace compare RUN[:TRACE] ...``: runs side by side, per unit of work, and why they differ.

Each RUN is a recording (``.npz``), optionally followed by ``:TRACE`` (its
Nsight Systems or PyTorch-profiler trace), or give ``--trace`` once per run in
order. Prints energy, time, average power and energy per unit of work with
their bounds, the ratio to the baseline (the first run, or ``--baseline N``),
and with traces the energy by kernel category and the difference per category
split into a time effect and a power effect. Method and JSON schema:
``jouletrace.analysis.compare`` (``--json``: ``"schema": "jouletrace.compare/1"``).
``--rate`` with ``--price``/``--intensity``/``--region`` adds a projection.
"""

from __future__ import annotations

import argparse
import json
import os
from functools import partial
from typing import Any

from .._optional import require
from .._safe_output import check_output, write_bytes, write_output
from ..analysis import compare as cmp
from ..analysis.breakdown import load_patterns
from ..analysis.projection import grid_table, parse_rate
from ..analysis.report_html import render
from ..energy.blocks import open_recording
from ..energy.storage import load
from ..errors import InvalidArgumentError
from ..kernels import traces


def add_parser(sub: Any, help: str) -> None:
    p = sub.add_parser("compare", help=help,
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN[:TRACE]", help="recordings, each optionally with its trace")
    p.add_argument("--trace", action="append", default=[], metavar="TRACE",
                   help="the trace of each run, in order (instead of RUN:TRACE)")
    p.add_argument("--label", action="append", default=[], help="a label per run, in order")
    p.add_argument("--baseline", type=int, default=1, help="the run the others are compared with (1-based; default 1)")
    p.add_argument("--window", metavar="PATTERN", help="the windows a run is made of (shell pattern on their names; "
                   "default: the windows with work, else the command, else the whole recording)")
    p.add_argument("--unit", help="unit of work (tokens, samples, steps...; default: tokens, samples, ... if every run has it)")
    p.add_argument("--basis", choices=("auto", "statistical", "direct"), default="auto",
                   help="energies used for categories and differences (default: statistical when every fit works)")
    p.add_argument("--categories", metavar="JSON", help='a category table [["category", "regex"], ...] tried before the defaults')
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the statistical intervals (default 0.95)")
    p.add_argument("--names", choices=("direct", "statistical"), default="direct",
                   help="basis of the top kernel names: direct (per-launch sums, default) or statistical "
                        "(a per-name regression per run: slower)")
    p.add_argument("--top", type=int, default=8, help="kernel names shown by difference (default 8)")
    p.add_argument("--rate", help="PROJECTION: units of work per time, e.g. 1000/s, 2e9/day")
    p.add_argument("--price", type=float, help="PROJECTION: price per kWh")
    p.add_argument("--currency", default="", help="currency of --price (a label)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--intensity", type=float, help="PROJECTION: grid carbon intensity, gCO2e/kWh")
    g.add_argument("--region", help="PROJECTION: grid intensity from the bundled table (e.g. WORLD, DE, FR, IN)")
    p.add_argument("--intensity-table", metavar="JSON", help="a grid-intensity table to use instead of the bundled one")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON (schema jouletrace.compare/1)")
    fmt.add_argument("--csv", action="store_true", help="CSV: one row per run and category")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report (inline SVG, no network)")
    p.add_argument("--png", metavar="PREFIX", help="write PREFIX-categories.png and PREFIX-power.png (matplotlib)")


def _split(spec: str) -> tuple[str, str | None]:
    if os.path.exists(spec):
        return spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail:
        return head, tail
    return spec, None


def _runs(args: argparse.Namespace) -> list[cmp.Run]:
    specs = [_split(s) for s in args.runs]
    if args.trace:
        if len(args.trace) != len(specs) or any(t for _, t in specs):
            raise InvalidArgumentError(
                f"give one --trace per run ({len(specs)} runs, {len(args.trace)} --trace), or RUN:TRACE, not both")
        specs = [(r, t) for (r, _), t in zip(specs, args.trace, strict=True)]
    if args.label and len(args.label) != len(specs):
        raise InvalidArgumentError(f"give one --label per run ({len(specs)} runs, {len(args.label)} labels)")
    out = []
    for i, (rpath, tpath) in enumerate(specs):
        if not os.path.exists(rpath):
            raise InvalidArgumentError(f"no recording {rpath!r} (a RUN is a .npz recording, optionally RUN.npz:TRACE)")
        if tpath is not None and not os.path.exists(tpath):
            raise InvalidArgumentError(f"no trace {tpath!r} for {rpath} (nsys .sqlite or PyTorch-profiler .json[.gz])")
        # Without a trace, a streamed recording too large for memory is read block by block; a
        # kernel trace needs the samples in memory (it covers a profiled span, not a month).
        rec = load(rpath) if tpath else open_recording(rpath)
        kernels = traces.load(tpath) if tpath else None
        label = args.label[i] if args.label else os.path.basename(rpath).removesuffix(".npz")
        out.append(cmp.Run(rec, kernels, label=label, path=rpath, trace_path=tpath))
    return out


def _pyplot() -> Any:
    require("matplotlib", "--png", error=InvalidArgumentError).use("Agg")
    return require("matplotlib.pyplot", "--png", error=InvalidArgumentError)


def category_figure(doc: dict[str, Any]) -> Any:
    """Energy per unit by category, one stacked horizontal bar per traced run (None without traces).

    The bars are those of the comparison's basis (statistical or direct); one
    segment per run and category, in the order of the first run's rows.
    """
    plt = _pyplot()
    runs = [r for r in doc["runs"] if r["breakdown"]]
    if not runs:
        return None
    key = "stat_per_unit_j" if doc["basis"] == "statistical" else "per_unit_j"
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(runs) + 1.6), dpi=150)
    groups = list(dict.fromkeys(row["group"] for r in runs for row in r["breakdown"]["rows"]))
    left = [0.0] * len(runs)
    for g in groups:
        vals = [next((max(row[key] or 0.0, 0.0) for row in r["breakdown"]["rows"] if row["group"] == g), 0.0)
                for r in runs]
        ax.barh([r["label"] for r in runs], vals, left=left, label=g)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_xlabel(f"J per {doc['unit'].rstrip('s')} ({doc['basis']})")
    ax.legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return fig


def power_figure(doc: dict[str, Any]) -> Any:
    """The runs' power timelines, aligned at their start, one line per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3), dpi=150)
    for r in doc["runs"]:
        ax.plot(r["timeline"]["t_s"], r["timeline"]["power_w"], lw=0.8, label=r["label"])
    ax.set_xlabel("time since the run's start (s)")
    ax.set_ylabel("power (W)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def png(doc: dict[str, Any], prefix: str) -> list[str]:
    """Two PNG charts for papers: PREFIX-categories.png (with traces) and PREFIX-power.png,
    each written through the safe-output routine (whole or not at all)."""
    plt = _pyplot()
    written = []
    for suffix, make in (("categories", category_figure), ("power", power_figure)):
        fig = make(doc)
        if fig is None:
            continue
        path = f"{prefix}-{suffix}.png"
        try:
            write_output(path, partial(fig.savefig, format="png"))
        finally:
            plt.close(fig)
        written.append(path)
    return written


def run(args: argparse.Namespace) -> int:
    if not 0 < args.level < 1:
        raise InvalidArgumentError(f"--level must be between 0 and 1, got {args.level}")
    projection = None
    if args.rate is not None:
        projection = {"rate_per_s": parse_rate(args.rate), "price_per_kwh": args.price, "currency": args.currency,
                      "intensity_g_per_kwh": args.intensity, "region": args.region,
                      "table": grid_table(args.intensity_table) if args.intensity_table else None}
    elif args.price is not None or args.intensity is not None or args.region is not None:
        raise InvalidArgumentError("--price, --intensity and --region need --rate (units of work per time, e.g. 1000/s)")
    outs = ([args.html] if args.html else []) + ([f"{args.png}-categories.png", f"{args.png}-power.png"]
                                                 if args.png else [])
    for out in outs:
        check_output(out)  # a path it would refuse is refused before any work
    patterns = load_patterns(args.categories) if args.categories else None
    runs = _runs(args)
    doc = cmp.compare(runs, baseline=args.baseline - 1, window=args.window, unit=args.unit, patterns=patterns,
                      basis=args.basis, confidence=args.level, top=args.top, projection=projection,
                      names=args.names)
    if args.json:
        print(json.dumps(doc, indent=1, allow_nan=False))
    elif args.csv:
        print(cmp.format_csv(doc), end="")
    else:
        print(cmp.format_text(doc, top=args.top))
    if args.html:
        write_bytes(args.html, render(doc).encode("utf-8"))
        if not args.json and not args.csv:
            print(f"wrote {args.html}")
    if args.png:
        for p in png(doc, args.png):
            if not args.json and not args.csv:
                print(f"wrote {p}")
    return 0
