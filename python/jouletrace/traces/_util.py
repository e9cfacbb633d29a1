"""Helpers shared by the importers: error messages, file sniffing, identifiers."""

from __future__ import annotations

import os
import re
from typing import Any, NoReturn

from jouletrace.errors import TraceFormatError

SQLITE_MAGIC = b"SQLite format 3\x00"
GZIP_MAGIC = b"\x1f\x8b"


def fail(path: str | os.PathLike[str] | None, what: str) -> NoReturn:
    """Raise TraceFormatError naming the file and what is wrong with it."""
    where = os.fspath(path) if path is not None else "<trace>"
    # "from None": the message says what is wrong; a SQLite/JSON traceback would not help.
    raise TraceFormatError(f"{where}: {what}") from None


def read_head(path: str | os.PathLike[str], n: int = 64) -> bytes:
    """The first ``n`` bytes of ``path``; an empty file is a TraceFormatError."""
    if os.path.isdir(path):
        fail(path, "is a directory, not a trace file")
    with open(path, "rb") as fh:
        head = fh.read(n)
    if not head:
        fail(path, "empty file (0 bytes)")
    return head


def sniff(path: str | os.PathLike[str]) -> str:
    """``"nsys-sqlite"``, ``"kineto-json"`` or ``"table"`` from the file's first bytes and name."""
    head = read_head(path)
    name = os.fspath(path).lower()
    if head.startswith(SQLITE_MAGIC):
        return "nsys-sqlite"
    if head.startswith(GZIP_MAGIC):
        return "kineto-json"
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text[:1] in (b"{", b"["):
        return "kineto-json"
    if name.endswith((".csv", ".csv.txt", ".tsv")):
        return "table"
    if name.endswith((".nsys-rep", ".qdrep")):
        fail(path, "this is an Nsight Systems report, not an export; convert it with "
                   "`nsys export --type sqlite` and load the .sqlite file")
    first_line = text.split(b"\n", 1)[0]
    if b"start_ns" in first_line and b"," in first_line:
        return "table"
    fail(path, "unknown trace format: not an Nsight Systems SQLite export, not a PyTorch "
               "profiler JSON trace (plain or gzip) and not a CSV kernel table")


def decode(value: Any) -> str | None:
    """Text from SQLite (opened with bytes as text factory): invalid UTF-8 replaced."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _stripped(value: Any) -> str | None:
    """Decoded, stripped text, or None when empty."""
    text = decode(value)
    return (text.strip() or None) if text is not None else None


_UUID_HEX = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def normalize_uuid(value: Any) -> str | None:
    """A GPU UUID in NVML's spelling (``GPU-xxxxxxxx-...``, lower case), or None if empty."""
    text = _stripped(value)
    if text is None:
        return None
    low = text.lower()
    if _UUID_HEX.match(low):
        return "GPU-" + low
    if low.startswith(("gpu-", "mig-")):
        return low[:3].upper() + low[3:]
    return text


_PCI = re.compile(r"^([0-9a-fA-F]{1,8}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")


def normalize_pci(value: Any) -> str | None:
    """A PCI bus id as ``dddd:bb:dd.f`` (lower-case hex, 4-digit domain), or None if empty."""
    text = _stripped(value)
    if text is None:
        return None
    m = _PCI.match(text)
    if not m:
        return text
    dom, bus, dev, fn = m.groups()
    return f"{int(dom, 16):04x}:{int(bus, 16):02x}:{int(dev, 16):02x}.{fn}"
