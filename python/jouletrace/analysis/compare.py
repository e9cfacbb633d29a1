"""Runs side by side: energy, time, power and energy per unit of work; the ratio to a
baseline; and why they differ, per category, as a time effect and a power effect.

For each run (a recording, optionally with the profiler trace of the same run):

* **per unit of work** (direct): the run's windows (:func:`.work.select_windows`)
  measured with their bound, divided by their work (``tokens``, ``samples``,
  ``steps``...). The ratio to the baseline has the interval that the two bounds
  allow, ``[(E - u) / (Eb + ub), (E + u) / (Eb - ub)]``; a run whose interval
  holds 1 is *within the uncertainty* of the baseline.
* **breakdown** (with a trace): :func:`.breakdown.breakdown` by category, over
  the trace's span, divided by the work done inside the span (windows' work
  pro rata of their overlap with it).
* **why** (every run against the baseline, per category and per unit of work):
  with ``t`` the category's time per unit (share time, exact from the trace)
  and ``P = E / t`` its mean power (idle included),
  ``ΔE = P_b·Δt + t_b·ΔP + Δt·ΔP``: the *time effect*, the *power effect* and
  the *residual* (their interaction), which add up to ΔE exactly. ``basis``
  says which energies were used: ``"statistical"`` (the per-group regression,
  with intervals; the default when every run's fit worked) or ``"direct"``
  (per-launch energies, with bounds). A category's difference is within the
  uncertainty when its interval (half-widths of the two runs added in
  quadrature, statistical; bounds added, direct) holds 0.
* **top names**: the kernel names whose energy per unit differs most, with the
  interval of the difference and its ``kind``: by default *direct* (per-launch
  energies summed per name, bounds added: loose for kernels below the sensor's
  resolution, which the bound says), ``names="statistical"`` for the per-name
  regression (a second fit per run).

Cost: one alignment and one per-launch pass per run serve every grouping; the
category regression (the bulk of the time) runs once per traced run, and not at
all under ``basis="auto"`` when every run's direct category energies are sound
(:meth:`.breakdown.Breakdown.direct_sound`: launches above the sensor's
resolution, bounds within 5 %), which the notes say.

:func:`compare` returns a plain JSON-able dict whose schema is :data:`JSON_SCHEMA`
(``"schema": "jouletrace.compare/1"``); :func:`format_text`, :func:`format_csv`
and :mod:`.report_html` render it.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..energy.measurement import counts_in_total
from ..errors import InvalidArgumentError
from ..kernels.alignment import align
from ..kernels.attribution import attribute_launches
from .breakdown import IDLE, add_statistical, breakdown
from .projection import project
from .work import STEP, select_windows, window_work_energies, work_table

__all__ = ["Run", "SCHEMA", "JSON_SCHEMA", "summarize_run", "compare", "format_text", "format_csv"]

SCHEMA = "jouletrace.compare/1"
_UNIT_PREFERENCE = ("tokens", "samples", "requests", "images", "sequences")


@dataclass
class Run:
    """One run: a recording and, optionally, the profiler trace of the same run."""

    recording: Any
    kernels: Any = None
    label: str | None = None
    path: str | None = None
    trace_path: str | None = None


def _num(x: Any) -> float | None:
    """JSON number: finite floats only (infinite and NaN become null)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _pick_unit(runs_work: Sequence[dict[str, float]], unit: str | None) -> str:
    common = set.intersection(*(set(k for k, v in w.items() if v > 0) for w in runs_work))
    if unit is not None:
        if unit not in common:
            have = [sorted(k for k, v in w.items() if v > 0) for w in runs_work]
            raise InvalidArgumentError(
                f"unit {unit!r} is not counted by every run's windows (units per run: {have}); "
                "windows carry work as {\"work\": {\"tokens\": N}} in the recording's metadata")
        return unit
    for u in _UNIT_PREFERENCE:
        if u in common:
            return u
    others = sorted(common - {STEP})
    return others[0] if others else STEP


def _timeline(rec: Any, t0: int, t1: int, points: int = 400) -> dict[str, list[float]]:
    """Power of the devices that count in the total, from t0, at most ``points`` points."""
    out_t: np.ndarray | None = None
    total: np.ndarray | None = None
    for key in rec.energy_sources():
        if not counts_in_total(key):
            continue
        if hasattr(rec, "power_timeline"):  # a recording read block by block
            res = rec.power_timeline(key, t0, t1, points)
            if res is None:
                continue
            grid, wi = res
        else:
            t, w = rec.power(key)
            sel = (t >= t0) & (t <= t1)
            t, w = t[sel], w[sel]
            if t.size == 0:
                continue
            grid = np.linspace(t0, t1, min(points, max(t.size, 2)))
            wi = np.interp(grid, t.astype(np.float64), w)
        out_t, total = grid, wi if total is None else total + wi
    if out_t is None or total is None:
        return {"t_s": [], "power_w": []}
    return {"t_s": [round(float(x), 6) for x in (out_t - t0) * 1e-9],
            "power_w": [round(float(x), 3) for x in total]}


def summarize_run(run: Run, *, window: str | None = None, patterns: Any = None, confidence: float = 0.95,
                  bootstrap: int = 200, top: int = 10, statistical: bool = True,
                  names: str = "direct") -> dict[str, Any]:
    """The per-run part of :func:`compare` (energy, work, breakdown; no unit chosen yet).

    One alignment and one per-launch pass serve every grouping; ``statistical``
    adds the category regression (:func:`add_run_statistics` does it later);
    ``names="statistical"`` also runs the per-name regression for the top names.
    """
    rec = run.recording
    wins = select_windows(rec, window)
    we = window_work_energies(rec, [int(w["t0_ns"]) for w in wins], [int(w["t1_ns"]) for w in wins],
                              work=work_table(wins))
    t0, t1 = int(we.t0_ns.min()), int(we.t1_ns.max())
    out: dict[str, Any] = {
        "label": run.label or (os.path.basename(run.path) if run.path else "run"),
        "file": run.path, "trace": run.trace_path, "source": str(rec.metadata.get("source", "?")),
        "windows": we.windows, "window_names": sorted({str(w.get("name")) for w in wins})[:20],
        "time_s": we.time_s, "energy_j": we.energy_j, "bound_j": we.bound_j,
        "avg_power_w": _num(we.avg_power_w), "avg_power_bound_w": _num(we.bound_j / we.time_s if we.time_s else None),
        "work": we.work, "flags": we.flags, "_per_unit": we.per_unit, "_spread": we.spread,
        "devices": we.devices, "timeline": _timeline(rec, t0, t1), "breakdown": None, "_names": None,
        "_names_kind": None, "_ctx": None,
    }
    if run.kernels is None:
        return out
    kernels = run.kernels
    alignment = align(kernels, rec)
    launches = attribute_launches(rec, kernels, alignment=alignment)
    cat = breakdown(rec, kernels, "category", patterns=patterns, alignment=alignment, launches=launches,
                    statistical=False)
    stat_names = names == "statistical"
    nbd = breakdown(rec, kernels, "name", alignment=alignment, launches=launches, statistical=stat_names,
                    confidence=confidence, bootstrap=bootstrap)
    # Work done inside the trace's span: each window's work pro rata of its overlap with it.
    s0 = min(d["span_ns"][0] for d in cat.devices.values())
    s1 = max(d["span_ns"][1] for d in cat.devices.values())
    a, b = we.t0_ns, we.t1_ns
    length = (b - a).astype(np.float64)
    f = np.divide(np.maximum(0, np.minimum(b, s1) - np.maximum(a, s0)), length,
                  out=np.zeros(a.size), where=length > 0)
    span_work = {u: float(np.sum(v * f)) for u, v in we.per_window.items()}
    out["breakdown"] = {"by": "category", "span_s": cat.span_s, "span_energy_j": cat.span_energy_j,
                        "span_bound_j": cat.span_bound_j, "work_in_span": span_work,
                        "level": cat.level, "notes": cat.notes, "rows": cat.rows,
                        "direct_sound": cat.direct_sound(),
                        "alignment": {"method": alignment.method,
                                      "uncertainty_us": alignment.uncertainty_ns / 1e3}}
    out["_names"] = nbd.rows
    out["_names_kind"] = "statistical" if stat_names else "direct"
    out["_ctx"] = (cat, rec, kernels, alignment, patterns, confidence, bootstrap)
    if statistical:
        add_run_statistics(out)
    return out


def add_run_statistics(summary: dict[str, Any]) -> None:
    """The category regression of one run summarised with ``statistical=False`` (in place)."""
    ctx = summary.get("_ctx")
    if ctx is None or summary["breakdown"] is None or summary["breakdown"]["level"] is not None:
        return
    cat, rec, kernels, alignment, patterns, confidence, bootstrap = ctx
    add_statistical(cat, rec, kernels, patterns=patterns, alignment=alignment, confidence=confidence,
                    bootstrap=bootstrap)
    summary["breakdown"].update(level=cat.level, notes=cat.notes, rows=cat.rows)


def _basis_ok(runs: list[dict[str, Any]]) -> bool:
    for r in runs:
        for row in r["breakdown"]["rows"]:
            if row["stat_energy_j"] is None or not math.isfinite(row["stat_energy_j"]):
                return False
    return True


def _row_values(row: dict[str, Any], basis: str, w: float) -> tuple[float, float, float, float]:
    """(energy per unit, low, high, time per unit) of one breakdown row."""
    if basis == "statistical":
        e, lo, hi = row["stat_energy_j"], row["stat_ci_low_j"], row["stat_ci_high_j"]
    else:
        e = row["energy_j"]
        lo, hi = e - row["bound_j"], e + row["bound_j"]
    return e / w, lo / w, hi / w, row["time_s"] / w


def _decompose(base: dict[str, Any], run: dict[str, Any], unit: str, basis: str, top: int) -> dict[str, Any]:
    wb = base["breakdown"]["work_in_span"].get(unit, 0.0)
    wr = run["breakdown"]["work_in_span"].get(unit, 0.0)
    if wb <= 0 or wr <= 0:
        return {"basis": basis, "categories": [], "top_names": [],
                "note": f"no {unit} inside a trace's span: no decomposition"}
    rb = {r["group"]: r for r in base["breakdown"]["rows"]}
    rr = {r["group"]: r for r in run["breakdown"]["rows"]}
    groups = list(dict.fromkeys([g for g in rb if g != IDLE] + [g for g in rr if g != IDLE] + [IDLE]))
    cats = []
    zero = {"group": "", "energy_j": 0.0, "bound_j": 0.0, "time_s": 0.0, "stat_energy_j": 0.0,
            "stat_ci_low_j": 0.0, "stat_ci_high_j": 0.0}
    for g in groups:
        eb, lb, hb, tb = _row_values(rb.get(g, zero), basis, wb)
        er, lr, hr, tr = _row_values(rr.get(g, zero), basis, wr)
        pb = eb / tb if tb > 0 else 0.0
        pr = er / tr if tr > 0 else 0.0
        dt, dp = tr - tb, pr - pb
        time_eff, power_eff, resid = pb * dt, tb * dp, dt * dp
        de = er - eb
        if basis == "statistical":
            half_lo = math.hypot(max(eb - lb, 0.0), max(hr - er, 0.0))
            half_hi = math.hypot(max(hb - eb, 0.0), max(er - lr, 0.0))
        else:
            half_lo = half_hi = (hb - eb) + (hr - er)
        lo, hi = de - half_hi, de + half_lo
        cats.append({"group": g, "baseline_j": eb, "run_j": er, "delta_j": de,
                     "delta_low_j": _num(lo), "delta_high_j": _num(hi),
                     "within_uncertainty": bool(lo <= 0.0 <= hi) if math.isfinite(lo) and math.isfinite(hi) else True,
                     "baseline_time_s": tb, "run_time_s": tr, "baseline_power_w": _num(pb), "run_power_w": _num(pr),
                     "time_effect_j": time_eff, "power_effect_j": power_eff, "residual_j": resid,
                     "cause": _cause(time_eff, power_eff, de)})
    cats.sort(key=lambda c: -abs(c["delta_j"]))
    nb = {r["group"]: r for r in base["_names"] or []}
    nr = {r["group"]: r for r in run["_names"] or []}
    nbasis = base["_names_kind"] if base["_names_kind"] == run["_names_kind"] else "direct"
    if nbasis == "statistical" and not (_rows_fitted(nb.values()) and _rows_fitted(nr.values())):
        nbasis = "direct"
    nzero = dict(zero, energy_j=0.0)
    names = []
    for n in set(nb) | set(nr):
        if n == IDLE:
            continue
        vb, lb, hb, _ = _row_values(nb.get(n, nzero), nbasis, wb)
        vr, lr, hr, _ = _row_values(nr.get(n, nzero), nbasis, wr)
        if nbasis == "statistical":
            lo = (vr - vb) - math.hypot(max(hb - vb, 0.0), max(vr - lr, 0.0))
            hi = (vr - vb) + math.hypot(max(vb - lb, 0.0), max(hr - vr, 0.0))
        else:
            lo, hi = (vr - vb) - ((hb - vb) + (hr - vr)), (vr - vb) + ((hb - vb) + (hr - vr))
        names.append({"name": n, "baseline_j": vb, "run_j": vr, "delta_j": vr - vb,
                      "delta_low_j": _num(lo), "delta_high_j": _num(hi), "kind": nbasis})
    names.sort(key=lambda x: -abs(x["delta_j"]))
    return {"basis": basis, "names_basis": nbasis, "categories": cats, "top_names": names[:top]}


def _rows_fitted(rows: Any) -> bool:
    return all(r.get("stat_energy_j") is not None and math.isfinite(r["stat_energy_j"]) for r in rows)


def _cause(time_eff: float, power_eff: float, de: float) -> str:
    if abs(de) < 1e-12 and abs(time_eff) < 1e-12 and abs(power_eff) < 1e-12:
        return "no change"
    if abs(time_eff) >= 2 * abs(power_eff):
        return "time" + (" (slower)" if time_eff > 0 else " (faster)")
    if abs(power_eff) >= 2 * abs(time_eff):
        return "power" + (" (hotter)" if power_eff > 0 else " (cooler)")
    return "time and power"


def compare(runs: Sequence[Run], *, baseline: int = 0, window: str | None = None, unit: str | None = None,
            patterns: Any = None, basis: str = "auto", confidence: float = 0.95, bootstrap: int = 200,
            top: int = 10, projection: dict[str, Any] | None = None, names: str = "direct") -> dict[str, Any]:
    """Compare runs (module docstring). ``names``: the basis of the top kernel names
    (``"direct"``, from the per-launch pass every run has already; ``"statistical"`` runs
    the per-name regression too, at the cost of a second fit per run). ``projection``: keyword arguments of
    :func:`.projection.project` without the energies (``rate_per_s``, ``price_per_kwh``,
    ``currency``, ``intensity_g_per_kwh``, ``region``, ``table``)."""
    if len(runs) < 1:
        raise InvalidArgumentError("compare needs at least one run")
    if not 0 <= baseline < len(runs):
        raise InvalidArgumentError(f"--baseline must be between 1 and {len(runs)} (the runs' order)")
    if basis not in ("auto", "statistical", "direct"):
        raise InvalidArgumentError(f"basis must be auto, statistical or direct; got {basis!r}")
    if names not in ("direct", "statistical"):
        raise InvalidArgumentError(f"names must be direct or statistical; got {names!r}")
    # The runs are independent (each its own recording and trace): summarised side by side, on
    # threads (the work is numpy's, which lets go of the GIL in its long loops).
    workers = max(1, min(len(runs), os.cpu_count() or 1))
    def summarize(r: Run) -> dict[str, Any]:
        try:
            return summarize_run(r, window=window, patterns=patterns, confidence=confidence, bootstrap=bootstrap,
                                 top=top, statistical=basis == "statistical", names=names)
        except InvalidArgumentError as e:  # a bad window or work in one run: say which run
            where = r.path or r.label
            raise (type(e)(f"{where}: {e}") if where else e) from None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        summaries = list(pool.map(summarize, runs))
        traced_runs = [s for s in summaries if s["breakdown"] is not None]
        # One regression per traced run, and only where it buys something: "auto" skips it when
        # every run's direct category energies are sound (Breakdown.direct_sound).
        if basis == "auto" and traced_runs and not all(s["breakdown"]["direct_sound"] for s in traced_runs):
            list(pool.map(add_run_statistics, traced_runs))
    labels = [s["label"] for s in summaries]
    if len(set(labels)) != len(labels):
        for i, s in enumerate(summaries):
            s["label"] = f"{i + 1}:{s['label']}"
    u = _pick_unit([s["work"] for s in summaries], unit)
    traced = all(s["breakdown"] is not None for s in summaries)
    if basis == "auto":
        basis = "statistical" if traced and _basis_ok(summaries) else "direct"
    b = summaries[baseline]
    bu = b["_per_unit"][u]
    for s in summaries:
        pu = s.pop("_per_unit")[u]
        sp = s.pop("_spread").get(u)
        s["unit"] = u
        s["per_unit"] = {"energy_j": pu["energy_j"], "bound_j": pu["bound_j"], "kind": "direct"}
        s["per_unit_spread"] = sp
        e, ue, eb, ub = pu["energy_j"], pu["bound_j"], bu["energy_j"], bu["bound_j"]
        lo = (e - ue) / (eb + ub) if eb + ub > 0 else None
        hi = (e + ue) / (eb - ub) if eb - ub > 0 else None
        s["ratio"] = {"value": e / eb if eb > 0 else None, "low": _num(lo), "high": _num(hi),
                      "within_uncertainty": bool(lo is None or hi is None or lo <= 1.0 <= hi),
                      "kind": "direct"}
        if projection is not None:
            s["projection"] = project(e, e - ue, e + ue, unit=u, **projection)
        else:
            s["projection"] = None
    diffs = []
    if traced:
        for i, s in enumerate(summaries):
            if i == baseline:
                continue
            d = _decompose(b, s, u, basis, top)
            d.update(run=s["label"], baseline=b["label"], unit=u)
            diffs.append(d)
    for s in summaries:
        if s["breakdown"] is not None:
            w = s["breakdown"]["work_in_span"].get(u, 0.0)
            for row in s["breakdown"]["rows"]:
                row["per_unit_j"] = _num(row["energy_j"] / w) if w > 0 else None
                row["stat_per_unit_j"] = _num(row["stat_energy_j"] / w) if w > 0 and row["stat_energy_j"] is not None else None
                for k in list(row):
                    if isinstance(row[k], float):
                        row[k] = _num(row[k])
        s.pop("_names", None)
        s.pop("_names_kind", None)
        s.pop("_ctx", None)
    notes = [
        "per_unit and ratio are direct: the counter over the run's windows, with its bound",
        f"breakdown and differences use the {basis} energies of each category"
        + (" (a regression over counter intervals, intervals at the stated level)" if basis == "statistical"
           else " (per-launch energies summed, bounds added)"),
    ]
    if traced and basis == "direct" and all(s["breakdown"]["direct_sound"] for s in summaries):
        notes.append("no regression was fitted: every run's direct category energies are sound (launches above "
                     "the sensor's resolution, bounds within 5 %)")
    if diffs:
        nk = diffs[0]["names_basis"]
        notes.append(f"top kernel names: {nk} energies per name"
                     + (" (per-launch energies summed, bounds added)" if nk == "direct"
                        else " (the per-name regression, intervals at the stated level)"))
    if projection is not None:
        notes.append("projection: a projection, not a measurement; it assumes the measured energy per unit holds")
    return {"schema": SCHEMA, "unit": u, "baseline": b["label"], "basis": basis, "runs": summaries,
            "differences": diffs, "notes": notes}


def _pm(v: float | None, u: float | None, digits: int = 4) -> str:
    if v is None:
        return "-"
    s = f"{v:.{digits}g}"
    return s + (f" ± {u:.2g}" if u is not None else " ± inf")


def format_text(doc: dict[str, Any], top: int = 8) -> str:
    """The terminal table."""
    u = doc["unit"]
    lines = [f"Runs compared (baseline: {doc['baseline']}; per {u.rstrip('s')}: direct, ± its bound)", ""]
    hdr = f"  {'run':<22} {'time s':>9} {'energy J':>18} {'avg W':>8} {('J/' + u.rstrip('s')):>22} {'ratio [interval]':>24}"
    lines.append(hdr)
    for s in doc["runs"]:
        r = s["ratio"]
        rt = "-" if r["value"] is None else f"{r['value']:.3f} [{_f(r['low'])}, {_f(r['high'])}]"
        if r["within_uncertainty"] and s["label"] != doc["baseline"]:
            rt += " ~"
        lines.append(f"  {s['label'][:22]:<22} {s['time_s']:9.3f} {_pm(s['energy_j'], s['bound_j']):>18} "
                     f"{(s['avg_power_w'] or float('nan')):8.1f} {_pm(s['per_unit']['energy_j'], s['per_unit']['bound_j']):>22} {rt:>24}")
    if any(s["ratio"]["within_uncertainty"] and s["label"] != doc["baseline"] for s in doc["runs"]):
        lines.append("  ~ the difference is within the uncertainty")
    for s in doc["runs"]:
        bd = s["breakdown"]
        if bd is None:
            continue
        lines.append("")
        lines.append(f"  {s['label']}: by category, J per {u.rstrip('s')} over the trace's span "
                     f"({bd['span_s']:.2f} s; statistical [{(bd['level'] or 0):.0%} CI]; direct)")
        for row in bd["rows"]:
            st = "-" if row["stat_per_unit_j"] is None else f"{row['stat_per_unit_j']:.4g}"
            w = bd["work_in_span"].get(u) or float("nan")
            ci = "" if row["stat_ci_low_j"] is None else f"[{row['stat_ci_low_j'] / w:.4g}, {_f(row['stat_ci_high_j'] / w if row['stat_ci_high_j'] is not None else None, 4)}]"
            frac = "" if row["stat_fraction"] is None else f"{row['stat_fraction']:6.1%}"
            lines.append(f"    {row['group'][:28]:<28} {st:>10} {ci:>22} {frac:>7}   direct {row['per_unit_j'] or 0:.4g}")
    for d in doc["differences"]:
        lines.append("")
        lines.append(f"  Why {d['run']} differs from {d['baseline']} (J per {u.rstrip('s')}, {d['basis']}): "
                     "ΔE = P·Δt (time) + t·ΔP (power) + Δt·ΔP (residual)")
        lines.append(f"    {'category':<16} {'ΔE':>10} {'time':>10} {'power':>10} {'residual':>10}  cause")
        for c in d["categories"]:
            mark = "  (within uncertainty)" if c["within_uncertainty"] else ""
            lines.append(f"    {c['group'][:16]:<16} {c['delta_j']:+10.4g} {c['time_effect_j']:+10.4g} "
                         f"{c['power_effect_j']:+10.4g} {c['residual_j']:+10.4g}  {c['cause']}{mark}")
        if d["top_names"]:
            lines.append(f"    top kernel names by difference (J per {u.rstrip('s')}):")
            for n in d["top_names"][:top]:
                lines.append(f"      {n['delta_j']:+10.4g}  {n['name'][:70]}")
    proj = [s for s in doc["runs"] if s.get("projection")]
    if proj:
        lines.append("")
        lines.append("  PROJECTION (not a measurement: the measured energy per unit at the given rate, all year)")
        for s in proj:
            p = s["projection"]
            line = f"    {s['label'][:22]:<22} {p['kwh_per_year']['value']:.4g} kWh/year [{p['kwh_per_year']['low']:.4g}, {p['kwh_per_year']['high']:.4g}]"
            if p["cost_per_year"]:
                line += f"  {p['cost_per_year']['value']:.4g} {p['cost_per_year']['currency']}/year"
            if p["co2e_kg_per_year"]:
                g = p["co2e_kg_per_year"]["grid"]
                line += f"  {p['co2e_kg_per_year']['value']:.4g} kg CO2e/year ({g['g_per_kwh']:g} g/kWh, {g['name']}" + (f" {g['year']}" if g.get("year") else "") + ")"
            lines.append(line)
    return "\n".join(lines)


def _f(x: float | None, digits: int = 3) -> str:
    return "inf" if x is None else f"{x:.{digits}g}" if digits != 3 else f"{x:.3f}"


CSV_COLUMNS = ("label", "file", "trace", "unit", "time_s", "energy_j", "bound_j", "avg_power_w", "per_unit_j",
               "per_unit_bound_j", "ratio", "ratio_low", "ratio_high", "within_uncertainty", "group",
               "group_time_s", "group_energy_j", "group_bound_j", "group_stat_energy_j", "group_stat_ci_low_j",
               "group_stat_ci_high_j", "group_stat_fraction")


def format_csv(doc: dict[str, Any]) -> str:
    """One row per run and category (runs without a trace: one row with an empty group)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for s in doc["runs"]:
        base = [s["label"], s["file"] or "", s["trace"] or "", s["unit"], s["time_s"], s["energy_j"], s["bound_j"],
                s["avg_power_w"], s["per_unit"]["energy_j"], s["per_unit"]["bound_j"], s["ratio"]["value"],
                s["ratio"]["low"], s["ratio"]["high"], s["ratio"]["within_uncertainty"]]
        rows = s["breakdown"]["rows"] if s["breakdown"] else [None]
        for r in rows:
            extra = ["", "", "", "", "", "", "", ""] if r is None else [
                r["group"], r["time_s"], r["energy_j"], r["bound_j"], r["stat_energy_j"], r["stat_ci_low_j"],
                r["stat_ci_high_j"], r["stat_fraction"]]
            w.writerow(["" if v is None else v for v in base + extra])
    return buf.getvalue()


_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_ROW = {
    "type": "object",
    "required": ["group", "launches", "time_s", "energy_j", "bound_j", "power_w", "fraction", "stat_energy_j",
                 "stat_ci_low_j", "stat_ci_high_j", "stat_fraction", "stat_resolved", "stat_reason",
                 "per_unit_j", "stat_per_unit_j"],
    "properties": {
        "group": {"type": "string"}, "launches": {"type": "integer"}, "time_s": _NUM,
        "energy_j": _NUM_OR_NULL, "bound_j": _NUM_OR_NULL, "power_w": _NUM_OR_NULL, "fraction": _NUM_OR_NULL,
        "stat_energy_j": _NUM_OR_NULL, "stat_ci_low_j": _NUM_OR_NULL, "stat_ci_high_j": _NUM_OR_NULL,
        "stat_fraction": _NUM_OR_NULL, "stat_resolved": {"type": ["boolean", "null"]},
        "stat_reason": _STR_OR_NULL, "per_unit_j": _NUM_OR_NULL, "stat_per_unit_j": _NUM_OR_NULL,
    },
}
_RANGE3 = {"type": "object", "required": ["value", "low", "high"],
           "properties": {"value": _NUM, "low": _NUM, "high": _NUM}}

#: The JSON Schema (draft 2020-12) of :func:`compare`'s result, ``jouletrace compare --json``.
#: Numbers are finite; ``null`` means "not available" or, for an upper limit, "unbounded".
JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schema", "unit", "baseline", "basis", "runs", "differences", "notes"],
    "properties": {
        "schema": {"const": SCHEMA},
        "unit": {"type": "string"},
        "baseline": {"type": "string"},
        "basis": {"enum": ["statistical", "direct"]},
        "notes": {"type": "array", "items": {"type": "string"}},
        "runs": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["label", "file", "trace", "source", "windows", "time_s", "energy_j", "bound_j",
                         "avg_power_w", "work", "unit", "per_unit", "per_unit_spread", "ratio", "breakdown",
                         "timeline", "projection", "flags"],
            "properties": {
                "label": {"type": "string"}, "file": _STR_OR_NULL, "trace": _STR_OR_NULL,
                "source": {"type": "string"}, "windows": {"type": "integer", "minimum": 1},
                "time_s": _NUM, "energy_j": _NUM, "bound_j": _NUM, "avg_power_w": _NUM_OR_NULL,
                "flags": {"type": "array", "items": {"type": "string"}},
                "work": {"type": "object", "additionalProperties": _NUM},
                "unit": {"type": "string"},
                "per_unit": {"type": "object", "required": ["energy_j", "bound_j", "kind"],
                             "properties": {"energy_j": _NUM, "bound_j": _NUM, "kind": {"const": "direct"}}},
                "per_unit_spread": {"type": ["object", "null"]},
                "ratio": {"type": "object", "required": ["value", "low", "high", "within_uncertainty", "kind"],
                          "properties": {"value": _NUM_OR_NULL, "low": _NUM_OR_NULL, "high": _NUM_OR_NULL,
                                         "within_uncertainty": {"type": "boolean"}, "kind": {"const": "direct"}}},
                "timeline": {"type": "object", "required": ["t_s", "power_w"],
                             "properties": {"t_s": {"type": "array", "items": _NUM},
                                            "power_w": {"type": "array", "items": _NUM}}},
                "breakdown": {"oneOf": [{"type": "null"}, {
                    "type": "object",
                    "required": ["by", "span_s", "span_energy_j", "span_bound_j", "work_in_span", "level", "rows"],
                    "properties": {"by": {"const": "category"}, "span_s": _NUM, "span_energy_j": _NUM,
                                   "span_bound_j": _NUM, "level": _NUM_OR_NULL,
                                   "work_in_span": {"type": "object", "additionalProperties": _NUM},
                                   "rows": {"type": "array", "items": _ROW}}}]},
                "projection": {"oneOf": [{"type": "null"}, {
                    "type": "object",
                    "required": ["kind", "unit", "rate_per_s", "kwh_per_day", "kwh_per_year", "cost_per_year",
                                 "co2e_kg_per_year"],
                    "properties": {"kind": {"const": "projection"}, "rate_per_s": _NUM,
                                   "kwh_per_day": _RANGE3, "kwh_per_year": _RANGE3,
                                   "cost_per_year": {"type": ["object", "null"]},
                                   "co2e_kg_per_year": {"type": ["object", "null"]}}}]},
            }}},
        "differences": {"type": "array", "items": {
            "type": "object",
            "required": ["run", "baseline", "unit", "basis", "categories", "top_names"],
            "properties": {
                "basis": {"enum": ["statistical", "direct"]},
                "categories": {"type": "array", "items": {
                    "type": "object",
                    "required": ["group", "baseline_j", "run_j", "delta_j", "delta_low_j", "delta_high_j",
                                 "within_uncertainty", "time_effect_j", "power_effect_j", "residual_j", "cause"],
                    "properties": {"group": {"type": "string"}, "delta_j": _NUM, "time_effect_j": _NUM,
                                   "power_effect_j": _NUM, "residual_j": _NUM,
                                   "within_uncertainty": {"type": "boolean"}, "cause": {"type": "string"}}}},
                "top_names": {"type": "array", "items": {
                    "type": "object", "required": ["name", "baseline_j", "run_j", "delta_j"]}},
            }}},
    },
}
