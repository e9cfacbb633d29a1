"""The recording file's format (name, schema version, columns) and its writer, ``save``.

The format is described in :mod:`jouletrace.energy.storage`, which reads it back
(:func:`jouletrace.load`) and re-exports :func:`save`; ``Recording.save`` calls it.
Kept apart from the reader so that the recording can save itself without importing
the module that builds recordings from files.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .._json import plain as _jsonable
from .._safe_output import write_output
from .._version import __version__

if TYPE_CHECKING:
    from .recording import Recording

__all__ = ["FORMAT", "SCHEMA_VERSION", "save"]

FORMAT = "jouletrace.recording"
SCHEMA_VERSION = 1

_COLUMNS = {
    "t_ns": np.int64,
    "t_before_ns": np.int64,
    "t_after_ns": np.int64,
    "seq": np.uint64,
    "status": np.int32,
}


def _summary(rec: Recording) -> dict[str, Any]:
    md = rec.metadata
    device = md.get("device")
    dev: dict[str, Any] = device if isinstance(device, dict) else {}
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
    writer = np.savez_compressed if compress else np.savez
    # numpy's stub types savez's keyword arrays as its `allow_pickle: bool`
    return write_output(path, lambda f: writer(f, **arrays))  # type: ignore[arg-type]
