"""The summary of one recording that ``record`` prints at the end and ``report`` prints again.

JSON schema (``--json``; ``schema`` = ``"jouletrace.summary/1"``), one object per file::

    {
      "schema": "jouletrace.summary/1",
      "file": str | null,            # the recording file, when there is one
      "source": str,                 # nvml, sim, rapl-msr, ...
      "command": [str] | null,       # what `jouletrace record` ran
      "exit_code": int | null,       # its exit status
      "window": {"name": str, "t0_ns": int, "t1_ns": int},   # what the numbers cover
      "duration_s": float,
      "samples": int, "rate_hz": float,
      "dropped": int, "missed_deadlines": int,
      "devices": [                   # one per device or RAPL domain
        {"key": str,                 # gpu0, cpu0.package, cpu0.dram, psys ...
         "energy_j": float | null, "uncertainty_j": float | null,   # null: no samples / unbounded
         "avg_power_w": float | null, "peak_power_w": float | null,
         "method": "counter" | "power",
         "flags": [str]}             # below_sensor_resolution, no_samples, ...
      ],
      "total_j": float | null, "total_uncertainty_j": float | null   # devices that do not contain one another
    }

``CSV`` (``--csv``) has one row per device with the columns ``file, source, key,
duration_s, energy_j, uncertainty_j, avg_power_w, peak_power_w, method, flags``.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np

from ..energy.measurement import counts_in_total
from ..energy.recording import Recording

SCHEMA = "jouletrace.summary/1"

#: The JSON Schema of one summary object (draft 2020-12 subset), for tools and tests.
JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "schema", "file", "source", "command", "exit_code", "window", "duration_s", "samples",
        "rate_hz", "dropped", "missed_deadlines", "devices", "total_j", "total_uncertainty_j",
    ],
    "properties": {
        "schema": {"type": "string", "const": SCHEMA},
        "file": {"type": ["string", "null"]},
        "source": {"type": "string"},
        "command": {"type": ["array", "null"], "items": {"type": "string"}},
        "exit_code": {"type": ["integer", "null"]},
        "window": {
            "type": "object",
            "required": ["name", "t0_ns", "t1_ns"],
            "properties": {
                "name": {"type": "string"}, "t0_ns": {"type": "integer"}, "t1_ns": {"type": "integer"},
            },
        },
        "duration_s": {"type": "number"},
        "samples": {"type": "integer"},
        "rate_hz": {"type": "number"},
        "dropped": {"type": "integer"},
        "missed_deadlines": {"type": "integer"},
        "devices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "key", "energy_j", "uncertainty_j", "avg_power_w", "peak_power_w", "method", "flags",
                ],
                "properties": {
                    "key": {"type": "string"},
                    "energy_j": {"type": ["number", "null"]},
                    "uncertainty_j": {"type": ["number", "null"]},
                    "avg_power_w": {"type": ["number", "null"]},
                    "peak_power_w": {"type": ["number", "null"]},
                    "method": {"type": "string", "enum": ["counter", "power"]},
                    "flags": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "total_j": {"type": ["number", "null"]},
        "total_uncertainty_j": {"type": ["number", "null"]},
    },
}


def _window(rec: Recording) -> tuple[str, int, int]:
    """The span the summary covers: the recorded command's window if there is one, else all."""
    for w in rec.metadata.get("windows") or []:
        if w.get("name") == "command" and w.get("t1_ns") is not None:
            return "command", int(w["t0_ns"]), int(w["t1_ns"])
    if len(rec) == 0:
        return "recording", 0, 0
    first, last = _extent(rec)
    return "recording", first, last


def _extent(rec: Any) -> tuple[int, int]:
    """First and last sample time of a recording in memory or read block by block."""
    if hasattr(rec, "t_first_ns"):
        return int(rec.t_first_ns), int(rec.t_last_ns)
    return int(rec.t_ns[0]), int(rec.t_ns[-1])


def peak_power(rec: Any, key: str, t0: int, t1: int) -> float | None:
    """The largest power of device ``key`` in ``[t0, t1]`` on its power timeline, or None."""
    if hasattr(rec, "peak_power_w"):
        return rec.peak_power_w(key, t0, t1)
    t, w = rec.power(key)
    sel = (t >= t0) & (t <= t1)
    return float(np.max(w[sel])) if np.any(sel) else None


def _finite(x: float) -> float | None:
    """A number for JSON, or None when there is none (NaN: no samples; inf: unbounded)."""
    return float(x) if math.isfinite(float(x)) else None


def summarize(rec: Recording | Any, file: str | None = None) -> dict[str, Any]:
    name, t0, t1 = _window(rec)
    dur = max(t1 - t0, 0) * 1e-9
    devices: list[dict[str, Any]] = []
    total: float | None = 0.0
    total_unc: float | None = 0.0
    if len(rec) >= 2 and t1 > t0:
        m = rec.energy(t0, t1, name=name)
        for key, e in m.energy_j.items():
            try:
                peak = peak_power(rec, key, t0, t1)
            except (KeyError, ValueError):
                peak = None
            e = _finite(e)
            u = _finite(m.uncertainty_j.get(key, 0.0))
            devices.append(
                {
                    "key": key,
                    "energy_j": e,
                    "uncertainty_j": u,
                    "avg_power_w": e / dur if (e is not None and dur > 0) else None,
                    "peak_power_w": peak,
                    "method": m.method[key],
                    "flags": list(m.channel_flags.get(key, ())),
                }
            )
            if counts_in_total(key):
                total = None if (total is None or e is None) else total + e
                total_unc = None if (total_unc is None or u is None) else total_unc + u
    md = rec.metadata
    return {
        "schema": SCHEMA,
        "file": file,
        "source": str(md.get("source", "?")),
        "command": md.get("command"),
        "exit_code": md.get("exit_code"),
        "window": {"name": name, "t0_ns": t0, "t1_ns": t1},
        "duration_s": dur,
        # Polls made: a compacted (streamed) recording stores fewer rows than it read.
        "samples": int((md.get("stream") or {}).get("polls") or len(rec)),
        "rate_hz": float(md.get("rate_hz") or 0.0),
        "dropped": int(rec.dropped),
        "missed_deadlines": int(rec.missed_deadlines),
        "devices": devices,
        "total_j": total,
        "total_uncertainty_j": total_unc,
    }


def abnormal_end_note(rec: Recording | Any, file: str) -> str | None:
    """A line saying that a streamed recording's run ended abnormally (killed), or None."""
    st = rec.metadata.get("stream") or {}
    if st.get("ended") != "abnormally":
        return None
    last = st.get("last_flush_t_ns")
    upto = f" up to its last flush ({(int(last) - _extent(rec)[0]) * 1e-9:.1f} s into the run)" if (
        last is not None and len(rec)) else ""
    return (f"{file}: the run ended abnormally (killed, or the machine stopped): the recording holds what was "
            f"written{upto}")


def _fmt_j(j: float | None) -> str:
    if j is None:
        return "n/a"
    if abs(j) >= 1e6:
        return f"{j / 1e6:.3f} MJ"
    if abs(j) >= 1e3:
        return f"{j / 1e3:.3f} kJ"
    return f"{j:.3f} J"


def format_table(summaries: list[dict[str, Any]]) -> str:
    """A perf-stat-like text table for one or more summaries."""
    out: list[str] = []
    for s in summaries:
        head = f" Energy of '{' '.join(s['command'])}'" if s.get("command") else f" Energy of {s['file'] or 'the recording'}"
        out.append("")
        out.append(f"{head} ({s['source']}, {s['rate_hz']:g} Hz):")
        out.append("")
        if not s["devices"]:
            out.append("   no energy: fewer than two samples")
        for d in s["devices"]:
            peak = f"{d['peak_power_w']:9.1f} W peak" if d["peak_power_w"] is not None else " " * 16
            flags = f"   [{', '.join(d['flags'])}]" if d["flags"] else ""
            avg = f"{d['avg_power_w']:9.1f}" if d["avg_power_w"] is not None else "      n/a"
            out.append(
                f"   {_fmt_j(d['energy_j']):>14} ± {_fmt_j(d['uncertainty_j']):<12} {d['key']:<16}"
                f" {avg} W avg {peak}  ({d['method']}){flags}"
            )
        if len(s["devices"]) > 1:
            out.append(f"   {_fmt_j(s['total_j']):>14} ± {_fmt_j(s['total_uncertainty_j']):<12} total")
        out.append("")
        out.append(f"   {s['duration_s']:14.6f} s elapsed")
        out.append(
            f"   {s['samples']:14d} samples, {s['dropped']} dropped, {s['missed_deadlines']} missed deadlines"
        )
        if s.get("exit_code") not in (None, 0):
            out.append(f"   command exited with status {s['exit_code']}")
    out.append("")
    return "\n".join(out)


def format_csv(summaries: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["file", "source", "key", "duration_s", "energy_j", "uncertainty_j", "avg_power_w", "peak_power_w",
         "method", "flags"]
    )
    for s in summaries:
        for d in s["devices"]:
            w.writerow(
                [s["file"] or "", s["source"], d["key"], f"{s['duration_s']:.9f}", _csv(d["energy_j"], 6),
                 _csv(d["uncertainty_j"], 6), _csv(d["avg_power_w"], 3),
                 "" if d["peak_power_w"] is None else f"{d['peak_power_w']:.3f}", d["method"],
                 ";".join(d["flags"])]
            )
    return buf.getvalue()


def format_details(rec: Recording | Any) -> str:
    """What ``-v`` adds: which call fed each channel, the sensors as measured, drops in detail."""
    md = rec.metadata
    lines = [f" Details of {md.get('source', '?')} ({len(rec)} samples):"]
    for k, v in sorted((md.get("device") or {}).items()):
        lines.append(f"   {k}: {v}")
    if not isinstance(rec, Recording):  # read block by block: what the placement knows
        for ch in rec.channels:
            p = rec.update_period_ns(ch)
            per = f"{p / 1e6:.2f} ms" if p else "not seen"
            how = f", placed by {rec.update_method(ch)}" if rec.is_cumulative(ch) else ""
            lines.append(f"   sensor {ch}: updates every {per}{how}")
    for ch, info in sorted(rec.characterize().items() if isinstance(rec, Recording) else ()):
        p = info.get("update_period_ns")
        per = f"{p / 1e6:.2f} ms" if p else "not seen"
        extra = "" if info.get("averaged") is None else f", averaged: {info['averaged']}"
        lines.append(f"   sensor {ch}: updates every {per} ({info.get('updates')} seen){extra}")
    lines.append(
        f"   reads {md.get('reads')}, dropped in the ring {md.get('dropped_ring')}, "
        f"dropped for storage {md.get('dropped_storage')}, missed deadlines {rec.missed_deadlines}"
    )
    if md.get("error"):
        lines.append(f"   error: {md['error']}")
    return "\n".join(lines) + "\n"


def _csv(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"
