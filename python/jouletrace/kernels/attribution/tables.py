"""The result tables of kernel attribution: :class:`jouletrace._table.Table` with a kind and fit details."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

from ..._table import Table

__all__ = ["NameEnergies", "LaunchEnergies"]

_T = TypeVar("_T", bound="_Table")


class _Table(Table):
    """An attribution result: a :class:`~jouletrace._table.Table` with a kind ("direct" or
    "statistical"), fit details in ``meta`` and a default sort."""

    kind: str = ""
    _default_sort = ""

    def __init__(self, columns: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        super().__init__(columns)
        self.meta: dict[str, Any] = dict(meta or {})

    def sort(self: _T, by: str | None = None, descending: bool = True) -> _T:
        """A copy ordered by ``by`` (default: total energy), largest first; NaN last."""
        key = np.asarray(self[by or self._default_sort], dtype=np.float64)
        k = np.where(np.isnan(key), -np.inf if descending else np.inf, key)
        order = np.argsort(-k if descending else k, kind="stable")
        return self.take(order)

    def to_dict(self) -> dict[str, list[Any]]:
        """Plain lists per column, plus ``kind``."""
        out = super().to_dict()
        out["kind"] = [self.kind] * len(self)
        return out

    def _frame(self, pd: Any) -> Any:
        """The columns, with a ``kind`` column; the scalar ``meta`` entries in ``attrs``."""
        df = pd.DataFrame(self._cols)
        df["kind"] = self.kind
        df.attrs.update({k: v for k, v in self.meta.items() if isinstance(v, (int, float, str))})
        return df

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind} rows={len(self)}>\n{self.to_text(10)}"


class NameEnergies(_Table):
    """Per kernel name, statistical: power and energy per launch with confidence intervals.

    One row per (device, name). Columns: ``device`` (trace device id), ``name``,
    ``name_id`` (into the trace's names; -1 for the lumped "(other kernels)"),
    ``launches``, ``active_s`` (sum of durations), ``share_s`` (sum of share
    times, module docstring), ``overlap_fraction`` (1 - share/active),
    ``intervals`` (counter intervals it was seen in), ``power_w`` (the GPU's
    power while it runs, idle included) with ``power_ci_low_w``/``power_ci_high_w``,
    ``power_above_idle_w`` (+ CI), ``energy_per_launch_j`` (+ CI),
    ``dynamic_energy_per_launch_j`` (above idle, + CI), ``total_energy_j`` (+ CI,
    all its launches in the trace), ``enough_data`` (launches and intervals
    above the thresholds). ``kind`` = "statistical".

    ``meta`` holds, per device, the fit: ``idle_power_w`` (+ CI), intervals
    used, residual RMS, R², confidence level, bootstrap size and block length,
    the update period and timing seen.
    """

    kind = "statistical"
    _default_sort = "total_energy_j"
    _text_columns = ("name", "device", "launches", "share_s", "power_w", "energy_per_launch_j",
                     "energy_per_launch_ci_low_j", "energy_per_launch_ci_high_j", "total_energy_j",
                     "enough_data")


class LaunchEnergies(_Table):
    """Per kernel launch, direct: the counter interpolated over each launch, with a bound.

    Columns: ``index`` (row in the trace's KernelTable), ``device``, ``name_id``,
    ``name``, ``start_ns``/``end_ns`` (CLOCK_MONOTONIC), ``duration_s``,
    ``share_s``, ``energy_j`` (its share of the interpolated energy, idle
    included), ``bound_j`` (the counter bound of the launch's window),
    ``flags`` (``jouletrace.energy.windows`` flag bits), ``below_resolution``
    (shorter than ten sensor update periods: the number says little about
    this launch, see the per-name statistical estimate). ``kind`` = "direct".
    """

    kind = "direct"
    _default_sort = "energy_j"
    _text_columns = ("name", "device", "start_ns", "duration_s", "energy_j", "bound_j",
                     "below_resolution")

    def by_name(self) -> dict[str, np.ndarray]:
        """Direct energies summed per (device, name): ``device``, ``name``, ``launches``,
        ``energy_j``, ``bound_j`` (bounds added: conservative), ``below_resolution_fraction``."""
        dev = np.asarray(self["device"], dtype=np.int64)
        nid = np.asarray(self["name_id"], dtype=np.int64)
        key = dev * (int(nid.max()) + 2 if nid.size else 1) + nid
        uk, inv = np.unique(key, return_inverse=True)
        first = np.zeros(uk.size, dtype=np.intp)
        first[inv[::-1]] = np.arange(inv.size)[::-1]
        n = np.bincount(inv, minlength=uk.size)
        return {
            "device": dev[first],
            "name": np.asarray(self["name"])[first],
            "launches": n,
            "energy_j": np.bincount(inv, weights=self["energy_j"], minlength=uk.size),
            "bound_j": np.bincount(inv, weights=self["bound_j"], minlength=uk.size),
            "below_resolution_fraction": np.bincount(
                inv, weights=self["below_resolution"].astype(np.float64), minlength=uk.size) / n,
        }
