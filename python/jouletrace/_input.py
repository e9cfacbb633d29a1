"""Opening untrusted input files: regular files only, permission errors named, a size budget.

Every reader of a file a user hands to jouletrace (recordings, profiler traces,
CSV tables) opens it here, so the same rules hold for all of them:

- Only regular files are read. The file is opened with ``O_NONBLOCK`` (a FIFO
  or a device would otherwise block the open) and checked with ``fstat`` on the
  open descriptor; a FIFO, socket, device or directory is refused by name.
- A file that exists but may not be read raises
  :class:`~jouletrace.errors.PermissionDeniedError` naming the file and the fix,
  never "corrupt".
- What a reader may hold in memory for one file is bounded by one budget,
  :func:`input_budget`: by default a quarter of the machine's physical memory
  (at least 256 MiB), overridden by the ``JOULETRACE_MAX_INPUT_BYTES``
  environment variable or a reader's ``max_bytes=`` argument. Compressed data
  is decompressed in a stream that stops at the budget, so a small file that
  inflates to gigabytes costs no more than the budget to refuse.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable
from typing import IO, NoReturn, Protocol

from .errors import InvalidArgumentError, JouletraceError, PermissionDeniedError

__all__ = [
    "ENV_MAX_INPUT_BYTES",
    "MIN_DEFAULT_BUDGET",
    "input_budget",
    "open_regular",
    "read_capped",
    "read_regular",
    "too_large",
]

#: Environment variable that overrides the default input budget (bytes; suffixes K, M, G allowed).
ENV_MAX_INPUT_BYTES = "JOULETRACE_MAX_INPUT_BYTES"
#: The default budget is never below this, however small the machine.
MIN_DEFAULT_BUDGET = 256 << 20

_CHUNK = 1 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _parse_size(text: str) -> int | None:
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    digits = t[: len(t) - len(unit)].strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:
        return None
    value = int(digits) * _UNITS[unit]
    return value if value > 0 else None


def input_budget(max_bytes: int | None = None) -> int:
    """The memory budget (bytes) for reading one input file.

    ``max_bytes`` when given; else ``$JOULETRACE_MAX_INPUT_BYTES`` (an integer,
    optionally with a K/M/G/T suffix); else a quarter of the physical memory,
    at least :data:`MIN_DEFAULT_BUDGET`.
    """
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise InvalidArgumentError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        return max_bytes
    env = os.environ.get(ENV_MAX_INPUT_BYTES)
    if env:
        value = _parse_size(env)
        if value is None:
            raise InvalidArgumentError(
                f"{ENV_MAX_INPUT_BYTES}={env!r} is not a size; use bytes, e.g. 2000000000 or 2G"
            )
        return value
    mem = _physical_memory()
    return max(MIN_DEFAULT_BUDGET, mem // 4) if mem else MIN_DEFAULT_BUDGET


def too_large(path: str, what: str, budget: int, error: type[JouletraceError]) -> NoReturn:
    """Raise ``error``: ``what`` (e.g. "decompresses to") of ``path`` exceeds the input budget."""
    raise error(
        f"{path}: {what} more than {budget:,} bytes, the input limit; if the file is genuine, "
        f"raise the limit with the environment variable {ENV_MAX_INPUT_BYTES}=<bytes> "
        "(or the reader's max_bytes= argument)"
    ) from None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def open_regular(path: str, error: type[JouletraceError], what: str = "file") -> IO[bytes]:
    """Open ``path`` for binary reading; a regular file only.

    A missing file raises ``FileNotFoundError``; one this process may not read
    raises :class:`PermissionDeniedError`; anything but a regular file (FIFO,
    socket, device, directory) raises ``error``. The open never blocks.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"no {what} at {path}", path) from None
    except PermissionError:
        raise PermissionDeniedError(
            f"{path}: permission denied: this user may not read the {what}; check `ls -l {path}` "
            "(and the directories above it), then make it readable (chmod u+r) or run as its owner"
        ) from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot open the {what}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(
                f"{path}: is {_kind(st.st_mode)}, not a regular {what}; jouletrace reads only "
                "regular files: save the data to a file first and pass that"
            )
        # Regular files never block; clear O_NONBLOCK so reads behave normally.
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def read_capped(
    fh: _Readable, budget: int, path: str, error: type[JouletraceError], what: str = "holds",
    refuse: Callable[[], Exception] | None = None,
) -> bytearray:
    """All of ``fh`` (a file or a decompressing stream), refusing more than ``budget`` bytes
    (with :func:`too_large`'s message, or the error ``refuse()`` makes).

    Reads in chunks and stops one byte past the budget, so a stream that would
    inflate further is never inflated (or allocated) past it.
    """
    out = bytearray()
    while True:
        chunk = fh.read(min(_CHUNK, budget + 1 - len(out)))
        if not chunk:
            return out
        out += chunk
        if len(out) > budget:
            if refuse is not None:
                raise refuse()
            too_large(path, what, budget, error)


def read_regular(path: str, budget: int, error: type[JouletraceError], what: str = "file") -> bytes:
    """The whole of the regular file ``path`` (see :func:`open_regular`), at most ``budget`` bytes."""
    with open_regular(path, error, what) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > budget:
            too_large(path, f"is {size:,} bytes,", budget, error)
        return fh.read()
