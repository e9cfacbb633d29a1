"""Recordings streamed to disk as they are made: crash-safe, compacted, readable by other tools.

Layout (``jouletrace.stream``, schema version 2)
================================================

A recording is a folder (customary suffix ``.jt``) that only grows while the run
goes on. Each table is a folder of parts, one per segment (a segment is one
start..stop of the sampler: ``part-000000.arrow``, then ``part-000001.arrow``
after a restart, ...):

===============================  ==========================================================
file                             content
===============================  ==========================================================
``metadata.json``                at the start: ``format`` = ``"jouletrace.stream"``,
                                 ``schema_version``, ``channels`` (``{"name", "cumulative"}``),
                                 ``compacted``, and the recording's metadata at the start
``samples/part-NNNNNN.arrow``    ``t_ns``, ``t_before_ns``, ``t_after_ns`` (int64,
                                 CLOCK_MONOTONIC ns), ``seq`` (uint64), ``status`` (int32),
                                 then one float64 column per channel, named as the channel
                                 (``gpu0.energy_j``)
``clock_pairs/part-NNNNNN.arrow`` ``monotonic_ns``, ``realtime_ns``, ``uncertainty_ns`` (int64)
``windows/part-NNNNNN.arrow``    ``name`` (string), ``t0_ns``, ``t1_ns`` (int64), ``work_json``
                                 (string, JSON object or empty)
``stats/part-NNNNNN.arrow``      one row per flush: ``t_ns``, ``polls`` (samples read and
                                 stored in memory), ``rows`` (samples written), ``reads``,
                                 ``dropped_ring``, ``dropped_storage``, ``missed_deadlines``
``TABLE/_journal-NNNNNN-R.arrows`` the rows of segment NNNNNN since its last commit (R = rows
                                 in its part then), an Arrow IPC stream; only while recording
                                 or after a crash
``end.json``                     written when the run ends normally (atomically): the final
                                 metadata (windows with their energies, the command, its
                                 exit status). Without it the run ended abnormally.
===============================  ==========================================================

Each part is an Apache Arrow IPC *file* written as it goes: its 8-byte magic, the
schema and every committed batch at once, its footer when the segment closes
(stop, end of run). A closed part is a complete IPC file, so
``pyarrow.dataset.dataset("run.jt/samples", format="arrow")`` (which skips names
starting with ``_``) reads every row of every segment, and so do DuckDB (on that
dataset), ``pandas.read_feather`` and ``polars.scan_ipc`` on ``part-*.arrow``. The part of
a segment still being written, or of a killed run, has no footer yet: it reads as
an IPC stream after the magic (``f.seek(8); pyarrow.ipc.open_stream(f)``), and the
rows since its last commit are in its journal; :func:`read_stream` merges both.

Schema version 1 (jouletrace before this layout; still read): one ``TABLE.arrows``
IPC stream per table in the folder itself, a new stream segment appended to it at
each restart, journals ``TABLE.journal-R.arrows``.

With compaction (the default) the samples hold only the polls that say
something the others do not (:mod:`jouletrace.energy.compact`): every result
jouletrace computes is the same as on every poll. ``compact=False`` keeps every poll.

A writer thread drains the sampler every ``flush_s`` (0.5 s), appends the new rows
to each journal (zstd-compressed buffers), flushes and fsyncs; every ``commit_s``
(60 s) it writes them as one batch into the part: a run killed at any instant
(SIGKILL, OOM killer, power loss) leaves every batch before the last flush
readable; a batch cut in half is ignored. :func:`to_parquet` writes one Parquet
file for Spark.
The sampler thread is never touched: the writer reads the published, immutable
part of the zero-copy columns.

Bounded memory: after writing, the writer gives back the memory of samples older
than ``keep_s`` (600 s) of the native columns (whole pages,
``ColumnStore::release_before``), and the clock pairs (one a second) written out
before the last one at or before the first sample kept (``Sampler::release_clock_pairs_before``). :meth:`jouletrace.Sampler.recording` of a
streaming sampler then covers the recent ``keep_s`` only (its metadata says from
where: ``stream.first_poll``); a view taken earlier reads zeros over the span given
back since. The whole run is the file: ``jouletrace.load(path)``.

Needs ``pyarrow`` (``pip install 'jouletrace[stream]'``).
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .._input import input_budget, read_capped
from .._json import plain as _jsonable
from .._optional import require
from .._safe_output import write_output
from ..errors import InvalidArgumentError, JouletraceError
from .compact import keep_mask

__all__ = ["FORMAT", "SCHEMA_VERSION", "StreamWriter", "Streamer", "is_stream", "read_stream",
           "to_parquet", "require_pyarrow"]

FORMAT = "jouletrace.stream"
SCHEMA_VERSION = 2
_COLS = (("t_ns", "int64"), ("t_before_ns", "int64"), ("t_after_ns", "int64"), ("seq", "uint64"),
         ("status", "int32"))
_JOURNAL_RE = re.compile(r"^(samples|clock_pairs|windows|stats)\.journal-(\d{1,18})\.arrows$")
#: Schema 2: NAME/part-SEGMENT.arrow (Arrow IPC file) and NAME/_journal-SEGMENT-START.arrows.
_PART_RE = re.compile(r"^part-(\d{6,18})\.arrow$")
_PART_JOURNAL_RE = re.compile(r"^_journal-(\d{6,18})-(\d{1,18})\.arrows$")
_MAGIC = b"ARROW1\0\0"
_STATS = ("t_ns", "polls", "rows", "reads", "dropped_ring", "dropped_storage", "missed_deadlines")
#: The metadata's counters the readers add up: non-negative integers when present.
_COUNTERS = ("reads", "dropped_ring", "dropped_storage", "missed_deadlines")


def require_pyarrow() -> Any:
    """pyarrow, or a clear error saying how to get it (jouletrace._optional.require)."""
    hint = "or save to a .npz file instead (record -o run.npz, or --no-stream)"
    pa = require("pyarrow", "streaming recordings to disk", hint=hint, error=JouletraceError)
    require("pyarrow.ipc", "streaming recordings to disk", hint=hint, error=JouletraceError)
    return pa


def is_stream(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder that looks like a streamed recording."""
    p = os.fspath(path)
    return os.path.isdir(p) and os.path.lexists(os.path.join(p, "metadata.json"))  # a link loop there is an error


def _write_json(path: str, obj: Any) -> None:
    """Atomically (temporary beside it, fsync, rename) in a folder we created."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_jsonable(obj), f, allow_nan=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class StreamWriter:
    """Appends a recording to a new folder (module docstring). Not thread-safe: one writer thread."""

    def __init__(self, path: str | os.PathLike[str], channels: Sequence[tuple[str, bool]],
                 metadata: dict[str, Any], *, compact: bool = True, commit_every: int = 120) -> None:
        pa = require_pyarrow()
        self.path = os.fspath(path)
        self.channels = [(str(n), bool(c)) for n, c in channels]
        self.compact = bool(compact)
        try:
            os.mkdir(self.path)  # never into, or over, something that is there
        except FileExistsError:
            raise InvalidArgumentError(
                f"{self.path} already exists; a streamed recording never writes over anything: "
                "choose a new name or remove it first"
            ) from None
        except OSError as e:
            raise InvalidArgumentError(f"cannot create the recording folder {self.path}: {e.strerror or e}") from None
        _write_json(os.path.join(self.path, "metadata.json"), {
            "format": FORMAT, "schema_version": SCHEMA_VERSION,
            "channels": [{"name": n, "cumulative": c} for n, c in self.channels],
            "compacted": self.compact, "metadata": metadata,
        })
        i64 = pa.int64()
        self._schemas = {
            "samples": pa.schema([(n, getattr(pa, t)()) for n, t in _COLS]
                                 + [(n, pa.float64()) for n, _ in self.channels],
                                 metadata={"jouletrace": json.dumps({"format": FORMAT, "schema_version": SCHEMA_VERSION,
                                                                     "compacted": self.compact})}),
            "clock_pairs": pa.schema([("monotonic_ns", i64), ("realtime_ns", i64), ("uncertainty_ns", i64)]),
            "windows": pa.schema([("name", pa.string()), ("t0_ns", i64), ("t1_ns", i64), ("work_json", pa.string())]),
            "stats": pa.schema([(n, i64) for n in _STATS]),
        }
        self._pa = pa
        #: Flushes between commits into the part files (120 flushes of 0.5 s: a minute).
        self.commit_every = max(1, int(commit_every))
        self._tables: dict[str, _Table] = {}
        self.rows = 0
        self._flushes = 0
        #: The segment being written (0, then one more at each reopen()).
        self.segment = 0
        for name in self._schemas:
            os.mkdir(os.path.join(self.path, name))
        self._open()
        # pyarrow imports some of its helpers (pandas') on first use; at interpreter exit, when a
        # stream may still have to be ended, imports can fail: make that first use now.
        for schema in self._schemas.values():
            empty = pa.record_batch([pa.array(np.zeros(0, dtype=f.type.to_pandas_dtype()) if f.type != pa.string()
                                              else [], type=f.type) for f in schema], schema=schema)
            pa.Table.from_batches([empty], schema=schema).combine_chunks().to_batches()

    def _open(self) -> None:
        opts = self._pa.ipc.IpcWriteOptions(compression="zstd")
        for name, schema in self._schemas.items():
            self._tables[name] = _Table(self._pa, self.path, name, schema, opts, segment=self.segment)

    def append(self, name: str, cols: dict[str, Any]) -> None:
        """Rows of table ``name`` (``samples``, ``clock_pairs``, ``windows``, ``stats``): into its journal now,
        into its part at the next commit."""
        schema = self._schemas[name]
        n = len(cols[schema[0].name])
        if n == 0:
            return
        self._tables[name].add(self._pa.record_batch(
            [self._pa.array(cols[f.name] if f.type == self._pa.string() else np.asarray(cols[f.name]), type=f.type)
             for f in schema], schema=schema))
        if name == "samples":
            self.rows += n

    def flush(self) -> None:
        """Everything appended so far on disk (journals fsynced); every ``commit_s`` into the part files."""
        self._flushes += 1
        if self._flushes % self.commit_every == 0:
            self.commit()
        for t in self._tables.values():
            t.flush()

    def commit(self) -> None:
        for t in self._tables.values():
            t.commit()

    def end(self, metadata: dict[str, Any]) -> None:
        """Commit, close the files and mark the run as ended normally, with its final metadata.

        Called again (after the files are closed), it rewrites the final metadata.
        """
        if self._tables:
            self.close()
        _write_json(os.path.join(self.path, "end.json"), {"format": FORMAT, "metadata": metadata})

    def reopen(self) -> None:
        """The run goes on after an end(): each table gets a new part file (the next segment), and a
        crash from now on is an abnormal end again. The parts closed before stay complete Arrow IPC
        files, so other tools read every segment (``pyarrow.dataset.dataset("run.jt/samples", format="arrow")``)."""
        try:
            os.unlink(os.path.join(self.path, "end.json"))
        except FileNotFoundError:
            pass
        if not self._tables:
            self.segment += 1
            self._open()

    def close(self) -> None:
        """Commit, write each part's footer (a complete Arrow IPC file), fsync, close, remove the journals
        (idempotent)."""
        for t in self._tables.values():
            t.close()
        self._tables = {}


class _Table:
    """One table of one segment: a part file ``NAME/part-SEGMENT.arrow`` (an Arrow IPC *file*: its
    batches are written as they come and its footer when the segment closes) that gets one batch per
    commit (large batches compress well: a per-flush batch of a few rows would cost more in Arrow's
    per-batch framing than its data), and a journal (``NAME/_journal-SEGMENT-START.arrows``, an Arrow IPC
    stream, START = rows in the part when it was opened) that gets every flush's rows at once, fsynced,
    so a crash loses nothing that was flushed. After each commit the journal starts again and the old
    one is removed. Until its footer is written a part is the bytes of an IPC file without the footer:
    its 8-byte magic, then an IPC stream, which :func:`read_stream` reads up to the last whole batch."""

    def __init__(self, pa: Any, folder: str, name: str, schema: Any, opts: Any, *, segment: int) -> None:
        self.pa, self.dir, self.schema, self.opts, self.segment = pa, os.path.join(folder, name), schema, opts, segment
        fd = os.open(os.path.join(self.dir, f"part-{segment:06d}.arrow"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self.file = os.fdopen(fd, "wb")
        self.writer = pa.ipc.new_file(self.file, schema, options=opts)
        self.committed = 0
        self.pending: list[Any] = []
        self.dirty = False
        self._jfile: Any = None
        self._jwriter: Any = None
        self._jpath = ""
        self._new_journal()

    def _new_journal(self) -> None:
        old_file, old_writer, old_path = self._jfile, self._jwriter, self._jpath
        self._jpath = os.path.join(self.dir, f"_journal-{self.segment:06d}-{self.committed}.arrows")
        fd = os.open(self._jpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self._jfile = os.fdopen(fd, "wb")
        # Uncompressed: a journal holds a minute at most and is removed at the next commit, and zstd
        # costs ~10x the write itself on a flush's few rows (CPU the sampler thread may want).
        self._jwriter = self.pa.ipc.new_stream(self._jfile, self.schema,
                                               options=self.pa.ipc.IpcWriteOptions(compression=None))
        if old_writer is not None:
            old_writer.close()
            old_file.close()
            if old_path != self._jpath:
                os.unlink(old_path)

    def add(self, batch: Any) -> None:
        self.pending.append(batch)
        self._jwriter.write_batch(batch)
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            self._jfile.flush()
            os.fsync(self._jfile.fileno())
            self.dirty = False

    def commit(self) -> None:
        if not self.pending:
            return
        table = self.pa.Table.from_batches(self.pending, schema=self.schema).combine_chunks()
        for b in table.to_batches():
            self.writer.write_batch(b)
        self.file.flush()
        os.fsync(self.file.fileno())  # in the part before the journal that held it goes
        self.committed += table.num_rows
        self.pending = []
        self._new_journal()
        self.dirty = False

    def close(self) -> None:
        self.commit()
        self.writer.close()  # the footer: from now on a complete Arrow IPC file
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self._jwriter.close()
        self._jfile.close()
        os.unlink(self._jpath)


class Streamer:
    """The writer thread of one streaming :class:`jouletrace.Sampler` (module docstring).

    Every ``flush_s`` it drains the sampler, decides which new polls to keep, appends
    them with the new clock pairs, the windows that ended and a stats row, fsyncs, and
    gives back the memory of polls older than ``keep_s``. It only reads the published
    (immutable) part of the native columns; the sampler thread never waits for it.
    """

    def __init__(self, sampler: Any, path: str | os.PathLike[str], *, compact: bool = True,
                 keep_s: float | None = 600.0, flush_s: float = 0.5, commit_s: float = 60.0,
                 metadata: dict[str, Any] | None = None) -> None:
        if not 0.01 <= float(flush_s) <= 1.0:
            raise InvalidArgumentError(f"flush_s must be between 0.01 and 1 s, got {flush_s!r}")
        if keep_s is not None and float(keep_s) < 5 * float(flush_s):
            raise InvalidArgumentError(f"keep_s must be at least 5 flushes ({5 * float(flush_s):g} s), got {keep_s!r}")
        self.sampler = sampler
        self.native = sampler._native  # noqa: SLF001  (the energy layer reads the sampler's columns)
        self.channels = [(str(n), bool(c)) for n, c in self.native.channels]
        self.writer = StreamWriter(path, self.channels, metadata or {}, compact=compact,
                                   commit_every=max(1, round(commit_s / float(flush_s))))
        self.path = self.writer.path
        self.flush_s = float(flush_s)
        self.keep_rows = None if keep_s is None else max(1, int(float(keep_s) * float(self.native.config.rate_hz)))
        self.next = 0  # first poll not yet decided
        self.pairs = 0  # clock pairs written
        self.view_start = 0  # polls before this one were given back (their views read zeros)
        #: The first error of the writer (disk full...), or None. Writing stops then; memory is kept.
        self.error: BaseException | None = None
        self.windows_source: Callable[[], list[dict[str, Any]]] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended = False

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        if self._ended:
            self.writer.reopen()
            self._ended = False
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            # Not a daemon: when the program's main thread ends without stopping the sampler, this
            # thread sees it, stops the sampler and ends the recording normally (Python waits for it).
            self._thread = threading.Thread(target=self._run, name="jouletrace-stream", daemon=False)
            self._thread.start()

    def _run(self) -> None:
        main = threading.main_thread()
        while not self._stop.wait(self.flush_s):
            if not main.is_alive():  # the program is exiting and nobody stopped the sampler
                self.sampler._stop_native()  # noqa: SLF001  (stops the native threads, then finish())
                return
            self.tick(final=False)

    def finish(self, metadata: dict[str, Any]) -> None:
        """Stop the thread, write every poll so far, mark the run as ended with ``metadata``."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self.tick(final=True)
        if self.error is None:
            try:
                self.writer.end(metadata)
                self._ended = True
            except OSError as e:
                self.error = e

    def annotate(self, metadata: dict[str, Any]) -> None:
        """Rewrite the final metadata of an ended run (the command's exit status, say)."""
        if self._ended and self.error is None:
            try:
                self.writer.end(metadata)
            except OSError as e:
                self.error = e

    # -- one flush --------------------------------------------------------------------
    def tick(self, final: bool) -> None:
        with self._lock:
            if self.error is not None:
                return
            try:
                self._tick(final)
            except Exception as e:  # noqa: BLE001  (disk full, folder removed: kept for the caller)
                self.error = e

    def _tick(self, final: bool) -> None:
        nat = self.native
        if nat.running:
            nat.drain()
        cols = nat.columns()
        n = len(cols["t_ns"])
        upto = n if final else n - 1  # the last poll waits for the next one, unless this is the end
        w = self.writer
        if upto > self.next:
            s0 = max(self.next - 1, 0)
            names = [c for c, _ in self.channels]
            ext = {k: cols[k][s0:n] for k, _ in _COLS}
            vals = {c: cols["values"][c][s0:n] for c in names}
            lo = self.next - s0
            if w.compact:
                keep = keep_mask(ext["status"], ext["seq"], vals, first=self.next == 0, last=final)
                idx = np.flatnonzero(keep[lo:upto - s0]) + lo
            else:
                idx = np.arange(lo, upto - s0)
            out = {k: np.asarray(a)[idx] for k, a in ext.items()}
            out.update({c: np.asarray(vals[c])[idx] for c in names})
            w.append("samples", out)
            self.next = upto
        pairs = nat.clock_pairs(self.pairs)
        if len(pairs):
            w.append("clock_pairs", {"monotonic_ns": pairs[:, 0], "realtime_ns": pairs[:, 1],
                                     "uncertainty_ns": pairs[:, 2]})
            self.pairs += len(pairs)
        if self.windows_source is not None:
            wins = self.windows_source()
            if wins:
                w.append("windows", {
                    "name": [str(x.get("name", "")) for x in wins],
                    "t0_ns": [int(x["t0_ns"]) for x in wins],
                    "t1_ns": [int(x["t1_ns"]) for x in wins],
                    "work_json": [json.dumps(_jsonable(x["work"])) if x.get("work") else "" for x in wins],
                })
        w.append("stats", {"t_ns": [time.monotonic_ns()], "polls": [n], "rows": [w.rows], "reads": [nat.reads],
                           "dropped_ring": [nat.dropped_ring], "dropped_storage": [nat.dropped_storage],
                           "missed_deadlines": [nat.missed_deadlines]})
        w.flush()
        if self.keep_rows is not None:
            target = min(n - self.keep_rows, self.next - 1)
            if target > self.view_start:
                nat.release_before(target)
                self.view_start = target
            if self.view_start > 0:
                self._release_pairs(int(np.asarray(cols["t_ns"][self.view_start:self.view_start + 1])[0]))

    def _release_pairs(self, t_first: int) -> None:
        """Give back the clock pairs written out that the in-memory view no longer converts with: all
        before the last one at or before its first poll ``t_first`` (the pair nearest to any time from
        ``t_first`` on is then still held, so ``recording().to_epoch_ns`` gives what it gave with every
        pair). Memory for the pairs then stays bounded by ``keep_s`` (a pair a second), like the samples'."""
        nat = self.native
        base = int(nat.clock_pairs_released)
        held = nat.clock_pairs(base)
        i = int(np.searchsorted(held[:, 0], t_first, side="right")) - 1 if len(held) else -1
        upto = min(base + max(i, 0), self.pairs)
        if upto > base:
            nat.release_clock_pairs_before(upto)


# -- reading ------------------------------------------------------------------------------
class StreamParts:
    """What :func:`read_stream` found in a streamed recording, before validation."""

    def __init__(self) -> None:
        self.header: dict[str, Any] = {}
        self.end: dict[str, Any] | None = None
        self.columns: dict[str, np.ndarray] = {}
        self.clock_pairs = np.zeros((0, 3), dtype=np.int64)
        self.windows: list[dict[str, Any]] = []
        self.stats: dict[str, int] = {}
        #: Files whose last batch was cut short (a crash while writing it): the part before is kept.
        self.truncated: list[str] = []


class _Flat:
    """Bounds-checked reads of a FlatBuffers table (the Arrow IPC message header): a hostile header
    raises ValueError, never reads outside its bytes."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        if not 0 <= pos <= len(buf) - 4:
            raise ValueError("table out of bounds")
        self.pos = pos
        vt = pos - struct.unpack_from("<i", buf, pos)[0]
        if not 0 <= vt <= len(buf) - 4:
            raise ValueError("vtable out of bounds")
        vlen = struct.unpack_from("<H", buf, vt)[0]
        if vlen < 4 or vt + vlen > len(buf):
            raise ValueError("vtable out of bounds")
        self.fields = struct.unpack_from(f"<{(vlen - 4) // 2}H", buf, vt + 4)

    def _at(self, i: int, size: int) -> int | None:
        off = self.fields[i] if i < len(self.fields) else 0
        if not off:
            return None
        if self.pos + off + size > len(self.buf):
            raise ValueError("field out of bounds")
        return self.pos + off

    def scalar(self, i: int, fmt: str, default: int = 0) -> int:
        at = self._at(i, struct.calcsize(fmt))
        return default if at is None else int(struct.unpack_from("<" + fmt, self.buf, at)[0])

    def table(self, i: int) -> _Flat | None:
        at = self._at(i, 4)
        return None if at is None else _Flat(self.buf, at + struct.unpack_from("<I", self.buf, at)[0])

    def structs(self, i: int, size: int) -> list[tuple[int, int]]:
        """A vector of structs of two int64 (``FieldNode``, ``Buffer``)."""
        at = self._at(i, 4)
        if at is None:
            return []
        v = at + struct.unpack_from("<I", self.buf, at)[0]
        if v + 4 > len(self.buf):
            raise ValueError("vector out of bounds")
        n = struct.unpack_from("<I", self.buf, v)[0]
        if v + 4 + n * size > len(self.buf):
            raise ValueError("vector out of bounds")
        return [struct.unpack_from("<qq", self.buf, v + 4 + k * size) for k in range(n)]


_SCHEMA_MSG, _DICT_MSG, _BATCH_MSG = 1, 2, 3


class _Damaged(ValueError):
    """A message whose bytes are there but are not a valid message; ``end``: where it would end."""

    def __init__(self, what: str, end: int) -> None:
        super().__init__(what)
        self.end = end


def _message(fh: Any, size: int) -> tuple[int, bytes, bytes] | None:
    """The next Arrow IPC message at ``fh``: ``(kind, its framed header, its body)``, after checking
    every size it declares against what the file holds; None at the end-of-stream marker or at the
    end of the file. Raises EOFError when the file ends inside the message (a write cut by a crash),
    ValueError when its bytes are all there but are not a message."""
    at = fh.tell()
    head = fh.read(8)
    if len(head) < 4:
        if head:
            raise EOFError
        return None
    cont = struct.unpack_from("<i", head)[0]
    if cont == 0:  # the end-of-stream marker of the pre-1.0 framing (jouletrace's pyarrow writes -1, 0)
        fh.seek(at + 4)
        return None
    if cont != -1:  # pyarrow >= 0.15 starts every message with 0xFFFFFFFF
        raise ValueError("no message starts here")
    if len(head) < 8:
        raise EOFError
    pad = 8
    n = struct.unpack_from("<i", head, 4)[0]
    if n == 0:
        return None
    if n < 0 or n % 8:
        raise _Damaged(f"a message header of {n} bytes", at + pad)
    if at + pad + n > size:
        raise EOFError
    meta = fh.read(n)
    if len(meta) < n:
        raise EOFError
    try:
        msg = _Flat(meta, struct.unpack_from("<I", meta, 0)[0])
        kind = msg.scalar(1, "B")
        body_len = msg.scalar(3, "q")
    except (ValueError, struct.error) as e:
        raise _Damaged(str(e), at + pad + n) from None
    if body_len < 0 or body_len % 8:
        raise _Damaged(f"a message body of {body_len} bytes", at + pad + n)
    if at + pad + n + body_len > size:
        raise EOFError
    end = at + pad + n + body_len
    if kind == _BATCH_MSG:
        try:
            rb = msg.table(2)
            if rb is None:
                raise ValueError("a record batch without its header")
            length = rb.scalar(0, "q")
            nodes, buffers = rb.structs(1, 16), rb.structs(2, 16)
            if length < 0 or any(not 0 <= ln <= length or not 0 <= nulls <= ln for ln, nulls in nodes):
                raise ValueError(f"a record batch of {length} rows with columns of other lengths")
            if any(off < 0 or ln < 0 or off + ln > body_len for off, ln in buffers):
                raise ValueError("a record batch whose buffers lie outside its body")
            msg_compressed = rb.table(3) is not None
        except (ValueError, struct.error) as e:
            raise _Damaged(str(e), end) from None
        body = fh.read(body_len)
        if len(body) < body_len:
            raise EOFError
        # What decoding allocates: each buffer's size, or for a compressed one the size its first
        # 8 bytes declare (a small zstd buffer may declare, and inflate to, gigabytes).
        inflated = 0
        for off, ln in buffers:
            declared = struct.unpack_from("<q", body, off)[0] if msg_compressed and ln >= 8 else -1
            if declared < -1:
                raise _Damaged("a compressed buffer of negative size", end)
            inflated += ln if declared == -1 else declared
        return kind, head[:pad] + meta, body + struct.pack("<q", inflated)
    body = fh.read(body_len)
    if len(body) < body_len:
        raise EOFError
    return kind, head[:pad] + meta, body + struct.pack("<q", body_len)


def _iter_batches(pa: Any, fh: Any, name: str, parts: StreamParts, bad: Callable[[str], Exception],
                  schema_out: list[Any], *, single: bool = False, left: list[int] | None = None,
                  too_big: Callable[[str], Exception] | None = None, label: str = "") -> Iterator[Any]:
    """Every batch of every stream segment in ``fh`` from where it stands (``single``: of the first
    segment only, as in an IPC file's body), up to a cut (then ``name`` is marked truncated).
    Read as they are consumed; the schema is put in ``schema_out[0]``.

    Each message is framed here before pyarrow sees it: the sizes it declares (header, body, rows,
    buffers, what its compressed buffers inflate to) must fit in the file and in ``left[0]`` bytes,
    so a small file that declares 10^12 rows, or a zstd buffer that inflates to gigabytes, is refused
    before anything is allocated. A message that the file ends inside is the write a crash cut (the
    batches before it are kept); one whose bytes are all there but are not a valid message is
    corruption, refused, unless nothing readable follows it (the last write of a killed run)."""
    size = os.fstat(fh.fileno()).st_size
    limit = left if left is not None else [1 << 62]
    schema: Any = None
    segment_schema: Any = None
    label = label or name
    while True:
        start = fh.tell()
        try:
            msg = _message(fh, size)
        except EOFError:
            parts.truncated.append(name)  # the write a crash cut
            return
        except (ValueError, struct.error) as e:
            # Zeros from where it would end on: some file systems leave a crash's cut write so.
            if _rest_is_zeros(fh, min(getattr(e, "end", start), size), size):
                parts.truncated.append(name)
                return
            raise bad(f"{label} is not an Arrow IPC stream at byte {start} ({e})") from None
        if msg is None:  # end of a stream segment (or of the file)
            if fh.tell() < size and _rest_is_zeros(fh, fh.tell(), size):
                parts.truncated.append(name)  # zeros where a crash's last write should be
                return
            if single or fh.tell() >= size or segment_schema is None:
                return
            segment_schema = None
            continue
        kind, meta, body = msg
        inflated = struct.unpack("<q", body[-8:])[0]
        body = body[:-8]
        if inflated > limit[0]:
            if too_big is not None:
                raise too_big(f"{label}: a batch that decodes to {inflated:,} bytes")
            raise bad(f"{label} holds a batch that decodes to {inflated:,} bytes, more than the input limit")
        try:
            message = pa.ipc.read_message(pa.py_buffer(meta + body))
            if kind == _SCHEMA_MSG:
                if segment_schema is not None:
                    raise ValueError("a second schema in one stream")
                got = pa.ipc.read_schema(message)
                if schema is not None and not got.equals(schema):
                    raise _Damaged(f"{label} changes its columns between segments", -1)
                if schema_out[0] is not None and not got.equals(schema_out[0]):
                    raise _Damaged(f"{label} has other columns than the parts before it", -1)
                schema = segment_schema = got
                schema_out[:] = [schema]
                continue
            if kind != _BATCH_MSG or segment_schema is None:
                raise ValueError(f"a message of kind {kind} where a record batch was expected")
            b = pa.ipc.read_record_batch(message, segment_schema)
            b.validate(full=True)
        except (pa.ArrowException, ValueError, OSError, EOFError) as e:
            if _rest_is_zeros(fh, fh.tell(), size):
                parts.truncated.append(name)  # the last write of a killed run, its bytes not all written
                return
            if isinstance(e, _Damaged) and e.end == -1:
                raise bad(str(e)) from None
            raise bad(f"{label} holds a damaged message at byte {start} ({e})") from None
        if any(c.null_count for c in b.columns):
            raise bad(f"{label} holds missing values (nulls), which jouletrace never writes")
        yield b


def _rest_is_zeros(fh: Any, at: int, size: int) -> bool:
    """Whether the file holds only zero bytes from ``at`` (what some file systems leave of a write
    cut by a crash), reading at most 1 MiB; the file's position is kept."""
    if size - at > 1 << 20:
        return False
    here = fh.tell()
    fh.seek(at)
    zeros = not fh.read(size - at).strip(b"\0")
    fh.seek(here)
    return zeros


def _journals(path: str) -> dict[str, list[tuple[int, str]]]:
    journals: dict[str, list[tuple[int, str]]] = {}
    for entry in os.listdir(path):
        m = _JOURNAL_RE.match(entry)
        if m:
            journals.setdefault(m.group(1), []).append((int(m.group(2)), entry))
    return journals


def _journal_rows(pa: Any, folder: str, name: str, label: str, journals: list[tuple[int, str]], have: int,
                  open_file: Callable[[str], Any], parts: StreamParts, bad: Callable[[str], Exception],
                  schema_out: list[Any], last: Any, left: list[int] | None,
                  too_big: Callable[[str], Exception] | None, prefix: str) -> Iterator[Any]:
    """The rows of ``journals`` (``(start row, file)``) past the ``have`` rows already read, the last
    of which is ``last`` (a one-row batch, None when there are none).

    A journal whose first rows are already in the part (a run killed between writing a commit and
    removing the journal before it) must hold, at the part's last row, that same row: one whose name
    says otherwise would splice unrelated rows into the recording, and is refused."""
    for start, entry in sorted(journals):
        if start > have:  # a gap: the part (or schema 1 main file) lost a committed batch (cut short)
            parts.truncated.append(name)
            break
        jschema: list[Any] = [None]
        jleft = [left[0]] if left is not None else None
        jb = []
        with open_file(os.path.join(folder, entry)) as fh:
            for b in _iter_batches(pa, fh, name, parts, bad, jschema, left=jleft, too_big=too_big,
                                   label=f"{prefix}{entry}"):
                if jleft is not None:
                    jleft[0] -= b.nbytes
                jb.append(b)
        if jschema[0] is None:
            continue
        if schema_out[0] is not None and not jschema[0].equals(schema_out[0]):
            raise bad(f"{prefix}{entry} has other columns than {label}")
        if schema_out[0] is None:
            schema_out[:] = [jschema[0]]
        skip = have - start
        total = sum(b.num_rows for b in jb)
        if 0 < skip <= total:
            at = skip - 1
            for b in jb:
                if at < b.num_rows:
                    if last is None or not b.slice(at, 1).equals(last):
                        raise bad(f"{prefix}{entry} does not continue {label}: its name says its rows start at "
                                  f"row {start}, but its row {start + skip - 1} is not the part's")
                    break
                at -= b.num_rows
        for b in jb:
            if skip >= b.num_rows:
                skip -= b.num_rows
                continue
            b = b.slice(skip)
            skip = 0
            have += b.num_rows
            last = b.slice(b.num_rows - 1)
            yield b


def iter_table(pa: Any, path: str, name: str, open_file: Callable[[str], Any], parts: StreamParts,
               bad: Callable[[str], Exception], schema_out: list[Any], *, left: list[int] | None = None,
               too_big: Callable[[str], Exception] | None = None) -> Iterator[Any]:
    """The batches of table ``name``, segment after segment: each part's (or, schema 1, its main
    file's), then the rows of its journals past them (a run killed between commits). Read as they
    are consumed; no batch may decode to more than ``left[0]`` bytes (``too_big`` says so)."""
    folder = os.path.join(path, name)
    if not os.path.isdir(folder):  # schema 1: NAME.arrows (a stream segment per start), NAME.journal-N.arrows
        p = os.path.join(path, f"{name}.arrows")
        if not os.path.exists(p):
            parts.truncated.append(name)
            return
        have = 0
        last = None
        with open_file(p) as fh:
            for b in _iter_batches(pa, fh, name, parts, bad, schema_out, left=left, too_big=too_big,
                                   label=f"{name}.arrows"):
                have += b.num_rows
                if b.num_rows:
                    last = b.slice(b.num_rows - 1)
                yield b
        yield from _journal_rows(pa, path, name, f"{name}.arrows", _journals(path).get(name, []), have,
                                 open_file, parts, bad, schema_out, last, left, too_big, "")
        return
    files: dict[int, str] = {}
    journals: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir(folder):
        m = _PART_RE.match(entry)
        if m:
            files[int(m.group(1))] = entry
            continue
        m = _PART_JOURNAL_RE.match(entry)
        if m:
            journals.setdefault(int(m.group(1)), []).append((int(m.group(2)), entry))
    if not files:
        parts.truncated.append(name)
        return
    for seg in sorted(set(files) | set(journals)):
        entry = files.get(seg, "")
        if not entry:  # a journal without its part: cannot be (the part is made first)
            parts.truncated.append(name)
            return
        have = 0
        last = None
        with open_file(os.path.join(folder, entry)) as fh:
            magic = fh.read(len(_MAGIC))
            if magic != _MAGIC:
                if not _MAGIC.startswith(magic):
                    raise bad(f"{name}/{entry} is not an Arrow IPC file")
                if magic:
                    parts.truncated.append(name)  # killed while writing the magic
            else:
                for b in _iter_batches(pa, fh, name, parts, bad, schema_out, single=True, left=left,
                                       too_big=too_big, label=f"{name}/{entry}"):
                    have += b.num_rows
                    if b.num_rows:
                        last = b.slice(b.num_rows - 1)
                    yield b
        yield from _journal_rows(pa, folder, name, f"{name}/{entry}", journals.get(seg, []), have,
                                 open_file, parts, bad, schema_out, last, left, too_big, f"{name}/")


def check_samples_schema(schema: Any, chans: list[dict[str, Any]], bad: Callable[[str], Exception]) -> None:
    """The sample columns a streamed recording must have, with their types."""
    if schema is None:
        return
    want = dict(_COLS) | {c["name"]: "double" for c in chans}
    got = {f.name: str(f.type) for f in schema}
    for col, t in want.items():
        if got.get(col) != t:
            raise bad(f"the samples' column {col!r} is {got.get(col, 'missing')}, expected {t}")


def _read_small(open_file: Callable[[str], Any], path: str, cap: int, too_big: Callable[[str], Exception]) -> bytes:
    """The bytes of a JSON member, at most ``cap``: read as they come (``read(cap)`` would allocate
    ``cap`` bytes at once, a sixteenth of the input budget, for a file of a few hundred bytes)."""
    with open_file(path) as fh:
        return bytes(read_capped(fh, cap, path, JouletraceError, refuse=lambda: too_big(os.path.basename(path))))


def read_stream(path: str, budget: int, open_file: Callable[[str], Any], bad: Callable[[str], Exception],
                too_big: Callable[[str], Exception], *, samples: bool = True) -> StreamParts:
    """The files of a streamed recording, batches up to the last complete one (a crash's tail is cut).

    ``open_file`` opens a member (regular files only, the caller's rules); ``bad(what)``
    and ``too_big(what)`` make the caller's errors. Decompressed data may take at most
    ``budget`` bytes. ``samples=False`` leaves the samples out (:func:`iter_samples`
    reads them block by block).
    """
    pa = require_pyarrow()
    parts = StreamParts()
    left = [budget]
    cap = max(1 << 20, budget // 16)
    raw = _read_small(open_file, os.path.join(path, "metadata.json"), cap, too_big)
    try:
        parts.header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad(f"metadata.json is not valid JSON ({type(e).__name__})") from None
    if not isinstance(parts.header, dict) or parts.header.get("format") != FORMAT:
        raise bad("metadata.json does not name the jouletrace.stream format")
    if os.path.exists(os.path.join(path, "end.json")):
        raw = _read_small(open_file, os.path.join(path, "end.json"), cap, too_big)
        try:
            end = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            end = None  # a damaged end marker: treated as an abnormal end
        parts.end = end if isinstance(end, dict) and isinstance(end.get("metadata"), dict) else None
    for where, doc in (("metadata.json", parts.header), ("end.json", parts.end)):
        md = (doc or {}).get("metadata")
        if md is not None and not isinstance(md, dict):
            raise bad(f"{where} holds metadata that is a {type(md).__name__}, not an object")
        for key in _COUNTERS:
            v = (md or {}).get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 63):
                raise bad(f"{where}: its metadata's {key} is {v!r}, not a count")
    chans = parts.header.get("channels")
    if not isinstance(chans, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in chans):
        raise bad("metadata.json has a malformed channel list")
    want = dict(_COLS) | {c["name"]: "double" for c in chans}

    def table(name: str) -> tuple[Any, list[Any]]:
        schema: list[Any] = [None]
        batches = []
        for b in iter_table(pa, path, name, open_file, parts, bad, schema, left=left, too_big=too_big):
            left[0] -= b.nbytes
            if left[0] < 0:
                raise too_big(name)
            batches.append(b)
        return schema[0], batches

    schema, batches = table("samples") if samples else (None, [])
    check_samples_schema(schema, chans, bad)
    for col, t in want.items():
        arrs = [b.column(col).to_numpy(zero_copy_only=False) for b in batches]
        dt = np.float64 if t == "double" else np.dtype(t)
        a = np.concatenate(arrs).astype(dt, copy=False) if arrs else np.zeros(0, dtype=dt)
        a.flags.writeable = False
        parts.columns[col] = a
    _, batches = table("clock_pairs")
    if batches:
        parts.clock_pairs = np.stack([np.concatenate([b.column(c).to_numpy() for b in batches]).astype(np.int64)
                                      for c in ("monotonic_ns", "realtime_ns", "uncertainty_ns")], axis=1)
    _, batches = table("windows")
    for b in batches:
        d = b.to_pydict()
        for name, t0, t1, work in zip(d["name"], d["t0_ns"], d["t1_ns"], d["work_json"], strict=True):
            win: dict[str, Any] = {"name": name, "t0_ns": int(t0), "t1_ns": int(t1)}
            if t1 < t0:
                raise bad(f"windows: window {name!r} ends before it begins (t1_ns {t1} < t0_ns {t0})")
            if work:
                try:
                    win["work"] = json.loads(work)
                except (ValueError, RecursionError):
                    raise bad(f"windows: window {name!r} has work that is not JSON") from None
                if not isinstance(win["work"], dict):
                    raise bad(f"windows: window {name!r} has work that is not a JSON object")
            parts.windows.append(win)
    _, batches = table("stats")
    if batches:
        last = batches[-1].slice(batches[-1].num_rows - 1).to_pydict()
        parts.stats = {k: int(v[0]) for k, v in last.items()}
        if any(parts.stats.get(k, 0) < 0 for k in _STATS[1:]):
            raise bad(f"stats: its last row counts less than nothing ({parts.stats})")
    if samples:
        check_rows(parts, int(parts.columns["t_ns"].size), bad)
    return parts


def check_rows(parts: StreamParts, rows: int, bad: Callable[[str], Exception]) -> None:
    """A run that ended normally committed every row its last stats row counts: fewer read means a
    part was cut after the run (an interrupted copy), which must not pass for a short run."""
    want = int(parts.stats.get("rows") or 0)
    if parts.end is not None and rows < want:
        raise bad(f"its samples hold {rows} of the {want} rows the run wrote and closed: a part was cut "
                  "after the run ended")


def iter_samples(path: str, channels: Sequence[str], open_file: Callable[[str], Any], bad: Callable[[str], Exception],
                 rows: int, *, budget: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The sample columns of a streamed recording, about ``rows`` at a time, in order (the tail of
    a killed run cut as :func:`read_stream` cuts it). No batch may decode to more than ``budget``
    bytes (default: the input budget, :func:`jouletrace._input.input_budget`)."""
    pa = require_pyarrow()
    parts = StreamParts()
    schema: list[Any] = [None]
    names = [n for n, _ in _COLS] + list(channels)
    pending: list[Any] = []
    have = 0
    last_t: int | None = None
    chans = [{"name": c} for c in channels]

    def block() -> dict[str, np.ndarray]:
        nonlocal last_t
        out = {}
        for col in names:
            arrs = [b.column(col).to_numpy(zero_copy_only=False) for b in pending]
            out[col] = np.concatenate(arrs) if len(arrs) > 1 else arrs[0]
        t = out["t_ns"]
        if t.size and (np.any(np.diff(t) < 0) or (last_t is not None and t[0] < last_t)):
            raise bad("its sample times (t_ns) go backwards")
        if t.size:
            last_t = int(t[-1])
        return out

    left = [input_budget(None) if budget is None else int(budget)]
    for b in iter_table(pa, path, "samples", open_file, parts, bad, schema, left=left):
        if not pending:
            check_samples_schema(schema[0], chans, bad)
        pending.append(b)
        have += b.num_rows
        if have >= rows:
            yield block()
            pending, have = [], 0
    if pending:
        yield block()


def to_parquet(rec: Any, out: str | os.PathLike[str]) -> str:
    """Write a recording's samples (``jouletrace.load(stream_path)``) as one Parquet file, for Spark.

    The columns are those of the samples' parts; the metadata is kept in the file's
    key-value metadata under ``jouletrace``. Written safely (temporary, then renamed).
    """
    require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {k: np.asarray(getattr(rec, k)) for k, _ in _COLS}
    cols.update({c: np.asarray(rec[c]) for c in rec.channels})
    table = pa.table(cols).replace_schema_metadata({"jouletrace": json.dumps(_jsonable(rec.metadata))})
    return write_output(os.fspath(out), lambda f: pq.write_table(table, f, compression="zstd"))
