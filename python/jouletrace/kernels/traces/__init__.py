"""Trace importers: GPU kernels (and NVTX / annotation ranges) from profiler traces.

Every importer returns the same :class:`KernelTable` (numpy columns, exact
integer nanoseconds, sorted by start):

- :func:`load_nsys`: Nsight Systems SQLite exports (``nsys export --type sqlite``);
- :func:`load_kineto`: PyTorch profiler (Kineto) Chrome-trace JSON, plain or ``.gz``;
- :func:`load_table`: a plain CSV table or numpy columns of (name, device, start_ns, end_ns);
- :func:`load`: sniffs the format of a file and calls one of the above.

Malformed, truncated or unknown-version input raises
:class:`jouletrace.errors.TraceFormatError`, whose message names the file and
says what is wrong. ``jouletrace.testing.traces`` writes tables back out in the
real formats, for tests.
"""

from __future__ import annotations

import os
from typing import Any

from jouletrace.errors import TraceFormatError

from ._util import sniff
from .kineto import load_kineto
from .nsys import load_nsys
from .plain import load_table
from .table import KernelTable, RangeTable

__all__ = [
    "KernelTable",
    "RangeTable",
    "TraceFormatError",
    "load",
    "load_kineto",
    "load_nsys",
    "load_table",
    "sniff",
]


def load(path: str | os.PathLike[str], **opts: Any) -> KernelTable:
    """Load a trace file of any supported format (sniffed from its first bytes and name).

    SQLite header -> :func:`load_nsys`; gzip header or JSON text -> :func:`load_kineto`;
    ``.csv`` (or a CSV header with ``start_ns``) -> :func:`load_table`. ``opts`` go
    to that function (e.g. ``clock="monotonic"`` for a table, ``names="short"`` for nsys).
    """
    kind = sniff(path)
    if kind == "nsys-sqlite":
        return load_nsys(path, **opts)
    if kind == "kineto-json":
        return load_kineto(path, **opts)
    return load_table(path, **opts)
