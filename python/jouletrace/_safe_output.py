"""The one routine every jouletrace writer uses to put bytes at a path the user named.

``write_output(path, write)`` calls ``write(fileobj)`` and makes the result
appear at ``path`` without ever destroying what was there by accident:

* **Nothing there, or a regular file**: the bytes go to a new temporary file in
  the same folder, created with ``O_CREAT|O_EXCL`` under an unpredictable name
  (:func:`tempfile.mkstemp`, which never follows a symlink planted at that name),
  are flushed and fsynced, and the temporary is renamed over ``path``
  (``os.replace``): a reader sees the old file or the whole new one, never half.
  A file that is replaced keeps its permission bits; a new one gets the usual
  ``0666 & ~umask``. On any error, or an interrupt, the temporary is removed.
* **A character device or a FIFO** (``/dev/null``, ``/dev/stdout``, a named
  pipe): the bytes are streamed into it; it is never replaced by a regular file.
  A FIFO with no reader is refused instead of waiting forever.
* **A folder, a block device, a socket** or anything else: refused with an
  :class:`OutputPathError` that says what is there; nothing is written.
* **A symlink**: followed only when it belongs to the user running jouletrace
  (or to root): its final target is then treated by the rules above, so an
  existing target file is replaced atomically and the link stays a link (what
  ``perf`` and ``git`` do). A link owned by someone else, e.g. planted in a
  shared ``/tmp``, is refused: following it could make a privileged process
  overwrite a file of the link owner's choosing (the rule of the kernel's
  ``fs.protected_symlinks``, applied everywhere).

Temporary names are ``.<name>.jt-tmp-<pid>-<random>``. A writer killed with
``kill -9`` cannot remove its temporary; the next save into the same folder
removes such leftovers that belong to this user, are regular files, are older
than :data:`STALE_AFTER_S` and whose process ``<pid>`` no longer runs.

:func:`fallback_path` names a place for output that could not be written where
asked (disk full, folder removed): a new private folder (mode 0700, created by
:func:`tempfile.mkdtemp`) in the system's temporary folder, so no other user can
plant, read or replace anything there.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from typing import IO

from .errors import InvalidArgumentError

__all__ = ["OutputPathError", "write_output", "write_bytes", "check_output", "fallback_path", "STALE_AFTER_S"]

STALE_AFTER_S = 3600.0
_TMP_TAG = ".jt-tmp-"
_TMP_RE = re.compile(r"^\..*\.jt-tmp-(\d+)-[A-Za-z0-9_]+$")


class OutputPathError(InvalidArgumentError):
    """The output path names something jouletrace will not write over (a folder, a device...)."""


def _resolve(path: str) -> str:
    """``path``, or the target of the symlink(s) it names when they may be followed."""
    seen = 0
    while True:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return path
        if not stat.S_ISLNK(st.st_mode):
            return path
        if st.st_uid not in (os.geteuid(), 0):
            raise OutputPathError(
                f"{path} is a symbolic link owned by another user (uid {st.st_uid}); jouletrace does not "
                "write through it. Remove it or name another output path."
            )
        seen += 1
        if seen > 40:
            raise OutputPathError(f"{path}: too many levels of symbolic links; name another output path")
        target = os.readlink(path)
        path = os.path.join(os.path.dirname(path), target)


def check_output(path: str | os.PathLike[str]) -> str:
    """Refuse, before anything runs, a path :func:`write_output` would refuse.

    Returns the path the bytes will go to (a symlink's target). Raises
    :class:`OutputPathError` with what is there and what to do.
    """
    given = os.fspath(path)
    real = _resolve(given)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        folder = os.path.dirname(real) or "."
        if not os.path.isdir(folder):
            raise OutputPathError(f"{given}: the folder {folder} does not exist; create it or pick another path") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputPathError(f"{given}: the folder {folder} is not writable; pick another path") from None
        return real
    mode = st.st_mode
    if stat.S_ISREG(mode):
        folder = os.path.dirname(real) or "."
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputPathError(
                f"{given}: the folder {folder} is not writable (the file is replaced, not rewritten in place); "
                "pick another path"
            )
        return real
    if stat.S_ISDIR(mode):
        raise OutputPathError(f"{given}: is a folder; name a file in it, e.g. {os.path.join(given, 'out')}")
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        if not os.access(real, os.W_OK):
            raise OutputPathError(f"{given}: is a {'FIFO' if stat.S_ISFIFO(mode) else 'device'} that is not writable")
        return real
    kind = "block device" if stat.S_ISBLK(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"
    raise OutputPathError(f"{given}: is a {kind}; jouletrace does not write over it. Name a regular file.")


class _Unseekable:
    """A write-only view of a stream. A device like /dev/null claims to seek but always says it is
    at 0, which breaks zip writers; without tell/seek they write a streaming archive instead."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh

    def write(self, data: bytes) -> int:
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()

    def read(self, _n: int = -1) -> bytes:  # numpy takes only objects with read() for files
        raise OSError("write-only output")


def _stream(real: str, given: str, write: Callable[[IO[bytes]], object]) -> None:
    """Write into an existing character device or FIFO (never replacing it)."""
    flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
    try:
        # O_NONBLOCK: a FIFO nobody reads fails at once (ENXIO) instead of blocking forever.
        fd = os.open(real, flags | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == 6:  # ENXIO
            raise OutputPathError(f"{given}: is a FIFO with no reader; start the reader first") from None
        raise
    try:
        os.set_blocking(fd, True)
        with os.fdopen(fd, "wb", closefd=False) as fh:
            write(_Unseekable(fh))  # type: ignore[arg-type]
            fh.flush()
    finally:
        os.close(fd)


def _clean_stale(folder: str) -> None:
    """Remove temporaries of ours that a killed writer left in ``folder`` (see the module docstring)."""
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for e in entries:
        m = _TMP_RE.match(e.name)
        if m is None:
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or now - st.st_mtime < STALE_AFTER_S:
                continue
            pid = int(m.group(1))
            try:
                os.kill(pid, 0)
                continue  # that process still runs: maybe still writing
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # alive, another user's
            os.unlink(e.path)
        except (OSError, ValueError, OverflowError):
            continue


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def write_output(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> str:
    """Call ``write(fh)`` with a binary file whose bytes end up at ``path`` (rules above).

    Returns ``path`` as given (a string). Raises :class:`OutputPathError` for a
    path it refuses and ``OSError`` when writing fails (disk full, file size
    limit); in both cases nothing at ``path`` has changed.
    """
    given = os.fspath(path)
    real = check_output(given)
    try:
        st: os.stat_result | None = os.stat(real)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        _stream(real, given, write)
        return given
    folder = os.path.dirname(real) or "."
    _clean_stale(folder)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(real)}{_TMP_TAG}{os.getpid()}-", dir=folder)
    try:
        if st is not None:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
        else:
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return given


def write_bytes(path: str | os.PathLike[str], data: bytes) -> str:
    """:func:`write_output` for bytes already in memory."""
    return write_output(path, lambda fh: fh.write(data))


def fallback_path(name: str) -> str:
    """A path named ``name`` in a new private folder (0700) of the temporary folder."""
    folder = tempfile.mkdtemp(prefix="jouletrace-")
    return os.path.join(folder, os.path.basename(name) or "jouletrace.out")
