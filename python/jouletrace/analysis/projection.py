"""Projections: energy per unit of work times a rate -> kWh per day and per year, cost, CO2e.

These are **projections**, not measurements: they assume the measured energy per
unit of work (with its bound) holds at the rate the user gives, around the
clock. Every result carries ``"kind": "projection"`` and the inputs it used.

* ``rate``: units of work per second (``--rate 1000/s``, ``2e9/day``: see
  :func:`parse_rate`);
* ``price_per_kwh`` (any currency, named by ``currency``) gives the cost;
* the grid's carbon intensity (gCO2e/kWh) is given, or looked up by region in
  the bundled table ``data/grid_intensity.json`` (annual averages with their
  source and year; ``table=`` or ``--intensity-table FILE`` reads another file
  of the same shape).

Low and high values follow the energy's bound (or interval) linearly; the
intensity and price are taken as exact.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from ..errors import InvalidArgumentError

__all__ = ["parse_rate", "grid_table", "intensity_for", "project"]

_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0,
        "day": 86400.0, "d": 86400.0, "week": 604800.0, "year": 365.0 * 86400.0, "yr": 365.0 * 86400.0}
SECONDS_PER_DAY = 86400.0
DAYS_PER_YEAR = 365.0


def parse_rate(text: str) -> float:
    """``"1000/s"``, ``"2e9/day"``, ``"50 per hour"`` -> units per second."""
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(?:/|per)\s*([A-Za-z]+?)s?\s*", text or "")
    try:
        value = float(m.group(1)) if m else float("nan")
    except ValueError:
        value = float("nan")
    if not m or m.group(2).lower() not in _PER or not (value >= 0 and value < float("inf")):
        raise InvalidArgumentError(
            f"a rate is a number per unit of time, e.g. 1000/s, 2e9/day, 50/hour; got {text!r}")
    return value / _PER[m.group(2).lower()]


def grid_table(path: str | None = None) -> dict[str, Any]:
    """The grid-intensity table: the bundled one, or a JSON file of the same shape."""
    try:
        if path is None:
            text = resources.files("jouletrace.analysis").joinpath("data/grid_intensity.json").read_text("utf-8")
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        doc = json.loads(text)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read the grid-intensity table {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InvalidArgumentError(f"the grid-intensity table {path} is not JSON: {exc}") from None
    regions = doc.get("regions") if isinstance(doc, dict) else None
    if not isinstance(regions, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("g_per_kwh"), (int, float)) for v in regions.values()):
        raise InvalidArgumentError(
            f"the grid-intensity table {path or '(bundled)'} needs "
            '{"source": ..., "year": ..., "regions": {"CODE": {"name": ..., "g_per_kwh": N}}}')
    return doc


def intensity_for(region: str, table: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"g_per_kwh", "region", "name", "source", "year"}`` for a region code or name."""
    doc = table or grid_table()
    regions = doc["regions"]
    key = region.strip()
    hit = regions.get(key.upper())
    if hit is None:
        for code, v in regions.items():
            if str(v.get("name", "")).lower() == key.lower():
                key, hit = code, v
                break
    else:
        key = key.upper()
    if hit is None:
        raise InvalidArgumentError(
            f"no region {region!r} in the grid-intensity table; known: {', '.join(sorted(regions))} "
            "(or give --intensity G_PER_KWH)")
    return {"g_per_kwh": float(hit["g_per_kwh"]), "region": key, "name": hit.get("name"),
            "source": doc.get("source"), "year": doc.get("year")}


def project(energy_per_unit_j: float, low_j: float, high_j: float, *, rate_per_s: float, unit: str,
            price_per_kwh: float | None = None, currency: str = "",
            intensity_g_per_kwh: float | None = None, region: str | None = None,
            table: dict[str, Any] | None = None) -> dict[str, Any]:
    """kWh per day and year (value, low, high), cost and CO2e, labelled as a projection."""
    if not rate_per_s >= 0:
        raise InvalidArgumentError("the rate must be >= 0")
    grid = None
    if intensity_g_per_kwh is not None:
        if not intensity_g_per_kwh >= 0:
            raise InvalidArgumentError("the grid intensity must be >= 0 gCO2e/kWh")
        grid = {"g_per_kwh": float(intensity_g_per_kwh), "region": None, "name": "given",
                "source": "given by the user", "year": None}
    elif region is not None:
        grid = intensity_for(region, table)

    def kwh_day(e: float) -> float:
        return e * rate_per_s * SECONDS_PER_DAY / 3.6e6

    out: dict[str, Any] = {
        "kind": "projection",
        "assumes": "the measured energy per unit of work holds at this rate, around the clock",
        "unit": unit,
        "rate_per_s": rate_per_s,
        "energy_per_unit_j": energy_per_unit_j,
        "kwh_per_day": {"value": kwh_day(energy_per_unit_j), "low": kwh_day(low_j), "high": kwh_day(high_j)},
    }
    out["kwh_per_year"] = {k: v * DAYS_PER_YEAR for k, v in out["kwh_per_day"].items()}
    out["cost_per_year"] = None
    if price_per_kwh is not None:
        if not price_per_kwh >= 0:
            raise InvalidArgumentError("the price must be >= 0 per kWh")
        out["cost_per_year"] = {k: v * price_per_kwh for k, v in out["kwh_per_year"].items()}
        out["cost_per_year"].update(price_per_kwh=price_per_kwh, currency=currency)
    out["co2e_kg_per_year"] = None
    if grid is not None:
        out["co2e_kg_per_year"] = {k: v * grid["g_per_kwh"] / 1000.0 for k, v in out["kwh_per_year"].items()}
        out["co2e_kg_per_year"]["grid"] = grid
    return out
