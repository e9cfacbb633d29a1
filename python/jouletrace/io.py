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
``status``          int32 (n)    0 ok; see ``jouletrace.recording.STATUS_NAMES``
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

Saving writes ``<path>.tmp-<pid>`` and renames it over ``path``, so a reader
never sees a half-written file. Loading checks the format, the schema version
(a newer one is refused with the version to upgrade to), the presence, shape and
dtype of every member and the zip CRCs; any failure is a
:class:`jouletrace.errors.RecordingFormatError` naming the file.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RecordingFormatError
from .recording import Recording

__all__ = ["save", "load", "SCHEMA_VERSION", "FORMAT"]

FORMAT = "jouletrace.recording"
SCHEMA_VERSION = 1

_COLUMNS = {
    "t_ns": np.int64,
    "t_before_ns": np.int64,
    "t_after_ns": np.int64,
    "seq": np.uint64,
    "status": np.int32,
}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _summary(rec: Recording) -> dict[str, Any]:
    from . import __version__

    md = rec.metadata
    dev = md.get("device") if isinstance(md.get("device"), dict) else {}
    gpu_names = [v for k, v in sorted(dev.items()) if k.startswith("gpu") and k.endswith(".name")]
    return {
        "host": md.get("host"),
        "cpu_model": md.get("cpu_model"),
        "gpu_names": gpu_names,
        "driver_version": dev.get("nvml.driver_version"),
        "nvml_version": dev.get("nvml.version"),
        "jouletrace_version": md.get("jouletrace_version"),
        "saved_by": __version__,
        "sources": [md["source"]] if md.get("source") else [],
        "rates_hz": [md["rate_hz"]] if md.get("rate_hz") is not None else [],
        "drops": {
            "dropped": rec.dropped,
            "dropped_ring": md.get("dropped_ring"),
            "dropped_storage": md.get("dropped_storage"),
            "missed_deadlines": rec.missed_deadlines,
        },
        "clock_pairs": int(len(rec.clock_pairs)),
    }


def save(rec: Recording, path: str | os.PathLike[str], *, compress: bool = False) -> str:
    """Write ``rec`` to ``path`` (format above), atomically. Returns the path as a string.

    The sensor characterisation is computed first (:meth:`Recording.characterize`)
    so the file carries it. The name is used as given (no suffix is added;
    ``.npz`` is the customary one).
    """
    path = os.fspath(path)
    rec.characterize()
    names = rec.channels
    header = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "n_samples": len(rec),
        "channels": [
            {"name": ch, "member": f"channel_{i:03d}", "cumulative": bool(rec.is_cumulative(ch))}
            for i, ch in enumerate(names)
        ],
        "dropped": rec.dropped,
        "missed_deadlines": rec.missed_deadlines,
        "saved_epoch_ns": time.time_ns(),
        "summary": _summary(rec),
        "metadata": rec.metadata,
    }
    blob = json.dumps(_jsonable(header), indent=1, allow_nan=True).encode("utf-8")
    arrays: dict[str, np.ndarray] = {
        name: np.ascontiguousarray(getattr(rec, name), dtype=dt) for name, dt in _COLUMNS.items()
    }
    arrays["clock_pairs"] = np.ascontiguousarray(rec.clock_pairs, dtype=np.int64).reshape(-1, 3)
    for i, ch in enumerate(names):
        arrays[f"channel_{i:03d}"] = np.ascontiguousarray(rec[ch], dtype=np.float64)
    arrays["metadata_json"] = np.frombuffer(blob, dtype=np.uint8)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)  # type: ignore[operator]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _bad(path: str, what: str) -> RecordingFormatError:
    return RecordingFormatError(
        f"{path}: not a readable jouletrace recording: {what}. The file may be truncated or corrupt "
        "(an interrupted copy?); record again, or restore the file from where it was saved."
    )


def load(path: str | os.PathLike[str]) -> Recording:
    """Read a recording written by :meth:`Recording.save` (any schema up to this version's).

    Raises :class:`~jouletrace.errors.RecordingFormatError` for a truncated,
    corrupt or foreign file, or one from a newer jouletrace; ``FileNotFoundError``
    when there is no file.
    """
    path = os.fspath(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"no recording at {path}")
    try:
        # Our own file object: np.load leaks its handle when the archive is unreadable.
        with open(path, "rb") as fh:
            z = np.load(fh, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise _bad(path, "it holds a single array, not an archive")
            with z:
                members = set(z.files)
                if "metadata_json" not in members:
                    raise _bad(path, "it holds no jouletrace metadata (metadata_json)")
                header = _header(path, z["metadata_json"])
                n = header["n_samples"]
                cols = {}
                for name, dt in _COLUMNS.items():
                    cols[name] = _member(path, z, members, name, dt, (n,))
                pairs = _member(path, z, members, "clock_pairs", np.int64, None)
                if pairs.ndim != 2 or pairs.shape[1] != 3:
                    raise _bad(path, f"clock_pairs has shape {pairs.shape}, expected (k, 3)")
                values: dict[str, np.ndarray] = {}
                cumulative: dict[str, bool] = {}
                for ch in header["channels"]:
                    values[ch["name"]] = _member(path, z, members, ch["member"], np.float64, (n,))
                    cumulative[ch["name"]] = bool(ch["cumulative"])
    except RecordingFormatError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError, KeyError) as e:
        raise _bad(path, f"{type(e).__name__}: {e}") from e
    for a in (*cols.values(), pairs, *values.values()):
        a.flags.writeable = False
    return Recording(
        t_ns=cols["t_ns"],
        t_before_ns=cols["t_before_ns"],
        t_after_ns=cols["t_after_ns"],
        seq=cols["seq"],
        status=cols["status"],
        values=values,
        cumulative=cumulative,
        dropped=int(header.get("dropped", 0)),
        missed_deadlines=int(header.get("missed_deadlines", 0)),
        clock_pairs=pairs,
        metadata=header.get("metadata") or {},
    )


def _header(path: str, raw: np.ndarray) -> dict[str, Any]:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _bad(path, "metadata_json is not a byte array")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"its metadata is not valid JSON ({e})") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad(path, "its metadata does not name the jouletrace.recording format")
    version = header.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise _bad(path, f"schema_version {version!r} is not a positive integer")
    if version > SCHEMA_VERSION:
        from . import __version__

        raise RecordingFormatError(
            f"{path}: written with recording schema version {version} by a newer jouletrace "
            f"({header.get('summary', {}).get('saved_by', '?')}); this jouletrace ({__version__}) reads "
            f"versions up to {SCHEMA_VERSION}. Upgrade jouletrace to read it: pip install -U jouletrace"
        )
    n = header.get("n_samples")
    chans = header.get("channels")
    if not isinstance(n, int) or n < 0:
        raise _bad(path, f"n_samples {n!r} is not a count")
    if not isinstance(chans, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("member"), str) for c in chans
    ):
        raise _bad(path, "its channel list is malformed")
    return header


def _member(path: str, z: Any, members: set[str], name: str, dtype: Any, shape: tuple[int, ...] | None) -> np.ndarray:
    if name not in members:
        raise _bad(path, f"member {name!r} is missing")
    a = z[name]  # reads the whole member: the zip CRC is checked here
    if a.dtype != np.dtype(dtype):
        raise _bad(path, f"member {name!r} has dtype {a.dtype}, expected {np.dtype(dtype)}")
    if shape is not None and a.shape != shape:
        raise _bad(path, f"member {name!r} has shape {a.shape}, expected {shape}")
    return a
