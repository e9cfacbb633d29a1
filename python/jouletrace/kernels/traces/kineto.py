"""PyTorch profiler (Kineto) Chrome-trace JSON, plain or gzip-compressed.

What is read, and how:

- Kernels: complete events (``ph == "X"``) of category ``kernel`` (older
  traces: ``Kernel``). Device from ``args["device"]``, else ``pid`` when it is
  an integer; stream from ``args["stream"]``, else ``tid`` (an integer in new
  traces, a string like ``"stream 7"`` in old ones); ``correlation`` from
  ``args["correlation"]``; the external id from ``args["External id"]`` (older:
  ``"external id"``).
- Ranges: ``user_annotation`` events (host side, device -1) and
  ``gpu_user_annotation`` events (on a GPU's timeline, with its device).
- Time: ``ts``/``dur`` are microseconds with up to three decimals (a ns
  fraction). New traces count them from ``baseTimeNanoseconds``; old ones
  (no base) hold absolute epoch microseconds. Numbers are parsed exactly (the
  JSON float text is never turned into a binary float), so epoch ns are exact:
  ``1623143089861123.456`` µs is ``1623143089861123456`` ns.
- Devices: ``deviceProperties`` (id, name) plus every device a kernel ran on.
  A Kineto trace names no GPU UUID or PCI bus, so every device's ``mapping``
  is ``"guessed"``.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import numpy as np

from jouletrace._input import input_budget, open_regular, read_capped, too_large
from jouletrace.errors import TraceFormatError

from ._util import GZIP_MAGIC, I64_MAX, I64_MIN, fail, in_range, parse_int, shift
from .table import KernelTable, RangeTable

__all__ = ["load_kineto", "SUPPORTED_SCHEMA_VERSIONS", "us_to_ns"]

#: ``schemaVersion`` values this importer was checked against.
SUPPORTED_SCHEMA_VERSIONS = (1,)

_KERNEL_CATS = frozenset({"kernel", "Kernel"})
_RANGE_CATS = {"user_annotation": False, "gpu_user_annotation": True}
# Without a base, ts must be epoch µs; 10**14 µs is 1973.
_EPOCH_US_THRESHOLD = 10**14
_THOUSAND = Decimal(1000)
#: The JSON text may take at most this fraction of the input budget (parsed, it takes 3-4x).
JSON_TEXT_SHARE = 4
I32_MAX = 2**31 - 1
_ONE = Decimal(1)


def us_to_ns(value: Any) -> int:
    """Exact integer nanoseconds from a Kineto microsecond value.

    ``value`` is an int, or the text of a JSON number (how this module parses
    floats), or a Decimal. Sub-nanosecond digits are rounded half to even.
    A Python float is refused: it has already lost the digits that matter.
    """
    if type(value) is int:
        return value * 1000
    if isinstance(value, float):
        raise TypeError("us_to_ns() needs an exact value (int, str or Decimal), not a float")
    if isinstance(value, str):
        if not value.isascii() or len(value) > 64:  # Decimal() would take "١٢" as 12
            raise ValueError(f"not a JSON number: {value[:80]!r}")
        # fast path for the usual "123.456" form
        head, dot, frac = value.partition(".")
        if (dot and len(frac) == 3 and value.isascii() and frac.isdigit()
                and head.lstrip("-").isdigit() and len(head) <= 20):
            whole = int(head) * 1000
            part = int(frac)
            return whole - part if head.startswith("-") else whole + part
        value = Decimal(value)
    if isinstance(value, Decimal):
        return int((value * _THOUSAND).quantize(_ONE, rounding=ROUND_HALF_EVEN))
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not a number: {value!r}")
    return int(value) * 1000


def _parsed_size(raw: bytes | bytearray) -> int:
    """An upper estimate of the bytes ``json.loads`` will allocate for ``raw``.

    Python objects cost far more than their text: about 64 bytes per object or
    array, 8 per element, 40 per member, 50 per number kept as text. Real
    traces parse to 3-4x their text; crafted ones (``[{},{},...]``) to 25x.
    """
    return (len(raw) + 64 * (raw.count(b"{") + raw.count(b"[")) + 8 * raw.count(b",")
            + 40 * raw.count(b":") + 50 * raw.count(b"."))


def _read_json(path: str, max_bytes: int | None = None) -> Any:
    budget = input_budget(max_bytes)
    text_limit = max(1, budget // JSON_TEXT_SHARE)
    with open_regular(path, TraceFormatError, "trace file") as fh:
        gz = fh.read(2) == GZIP_MAGIC
        fh.seek(0)
        if gz:
            try:
                with gzip.GzipFile(fileobj=fh, mode="rb") as stream:
                    raw = read_capped(stream, text_limit, path, TraceFormatError,
                                      "the gzip file decompresses to")
            except EOFError:
                fail(path, "truncated gzip file (the compressed stream ends early)")
            except (OSError, zlib.error) as exc:
                fail(path, f"corrupt gzip file ({exc})")
            if not raw.strip():
                fail(path, "empty trace (the gzip file holds no data)")
        else:
            raw = read_capped(fh, text_limit, path, TraceFormatError, "the JSON text is")
            if not raw:
                fail(path, "empty file (0 bytes)")
    need = _parsed_size(raw)
    if need > budget:
        too_large(path, f"its JSON would take about {need:,} bytes parsed,", budget,
                  TraceFormatError)
    try:
        # parse_float=str keeps the exact digits; only ts/dur are converted (exactly).
        return json.loads(raw, parse_float=str)
    except json.JSONDecodeError as exc:
        hint = " (truncated?)" if exc.pos >= len(raw.rstrip()) - 1 else ""
        fail(path, f"not valid JSON{hint}: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        fail(path, "not usable JSON: it nests too deeply")
    except ValueError as exc:  # invalid UTF-8; an integer of more than 4,300 digits
        fail(path, f"not usable JSON: {exc}")


def _as_int(value: Any) -> int | None:
    """An integer from a JSON int or text like ``"7"``, ``"stream 7"``; None otherwise.

    Only ASCII digits count; text too long for 64 bits gives a value out of the
    int64 range, which the range checks refuse.
    """
    if type(value) is int:
        return value
    if isinstance(value, str):
        n = parse_int(value)
        if n is not None:
            return n
        # "stream 7", "GPU 0"
        last = value.strip().rsplit(" ", 1)[-1]
        if last and last[:1] not in "+-":
            return parse_int(last)
    return None


def _text(value: Any) -> str | None:
    """A name: text, or a number written as text; None for anything else."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, bool)):
        return str(value)
    return None


def load_kineto(
    path: str | os.PathLike[str],
    *,
    base_time_ns: int | None = None,
    check_version: bool = True,
    max_bytes: int | None = None,
) -> KernelTable:
    """Read the kernels and user annotations of a PyTorch profiler trace (.json or .json.gz).

    ``base_time_ns`` overrides the trace's ``baseTimeNanoseconds`` (for traces
    whose base was lost). ``check_version=False`` reads an unknown
    ``schemaVersion`` anyway. ``max_bytes`` is the input budget of
    :mod:`jouletrace._input` (the JSON text may take a quarter of it, its parse
    an estimated all of it). Raises TraceFormatError for anything that is not a
    readable trace: numbers out of range included (devices beyond int32, ids
    and times beyond int64, a time base that would wrap).
    """
    path = os.fspath(path)
    doc = _read_json(path, max_bytes)
    notes: list[str] = []
    if isinstance(doc, list):
        events = doc
        doc = {}
        notes.append("bare JSON array of events (no top-level object)")
    elif isinstance(doc, dict):
        if "traceEvents" not in doc:
            fail(path, "JSON without traceEvents: not a PyTorch profiler (Chrome) trace")
        events = doc["traceEvents"]
        if not isinstance(events, list):
            fail(path, f"traceEvents is a {type(events).__name__}, not a list of events")
    else:
        fail(path, f"JSON {type(doc).__name__} at the top level, not a PyTorch profiler trace")

    schema = doc.get("schemaVersion")
    if schema is not None and schema not in SUPPORTED_SCHEMA_VERSIONS:
        if check_version:
            fail(path, f"unknown PyTorch profiler trace schemaVersion {schema!r} (known: "
                       f"{SUPPORTED_SCHEMA_VERSIONS}); pass check_version=False to try it anyway")
        notes.append(f"schemaVersion {schema!r} not checked; read anyway")

    base_raw = doc.get("baseTimeNanoseconds")
    if base_time_ns is not None:
        base = int(base_time_ns)
        time_base = "base_time_ns argument"
    elif base_raw is not None:
        base_i = _as_int(base_raw)
        if base_i is None:
            fail(path, f"baseTimeNanoseconds is not an integer: {str(base_raw)[:80]!r}")
        in_range(path, [base_i], 0, I64_MAX, "baseTimeNanoseconds")
        base = base_i
        time_base = "baseTimeNanoseconds"
    else:
        base = 0
        time_base = "absolute epoch µs (no baseTimeNanoseconds)"

    # One tight loop over the events; columns collected in lists.
    k_start: list[int] = []
    k_end: list[int] = []
    k_dev: list[int] = []
    k_stream: list[int] = []
    k_corr: list[int] = []
    k_ext: list[int] = []
    k_name: list[int] = []
    name_ids: dict[str, int] = {}
    r_start: list[int] = []
    r_end: list[int] = []
    r_dev: list[int] = []
    r_name: list[str] = []
    skipped = 0
    for i, ev in enumerate(events):
        if type(ev) is not dict:
            continue
        cat = ev.get("cat")
        is_kernel = cat in _KERNEL_CATS
        if not is_kernel and cat not in _RANGE_CATS:
            continue
        if ev.get("ph") != "X":
            continue
        try:
            ts = us_to_ns(ev["ts"])
            dur = us_to_ns(ev.get("dur", 0))
        except (KeyError, TypeError, ValueError, InvalidOperation, ArithmeticError):
            fail(path, f"event {i} ({cat}) has no valid ts/dur: ts={str(ev.get('ts'))[:80]!r}, "
                       f"dur={str(ev.get('dur'))[:80]!r}")
        if dur < 0:
            skipped += 1
            continue
        args = ev.get("args")
        if type(args) is not dict:
            args = {}
        name = _text(ev.get("name"))
        if name is None:
            fail(path, f"event {i} ({cat}) has a name that is not text: "
                       f"{type(ev.get('name')).__name__}")
        if is_kernel:
            dev = _as_int(args.get("device"))
            if dev is None:
                dev = _as_int(ev.get("pid"))
            stream = _as_int(args.get("stream"))
            if stream is None:
                stream = _as_int(ev.get("tid"))
            corr = _as_int(args.get("correlation"))
            ext = args.get("External id")
            if ext is None:
                ext = args.get("external id")
            ext = _as_int(ext)
            k_start.append(ts)
            k_end.append(ts + dur)
            k_dev.append(-1 if dev is None else dev)
            k_stream.append(-1 if stream is None else stream)
            k_corr.append(-1 if corr is None else corr)
            k_ext.append(-1 if ext is None else ext)
            nid = name_ids.get(name)
            if nid is None:
                nid = name_ids[name] = len(name_ids)
            k_name.append(nid)
        else:
            dev = -1
            if _RANGE_CATS[str(cat)]:
                dev = _as_int(args.get("device"))
                if dev is None:
                    dev = _as_int(ev.get("pid"))
                if dev is None:
                    dev = -1
            r_start.append(ts)
            r_end.append(ts + dur)
            r_dev.append(dev)
            r_name.append(name)
    if skipped:
        notes.append(f"{skipped} kernel/annotation event(s) with a negative duration skipped")

    # Out-of-range numbers are refused here: numpy would raise or wrap around.
    for what, values in (("kernel/annotation start (ns)", k_start + r_start),
                         ("kernel/annotation end (ns)", k_end + r_end),
                         ("stream id", k_stream), ("correlation id", k_corr),
                         ("external id", k_ext)):
        in_range(path, values, I64_MIN, I64_MAX, what)
    in_range(path, k_dev + r_dev, -1, I32_MAX, "device")
    start = np.array(k_start, dtype=np.int64)
    end = np.array(k_end, dtype=np.int64)
    rs = np.array(r_start, dtype=np.int64)
    re_ = np.array(r_end, dtype=np.int64)
    if base_time_ns is None and base_raw is None and start.size:
        if int(start.min()) < _EPOCH_US_THRESHOLD * 1000:
            fail(path, "no baseTimeNanoseconds and the kernel ts values are not epoch "
                       "microseconds; pass base_time_ns= if you know the trace's time base")
    start, end, rs, re_ = shift(path, [start, end, rs, re_], base, "baseTimeNanoseconds")
    if not k_start:
        notes.append("no kernel events (category 'kernel'); was the profiler run with "
                     "ProfilerActivity.CUDA?")

    device = np.array(k_dev, dtype=np.int32)
    devices = _devices(path, doc.get("deviceProperties"), device)
    order = np.argsort(start, kind="stable")
    ranges = RangeTable.from_names(r_name, rs, re_, np.array(r_dev, dtype=np.int32)).sorted()
    metadata: dict[str, Any] = {
        "tool": "PyTorch profiler (Kineto)",
        "tool_version": None,
        "schema_version": schema,
        "time_base": time_base,
        "base_time_ns": base if base_raw is not None or base_time_ns is not None else None,
        "device_mapping": "guessed",
        "device_ids": "cuda",
        "notes": notes,
    }
    for key in ("cupti_version", "cuda_runtime_version", "cuda_driver_version", "traceName"):
        if key in doc:
            metadata[key] = doc[key]
    dist = doc.get("distributedInfo")
    if isinstance(dist, dict):
        metadata["distributed"] = {k: dist[k] for k in ("backend", "rank", "world_size")
                                   if k in dist}
    return KernelTable(
        start[order],
        end[order],
        device[order],
        np.array(k_name, dtype=np.int32)[order],
        list(name_ids),
        stream=np.array(k_stream, dtype=np.int64)[order],
        correlation=np.array(k_corr, dtype=np.int64)[order],
        external_id=np.array(k_ext, dtype=np.int64)[order],
        source=path,
        format="kineto-json",
        clock="epoch",
        devices=devices,
        ranges=ranges,
        metadata=metadata,
    )


def _devices(path: str, props: Any, device: np.ndarray) -> list[dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    if isinstance(props, list):
        for p in props:
            if isinstance(p, dict):
                dev_id = _as_int(p.get("id"))
                if dev_id is not None and dev_id not in out:
                    in_range(path, [dev_id], -1, I32_MAX, "deviceProperties id")
                    name = _text(p.get("name")) or None
                    out[dev_id] = {"id": dev_id, "name": name,
                                   "uuid": None, "pci_bus_id": None, "mapping": "guessed"}
    for d in np.unique(device).tolist():
        if d not in out:
            out[d] = {"id": d, "name": None, "uuid": None, "pci_bus_id": None,
                      "mapping": "guessed"}
    return [out[k] for k in sorted(out)]
