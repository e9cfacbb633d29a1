"""Helpers shared by the importers: error messages, file sniffing, identifiers."""

from __future__ import annotations

import os
import re
from typing import Any, NoReturn

import numpy as np

from jouletrace._input import open_regular
from jouletrace.errors import TraceFormatError

SQLITE_MAGIC = b"SQLite format 3\x00"
GZIP_MAGIC = b"\x1f\x8b"


def fail(path: str | os.PathLike[str] | None, what: str) -> NoReturn:
    """Raise TraceFormatError naming the file and what is wrong with it."""
    where = os.fspath(path) if path is not None else "<trace>"
    # "from None": the message says what is wrong; a SQLite/JSON traceback would not help.
    raise TraceFormatError(f"{where}: {what}") from None


def read_head(path: str | os.PathLike[str], n: int = 64) -> bytes:
    """The first ``n`` bytes of ``path``; an empty file is a TraceFormatError.

    Only a regular file is read (:func:`jouletrace._input.open_regular`): a
    directory, FIFO or device is a TraceFormatError, an unreadable file a
    PermissionDeniedError.
    """
    with open_regular(os.fspath(path), TraceFormatError, "trace file") as fh:
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


I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
#: Longest integer text parsed (int64 needs 19 digits); longer is out of range, never parsed.
_MAX_DIGITS = 24


def parse_int(text: str) -> int | None:
    """The integer that ``text`` spells in ASCII digits (optional sign), else None.

    Text too long for any 64-bit value gives a value out of the int64 range
    (so range checks refuse it) rather than being parsed: Python refuses to
    parse more than 4,300 digits, and nothing here needs more than 20.
    """
    t = text.strip()
    digits = t[1:] if t[:1] in ("-", "+") else t
    if not digits or not (digits.isascii() and digits.isdigit()):
        return None
    if len(digits) > _MAX_DIGITS:
        return I64_MIN - 1 if t.startswith("-") else I64_MAX + 1
    return int(t)


def shift(path: str | os.PathLike[str], arrays: list[np.ndarray], offset: int,
          what: str) -> list[np.ndarray]:
    """``arrays + offset`` (int64), exactly; a result outside the int64 range is a TraceFormatError.

    numpy would wrap such a sum around silently (2**63 becomes a negative time).
    """
    offset = int(offset)
    for a in arrays:
        if a.size and (int(a.min()) + offset < I64_MIN or int(a.max()) + offset > I64_MAX):
            fail(path, f"{what} ({offset}) puts times outside the 64-bit nanosecond range; "
                       "the time base is corrupt")
    if not offset:
        return arrays
    return [a + np.int64(offset) for a in arrays]


def in_range(path: str | os.PathLike[str], values: Any, lo: int, hi: int, what: str) -> None:
    """Fail unless every value (a list of Python ints, or an integer array) is within [lo, hi]."""
    if len(values) == 0:
        return
    mn, mx = (int(values.min()), int(values.max())) if isinstance(values, np.ndarray) else (
        min(values), max(values))
    if mn < lo or mx > hi:
        fail(path, f"{what} {mn if mn < lo else mx} is out of range ({lo} .. {hi})")


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
