"""Write a KernelTable out as an Nsight Systems SQLite export or a PyTorch profiler trace.

For tests: synthesise a trace whose every kernel time is known, then import it
back. The files use the real formats' table, column and key names and types
(the subset the importers read), taken from real exports:

- ``write_nsys_sqlite``: ``CUPTI_ACTIVITY_KIND_KERNEL``, ``StringIds``,
  ``TARGET_INFO_SESSION_START_TIME``, ``NVTX_EVENTS`` (ranges as push/pop
  ranges, eventType 59, text through ``textId``), ``TARGET_INFO_GPU`` and
  ``TARGET_INFO_CUDA_DEVICE`` (devices whose mapping is not ``"guessed"`` get a
  CUDA-device link, so the mapping reads back as known) and the export metadata
  table ``META_DATA_EXPORT``, as schema 3.x writes them. Kernel times are
  written relative to ``session_start_epoch_ns``.
- ``write_kineto_json``: with ``base_time_ns``, the modern layout
  (``baseTimeNanoseconds``, category ``kernel``, integer ``tid``,
  ``"External id"``); without it, the 2021 layout (absolute epoch µs, category
  ``Kernel``, ``tid`` like ``"stream 7"``, ``"external id"``). Times are written
  as exact decimal µs with three decimals.

Ranges with device -1 become NVTX ranges / ``user_annotation`` events; ranges
on a device become ``gpu_user_annotation`` events (nsys: NVTX ranges, which
are host-side, so their device reads back as -1).
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
from typing import Any

import numpy as np

from ..kernels.traces.table import KernelTable

__all__ = ["write_nsys_sqlite", "write_kineto_json"]

_PID = 4242  # process id written for the synthetic process
_NVTX_PUSH_POP = 59  # NVTX_EVENTS.eventType of a push/pop range

_NSYS_SCHEMA = """
CREATE TABLE StringIds (
    id                          INTEGER   NOT NULL   PRIMARY KEY,
    value                       TEXT      NOT NULL
);
CREATE TABLE META_DATA_EXPORT (
    name                        TEXT      NOT NULL,
    value                       TEXT
);
CREATE TABLE TARGET_INFO_SESSION_START_TIME (
    utcEpochNs                  INTEGER,
    utcTime                     TEXT,
    localTime                   TEXT
);
CREATE TABLE TARGET_INFO_GPU (
    vmId                        INTEGER   NOT NULL,
    id                          INTEGER   NOT NULL,
    name                        TEXT,
    busLocation                 TEXT,
    uuid                        TEXT,
    cuDevice                    INTEGER
);
CREATE TABLE TARGET_INFO_CUDA_DEVICE (
    gpuId                       INTEGER,
    cudaId                      INTEGER   NOT NULL,
    pid                         INTEGER   NOT NULL,
    uuid                        TEXT
);
CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (
    start                       INTEGER   NOT NULL,
    end                         INTEGER   NOT NULL,
    deviceId                    INTEGER   NOT NULL,
    contextId                   INTEGER   NOT NULL,
    streamId                    INTEGER   NOT NULL,
    correlationId               INTEGER,
    globalPid                   INTEGER,
    demangledName               INTEGER   NOT NULL,
    shortName                   INTEGER   NOT NULL
);
CREATE TABLE NVTX_EVENTS (
    start                       INTEGER   NOT NULL,
    end                         INTEGER,
    eventType                   INTEGER   NOT NULL,
    text                        TEXT,
    globalTid                   INTEGER,
    textId                      INTEGER   REFERENCES StringIds(id),
    domainId                    INTEGER
);
"""


def _nsys_uuid(uuid: str | None) -> str | None:
    if not uuid:
        return None
    return uuid[4:] if uuid.upper().startswith("GPU-") else uuid


def write_nsys_sqlite(
    path: str | os.PathLike[str], table: KernelTable, session_start_epoch_ns: int
) -> None:
    """Write ``table`` (epoch clock) as an Nsight Systems SQLite export at ``path``.

    An existing file at ``path`` is replaced.
    """
    if table.clock != "epoch":
        raise ValueError("write_nsys_sqlite() needs an epoch-clock table "
                         f"(this one is {table.clock!r})")
    path = os.fspath(path)
    if os.path.exists(path):
        os.remove(path)
    base = int(session_start_epoch_ns)
    con = sqlite3.connect(path)
    try:
        con.executescript(_NSYS_SCHEMA)
        # strings: kernel names, short names, range names
        strings: dict[str, int] = {}

        def sid(text: str) -> int:
            return strings.setdefault(text, len(strings) + 1)

        name_sid = np.array([sid(n) for n in table.names], dtype=np.int64)
        shorts = table.short_names if table.short_names is not None else table.names
        short_sid = np.array([sid(s) for s in shorts], dtype=np.int64)
        range_sid = np.array([sid(n) for n in table.ranges.names], dtype=np.int64)

        meta = [
            ("EXPORT_PRODUCT_NAME", "jouletrace.traces.synth"),
            ("EXPORT_PRODUCT_VERSION", "0"),
            ("EXPORT_SCHEMA_VERSION", "3.24.14"),
            ("EXPORT_SCHEMA_VERSION_MAJOR", "3"),
            ("EXPORT_PARAM_TIME_NORMALIZE", "false"),
            ("EXPORT_PARAM_TIME_SHIFT", "0"),
        ]
        con.executemany("INSERT INTO META_DATA_EXPORT VALUES (?, ?)", meta)
        con.execute("INSERT INTO TARGET_INFO_SESSION_START_TIME VALUES (?, NULL, NULL)",
                    (base,))
        for d in table.devices:
            dev_id = int(d["id"])
            con.execute(
                "INSERT INTO TARGET_INFO_GPU (vmId, id, name, busLocation, uuid, cuDevice) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (1 << 48, dev_id, d.get("name"), d.get("pci_bus_id"),
                 _nsys_uuid(d.get("uuid")), dev_id),
            )
            if d.get("mapping") != "guessed":
                con.execute("INSERT INTO TARGET_INFO_CUDA_DEVICE VALUES (?, ?, ?, ?)",
                            (dev_id, dev_id, _PID, ""))
        corr = table.correlation
        rows = zip(
            (table.start_ns - base).tolist(),
            (table.end_ns - base).tolist(),
            table.device.tolist(),
            table.stream.tolist(),
            [None if c < 0 else c for c in corr.tolist()],
            name_sid[table.name_id].tolist(),
            short_sid[table.name_id].tolist(), strict=False,
        )
        con.executemany(
            "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, streamId, "
            f"correlationId, globalPid, demangledName, shortName) "
            f"VALUES (?, ?, ?, 1, ?, ?, {_PID << 24}, ?, ?)",
            rows,
        )
        r = table.ranges
        con.executemany(
            "INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, textId, domainId) "
            f"VALUES (?, ?, {_NVTX_PUSH_POP}, NULL, {(_PID << 24) | _PID}, ?, 0)",
            zip((r.start_ns - base).tolist(), (r.end_ns - base).tolist(),
                range_sid[r.name_id].tolist(), strict=False),
        )
        con.executemany("INSERT INTO StringIds VALUES (?, ?)",
                        [(i, s) for s, i in strings.items()])
        con.commit()
    finally:
        con.close()


def _us(ns: int) -> str:
    """Exact decimal microseconds with three decimals (JSON number text)."""
    sign = "-" if ns < 0 else ""
    a = -ns if ns < 0 else ns
    return f"{sign}{a // 1000}.{a % 1000:03d}"


def write_kineto_json(
    path: str | os.PathLike[str],
    table: KernelTable,
    base_time_ns: int | None = None,
    gz: bool = False,
) -> None:
    """Write ``table`` (epoch clock) as a PyTorch profiler trace at ``path``.

    ``base_time_ns``: write ts relative to this ``baseTimeNanoseconds`` (modern
    layout); None: absolute epoch µs (2021 layout). ``gz``: gzip-compress.
    """
    if table.clock != "epoch":
        raise ValueError("write_kineto_json() needs an epoch-clock table "
                         f"(this one is {table.clock!r})")
    modern = base_time_ns is not None
    base = int(base_time_ns) if base_time_ns is not None else 0
    kernel_cat = "kernel" if modern else "Kernel"
    ext_key = "External id" if modern else "external id"
    parts: list[str] = []
    names = [json.dumps(n) for n in table.names]
    for start, end, dev, stream, nid, corr, ext in zip(
        table.start_ns.tolist(), table.end_ns.tolist(), table.device.tolist(),
        table.stream.tolist(), table.name_id.tolist(), table.correlation.tolist(),
        table.external_id.tolist(), strict=False,
    ):
        tid: str | int = str(stream) if modern else json.dumps(f"stream {stream}")
        args: dict[str, Any] = {"queued": 0, "device": dev, "context": 1, "stream": stream}
        if corr >= 0:
            args["correlation"] = corr
        if ext >= 0:
            args[ext_key] = ext
        parts.append(
            f'{{"ph": "X", "cat": "{kernel_cat}", "name": {names[nid]}, "pid": {dev}, '
            f'"tid": {tid}, "ts": {_us(start - base)}, "dur": {_us(end - start)}, '
            f'"args": {json.dumps(args)}}}'
        )
    r = table.ranges
    rnames = [json.dumps(n) for n in r.names]
    for start, end, dev, nid in zip(r.start_ns.tolist(), r.end_ns.tolist(),
                                    r.device.tolist(), r.name_id.tolist(), strict=False):
        if dev < 0:
            cat, pid, tid = "user_annotation", _PID, _PID
        else:
            cat, pid, tid = "gpu_user_annotation", dev, 7
        parts.append(
            f'{{"ph": "X", "cat": "{cat}", "name": {rnames[nid]}, "pid": {pid}, "tid": {tid}, '
            f'"ts": {_us(start - base)}, "dur": {_us(end - start)}, "args": {{}}}}'
        )
    props = [{"id": int(d["id"]), "name": d.get("name") or ""} for d in table.devices]
    head = ['"schemaVersion": 1', f'"deviceProperties": {json.dumps(props)}']
    if modern:
        head.append(f'"baseTimeNanoseconds": {base}')
    text = (
        "{\n  " + ",\n  ".join(head) + ',\n  "traceEvents": [\n  '
        + ",\n  ".join(parts) + '\n  ],\n  "displayTimeUnit": "ms"\n}\n'
    ).encode("utf-8")
    if gz:
        text = gzip.compress(text, mtime=0)
    with open(path, "wb") as fh:
        fh.write(text)
