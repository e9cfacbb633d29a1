"""``jouletrace attribute FILE --trace TRACE``: energy per CUDA kernel name from a profiler trace.

TRACE is an Nsight Systems SQLite export (``nsys export --type sqlite``) or a
PyTorch-profiler (Kineto) JSON trace, plain or .gz, taken while FILE was being
recorded. Each kernel name gets two numbers, each labelled with its kind:

* statistical: counter intervals regressed on the time each name was running
  (non-negative least squares), with a confidence interval; meaningful even for
  kernels far shorter than the sensor's update period;
* direct: the counter interpolated over each launch and summed per name, with
  its bound; below the sensor's resolution for short kernels (flagged).

A name the data cannot resolve (too few launches or intervals, not separable
from the names it always runs with, a degenerate fit, an interval wider than
±5 %) is marked unresolved with the reason; its number is shown but is not a
measurement to rely on.

JSON (``--json``; ``schema`` = ``"jouletrace.attribution/2"``)::

    {"schema": str, "recording": str, "trace": str,
     "alignment": {"method": str, "uncertainty_ns": int},
     "update_placement": {"<device>": {"method": str, ...}},
     "kernels": [{"name": str, "device": int, "launches": int,
                  "statistical": {"total_energy_j": float | null, "ci_low_j": float | null,
                                  "ci_high_j": float | null, "energy_per_launch_j": float | null,
                                  "power_w": float | null, "resolved": bool,
                                  "unresolved_reason": str | null, "enough_data": bool},
                  "direct": {"energy_j": float, "bound_j": float,
                             "below_resolution_fraction": float} | null}]}

``null`` means: for an estimate, no estimate could be made; for ``ci_high_j``, no
upper limit (the data do not bound it: +inf); for ``ci_low_j``, no lower limit.
``enough_data`` is ``resolved`` (kept for schema-1 readers).
"""

from __future__ import annotations

import argparse
import csv
import io as _io
import json
import sys
from typing import Any

from .._json import plain
from .._safe_output import check_output
from ..attribute import Attribution, attribute
from ..energy.storage import load
from ..errors import InvalidArgumentError
from ..kernels import traces
from ..kernels.export import merge_kineto, write_perfetto
from ._summary import abnormal_end_note

SCHEMA = "jouletrace.attribution/2"


def add_parser(sub: Any, help: str) -> None:
    p = sub.add_parser(
        "attribute",
        help=help,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="the recording (jouletrace record -o FILE, or Recording.save)")
    p.add_argument("--trace", required=True, help="nsys SQLite export or Kineto JSON (.json / .json.gz)")
    p.add_argument("--top", type=int, default=15, help="kernel names to show (default 15)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="every kernel name as CSV")
    fmt.add_argument("--json", action="store_true", help="every kernel name as JSON (schema in --help)")
    p.add_argument("--perfetto", metavar="OUT.json", help="write kernels and power tracks on one timeline")
    p.add_argument("--no-launches", action="store_true", help="skip the per-launch (direct) numbers")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates for the intervals")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")


def _f(x: Any) -> float:
    """A float; infinities stay (an unbounded limit), JSON writes every non-finite value as null."""
    return float(x)


def rows(result: Attribution) -> list[dict[str, Any]]:
    """One row per (device, kernel name), largest statistical total first."""
    names = result.names.sort()
    direct: dict[tuple[int, str], dict[str, Any]] = {}
    if result.launches is not None and len(result.launches):
        by = result.launches.by_name()
        for i in range(len(by["name"])):
            direct[(int(by["device"][i]), str(by["name"][i]))] = {
                "energy_j": _f(by["energy_j"][i]),
                "bound_j": _f(by["bound_j"][i]),
                "below_resolution_fraction": _f(by["below_resolution_fraction"][i]),
            }
    out = []
    for i in range(len(names)):
        dev, name = int(names["device"][i]), str(names["name"][i])
        out.append(
            {
                "name": name,
                "device": dev,
                "launches": int(names["launches"][i]),
                "statistical": {
                    "total_energy_j": _f(names["total_energy_j"][i]),
                    "ci_low_j": _f(names["total_energy_ci_low_j"][i]),
                    "ci_high_j": _f(names["total_energy_ci_high_j"][i]),
                    "energy_per_launch_j": _f(names["energy_per_launch_j"][i]),
                    "power_w": _f(names["power_w"][i]),
                    "resolved": bool(names["resolved"][i]),
                    "unresolved_reason": str(names["unresolved_reason"][i]) or None,
                    "enough_data": bool(names["enough_data"][i]),
                },
                "direct": direct.get((dev, name)),
            }
        )
    return out


def _short(name: str, width: int = 44) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def format_text(result: Attribution, table: list[dict[str, Any]], top: int) -> str:
    a = result.alignment
    lines = [
        f"alignment: {a.method}, uncertainty {a.uncertainty_ns / 1e3:.1f} µs",
        "",
        f"{'kernel':<44} {'dev':>3} {'launches':>8}  {'statistical total J [CI]':>30}  "
        f"{'J/launch':>10}  {'direct J ± bound':>22}",
    ]
    for r in table[:top]:
        s, d = r["statistical"], r["direct"]
        stat = f"{s['total_energy_j']:.4g} [{s['ci_low_j']:.4g}, {s['ci_high_j']:.4g}]"
        if not s["resolved"]:
            stat += " (unresolved)"
        dtxt = "-" if d is None else f"{d['energy_j']:.4g} ± {d['bound_j']:.3g}"
        if d is not None and d["below_resolution_fraction"] > 0.5:
            dtxt += " (below resolution)"
        lines.append(
            f"{_short(r['name']):<44} {r['device']:>3} {r['launches']:>8}  {stat:>30}  "
            f"{s['energy_per_launch_j']:>10.4g}  {dtxt:>22}"
        )
    if len(table) > top:
        lines.append(f"... {len(table) - top} more kernel names (--csv or --json for all)")
    why = [r for r in table[:top] if not r["statistical"]["resolved"]]
    if why:
        lines.append("unresolved (a number the data do not support; do not rely on it):")
        lines += [f"  {_short(r['name'])}: {r['statistical']['unresolved_reason']}" for r in why]
    for dev, m in result.names.meta.get("devices", {}).items():
        lines.append(
            f"device {dev}: {m.get('channel')} ({m.get('device_mapping')}), idle "
            f"{m.get('idle_power_w', float('nan')):.1f} W, {m.get('intervals')} counter intervals, "
            f"update timing: {m.get('update_timing')}"
        )
    level = result.names.meta.get("level", 0.95)
    lines.append(f"statistical: regression over counter intervals, {level:.0%} CI from a block bootstrap "
                 "that resamples the update timing too; direct: counter interpolated over each launch, "
                 "with its bound.")
    return "\n".join(lines)


def format_csv(table: list[dict[str, Any]]) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "device", "launches", "kind", "energy_j", "low_j", "high_j", "energy_per_launch_j",
                "power_w", "note"])
    for r in table:
        s, d = r["statistical"], r["direct"]
        w.writerow([r["name"], r["device"], r["launches"], "statistical", s["total_energy_j"], s["ci_low_j"],
                    s["ci_high_j"], s["energy_per_launch_j"], s["power_w"],
                    "" if s["resolved"] else f"unresolved: {s['unresolved_reason']}"])
        if d is not None:
            w.writerow([r["name"], r["device"], r["launches"], "direct", d["energy_j"],
                        d["energy_j"] - d["bound_j"], d["energy_j"] + d["bound_j"],
                        d["energy_j"] / max(r["launches"], 1), "",
                        f"below resolution {d['below_resolution_fraction']:.0%}"])
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    if args.bootstrap < 0 or args.top < 1 or not 0.5 <= args.level < 1.0:
        raise InvalidArgumentError("--bootstrap must be >= 0, --top >= 1 and --level in [0.5, 1)")
    if args.perfetto:
        check_output(args.perfetto)  # a path it would refuse is refused before the work
    rec = load(args.file)
    note = abnormal_end_note(rec, args.file)
    if note:
        print(f"jouletrace attribute: warning: {note}", file=sys.stderr)
    kernels = traces.load(args.trace)
    result = attribute(rec, kernels, launches=not args.no_launches, bootstrap=args.bootstrap, level=args.level)
    table = rows(result)
    if args.json:
        doc = {
            "schema": SCHEMA,
            "recording": args.file,
            "trace": args.trace,
            "alignment": {"method": result.alignment.method, "uncertainty_ns": int(result.alignment.uncertainty_ns)},
            "update_placement": {str(d): m.get("update_placement")
                                 for d, m in result.names.meta.get("devices", {}).items()},
            "kernels": table,
        }
        print(json.dumps(_clean(doc), indent=2, allow_nan=False))  # NaN -> null: strict JSON
    elif args.csv:
        print(format_csv(table), end="")
    else:
        print(format_text(result, table, args.top))
    if args.perfetto:
        if kernels.format == "kineto-json":
            merge_kineto(args.trace, args.perfetto, rec, kernels=kernels, alignment=result.alignment,
                         launches=result.launches, names=result.names)
        else:
            write_perfetto(args.perfetto, rec, kernels=kernels, alignment=result.alignment,
                           launches=result.launches, names=result.names)
        if not args.json:
            print(f"wrote {args.perfetto} (open it in https://ui.perfetto.dev)")
    return 0


def _clean(x: Any) -> Any:
    """Strict JSON: every non-finite number is null (its meaning is in the schema above)."""
    return plain(x, nonfinite=None)

