"""The one table every trace importer returns.

A :class:`KernelTable` holds one row per GPU kernel execution as plain numpy
columns, plus the unique kernel names, the devices the kernels ran on, the
NVTX / user-annotation ranges of the trace (a :class:`RangeTable`) and free-form
metadata. Times are integer nanoseconds, exact (never through a float), on the
clock named by ``clock``:

- ``"epoch"``: nanoseconds since 1970-01-01 UTC (what Nsight Systems and the
  PyTorch profiler give once their time base is applied);
- ``"monotonic"``: CLOCK_MONOTONIC nanoseconds (plain tables recorded on the
  same host); they are converted to epoch later with a recording's clock pairs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..._table import Table

__all__ = ["KernelTable", "RangeTable", "CLOCKS", "FORMATS", "DEVICE_MAPPINGS", "CSV_COLUMNS"]

CLOCKS = ("epoch", "monotonic")
FORMATS = ("nsys-sqlite", "kineto-json", "table")
DEVICE_MAPPINGS = ("uuid", "pci", "guessed")
#: The columns of a kernel table's CSV (:meth:`KernelTable.to_csv`; :func:`~.plain.load_table` reads it).
CSV_COLUMNS = ("name", "device", "stream", "start_ns", "end_ns", "correlation", "external_id")


def _int_column(values: Any, dtype: type, what: str, n: int | None) -> np.ndarray:
    """``values`` as a 1-D, C-contiguous array of ``dtype``; integers only.

    Floats are accepted only where every value is an exact integer that a
    float64 holds exactly (|x| <= 2**53): anything else would silently change
    nanosecond times.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        if arr.ndim == 0 and n is not None:
            arr = np.full(n, arr, dtype=arr.dtype)
        else:
            raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{what} has {arr.shape[0]} values, expected {n}")
    if arr.dtype.kind == "f":
        if arr.size and (
            not np.all(np.isfinite(arr))
            or np.any(arr != np.floor(arr))
            or np.max(np.abs(arr)) > 2.0**53
        ):
            raise ValueError(
                f"{what} must hold integers; got floating-point values that are not exact "
                "integers (nanosecond times must not pass through a float)"
            )
    elif arr.dtype.kind == "b" or (arr.dtype.kind not in "iu" and arr.size):
        raise ValueError(f"{what} must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(dtype).max:
        raise ValueError(f"{what} has values too large for {np.dtype(dtype).name}")
    out: np.ndarray = np.ascontiguousarray(arr, dtype=dtype)
    if arr.dtype.kind in "iu" and arr.size and np.dtype(dtype).itemsize < arr.dtype.itemsize:
        if np.any(out.astype(arr.dtype) != arr):
            raise ValueError(f"{what} has values out of range for {np.dtype(dtype).name}")
    return out


def _names_list(names: Iterable[Any], what: str) -> list[str]:
    out = [str(x) for x in names]
    if len(set(out)) != len(out):
        raise ValueError(f"{what} must be unique")
    return out


class _Columns(Table):
    """What kernel and range tables share: name ids into ``names``, times, selection.

    The columns live in the :class:`~jouletrace._table.Table` (``table.start_ns`` or
    ``table["start_ns"]``); the name of each row is ``names[name_id]``.
    """

    #: The columns besides the name, in the order a DataFrame, the text and the CSV show them.
    _shown: tuple[str, ...] = ()

    start_ns: np.ndarray
    end_ns: np.ndarray
    name_id: np.ndarray
    names: list[str]

    @property
    def duration_ns(self) -> np.ndarray:
        """``end_ns - start_ns`` (int64)."""
        return self.end_ns - self.start_ns

    @property
    def name(self) -> np.ndarray:
        """The name of every row, as an object array (built on demand)."""
        lookup = np.empty(len(self.names), dtype=object)
        lookup[:] = self.names
        return lookup[self.name_id]

    def name_of(self, i: int) -> str:
        """The name of row ``i`` (negative indices count from the end)."""
        return self.names[int(self.name_id[i])]

    def _check_common(self) -> None:
        n = len(self)
        if n and (self.name_id.min() < 0 or self.name_id.max() >= len(self.names)):
            raise ValueError(f"name_id must index names (0 .. {len(self.names) - 1})")
        if n and np.any(self.end_ns < self.start_ns):
            bad = int(np.flatnonzero(self.end_ns < self.start_ns)[0])
            raise ValueError(
                f"row {bad} ends before it starts "
                f"(start_ns={int(self.start_ns[bad])}, end_ns={int(self.end_ns[bad])})"
            )

    def _order(self) -> np.ndarray:
        return np.argsort(self.start_ns, kind="stable")

    def _display_columns(self) -> dict[str, Any]:
        """``name`` (each row's name), then the shown columns: what the text and the CSV show."""
        return {"name": self.name, **{c: self._cols[c] for c in self._shown}}

    def _frame(self, pd: Any) -> Any:
        """A DataFrame with a categorical ``name`` column first, then the shown columns."""
        return pd.DataFrame({"name": pd.Categorical.from_codes(self.name_id, categories=self.names),
                             **{c: self._cols[c] for c in self._shown}})


class RangeTable(_Columns):
    """NVTX ranges or PyTorch user annotations: name, start_ns, end_ns, device.

    ``device`` is -1 for host-side ranges (NVTX, ``user_annotation``) and the
    device id for ranges on a GPU's timeline (``gpu_user_annotation``).
    """

    _shown = ("device", "start_ns", "end_ns")

    device: np.ndarray

    def __init__(
        self,
        start_ns: Any = (),
        end_ns: Any = (),
        name_id: Any = (),
        names: Sequence[str] = (),
        device: Any = None,
    ) -> None:
        start = _int_column(start_ns, np.int64, "start_ns", None)
        n = start.shape[0]
        super().__init__({
            "start_ns": start,
            "end_ns": _int_column(end_ns, np.int64, "end_ns", n),
            "device": _int_column(-1 if device is None else device, np.int32, "device", n),
            "name_id": _int_column(name_id, np.int32, "name_id", n),
        })
        self.names = _names_list(names, "range names")
        self._check_common()

    @classmethod
    def empty(cls) -> RangeTable:
        return cls()

    @classmethod
    def from_names(
        cls, name: Sequence[str], start_ns: Any, end_ns: Any, device: Any = None
    ) -> RangeTable:
        """Build from one name string per range (names are deduplicated)."""
        names, name_id = _intern(name)
        return cls(start_ns, end_ns, name_id, names, device)

    def sorted(self) -> RangeTable:
        """A copy ordered by start time (stable)."""
        return self.select(self._order())

    def select(self, mask: Any) -> RangeTable:
        """The rows picked by a boolean mask or an integer index array."""
        cols = self._rows(self._index(mask))
        return RangeTable(cols["start_ns"], cols["end_ns"], cols["name_id"], self.names,
                          cols["device"])

    def __repr__(self) -> str:
        return f"RangeTable({len(self)} ranges, {len(self.names)} names)"


class KernelTable(_Columns):
    """GPU kernel executions from a profiler trace or a plain table.

    Columns (numpy, one value per kernel): ``start_ns`` and ``end_ns`` (int64,
    exact nanoseconds on ``clock``), ``device`` (int32, an ``id`` of
    ``devices``), ``stream`` (int64, -1 if unknown), ``name_id`` (int32, index
    into ``names``), ``correlation`` (int64, the CUPTI correlation id, -1 if
    unknown) and ``external_id`` (int64, the PyTorch profiler's external id
    linking a kernel to its CPU op, -1 if unknown).

    Attributes: ``names`` (unique kernel names), ``short_names`` (None, or the
    base name without templates and arguments of each entry of ``names``, from
    Nsight Systems), ``source`` (the file path, or None), ``format``
    (``"nsys-sqlite"``, ``"kineto-json"`` or ``"table"``), ``clock``
    (``"epoch"`` or ``"monotonic"``), ``devices`` (list of dicts with ``id``,
    ``name``, ``uuid``, ``pci_bus_id`` and ``mapping``: ``"uuid"`` or ``"pci"``
    when the physical GPU is known by that identifier, ``"guessed"`` when the
    link between the trace's device number and a physical GPU is an
    assumption), ``ranges`` (a :class:`RangeTable`) and ``metadata`` (dict:
    tool, tool and schema versions, ``device_mapping`` and a list of ``notes``).

    The importers return kernels sorted by start time.
    """

    _shown = CSV_COLUMNS[1:]

    device: np.ndarray
    stream: np.ndarray
    correlation: np.ndarray
    external_id: np.ndarray

    def __init__(
        self,
        start_ns: Any,
        end_ns: Any,
        device: Any,
        name_id: Any,
        names: Sequence[str],
        *,
        stream: Any = None,
        correlation: Any = None,
        external_id: Any = None,
        short_names: Sequence[str] | None = None,
        source: str | os.PathLike[str] | None = None,
        format: str = "table",
        clock: str = "epoch",
        devices: list[dict[str, Any]] | None = None,
        ranges: RangeTable | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        start = _int_column(start_ns, np.int64, "start_ns", None)
        n = start.shape[0]
        super().__init__({
            "start_ns": start,
            "end_ns": _int_column(end_ns, np.int64, "end_ns", n),
            "device": _int_column(device, np.int32, "device", n),
            "stream": _int_column(-1 if stream is None else stream, np.int64, "stream", n),
            "name_id": _int_column(name_id, np.int32, "name_id", n),
            "correlation": _int_column(-1 if correlation is None else correlation, np.int64, "correlation", n),
            "external_id": _int_column(-1 if external_id is None else external_id, np.int64, "external_id", n),
        })
        self.names = _names_list(names, "kernel names")
        if short_names is not None:
            short_names = [str(s) for s in short_names]
            if len(short_names) != len(self.names):
                raise ValueError("short_names must have one entry per entry of names")
        self.short_names = short_names
        self._check_common()
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        self.clock = clock
        self.format = format
        self.source = None if source is None else os.fspath(source)
        self.devices = [dict(d) for d in devices] if devices is not None else _default_devices(
            self.device
        )
        for d in self.devices:
            if d.get("mapping") not in DEVICE_MAPPINGS:
                raise ValueError(
                    f"device {d.get('id')!r}: mapping must be one of {DEVICE_MAPPINGS}, "
                    f"got {d.get('mapping')!r}"
                )
        self.ranges = ranges if ranges is not None else RangeTable.empty()
        self.metadata = dict(metadata) if metadata else {}
        self.metadata.setdefault("notes", [])

    # -- derived views ---------------------------------------------------------------

    def device_info(self, device_id: int) -> dict[str, Any] | None:
        """The entry of ``devices`` whose ``id`` is ``device_id``, or None."""
        for d in self.devices:
            if d.get("id") == device_id:
                return d
        return None

    def _like(self, cols: dict[str, np.ndarray], **overrides: Any) -> KernelTable:
        kwargs: dict[str, Any] = dict(
            stream=cols["stream"],
            correlation=cols["correlation"],
            external_id=cols["external_id"],
            short_names=self.short_names,
            source=self.source,
            format=self.format,
            clock=self.clock,
            devices=self.devices,
            ranges=self.ranges,
            metadata=self.metadata,
        )
        kwargs.update(overrides)
        return KernelTable(cols["start_ns"], cols["end_ns"], cols["device"], cols["name_id"],
                           self.names, **kwargs)

    def sorted(self) -> KernelTable:
        """A copy ordered by start time (stable: ties keep their order)."""
        return self._like(self._rows(self._order()))

    def select(self, mask: Any) -> KernelTable:
        """The kernels picked by a boolean mask or an integer index array.

        Names, devices, ranges and metadata are kept whole (shared names keep
        ``name_id`` valid).
        """
        return self._like(self._rows(self._index(mask)))

    def to_pandas(self) -> Any:
        """A pandas DataFrame: name (categorical), device, stream, start_ns, end_ns,
        correlation, external_id. Needs pandas."""
        return super().to_pandas()

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the kernels as a plain CSV table (columns ``CSV_COLUMNS``) that :func:`load_table` reads back exactly."""
        super().to_csv(path)

    def __repr__(self) -> str:
        src = f", source={os.path.basename(self.source)!r}" if self.source else ""
        return (
            f"KernelTable({len(self)} kernels, {len(self.names)} names, "
            f"{len(self.devices)} devices, {len(self.ranges)} ranges, format={self.format!r}, "
            f"clock={self.clock!r}{src})"
        )


def _default_devices(device: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"id": int(d), "name": None, "uuid": None, "pci_bus_id": None, "mapping": "guessed"}
        for d in np.unique(device)
    ]


def _intern(values: Sequence[Any]) -> tuple[list[str], np.ndarray]:
    """Unique names in first-appearance order, and each value's index into them."""
    ids: dict[str, int] = {}
    setdefault = ids.setdefault
    out = np.fromiter((setdefault(str(v), len(ids)) for v in values), dtype=np.int32,
                      count=len(values))
    return list(ids), out
