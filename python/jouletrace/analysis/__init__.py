"""Answers to "which model uses the most energy, and why": per unit of work, by group, run versus run.

* :mod:`.work`: work units on windows (``metadata["windows"][i]["work"]``) and energy per unit.
* :mod:`.breakdown`: a run's energy by kernel category, name, NVTX range, CPU op or scope, plus idle.
* :mod:`.compare`: runs side by side, ratios to a baseline, the difference split into time and power.
* :mod:`.projection`: energy per unit times a rate -> kWh per day and year, cost, CO2e (projections).
* :mod:`.report_html`: a self-contained HTML report (inline SVG).

May import the energy and kernels layers (and below); nothing below imports it.
"""

from __future__ import annotations

from .breakdown import CATEGORIES, DEFAULT_PATTERNS, Breakdown, breakdown, categorize
from .work import WorkEnergy, per_work, select_windows, window_work_energies, work_of

__all__ = [
    "CATEGORIES",
    "DEFAULT_PATTERNS",
    "Breakdown",
    "breakdown",
    "categorize",
    "WorkEnergy",
    "per_work",
    "select_windows",
    "window_work_energies",
    "work_of",
]
