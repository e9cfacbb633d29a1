"""Plain kernel tables: (name, device, start_ns, end_ns) from a CSV file or numpy arrays.

CSV: a header row naming at least ``name``, ``device``, ``start_ns`` and
``end_ns`` (any order; ``stream``, ``correlation`` and ``external_id`` are
optional), one kernel a row, integer nanoseconds. Lines starting with ``#``
before the header are comments. Times are parsed as Python integers, so they are exact.
Only ASCII digits count; the file may take at most a quarter of the input budget
of :mod:`jouletrace._input` (parsed into Python objects, it takes several times
that); a field may be at most 128 KiB long (the csv module's limit; kernel names
are far shorter).

The clock of the times is not in the file: pass ``clock="epoch"`` (the
default) or ``clock="monotonic"``. A monotonic table keeps ``clock ==
"monotonic"``; it is put on the epoch clock later, with a recording's
(CLOCK_MONOTONIC, CLOCK_REALTIME) pairs.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jouletrace._input import input_budget, read_regular
from jouletrace.errors import TraceFormatError

from ._util import fail, parse_int, read_head
from .table import CLOCKS, CSV_COLUMNS, KernelTable, _intern

__all__ = ["load_table", "write_csv", "CSV_COLUMNS"]

_REQUIRED = ("name", "device", "start_ns", "end_ns")
_OPTIONAL = ("stream", "correlation", "external_id")
#: The CSV text may take at most this fraction of the input budget.
CSV_TEXT_SHARE = 4


def load_table(
    source: str | os.PathLike[str] | Mapping[str, Any] | np.ndarray,
    *,
    clock: str = "epoch",
    names: Any = None,
    max_bytes: int | None = None,
) -> KernelTable:
    """A KernelTable from a CSV file, a mapping of columns, or a numpy structured array.

    Columns: ``name`` (one string per kernel; or ``name_id`` plus the ``names=``
    list), ``device``, ``start_ns``, ``end_ns``, and optionally ``stream``,
    ``correlation``, ``external_id``. ``clock`` is ``"epoch"`` or
    ``"monotonic"``. Kernels are returned sorted by start time. ``max_bytes``:
    the input budget for a CSV file (see :mod:`jouletrace._input`).
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    if isinstance(source, (str, os.PathLike)):
        return _from_csv(os.fspath(source), clock, max_bytes)
    if isinstance(source, np.ndarray) and source.dtype.names:
        cols = {k: source[k] for k in source.dtype.names}
    elif isinstance(source, Mapping):
        cols = dict(source)
    else:
        raise TypeError(
            "load_table() takes a CSV path, a mapping of column arrays or a numpy structured "
            f"array, not {type(source).__name__}"
        )
    return _from_columns(cols, clock, names, source=None)


def _from_columns(cols: dict[str, Any], clock: str, names: Any, source: str | None,
                  notes: list[str] | None = None) -> KernelTable:
    if "name_id" in cols:
        if names is None:
            raise ValueError("a name_id column needs the names= list it indexes")
        name_id = np.asarray(cols["name_id"])
        name_list = [str(n) for n in names]
    else:
        if "name" not in cols:
            raise ValueError("the table needs a 'name' column (or 'name_id' with names=)")
        raw = cols["name"]
        raw = raw.tolist() if isinstance(raw, np.ndarray) else list(raw)
        name_list, name_id = _intern(raw)
    missing = [c for c in ("device", "start_ns", "end_ns") if c not in cols]
    if missing:
        raise ValueError(f"the table lacks column(s): {', '.join(missing)}")
    table = KernelTable(
        cols["start_ns"],
        cols["end_ns"],
        cols["device"],
        name_id,
        name_list,
        stream=cols.get("stream"),
        correlation=cols.get("correlation"),
        external_id=cols.get("external_id"),
        source=source,
        format="table",
        clock=clock,
        metadata={"tool": "plain table", "device_mapping": "guessed", "device_ids": "as given",
                  "notes": notes or []},
    )
    order = np.argsort(table.start_ns, kind="stable")
    if np.any(order != np.arange(len(order))):
        table = table.sorted()
    return table


def _from_csv(path: str, clock: str, max_bytes: int | None = None) -> KernelTable:
    read_head(path, 1)
    limit = max(1, input_budget(max_bytes) // CSV_TEXT_SHARE)
    try:
        text = read_regular(path, limit, TraceFormatError, "trace file").decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(path, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})")
    try:
        return _parse_csv(path, text, clock)
    except csv.Error as exc:  # a field over 128 KiB, a NUL byte, ...
        fail(path, f"not a readable CSV table: {exc}")


def _parse_csv(path: str, text: str, clock: str) -> KernelTable:
    lines = io.StringIO(text, newline="").readlines()
    skip = 0  # comment and blank lines before the header
    while skip < len(lines) and (not lines[skip].strip() or lines[skip].lstrip().startswith("#")):
        skip += 1
    reader = csv.reader(lines[skip:])
    header = next(reader, None)
    if header is None:
        fail(path, "no header row: expected columns " + ", ".join(_REQUIRED))
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        fail(path, f"CSV lacks column(s) {', '.join(missing)} (header: {', '.join(header)}); "
                   "expected at least " + ", ".join(_REQUIRED))
    where = {c: header.index(c) for c in _REQUIRED + _OPTIONAL if c in header}
    int_cols = [c for c in where if c != "name"]
    values: dict[str, list[Any]] = {c: [] for c in where}
    width = len(header)
    for row in reader:
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != width:
            fail(path, f"line {reader.line_num + skip}: {len(row)} fields, the header has {width}")
        values["name"].append(row[where["name"]])
        for c in int_cols:
            cell = row[where[c]].strip()
            value = -1 if not cell and c in _OPTIONAL else parse_int(cell)
            if value is None:
                fail(path, f"line {reader.line_num + skip}: column {c} is not an integer: "
                           f"{cell[:80]!r}")
            values[c].append(value)
    try:
        cols = {c: (np.array(v, dtype=np.int64) if c != "name" else v)
                for c, v in values.items()}
    except OverflowError:
        fail(path, "a value does not fit a 64-bit integer")
    try:
        return _from_columns(cols, clock, None, source=path)
    except ValueError as exc:
        fail(path, str(exc))


def write_csv(path: str | os.PathLike[str], table: KernelTable) -> None:
    """Write ``table`` as CSV (columns ``CSV_COLUMNS``); ``load_table`` reads it back exactly."""
    table.to_csv(path)
