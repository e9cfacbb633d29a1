"""Table: numpy columns of equal length, the one table type of the package.

The trace tables (:class:`jouletrace.kernels.traces.KernelTable`, ``RangeTable``) and the
attribution results (``NameEnergies``, ``LaunchEnergies``) are Tables: a column is
``table["energy_j"]`` or ``table.energy_j``; ``columns``, ``len``, ``take`` (rows by index
or mask), ``to_dict``, ``to_text``, ``to_csv`` and ``to_pandas`` behave alike. A subclass
says which columns its text and CSV show and what its DataFrame adds (a categorical name,
a ``kind``). pandas is optional (:mod:`jouletrace._optional`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

from ._optional import require

__all__ = ["Table"]

_T = TypeVar("_T", bound="Table")


class Table:
    """Numpy columns of equal length, by name."""

    #: Columns :meth:`to_text` shows (empty: all of :meth:`_display_columns`).
    _text_columns: tuple[str, ...] = ()

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        lens = {len(v) for v in columns.values()}
        if len(lens) > 1:
            raise ValueError(f"columns differ in length: {sorted(lens)}")
        self._cols: dict[str, np.ndarray] = dict(columns)

    # -- columns ----------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """The column names, in order."""
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
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __len__(self) -> int:
        return len(next(iter(self._cols.values()))) if self._cols else 0

    # -- rows -------------------------------------------------------------------------
    def _index(self, mask: Any) -> np.ndarray:
        """Row indices from a boolean mask (of this table's length) or an integer index array."""
        idx = np.asarray(mask)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"a boolean mask must have shape ({len(self)},), got {idx.shape}")
            return np.flatnonzero(idx)
        if idx.size == 0:
            return np.zeros(0, dtype=np.intp)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"rows are picked by a boolean mask or integer indices, got {idx.dtype}")
        return idx.reshape(-1)

    def _rows(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Every column at ``index``."""
        return {k: v[index] for k, v in self._cols.items()}

    def take(self: _T, index: Any) -> _T:
        """The rows picked by an integer index array or a boolean mask (a table of the same type)."""
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out._cols = self._rows(self._index(index))
        return out

    # -- output -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, list[Any]]:
        """Plain lists per column."""
        return {k: v.tolist() for k, v in self._cols.items()}

    def _display_columns(self) -> Mapping[str, Any]:
        """The columns :meth:`to_csv` writes and :meth:`to_text` shows, in order (default: all)."""
        return self._cols

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the table as CSV: a header row of column names, then one row per table row."""
        cols = self._display_columns()
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(list(cols))
            writer.writerows(zip(*(np.asarray(v).tolist() for v in cols.values()), strict=False))

    def _frame(self, pd: Any) -> Any:
        """The DataFrame of :meth:`to_pandas` (default: the columns as they are)."""
        return pd.DataFrame(self._cols)

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the table. Needs pandas."""
        return self._frame(require("pandas", f"{type(self).__name__}.to_pandas()"))

    def to_text(self, limit: int = 20) -> str:
        """A fixed-width text table of the first ``limit`` rows."""
        shown = self._display_columns()
        cols = [c for c in (self._text_columns or tuple(shown)) if c in shown]
        rows = [[_fmt(shown[c][i]) for c in cols] for i in range(min(limit, len(self)))]
        widths = [max([len(c)] + [len(r[j]) for r in rows]) for j, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(cols, widths, strict=True)))]
        for r in rows:
            lines.append("  ".join(x.rjust(w) if j else x[:w].ljust(w) for j, (x, w) in enumerate(zip(r, widths, strict=True))))
        if len(self) > limit:
            lines.append(f"... {len(self) - limit} more rows")
        return "\n".join(lines)


def _fmt(x: Any) -> str:
    if isinstance(x, (float, np.floating)):
        if not np.isfinite(x):
            return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")
        ax = abs(float(x))
        return f"{x:.4g}" if (ax >= 1e-3 and ax < 1e6) or ax == 0 else f"{x:.3e}"
    if isinstance(x, str):
        return x if len(x) <= 48 else x[:45] + "..."
    return str(x)
