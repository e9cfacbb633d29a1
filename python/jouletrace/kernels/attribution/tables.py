"""The result tables of kernel attribution: numpy columns, a kind, text, dict and pandas."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NameEnergies", "LaunchEnergies"]

_PANDAS_MISSING = (
    "to_pandas() needs pandas, which is not installed; install it with "
    "`pip install pandas`, or use the table's numpy columns (table[column], table.columns)"
)

class _Table:
    """Numpy columns of equal length, a kind ("direct" or "statistical"), sorting, pandas."""

    kind: str = ""
    _default_sort = ""
    _text_columns: tuple[str, ...] = ()

    def __init__(self, columns: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        lens = {len(v) for v in columns.values()}
        if len(lens) > 1:
            raise ValueError(f"columns differ in length: {sorted(lens)}")
        self._cols = dict(columns)
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def columns(self) -> list[str]:
        return list(self._cols)

    def __getitem__(self, column: str) -> np.ndarray:
        try:
            return self._cols[column]
        except KeyError:
            raise KeyError(f"no column {column!r}; columns: {', '.join(self._cols)}") from None

    def __getattr__(self, name: str) -> np.ndarray:
        cols = self.__dict__.get("_cols")
        if cols is not None and name in cols:
            return cols[name]
        raise AttributeError(name)

    def __len__(self) -> int:
        return len(next(iter(self._cols.values()))) if self._cols else 0

    def _new(self, cols: dict[str, np.ndarray]) -> _Table:
        out = object.__new__(type(self))
        out.__dict__.update({k: v for k, v in self.__dict__.items() if k not in ("_cols",)})
        out._cols = cols
        return out

    def take(self, index: Any) -> _Table:
        """The rows picked by an integer index array or a boolean mask."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return self._new({k: v[idx] for k, v in self._cols.items()})

    def sort(self, by: str | None = None, descending: bool = True) -> _Table:
        """A copy ordered by ``by`` (default: total energy), largest first; NaN last."""
        key = np.asarray(self[by or self._default_sort], dtype=np.float64)
        k = np.where(np.isnan(key), -np.inf if descending else np.inf, key)
        order = np.argsort(-k if descending else k, kind="stable")
        return self.take(order)

    def to_dict(self) -> dict[str, list[Any]]:
        """Plain lists per column, plus ``kind``."""
        out = {k: v.tolist() for k, v in self._cols.items()}
        out["kind"] = [self.kind] * len(self)
        return out

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the columns, with a ``kind`` column. Needs pandas."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(_PANDAS_MISSING) from exc
        df = pd.DataFrame(self._cols)
        df["kind"] = self.kind
        df.attrs.update({k: v for k, v in self.meta.items() if isinstance(v, (int, float, str))})
        return df

    def to_text(self, limit: int = 20) -> str:
        """A fixed-width text table of the first ``limit`` rows (the ``_text_columns``)."""
        cols = [c for c in self._text_columns if c in self._cols]
        rows = [[_fmt(self._cols[c][i]) for c in cols] for i in range(min(limit, len(self)))]
        widths = [max([len(c)] + [len(r[j]) for r in rows]) for j, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(cols, widths, strict=True)))]
        for r in rows:
            lines.append("  ".join(x.rjust(w) if j else x[:w].ljust(w) for j, (x, w) in enumerate(zip(r, widths, strict=True))))
        if len(self) > limit:
            lines.append(f"... {len(self) - limit} more rows")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind} rows={len(self)}>\n{self.to_text(10)}"


def _fmt(x: Any) -> str:
    if isinstance(x, (float, np.floating)):
        if not np.isfinite(x):
            return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")
        ax = abs(float(x))
        return f"{x:.4g}" if (ax >= 1e-3 and ax < 1e6) or ax == 0 else f"{x:.3e}"
    if isinstance(x, str):
        return x if len(x) <= 48 else x[:45] + "..."
    return str(x)


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
