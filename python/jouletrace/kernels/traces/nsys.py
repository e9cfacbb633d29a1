"""Nsight Systems SQLite exports (``nsys export --type sqlite``).

What is read, and how:

- Kernels: ``CUPTI_ACTIVITY_KIND_KERNEL`` (start, end, deviceId, streamId,
  correlationId, globalPid, and the name through ``StringIds``: demangled name
  by default, ``names="short"`` or ``names="mangled"`` for the others). One
  query, one ``fetchall`` into numpy; no Python loop per kernel.
- Time base: kernel times are nanoseconds from the session start, and the
  session's epoch start is ``TARGET_INFO_SESSION_START_TIME.utcEpochNs``; so
  epoch ns = utcEpochNs + start, exactly (integers throughout). Exports made with
  ``--ts-normalize=true`` already hold epoch ns (seen in the export metadata
  table, ``META_DATA_EXPORT`` or the older ``EXPORT_META_DATA``); a non-zero
  ``--ts-shift`` recorded there is taken back out.
- NVTX: ``NVTX_EVENTS`` rows that have an end (push/pop and start/end ranges);
  the text is inline (``text``) or registered (``textId`` into StringIds).
  Instant markers, domain and category registrations (rows with a NULL end)
  are skipped. NVTX ranges are host-side: their ``device`` is -1.
- Devices: a kernel's ``deviceId`` is the process's CUDA device number. It is
  linked to a physical GPU (UUID, PCI bus) through ``TARGET_INFO_CUDA_DEVICE``
  (pid, cudaId -> gpuId, uuid) and ``TARGET_INFO_GPU`` (id, name, busLocation,
  uuid). Where the file has no such link the GPU is guessed from
  ``TARGET_INFO_GPU.cuDevice`` (or it is certain when the file has exactly one
  GPU and one device number) and the device's ``mapping`` says ``"guessed"``.
  When the same CUDA number means different GPUs in different processes (one
  GPU per rank via CUDA_VISIBLE_DEVICES), the ``device`` column holds the
  Nsight GPU ids instead (``metadata["device_ids"] == "nsys-gpu"``).

The file is opened read-only and immutable; text columns are read as bytes and
decoded as UTF-8 with invalid bytes replaced (some exports hold non-UTF-8 text).

Untrusted files: only real tables are read (a view named like an nsys table is
refused, so no query can recurse); every integer column read is checked with
``typeof()`` before it is used, and device ids and shifted times are checked
against their ranges; each query runs under a step budget proportional to the
file size (``QUERY_STEPS_PER_BYTE``) and stops at once on Ctrl-C; the kernel and
NVTX rows held in memory must fit the input budget of :mod:`jouletrace._input`.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from typing import Any

import numpy as np

from jouletrace._input import input_budget, too_large
from jouletrace.errors import TraceFormatError

from ._util import (
    I64_MAX,
    SQLITE_MAGIC,
    decode,
    fail,
    in_range,
    normalize_pci,
    normalize_uuid,
    parse_int,
    read_head,
    shift,
)
from .table import KernelTable, RangeTable

__all__ = ["load_nsys", "SUPPORTED_SCHEMA_MAJORS"]

#: Export schema major versions this importer was checked against (2.9.1 from
#: Nsight Systems 2022.2, 3.24.14 from 2026.1).
SUPPORTED_SCHEMA_MAJORS = (2, 3)

_NAME_COLUMNS = {"demangled": "demangledName", "short": "shortName", "mangled": "mangledName"}
_NSYS_MARKERS = ("StringIds", "TARGET_INFO_SESSION_START_TIME", "META_DATA_EXPORT",
                 "EXPORT_META_DATA", "ThreadNames", "TARGET_INFO_GPU")
# Times this large are already epoch ns (10**17 ns from a session start would be 3 years).
_EPOCH_THRESHOLD_NS = 10**17
_SQL_CHUNK = 500
#: A query may run at most this many SQLite VM steps per byte of the file (plus
#: _QUERY_STEPS_BASE) before it is stopped: an honest export needs a few scans.
QUERY_STEPS_PER_BYTE = 200
_QUERY_STEPS_BASE = 10**9
_PROGRESS_EVERY = 10_000  # VM steps between calls of the progress handler
#: What one kernel or NVTX row costs in memory once fetched (a tuple of Python ints).
_ROW_BYTES = 400
I32_MAX = 2**31 - 1


class _Guard:
    """SQLite progress handler: a step budget, and Ctrl-C honoured inside long queries.

    Python's SIGINT handler cannot run while SQLite is inside a query; it runs
    when SQLite calls back into Python, here. Any exception in the callback
    (KeyboardInterrupt included) aborts the query with "interrupted"; ``why``
    tells the two causes apart.
    """

    def __init__(self, max_steps: int) -> None:
        self.calls_left = max(1, max_steps // _PROGRESS_EVERY)
        self.why: str | None = None

    def __call__(self) -> int:
        try:
            self.calls_left -= 1
            if self.calls_left < 0:
                self.why = "budget"
                return 1
            return 0
        except KeyboardInterrupt:
            self.why = "interrupt"
            return 1


def open_export(path: str) -> tuple[sqlite3.Connection, _Guard]:
    """A read-only, immutable connection to ``path`` with the query guard installed."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro&immutable=1"
    con = sqlite3.connect(uri, uri=True)
    size = os.path.getsize(path)
    guard = _Guard(_QUERY_STEPS_BASE + QUERY_STEPS_PER_BYTE * size)
    con.set_progress_handler(guard, _PROGRESS_EVERY)
    return con, guard


def load_nsys(
    path: str | os.PathLike[str],
    *,
    names: str = "demangled",
    session_start_epoch_ns: int | None = None,
    check_version: bool = True,
    max_bytes: int | None = None,
) -> KernelTable:
    """Read the kernels and NVTX ranges of an Nsight Systems SQLite export.

    ``names``: which kernel name becomes ``KernelTable.names`` (``"demangled"``,
    ``"short"`` or ``"mangled"``; the short names are also kept in
    ``short_names``). ``session_start_epoch_ns`` overrides the file's time base.
    ``check_version=False`` reads exports of a schema major version this
    importer does not know (at your own risk). ``max_bytes`` is the input
    budget of :mod:`jouletrace._input` for the rows held in memory. Raises
    TraceFormatError for anything that is not a readable export with a kernel
    table.
    """
    if names not in _NAME_COLUMNS:
        raise ValueError(f"names must be one of {tuple(_NAME_COLUMNS)}, got {names!r}")
    path = os.fspath(path)
    head = read_head(path, 16)
    if not head.startswith(SQLITE_MAGIC):
        fail(path, "not a SQLite database (no SQLite header); expected the output of "
                   "`nsys export --type sqlite`")
    budget = input_budget(max_bytes)
    try:
        con, guard = open_export(path)
    except sqlite3.Error as exc:
        fail(path, f"cannot open the SQLite database: {exc}")
    try:
        con.text_factory = bytes
        return _Reader(con, path, budget).read(names, session_start_epoch_ns, check_version)
    except sqlite3.Error as exc:
        # The callback aborts the query with "interrupted" on Ctrl-C, whether or not the
        # KeyboardInterrupt reached its try block.
        if guard.why != "budget" and "interrupt" in str(exc):
            raise KeyboardInterrupt from None
        if guard.why == "budget":
            fail(path, "a query ran past its step budget (QUERY_STEPS_PER_BYTE); an nsys export "
                       "never needs that many, so the file is crafted or corrupt")
        fail(path, f"unreadable SQLite database ({exc}); the file may be truncated or corrupt")
    finally:
        con.close()


class _Reader:
    def __init__(self, con: sqlite3.Connection, path: str, budget: int) -> None:
        self.con = con
        self.path = path
        self.budget = budget
        self.notes: list[str] = []
        kinds: dict[str | None, set[str]] = {}
        for n, kind in con.execute("SELECT name, type FROM sqlite_master"):
            kinds.setdefault(decode(n), set()).add(decode(kind) or "")
        # Only real tables: nsys writes no views, and a view can run any query
        # (a recursive one never ends). A name that is also a view is refused.
        self.tables = {n for n, k in kinds.items() if k == {"table"}}
        self.views = {n for n, k in kinds.items() if "view" in k}

    def require_table(self, table: str) -> None:
        if table in self.views:
            fail(self.path, f"{table} is a view, not a table; Nsight Systems exports hold only "
                            "tables, so this file was not written by `nsys export`")

    def check_integers(self, table: str, cols: list[str]) -> None:
        """Fail unless every value of ``cols`` in ``table`` is an integer or NULL (one scan)."""
        cols = [c for c in cols if c in self.columns(table)]
        if not cols:
            return
        sel = ", ".join(f"""sum(typeof("{c}") NOT IN ('integer', 'null'))""" for c in cols)
        row = self.con.execute(f'SELECT {sel} FROM "{table}"').fetchone()
        for c, n in zip(cols, row or (), strict=False):
            if n:
                fail(self.path, f"{table}.{c} holds {n} non-integer value(s) (text or real) where "
                                "integers belong; the export is corrupt")

    # -- small helpers -------------------------------------------------------------

    def columns(self, table: str) -> list[str]:
        self.require_table(table)
        if table not in self.tables:
            return []
        return [decode(r[1]) or "" for r in self.con.execute(f'PRAGMA table_info("{table}")')]

    def export_metadata(self) -> dict[str, str]:
        for table in ("META_DATA_EXPORT", "EXPORT_META_DATA"):
            cols = self.columns(table)
            if "name" in cols and "value" in cols:
                return {
                    decode(n) or "": decode(v) or ""
                    for n, v in self.con.execute(f'SELECT name, value FROM "{table}"')
                }
        return {}

    def strings(self, ids: np.ndarray) -> dict[int, str]:
        """StringIds values of ``ids`` (queried in chunks)."""
        ids = np.unique(ids)
        if ids.size == 0:
            return {}
        cols = self.columns("StringIds")
        if "id" not in cols or "value" not in cols:
            fail(self.path, "no StringIds table (id, value): kernel and NVTX names cannot be "
                            "resolved; not a complete Nsight Systems export")
        self.check_integers("StringIds", ["id"])
        out: dict[int, str] = {}
        id_list = [int(i) for i in ids]
        for k in range(0, len(id_list), _SQL_CHUNK):
            chunk = id_list[k:k + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for i, v in self.con.execute(
                f"SELECT id, value FROM StringIds WHERE id IN ({marks})", chunk
            ):
                out[int(i)] = decode(v) or ""
        missing = [i for i in id_list if i not in out]
        if missing:
            self.notes.append(
                f"{len(missing)} string id(s) missing from StringIds (e.g. {missing[0]}); "
                "named '<string N>'"
            )
            for i in missing:
                out[i] = f"<string {i}>"
        return out

    def fetch_ints(self, sql: str, ncols: int, what: str) -> np.ndarray:
        rows = self.con.execute(sql).fetchall()
        if not rows:
            return np.zeros((0, ncols), dtype=np.int64)
        try:
            return np.array(rows, dtype=np.int64).reshape(len(rows), ncols)
        except (TypeError, ValueError, OverflowError):
            fail(self.path, f"{what} holds non-integer values where integers belong")

    # -- the parts -----------------------------------------------------------------

    def read(self, names: str, session_start: int | None, check_version: bool) -> KernelTable:
        meta = self.export_metadata()
        schema = meta.get("EXPORT_SCHEMA_VERSION")
        metadata: dict[str, Any] = {
            "tool": meta.get("EXPORT_PRODUCT_NAME") or "NVIDIA Nsight Systems",
            "tool_version": meta.get("EXPORT_PRODUCT_VERSION"),
            "schema_version": schema,
            "notes": self.notes,
        }
        if not self.tables.intersection(_NSYS_MARKERS):
            fail(self.path, "a SQLite database, but not an Nsight Systems export (none of the "
                            "tables " + ", ".join(_NSYS_MARKERS) + ")")
        self.check_version(schema, check_version)
        self.require_table("CUPTI_ACTIVITY_KIND_KERNEL")
        if "CUPTI_ACTIVITY_KIND_KERNEL" not in self.tables:
            fail(self.path, "no kernels: the export has no CUPTI_ACTIVITY_KIND_KERNEL table; "
                            "was the trace taken with --trace=cuda?")

        kern = self.kernels(names)
        metadata["kernel_names"] = names
        offset = self.time_offset(meta, session_start, kern["start"], metadata)
        start, end = shift(self.path, [kern["start"], kern["end"]], offset, "the time base")
        device, devices = self.devices(kern["device"], kern["pid"], metadata)
        order = np.argsort(start, kind="stable")
        return KernelTable(
            start[order],
            end[order],
            device[order],
            kern["name_id"][order],
            kern["names"],
            stream=kern["stream"][order],
            correlation=kern["correlation"][order],
            short_names=kern["short_names"],
            source=self.path,
            format="nsys-sqlite",
            clock="epoch",
            devices=devices,
            ranges=self.nvtx(offset),
            metadata=metadata,
        )

    def check_version(self, schema: str | None, check: bool) -> None:
        if schema is None:
            self.notes.append("no export schema version in the file; columns checked instead")
            return
        try:
            major: int | None = int(schema.split(".")[0])
        except ValueError:
            major = None
        if major not in SUPPORTED_SCHEMA_MAJORS:
            if check:
                fail(self.path, f"unknown Nsight Systems export schema version {schema!r} "
                                f"(known majors: {SUPPORTED_SCHEMA_MAJORS}); pass "
                                "check_version=False to try it anyway")
            self.notes.append(f"schema version {schema} not checked; read anyway")

    def time_offset(
        self,
        meta: dict[str, str],
        session_start: int | None,
        kernel_start: np.ndarray,
        metadata: dict[str, Any],
    ) -> int:
        """What to add to the file's times to get epoch ns."""
        shift = 0
        for key in ("EXPORT_CONFIG_TIME_SHIFT", "EXPORT_PARAM_TIME_SHIFT"):
            value = parse_int(meta.get(key, ""))
            if value:
                in_range(self.path, [value], -I64_MAX, I64_MAX, key)
                shift = value
                self.notes.append(f"the export shifted times by {shift} ns (--ts-shift); "
                                  "taken back out")
                break
        normalized = any(
            "NORMALIZE" in k.upper() and v.strip().lower() in ("true", "1", "yes")
            for k, v in meta.items()
        )
        cols = self.columns("TARGET_INFO_SESSION_START_TIME")
        utc = sysclock = None
        if "utcEpochNs" in cols:
            sel = "utcEpochNs, " + ("systemClockNs" if "systemClockNs" in cols else "NULL")
            row = self.con.execute(f"SELECT {sel} FROM TARGET_INFO_SESSION_START_TIME").fetchone()
            if row is not None:
                utc, sysclock = row
        if isinstance(utc, int):
            metadata["session_start_epoch_ns"] = utc
        else:
            utc = None
        if isinstance(sysclock, int):
            metadata["session_start_system_clock_ns"] = sysclock
        if session_start is not None:
            metadata["time_base"] = "session_start_epoch_ns argument"
            return int(session_start) - shift
        if normalized:
            metadata["time_base"] = "already epoch (--ts-normalize)"
            return -shift
        if kernel_start.size and int(kernel_start.min()) >= _EPOCH_THRESHOLD_NS:
            self.notes.append("kernel times are already epoch ns (an export normalized to "
                              "UTC); the session start was not added")
            metadata["time_base"] = "already epoch (times too large to be session-relative)"
            return -shift
        if utc is not None:
            metadata["time_base"] = "TARGET_INFO_SESSION_START_TIME.utcEpochNs"
            return utc - shift
        fail(self.path, "no session start time (TARGET_INFO_SESSION_START_TIME.utcEpochNs): "
                        "kernel times cannot be placed on the epoch clock; pass "
                        "session_start_epoch_ns= if you know it")

    def kernels(self, names: str) -> dict[str, Any]:
        table = "CUPTI_ACTIVITY_KIND_KERNEL"
        cols = set(self.columns(table))
        required = ["start", "end", "deviceId", "streamId", "demangledName"]
        if names == "short":
            required.append("shortName")
        missing = [c for c in required if c not in cols]
        if missing:
            fail(self.path, f"{table} lacks column(s) {', '.join(missing)}; not an Nsight "
                            "Systems kernel table this importer knows")
        if names == "mangled":
            if "mangledName" in cols:
                name_expr = "COALESCE(mangledName, demangledName)"
            else:
                name_expr = "demangledName"
                self.notes.append("no mangledName column; demangled names used")
        else:
            name_expr = _NAME_COLUMNS[names]
        short_expr = "shortName" if "shortName" in cols else name_expr
        corr_expr = "COALESCE(correlationId, -1)" if "correlationId" in cols else "-1"
        pid_expr = "COALESCE(globalPid, -1)" if "globalPid" in cols else "-1"
        self.check_integers(table, ["start", "end", "deviceId", "streamId", "correlationId",
                                    "globalPid", "demangledName", "shortName", "mangledName"])
        total = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if total * _ROW_BYTES > self.budget:
            too_large(self.path, f"its {total:,} kernel rows would take about "
                                 f"{total * _ROW_BYTES:,} bytes,", self.budget, TraceFormatError)
        arr = self.fetch_ints(
            f'SELECT start, "end", COALESCE(deviceId, -1), COALESCE(streamId, -1), {corr_expr}, '
            f"{name_expr}, COALESCE({short_expr}, {name_expr}), {pid_expr} FROM {table} "
            f'WHERE start IS NOT NULL AND "end" IS NOT NULL AND {name_expr} IS NOT NULL',
            8, table,
        )
        if total == 0:
            self.notes.append("the kernel table is empty")
        elif arr.shape[0] != total:
            self.notes.append(f"{total - arr.shape[0]} kernel row(s) without start, end or "
                              "name skipped")
        in_range(self.path, arr[:, 2], -1, I32_MAX, f"{table}.deviceId")
        bad = arr[:, 1] < arr[:, 0]
        if bad.any():
            self.notes.append(f"{int(bad.sum())} kernel row(s) ending before their start "
                              "skipped")
            arr = arr[~bad]
        # names: unique string ids -> text -> unique text (one short name per text)
        uniq, first, inv = np.unique(arr[:, 5], return_index=True, return_inverse=True)
        short_sid = arr[first, 6]
        strings = self.strings(np.concatenate([uniq, short_sid]))
        text_ids: dict[str, int] = {}
        short_names: list[str] = []
        remap = np.empty(len(uniq), dtype=np.int32)
        for j, sid in enumerate(uniq.tolist()):
            text = strings[sid]
            k = text_ids.setdefault(text, len(text_ids))
            if k == len(short_names):
                short_names.append(strings[int(short_sid[j])])
            remap[j] = k
        name_id = remap[inv.reshape(-1)]
        pid = np.where(arr[:, 7] >= 0, (arr[:, 7] >> 24) & 0xFFFFFF, -1)
        return {
            "start": arr[:, 0],
            "end": arr[:, 1],
            "device": arr[:, 2],
            "stream": arr[:, 3],
            "correlation": arr[:, 4],
            "name_id": name_id,
            "names": list(text_ids),
            "short_names": short_names,
            "pid": pid,
        }

    def nvtx(self, offset: int) -> RangeTable:
        cols = set(self.columns("NVTX_EVENTS"))
        if not {"start", "end"} <= cols:
            return RangeTable.empty()
        text_expr = "text" if "text" in cols else "NULL"
        tid_expr = "textId" if "textId" in cols else "NULL"
        self.check_integers("NVTX_EVENTS", ["start", "end", "textId"])
        total = self.con.execute("SELECT count(*) FROM NVTX_EVENTS").fetchone()[0]
        if total * _ROW_BYTES > self.budget:
            too_large(self.path, f"its {total:,} NVTX rows would take about "
                                 f"{total * _ROW_BYTES:,} bytes,", self.budget, TraceFormatError)
        rows = self.con.execute(
            f'SELECT start, "end", {text_expr}, {tid_expr} FROM NVTX_EVENTS '
            'WHERE start IS NOT NULL AND "end" IS NOT NULL AND "end" >= start'
        ).fetchall()
        if not rows:
            return RangeTable.empty()
        start = np.array([r[0] for r in rows], dtype=np.int64)
        end = np.array([r[1] for r in rows], dtype=np.int64)
        text_ids = np.array([r[3] for r in rows if r[2] is None and r[3] is not None],
                            dtype=np.int64)
        strings = self.strings(text_ids)
        label = [
            (decode(text) or "") if text is not None
            else strings.get(int(tid), "") if tid is not None
            else ""
            for _, _, text, tid in rows
        ]
        start, end = shift(self.path, [start, end], offset, "the time base")
        return RangeTable.from_names(label, start, end).sorted()

    def devices(
        self, device: np.ndarray, pid: np.ndarray, metadata: dict[str, Any]
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The device column and the ``devices`` list (see the module docstring)."""
        gpus = self.gpu_rows()
        links = self.cuda_device_rows()
        device = device.astype(np.int32)
        # distinct (pid, device) pairs through one int64 key (pid < 2**24; device in int32)
        key = (pid.astype(np.int64) << 32) + (device.astype(np.int64) + 2**31)
        ukey, inverse = np.unique(key, return_inverse=True)
        inverse = inverse.reshape(-1)
        pairs = np.stack([ukey >> 32, (ukey & 0xFFFFFFFF) - 2**31], axis=1)

        # each distinct (pid, CUDA number) -> (Nsight GPU id, uuid), or None
        hits: list[tuple[int | None, str | None] | None] = []
        for p, d in pairs.tolist():
            hit = links.get((p, d))
            if hit is None:
                cands = {v for (_, ld), v in links.items() if ld == d}
                hit = next(iter(cands)) if len(cands) == 1 else None
            hits.append(hit)
        per_cuda: dict[int, set[tuple[int | None, str | None]]] = {}
        unresolved: set[int] = set()
        for (_, d), hit in zip(pairs.tolist(), hits, strict=False):
            if hit is None:
                unresolved.add(d)
            else:
                per_cuda.setdefault(d, set()).add(hit)

        ambiguous = any(len(v) > 1 for v in per_cuda.values())
        if ambiguous and not unresolved and all(h is not None and h[0] is not None
                                                for h in hits):
            gid_of_pair = np.array([h[0] for h in hits], dtype=np.int32)  # type: ignore[index]
            new_device = gid_of_pair[inverse]
            out = []
            for gid in sorted(set(gid_of_pair.tolist())):
                uuid = next((h[1] for h in hits if h and h[0] == gid and h[1]), None)
                out.append(_entry(gid, gpus.get(gid), True, uuid))
            metadata["device_ids"] = "nsys-gpu"
            self.notes.append("one CUDA device number meant different GPUs in different "
                              "processes: the device column holds Nsight GPU ids")
            metadata["device_mapping"] = _overall(out)
            return new_device, out

        metadata["device_ids"] = "cuda"
        ids = sorted(set(pairs[:, 1].tolist()))
        out = []
        for d in ids:
            found = per_cuda.get(d, set())
            if len(found) == 1 and d not in unresolved:
                gid, uuid = next(iter(found))
                out.append(_entry(d, gpus.get(gid) if gid is not None else None, True, uuid))
            elif len(gpus) == 1 and len(ids) == 1 and not per_cuda:
                out.append(_entry(d, next(iter(gpus.values())), True))
                self.notes.append("one GPU in TARGET_INFO_GPU and one CUDA device number: "
                                  "the device mapping is certain")
            else:
                out.append(_guess(d, gpus))
        if any(e["mapping"] == "guessed" for e in out):
            self.notes.append("some CUDA device numbers were matched to GPUs by "
                              "TARGET_INFO_GPU.cuDevice or id, which CUDA_VISIBLE_DEVICES can "
                              "invalidate (mapping 'guessed')")
        metadata["device_mapping"] = _overall(out)
        return device, out

    def gpu_rows(self) -> dict[int, dict[str, Any]]:
        cols = set(self.columns("TARGET_INFO_GPU"))
        if "id" not in cols:
            return {}
        self.check_integers("TARGET_INFO_GPU", ["id"])
        want = ["name", "busLocation", "uuid", "cuDevice"]
        sel = ", ".join(c if c in cols else "NULL" for c in want)
        out: dict[int, dict[str, Any]] = {}
        for gid, name, bus, uuid, cu in self.con.execute(
            f"SELECT id, {sel} FROM TARGET_INFO_GPU"
        ):
            if gid is None or int(gid) in out:
                continue
            in_range(self.path, [int(gid)], -1, I32_MAX, "TARGET_INFO_GPU.id")
            out[int(gid)] = {
                "name": decode(name),
                "pci_bus_id": normalize_pci(bus),
                "uuid": normalize_uuid(uuid),
                "cuDevice": int(cu) if isinstance(cu, int) else None,
            }
        return out

    def cuda_device_rows(self) -> dict[tuple[int, int], tuple[int | None, str | None]]:
        cols = set(self.columns("TARGET_INFO_CUDA_DEVICE"))
        if not {"cudaId", "pid"} <= cols:
            return {}
        self.check_integers("TARGET_INFO_CUDA_DEVICE", ["cudaId", "pid", "gpuId"])
        sel = ", ".join(c if c in cols else "NULL" for c in ("gpuId", "uuid"))
        out: dict[tuple[int, int], tuple[int | None, str | None]] = {}
        for cuda_id, p, gid, uuid in self.con.execute(
            f"SELECT cudaId, pid, {sel} FROM TARGET_INFO_CUDA_DEVICE"
        ):
            if cuda_id is None or p is None:
                continue
            in_range(self.path, [int(cuda_id)], -1, I32_MAX, "TARGET_INFO_CUDA_DEVICE.cudaId")
            if isinstance(gid, int):
                in_range(self.path, [gid], -1, I32_MAX, "TARGET_INFO_CUDA_DEVICE.gpuId")
            out[(int(p), int(cuda_id))] = (int(gid) if isinstance(gid, int) else None,
                                           normalize_uuid(uuid))
        return out


def _entry(dev_id: int, gpu: dict[str, Any] | None, known: bool,
           uuid: str | None = None) -> dict[str, Any]:
    g = gpu or {}
    uuid = uuid or g.get("uuid")
    pci = g.get("pci_bus_id")
    mapping = ("uuid" if uuid else "pci" if pci else "guessed") if known else "guessed"
    return {"id": int(dev_id), "name": g.get("name"), "uuid": uuid, "pci_bus_id": pci,
            "mapping": mapping}


def _guess(d: int, gpus: dict[int, dict[str, Any]]) -> dict[str, Any]:
    by_cuda = [g for g in gpus.values() if g.get("cuDevice") == d]
    if len(by_cuda) == 1:
        return _entry(d, by_cuda[0], False)
    if not any(g.get("cuDevice") is not None for g in gpus.values()) and d in gpus:
        return _entry(d, gpus[d], False)
    return _entry(d, None, False)


def _overall(devices: list[dict[str, Any]]) -> str:
    if devices and all(e["mapping"] != "guessed" for e in devices):
        return "known"
    return "guessed"
