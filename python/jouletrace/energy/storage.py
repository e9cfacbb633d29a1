"""Saving and loading recordings: ``Recording.save(path)`` and ``jouletrace.load(path)``.

Format (schema version 1)
=========================

A numpy ``.npz`` archive (a zip file; ``compress=True`` deflates it) holding
only plain arrays, read back with ``allow_pickle=False``:

==================  ===========  ==========================================================
member              dtype        content
==================  ===========  ==========================================================
``t_ns``            int64 (n)    CLOCK_MONOTONIC ns, the middle of each read
``t_before_ns``     int64 (n)    just before each read
``t_after_ns``      int64 (n)    just after each read
``seq``             uint64 (n)   read number (gaps are drops)
``status``          int32 (n)    0 ok; see ``jouletrace.energy.recording.STATUS_NAMES``
``clock_pairs``     int64 (k,3)  (CLOCK_MONOTONIC ns, CLOCK_REALTIME ns, uncertainty ns)
``channel_NNN``     float64 (n)  one per channel, in the order of the JSON ``channels``
``metadata_json``   uint8        UTF-8 JSON, below
==================  ===========  ==========================================================

The JSON object has ``format`` = ``"jouletrace.recording"``,
``schema_version`` = 1, ``n_samples``, ``channels`` (a list of ``{"name",
"member", "cumulative"}``), ``dropped``, ``missed_deadlines``, a ``summary``
(``host``, ``cpu_model``, ``gpu_names``, ``driver_version``, ``nvml_version``,
``jouletrace_version`` that recorded, ``saved_by`` (the version that saved),
``sources``, ``rates_hz``, ``drops``, ``clock_pairs`` (their count)) and the
recording's whole ``metadata`` (including the sensor characterisation of
:meth:`Recording.characterize`).

Saving goes through :func:`jouletrace._safe_output.write_output`: a regular
file is written to an unpredictable temporary name beside it and renamed over
``path``, so a reader never sees a half-written file; a device or FIFO (such
as ``/dev/null``) is written into, never replaced; a folder is refused. Loading checks the format, the schema version
(a newer one is refused with the version to upgrade to), the presence, shape and
dtype of every member (before it is read, against the sizes in the zip
directory and the input budget of :mod:`jouletrace._input`), the types of the
metadata jouletrace reads back, and the zip CRCs; any failure is a
:class:`jouletrace.errors.RecordingFormatError` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt

from .._input import input_budget, open_regular, too_large
from .._json import plain as _jsonable
from .._version import __version__
from ..errors import RecordingFormatError
from . import stream
from .archive import _COLUMNS, FORMAT, SCHEMA_VERSION, save
from .recording import Recording

__all__ = ["save", "load", "SCHEMA_VERSION", "FORMAT"]

def _bad(path: str, what: str) -> RecordingFormatError:
    return RecordingFormatError(
        f"{path}: not a readable jouletrace recording: {what}. The file may be truncated or corrupt "
        "(an interrupted copy?); record again, or restore the file from where it was saved."
    )


#: What can go wrong while reading an archive (beyond our own checks); all become RecordingFormatError.
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError, KeyError, zlib.error,
    struct.error, NotImplementedError, RuntimeError, OverflowError, SyntaxError, TypeError,
)
#: Deepest JSON nesting accepted in the metadata (jouletrace writes about 6 levels).
MAX_METADATA_DEPTH = 64
#: The metadata JSON may take at most this fraction of the input budget (parsed JSON is larger).
_METADATA_SHARE = 16


def load(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> Recording:
    """Read a recording written by :meth:`Recording.save` (any schema up to this version's).

    Raises :class:`~jouletrace.errors.RecordingFormatError` for a truncated,
    corrupt or foreign file, or one from a newer jouletrace;
    :class:`~jouletrace.errors.PermissionDeniedError` for one this user may not
    read; ``FileNotFoundError`` when there is no file. Only a regular file is
    read, and its arrays and metadata may take at most the input budget
    (``max_bytes``, else ``$JOULETRACE_MAX_INPUT_BYTES``, else a quarter of the
    physical memory; see :mod:`jouletrace._input`): the sizes the archive
    declares are checked before anything is allocated.
    """
    path = os.fspath(path)
    budget = input_budget(max_bytes)
    if os.path.isdir(path):
        if not stream.is_stream(path):
            raise RecordingFormatError(f"{path} is a folder, not a recording (a streamed recording's folder "
                                       "holds metadata.json and a samples folder)")
        return _load_stream(path, budget)
    with open_regular(path, RecordingFormatError, "recording") as fh:
        if fh.read(6) == b"\x93NUMPY":
            raise _bad(path, "it holds a single array, not an archive")
        fh.seek(0)
        try:
            with zipfile.ZipFile(fh) as z:
                return _Archive(path, z, budget).recording()
        except RecordingFormatError:
            raise
        except RecursionError:
            raise _bad(path, "it nests too deeply") from None
        except _ARCHIVE_ERRORS as e:
            raise _bad(path, f"{type(e).__name__}: {e}") from e


def _stream_parts(path: str, budget: int, samples: bool) -> stream.StreamParts:
    def too_big(what: str) -> Exception:
        try:
            too_large(path, f"{what} is", budget, RecordingFormatError)
        except RecordingFormatError as e:
            return e
        return RecordingFormatError(path)  # pragma: no cover  (too_large always raises)

    try:
        return stream.read_stream(path, budget, lambda p: open_regular(p, RecordingFormatError, "recording"),
                                  lambda what: _bad(path, what), too_big, samples=samples)
    except RecordingFormatError:
        raise
    except _ARCHIVE_ERRORS as e:
        raise _bad(path, f"{type(e).__name__}: {e}") from e


def _stream_header(path: str, parts: stream.StreamParts, n: int) -> dict[str, Any]:
    """The header (checked as an archive's) of a streamed recording of ``n`` rows."""
    head = parts.header
    version = head.get("schema_version")
    if not _is_int(version) or version > stream.SCHEMA_VERSION or version < 1:
        raise _bad(path, f"stream schema_version {version!r} is not one this jouletrace reads "
                         f"(up to {stream.SCHEMA_VERSION}; pip install -U jouletrace)")
    ended = parts.end is not None
    md = dict((parts.end or {}).get("metadata") or head.get("metadata") or {})
    stats = parts.stats
    if not ended or not md.get("windows"):
        md["windows"] = parts.windows
    if not ended and stats:  # the counters of the last flush
        for key in ("reads", "dropped_ring", "dropped_storage", "missed_deadlines"):
            md[key] = stats.get(key, md.get(key))
    md["stream"] = {
        "format": stream.FORMAT, "compacted": bool(head.get("compacted")),
        "ended": "normally" if ended else "abnormally",
        "polls": stats.get("polls"), "rows": n, "truncated": sorted(set(parts.truncated)),
        "last_flush_t_ns": stats.get("t_ns"),
    }
    if not ended:
        md["ended_abnormally"] = True
    dropped = int(md.get("dropped_ring") or 0) + int(md.get("dropped_storage") or 0)
    header = {
        "format": FORMAT, "schema_version": SCHEMA_VERSION, "n_samples": n,
        "channels": [{"name": c["name"], "member": c["name"], "cumulative": c.get("cumulative")}
                     for c in head.get("channels", [])],
        "dropped": dropped, "missed_deadlines": md.get("missed_deadlines", 0), "metadata": md,
    }
    blob = json.dumps(_jsonable(header), allow_nan=True).encode("utf-8")
    return _header(path, np.frombuffer(blob, dtype=np.uint8))  # the same checks as an archive's


def _load_stream(path: str, budget: int) -> Recording:
    """A streamed recording (:mod:`jouletrace.energy.stream`), up to its last complete flush."""
    parts = _stream_parts(path, budget, samples=True)
    cols = parts.columns
    n = int(cols["t_ns"].shape[0])
    header = _stream_header(path, parts, n)
    if n and np.any(np.diff(cols["t_ns"]) < 0):
        raise _bad(path, "its sample times (t_ns) go backwards")
    return Recording(
        t_ns=cols["t_ns"], t_before_ns=cols["t_before_ns"], t_after_ns=cols["t_after_ns"], seq=cols["seq"],
        status=cols["status"], values={c["name"]: cols[c["name"]] for c in header["channels"]},
        cumulative={c["name"]: c["cumulative"] for c in header["channels"]},
        dropped=header["dropped"], missed_deadlines=header["missed_deadlines"] or 0,
        clock_pairs=parts.clock_pairs, metadata=header["metadata"],
    )


def stream_rows(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(rows, channels)`` a streamed recording held at its last flush (from its stats), without
    reading its samples."""
    p = os.fspath(path)
    parts = _stream_parts(p, input_budget(None), samples=False)
    return int(parts.stats.get("rows") or 0), len(parts.header.get("channels") or [])


class _Archive:
    """The members of one recording archive, each checked against what it declares."""

    def __init__(self, path: str, z: zipfile.ZipFile, budget: int) -> None:
        self.path = path
        self.z = z
        self.budget = budget
        infos = [i for i in z.infolist() if i.filename.endswith(".npy")]
        # Sizes come from the zip's directory; a member that inflates past its
        # declared size fails the read (zipfile stops there and checks the CRC).
        total = sum(i.file_size for i in infos)
        if total > budget:
            too_large(path, f"its arrays would take {total:,} bytes,", budget, RecordingFormatError)
        self.infos = {i.filename[: -len(".npy")]: i for i in infos}

    def recording(self) -> Recording:
        path = self.path
        if "metadata_json" not in self.infos:
            raise _bad(path, "it holds no jouletrace metadata (metadata_json)")
        limit = max(1 << 20, self.budget // _METADATA_SHARE)
        if self.infos["metadata_json"].file_size > limit:
            too_large(path, "its metadata JSON is", limit, RecordingFormatError)
        header = _header(path, self.member("metadata_json", np.uint8, None))
        n = header["n_samples"]
        cols = {name: self.member(name, dt, (n,)) for name, dt in _COLUMNS.items()}
        pairs = self.member("clock_pairs", np.int64, None)
        if pairs.ndim != 2 or pairs.shape[1] != 3:
            raise _bad(path, f"clock_pairs has shape {pairs.shape}, expected (k, 3)")
        values: dict[str, np.ndarray] = {}
        cumulative: dict[str, bool] = {}
        for ch in header["channels"]:
            values[ch["name"]] = self.member(ch["member"], np.float64, (n,))
            cumulative[ch["name"]] = ch["cumulative"]
        if n and np.any(np.diff(cols["t_ns"]) < 0):
            raise _bad(path, "its sample times (t_ns) go backwards")
        return Recording(
            t_ns=cols["t_ns"],
            t_before_ns=cols["t_before_ns"],
            t_after_ns=cols["t_after_ns"],
            seq=cols["seq"],
            status=cols["status"],
            values=values,
            cumulative=cumulative,
            dropped=header.get("dropped", 0),
            missed_deadlines=header.get("missed_deadlines", 0),
            clock_pairs=pairs,
            metadata=header.get("metadata") or {},
        )

    def member(self, name: str, dtype: npt.DTypeLike, shape: tuple[int, ...] | None) -> np.ndarray:
        """Member ``name`` as a read-only array, after its .npy header is checked.

        The header's dtype and shape must be the expected ones and must account
        for exactly the member's size in the zip directory, so nothing larger
        than the file declares is ever allocated.
        """
        path = self.path
        info = self.infos.get(name)
        if info is None:
            raise _bad(path, f"member {name!r} is missing")
        with self.z.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise _bad(path, f"member {name!r} has .npy format version {version}, expected 1.0 or 2.0")
            if got_dtype != np.dtype(dtype):
                raise _bad(path, f"member {name!r} has dtype {got_dtype}, expected {np.dtype(dtype)}")
            if shape is not None and tuple(got_shape) != shape:
                raise _bad(path, f"member {name!r} has shape {tuple(got_shape)}, expected {shape}")
            count = 1
            for d in got_shape:
                count *= int(d)
            nbytes = count * got_dtype.itemsize
            if info.file_size != f.tell() + nbytes:
                raise _bad(
                    path,
                    f"member {name!r} declares shape {tuple(got_shape)} ({nbytes:,} bytes of data) "
                    f"but the archive holds {info.file_size - f.tell():,}",
                )
            data = f.read(nbytes)
            if len(data) != nbytes or f.read(1):  # reading to the end checks the CRC
                raise _bad(path, f"member {name!r} is shorter or longer than its header says")
        a = np.frombuffer(data, dtype=got_dtype).reshape(got_shape, order="F" if fortran else "C")
        a.flags.writeable = False
        return a


def _depth(x: object) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(x, 1)]
    v: object
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d)
            if d > MAX_METADATA_DEPTH:
                return d
            stack.extend((c, d + 1) for c in v)
    return deepest


def _is_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: object) -> TypeGuard[int | float]:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


#: A check of one parsed JSON value.
_Check = Callable[[object], bool]


def _opt(check: _Check) -> _Check:
    return lambda x: x is None or check(x)


def _dict_of(check: _Check) -> _Check:
    return lambda x: isinstance(x, dict) and all(check(v) for v in x.values())


def _list_of(check: _Check) -> _Check:
    return lambda x: isinstance(x, list) and all(check(v) for v in x)


def _window_ok(w: object) -> bool:
    return (isinstance(w, dict) and _is_int(w.get("t0_ns")) and _opt(_is_int)(w.get("t1_ns"))
            and isinstance(w.get("name", ""), str))


def _sensor_ok(s: object) -> bool:
    return isinstance(s, dict) and all(
        check(s.get(k)) for k, check in (
            ("update_period_ns", _opt(lambda v: _is_num(v) and v >= 0)),
            ("updates", _opt(_is_int)),
            ("averaged", _opt(lambda v: isinstance(v, bool))),
            # NaN: no step seen
            ("quantum_j", _opt(lambda v: _is_num(v) and v >= 0 or isinstance(v, float) and math.isnan(v))),
        )
    )


#: The metadata keys jouletrace itself reads back, and the type each must have.
_METADATA_TYPES: dict[str, tuple[_Check, str]] = {
    "source": (_opt(lambda v: isinstance(v, str)), "text"),
    "rate_hz": (_opt(lambda v: _is_num(v) and v >= 0), "a non-negative number"),
    "device": (_opt(lambda v: isinstance(v, dict)), "an object"),
    "windows": (_opt(_list_of(_window_ok)), "a list of {name, t0_ns, t1_ns} with integer times"),
    "pauses": (_opt(_list_of(lambda p: isinstance(p, list) and len(p) == 2 and all(map(_is_int, p)))),
               "a list of [t0_ns, t1_ns] integer pairs"),
    "sensors": (_opt(_dict_of(_sensor_ok)), "an object of per-channel sensor objects"),
    "observed_update_period_ns": (_opt(_dict_of(_opt(lambda v: _is_num(v) and v >= 0))),
                                  "an object of non-negative numbers"),
    # Each counter's width as its source published it (jouletrace.sampling.counters); older files
    # have none, and their widths are inferred from the source's name.
    "counters": (_opt(_dict_of(lambda c: isinstance(c, dict) and _is_int(c.get("counter_bits"))
                               and 0 <= c["counter_bits"] <= 64 and _is_num(c.get("wrap_j")) and c["wrap_j"] >= 0)),
                 "an object of per-channel {counter_bits: 0..64, wrap_j: >= 0}"),
}


def _header(path: str, raw: np.ndarray) -> dict[str, Any]:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _bad(path, "metadata_json is not a byte array")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"its metadata is not valid JSON ({e})") from e
    except (ValueError, RecursionError) as e:  # numbers of over 4,300 digits; deep nesting
        raise _bad(path, f"its metadata is not usable JSON ({type(e).__name__}: {e})") from None
    if _depth(header) > MAX_METADATA_DEPTH:
        raise _bad(path, f"its metadata nests deeper than {MAX_METADATA_DEPTH} levels")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad(path, "its metadata does not name the jouletrace.recording format")
    version = header.get("schema_version")
    if not _is_int(version) or version < 1:
        raise _bad(path, f"schema_version {version!r} is not a positive integer")
    if version > SCHEMA_VERSION:
        summary = header.get("summary")
        saved_by = summary.get("saved_by", "?") if isinstance(summary, dict) else "?"
        raise RecordingFormatError(
            f"{path}: written with recording schema version {version} by a newer jouletrace "
            f"({str(saved_by)[:40]}); this jouletrace ({__version__}) reads "
            f"versions up to {SCHEMA_VERSION}. Upgrade jouletrace to read it: pip install -U jouletrace"
        )
    n = header.get("n_samples")
    chans = header.get("channels")
    if not _is_int(n) or n < 0:
        raise _bad(path, f"n_samples {n!r} is not a count")
    if not isinstance(chans, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("member"), str)
        and isinstance(c.get("cumulative"), bool) for c in chans
    ):
        raise _bad(path, "its channel list is malformed")
    if len({c["name"] for c in chans}) != len(chans):
        raise _bad(path, "its channel list names a channel twice")
    for key in ("dropped", "missed_deadlines"):
        if not _opt(lambda v: _is_int(v) and v >= 0)(header.get(key)):
            raise _bad(path, f"{key} {header.get(key)!r} is not a count")
    md = header.get("metadata")
    if md is not None and not isinstance(md, dict):
        raise _bad(path, f"its metadata is a {type(md).__name__}, not an object")
    for key, (check, expected) in _METADATA_TYPES.items():
        if md and not check(md.get(key)):
            raise _bad(path, f"metadata field {key!r} is not {expected}")
    return header
