"""A single self-contained HTML page for a comparison: no script, no network request.

Charts are inline SVG generated here: a stacked bar per run by category
(energy per unit of work; the basis of the comparison), the power timelines of
the runs aligned at their start, and the top kernel names by difference. The
page holds its own CSS; it loads nothing. It is written by the one safe-output
routine (:mod:`jouletrace._safe_output`), like every other file jouletrace writes.
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["render"]

_COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac"]


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _stacked_bars(doc: dict[str, Any]) -> str:
    runs = [r for r in doc["runs"] if r["breakdown"]]
    if not runs:
        return "<p>No trace given: no breakdown by category.</p>"
    key = "stat_per_unit_j" if doc["basis"] == "statistical" else "per_unit_j"
    groups: list[str] = []
    for r in runs:
        for row in r["breakdown"]["rows"]:
            if row["group"] not in groups:
                groups.append(row["group"])
    color = {g: _COLORS[i % len(_COLORS)] for i, g in enumerate(groups)}
    totals = [sum(max(row[key] or 0.0, 0.0) for row in r["breakdown"]["rows"]) for r in runs]
    vmax = max(totals) or 1.0
    W, bar, gap, left, top = 720, 36, 18, 160, 20
    H = top + len(runs) * (bar + gap) + 40 + 22 * ((len(groups) + 3) // 4)
    out = [f'<svg class="chart" id="chart-categories" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" role="img" aria-label="energy per unit by category">']
    scale = (W - left - 90) / vmax
    for i, r in enumerate(runs):
        y = top + i * (bar + gap)
        out.append(f'<text x="{left - 8}" y="{y + bar / 2 + 4}" text-anchor="end">{_e(r["label"][:22])}</text>')
        x = float(left)
        for row in r["breakdown"]["rows"]:
            v = max(row[key] or 0.0, 0.0)
            w = v * scale
            if w > 0:
                out.append(f'<rect class="seg" x="{x:.2f}" y="{y}" width="{w:.2f}" height="{bar}" '
                           f'fill="{color[row["group"]]}"><title>{_e(row["group"])}: {v:.4g} J</title></rect>')
            x += w
        out.append(f'<text x="{x + 6:.2f}" y="{y + bar / 2 + 4}">{totals[i]:.4g} J</text>')
    ly = top + len(runs) * (bar + gap) + 10
    for j, g in enumerate(groups):
        lx, lyy = left + (j % 4) * 140, ly + (j // 4) * 22
        out.append(f'<rect x="{lx}" y="{lyy}" width="12" height="12" fill="{color[g]}"/>'
                   f'<text x="{lx + 16}" y="{lyy + 11}">{_e(g[:18])}</text>')
    out.append("</svg>")
    return "".join(out)


def _timelines(doc: dict[str, Any]) -> str:
    W, H, left, bottom, top = 720, 280, 56, 36, 14
    series = [(r["label"], r["timeline"]) for r in doc["runs"] if r["timeline"]["t_s"]]
    if not series:
        return "<p>No power timeline.</p>"
    tmax = max(max(t["t_s"]) for _, t in series) or 1.0
    pmax = max(max(t["power_w"]) for _, t in series) * 1.05 or 1.0
    sx = (W - left - 10) / tmax
    sy = (H - top - bottom) / pmax
    out = [f'<svg class="chart" id="chart-power" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" role="img" aria-label="power timelines aligned at their start">',
           f'<line x1="{left}" y1="{H - bottom}" x2="{W - 10}" y2="{H - bottom}" stroke="#333"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{H - bottom}" stroke="#333"/>']
    for k in range(5):
        p = pmax * k / 4
        y = H - bottom - p * sy
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{p:.0f}</text>')
        t = tmax * k / 4
        x = left + t * sx
        out.append(f'<text x="{x:.1f}" y="{H - bottom + 16}" text-anchor="middle">{t:.3g}</text>')
    out.append(f'<text x="{W / 2}" y="{H - 4}" text-anchor="middle">time since the run\'s start (s)</text>')
    out.append(f'<text x="12" y="{top + 10}">W</text>')
    for i, (label, t) in enumerate(series):
        pts = " ".join(f"{left + a * sx:.1f},{H - bottom - b * sy:.1f}" for a, b in zip(t["t_s"], t["power_w"], strict=True))
        c = _COLORS[i % len(_COLORS)]
        out.append(f'<polyline class="power" fill="none" stroke="{c}" stroke-width="1.2" points="{pts}">'
                   f"<title>{_e(label)}</title></polyline>")
        out.append(f'<text x="{W - 14}" y="{top + 14 + 16 * i}" text-anchor="end" fill="{c}">{_e(label[:30])}</text>')
    out.append("</svg>")
    return "".join(out)


def _runs_table(doc: dict[str, Any]) -> str:
    u = doc["unit"]
    rows = []
    for r in doc["runs"]:
        ra = r["ratio"]
        ratio = "-" if ra["value"] is None else f'{ra["value"]:.3f} [{_n(ra["low"])}, {_n(ra["high"])}]'
        if ra["within_uncertainty"] and r["label"] != doc["baseline"]:
            ratio += " (within uncertainty)"
        rows.append(f'<tr><td>{_e(r["label"])}</td><td>{r["time_s"]:.3f}</td><td>{r["energy_j"]:.4g} ± {r["bound_j"]:.2g}</td>'
                    f'<td>{_n(r["avg_power_w"])}</td><td>{r["per_unit"]["energy_j"]:.4g} ± {r["per_unit"]["bound_j"]:.2g}</td>'
                    f"<td>{_e(ratio)}</td></tr>")
    return ("<table id=\"runs\"><tr><th>run</th><th>time (s)</th><th>energy (J, direct)</th><th>avg power (W)</th>"
            f"<th>J per {_e(u.rstrip('s'))} (direct)</th><th>ratio to {_e(doc['baseline'])}</th></tr>"
            + "".join(rows) + "</table>")


def _n(x: Any) -> str:
    return "unbounded" if x is None else f"{x:.3f}" if abs(x) < 1000 else f"{x:.4g}"


def _diffs(doc: dict[str, Any]) -> str:
    parts = []
    for d in doc["differences"]:
        rows = "".join(
            f'<tr><td>{_e(c["group"])}</td><td>{c["delta_j"]:+.4g}</td><td>{c["time_effect_j"]:+.4g}</td>'
            f'<td>{c["power_effect_j"]:+.4g}</td><td>{c["residual_j"]:+.4g}</td><td>{_e(c["cause"])}'
            f'{" (within uncertainty)" if c["within_uncertainty"] else ""}</td></tr>' for c in d["categories"])
        names = "".join(f'<tr><td class="name">{_e(n["name"][:120])}</td><td>{n["baseline_j"]:.4g}</td>'
                        f'<td>{n["run_j"]:.4g}</td><td>{n["delta_j"]:+.4g}</td></tr>' for n in d["top_names"])
        parts.append(
            f'<h3>Why {_e(d["run"])} differs from {_e(d["baseline"])} (J per {_e(d["unit"].rstrip("s"))}, {_e(d["basis"])})</h3>'
            "<p>ΔE = P·Δt (time effect) + t·ΔP (power effect) + Δt·ΔP (residual), per category.</p>"
            "<table class=\"why\"><tr><th>category</th><th>ΔE</th><th>time</th><th>power</th><th>residual</th><th>cause</th></tr>"
            f"{rows}</table><h4>Top kernel names by difference</h4>"
            '<table class="top-kernels"><tr><th>kernel</th><th>baseline</th><th>run</th><th>Δ</th></tr>'
            f"{names}</table>")
    return "".join(parts)


def _projection(doc: dict[str, Any]) -> str:
    rows = []
    for r in doc["runs"]:
        p = r.get("projection")
        if not p:
            continue
        k = p["kwh_per_year"]
        cost = "-" if not p["cost_per_year"] else f'{p["cost_per_year"]["value"]:.4g} {_e(p["cost_per_year"]["currency"])}'
        co2 = "-" if not p["co2e_kg_per_year"] else f'{p["co2e_kg_per_year"]["value"]:.4g} kg'
        rows.append(f'<tr><td>{_e(r["label"])}</td><td>{k["value"]:.4g} [{k["low"]:.4g}, {k["high"]:.4g}]</td>'
                    f"<td>{cost}</td><td>{co2}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Projection (not a measurement)</h2><p>The measured energy per unit of work at the given rate, "
            "all year.</p><table id=\"projection\"><tr><th>run</th><th>kWh/year</th><th>cost/year</th>"
            "<th>CO2e/year</th></tr>" + "".join(rows) + "</table>")


_CSS = ("body{font-family:system-ui,sans-serif;margin:24px;max-width:900px;color:#222}"
        "table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:right}td:first-child,th:first-child,td.name{text-align:left}"
        "svg text{font-size:11px;fill:#222}.note{color:#555;font-size:12px}")


def render(doc: dict[str, Any]) -> str:
    """The HTML page of a :func:`jouletrace.analysis.compare.compare` result."""
    notes = "".join(f"<li>{_e(n)}</li>" for n in doc["notes"])
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>jouletrace compare</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>jouletrace compare</h1><p>Baseline: {_e(doc['baseline'])}; per {_e(doc['unit'].rstrip('s'))}.</p>"
        f"{_runs_table(doc)}"
        f"<h2>Energy per {_e(doc['unit'].rstrip('s'))} by category ({_e(doc['basis'])})</h2>{_stacked_bars(doc)}"
        f"<h2>Power, runs aligned at their start</h2>{_timelines(doc)}"
        f"{_diffs(doc)}{_projection(doc)}"
        f'<ul class="note">{notes}</ul></body></html>\n'
    )
