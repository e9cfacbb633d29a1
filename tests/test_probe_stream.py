"""Damaged and hostile streamed recordings (``run.jt/``): what a crash, a bad copy or an attacker
leaves, and what every reader must do with it (README "What each reader accepts").

Each case failed before the stream reader framed Arrow IPC messages itself: a part or journal of
random bytes, a batch declaring 10^12 rows, a zstd buffer declaring a terabyte (``MemoryError``,
or gigabytes allocated, before any budget check); metadata.json read with one ``read()`` of a
sixteenth of the input budget (``MemoryError`` under ``ulimit -v``); nulls read as garbage
integers; a journal whose name disagrees with its part spliced in; counters of the wrong type as
a ``ValueError`` traceback. The hostile files run in a child process under a 2 GiB address-space
limit and a time limit: each must be refused with a RecordingFormatError naming the recording.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jouletrace
from jouletrace.energy.blocks import open_blocks
from jouletrace.errors import RecordingFormatError

pa = pytest.importorskip("pyarrow")
from jouletrace.energy.stream import StreamWriter  # noqa: E402

PKG_PARENT = str(Path(jouletrace.__file__).resolve().parent.parent)
S1 = "samples/part-000001.arrow"
GiB = 1 << 30


def rows(a: int, b: int) -> dict[str, np.ndarray]:
    i = np.arange(a, b)
    t = 10**12 + i * 1_000_000
    return {"t_ns": t, "t_before_ns": t - 5, "t_after_ns": t + 5, "seq": i.astype(np.uint64),
            "status": np.zeros(i.size, np.int32), "gpu0.energy_j": np.floor(i / 20) * 0.5}


def make(base: Path) -> tuple[Path, Path]:
    """``ended.jt`` (two closed segments of 100 and 350 rows) and ``killed.jt`` (the second segment
    as a SIGKILL leaves it: 250 rows committed in a part without footer, 100 in its journal)."""
    live = base / "live.jt"
    w = StreamWriter(live, [("gpu0.energy_j", True)], {"source": "sim", "rate_hz": 1000.0}, commit_every=3)

    def stats(n: int) -> None:
        w.append("stats", {"t_ns": [0], "polls": [n], "rows": [w.rows], "reads": [n], "dropped_ring": [0],
                           "dropped_storage": [0], "missed_deadlines": [0]})

    w.append("samples", rows(0, 100))
    w.append("windows", {"name": ["a"], "t0_ns": [10**12], "t1_ns": [10**12 + 50_000_000],
                         "work_json": ['{"tokens": 5}']})
    stats(100)
    w.flush()
    w.end({"source": "sim", "rate_hz": 1000.0})
    w.reopen()
    for a in range(100, 450, 50):
        w.append("samples", rows(a, a + 50))
        stats(a + 50)
        w.flush()
    shutil.copytree(live, base / "killed.jt")
    w.end({"source": "sim", "rate_hz": 1000.0})
    shutil.copytree(live, base / "ended.jt")
    shutil.rmtree(live)
    return base / "ended.jt", base / "killed.jt"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make(tmp_path_factory.mktemp("made"))


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite(path: Path, table: Any, compression: str | None = "zstd") -> None:
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(
            f, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
        w.write_table(table)


def setcol(path: Path, name: str, arr: Callable[[Any], Any]) -> None:
    t = pa.ipc.open_file(str(path)).read_all()
    rewrite(path, t.set_column(t.schema.get_field_index(name), name, arr(t)))


def both(path: Path) -> list[str]:
    """What ``load`` and the block reader (``report`` on a large recording) make of ``path``."""
    out = []
    for read in (lambda: len(jouletrace.load(path)), lambda: open_blocks(path, 64).rows):
        try:
            out.append(f"ok {read()}")
        except RecordingFormatError as e:
            assert str(path) in str(e), e
            out.append(f"refused {e}")
    return out


# -- hostile files, in a child under an address-space limit --------------------------------
CHILD = textwrap.dedent("""
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    import jouletrace
    from jouletrace.energy.blocks import open_blocks
    from jouletrace.errors import JouletraceError
    out = {}
    for p in sys.argv[1:]:
        res = []
        for read in (lambda: len(jouletrace.load(p)), lambda: open_blocks(p, 64).rows):
            try:
                res.append(f"ok {read()}")
            except JouletraceError as e:
                res.append(("refused " if p in str(e) else "unnamed ") + str(e))
            except BaseException as e:
                res.append(f"{type(e).__name__}: {e}")
        out[p] = res
    print(json.dumps(out))
""")


def in_child(paths: list[Path], env: dict[str, str] | None = None) -> dict[str, list[str]]:
    r = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": PKG_PARENT, **(env or {})})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_hostile_parts_are_refused_in_bounded_memory(made: tuple[Path, Path], tmp_path: Path) -> None:
    ended, killed = made
    cases: dict[str, Path] = {}
    rng = np.random.default_rng(7)
    for table in ("samples", "stats", "clock_pairs"):  # random bytes after the magic
        p = cases[f"junk-{table}"] = copy(ended, tmp_path / f"junk-{table}.jt")
        (p / table / "part-000001.arrow").write_bytes(b"ARROW1\0\0" + rng.bytes(100_000))
    p = cases["junk-journal"] = copy(killed, tmp_path / "junk-journal.jt")
    (p / "stats" / "_journal-000001-5.arrows").write_bytes(rng.bytes(70_000))
    # 777 rows (a length no buffer has) declared as 10^12, buffers left as they are.
    t = pa.table({k: v for k, v in rows(0, 777).items()})
    p = cases["rows-10^12"] = copy(ended, tmp_path / "rows.jt")
    rewrite(p / S1, t.replace_schema_metadata(None).cast(pa.ipc.open_file(str(p / S1)).schema), None)
    blob = (p / S1).read_bytes()
    (p / S1).write_bytes(blob.replace(struct.pack("<q", 777), struct.pack("<q", 10**12)))
    # A zstd buffer whose 8-byte prefix declares a terabyte (what a real bomb declares: its size).
    p = cases["zstd-terabyte"] = copy(ended, tmp_path / "zstd.jt")
    rewrite(p / S1, t.replace_schema_metadata(None).cast(pa.ipc.open_file(str(p / S1)).schema))
    blob = bytearray((p / S1).read_bytes())
    at = blob.index(b"\x28\xb5\x2f\xfd")  # the first zstd frame; its declared size just before
    blob[at - 8:at] = struct.pack("<q", 10**12)
    (p / S1).write_bytes(bytes(blob))
    got = in_child(list(cases.values()))
    for name, p in cases.items():
        for res in got[str(p)]:
            assert res.startswith("refused "), (name, res)
    assert "a batch that decodes to 1,000,000,0" in got[str(cases["zstd-terabyte"])][0]


def test_metadata_is_not_read_with_one_allocation_of_the_budget(made: tuple[Path, Path]) -> None:
    """A 64 GiB input budget allowed metadata.json 4 GiB, read with one read(): MemoryError under
    a 2 GiB address-space limit on a recording of a few kilobytes."""
    ended, killed = made
    got = in_child([ended, killed], {"JOULETRACE_MAX_INPUT_BYTES": "64G"})
    assert got[str(ended)] == ["ok 450", "ok 450"] and got[str(killed)] == ["ok 450", "ok 450"]


# -- crash cuts: the batches before the cut, marked truncated --------------------------------
def test_a_part_cut_at_any_byte_of_its_last_batch_keeps_the_batches_before(made: tuple[Path, Path],
                                                                             tmp_path: Path) -> None:
    _, killed = made
    src = killed / "samples" / "part-000001.arrow"
    blob = src.read_bytes()
    # cut anywhere after the magic, the rest gone or (one in three) zeros
    rng = np.random.default_rng(3)
    offsets = sorted({int(x) for x in rng.integers(8, len(blob), 200)} | {8, 9, len(blob) - 1})
    p = copy(killed, tmp_path / "cut.jt")
    for j in (p / "samples").glob("_journal-*"):
        j.unlink()  # no journal: what is read is exactly what the part holds
    seen = []
    for k, off in enumerate(offsets):
        tail = b"" if k % 3 else bytes(len(blob) - off)  # some file systems leave zeros
        if blob[:off] + tail == blob:
            continue  # the cut bytes were zero padding
        (p / S1).write_bytes(blob[:off] + tail)
        rec = jouletrace.load(p)
        # the part holds two commits (100 and 150 rows): every whole one before the cut is kept
        assert len(rec) in (100, 200) and rec.metadata["stream"]["truncated"] == ["samples"], off
        np.testing.assert_array_equal(rec.t_ns, rows(0, len(rec))["t_ns"])
        assert rec.metadata["stream"]["ended"] == "abnormally"
        assert open_blocks(p, 64).rows == len(rec)
        seen.append(len(rec))
    assert seen == sorted(seen) and seen[0] == 100 and seen[-1] == 200


def test_a_complete_but_damaged_batch_followed_by_more_is_refused_not_cut(made: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    """A bit flip inside a closed part (its footer follows) is corruption, not a crash's cut."""
    ended, _ = made
    p = copy(ended, tmp_path / "flip.jt")
    blob = bytearray((p / S1).read_bytes())
    at = blob.index(b"\x28\xb5\x2f\xfd")
    blob[at] ^= 0xFF  # the zstd magic (a flip inside the data decodes to other values: no checksum)
    (p / S1).write_bytes(bytes(blob))
    for res in both(p):
        assert res.startswith("refused") and "samples/part-000001.arrow" in res, res


# -- contents jouletrace never writes ------------------------------------------------------
def null_at_3(t: Any, col: str) -> Any:
    c = t.column(col).combine_chunks()
    mask = np.zeros(len(c), bool)
    mask[3] = True
    return pa.array(c.to_numpy(zero_copy_only=False), type=c.type, mask=mask)


@pytest.mark.parametrize("col", ["t_before_ns", "seq", "status", "gpu0.energy_j"])
def test_nulls_are_refused_not_read_as_numbers(made: tuple[Path, Path], tmp_path: Path, col: str) -> None:
    ended, _ = made
    p = copy(ended, tmp_path / "nulls.jt")
    setcol(p / S1, col, lambda t: null_at_3(t, col))
    for res in both(p):
        assert res.startswith("refused") and "nulls" in res, res


def test_a_journal_named_for_other_rows_is_refused_not_spliced(made: tuple[Path, Path], tmp_path: Path) -> None:
    _, killed = made
    p = copy(killed, tmp_path / "r.jt")
    os.rename(p / "samples" / "_journal-000001-250.arrows", p / "samples" / "_journal-000001-200.arrows")
    for res in both(p):
        assert res.startswith("refused") and "does not continue samples/part-000001.arrow" in res, res
    # The legitimate overlap (killed between a commit and removing the journal before it) reads whole.
    q = copy(killed, tmp_path / "ok.jt")
    old = pa.ipc.open_stream(str(q / "samples" / "_journal-000001-250.arrows")).read_all()
    with pa.OSFile(str(q / "samples" / "_journal-000001-150.arrows"), "wb") as f, \
            pa.ipc.new_stream(f, old.schema) as w:
        w.write_table(pa.concat_tables([pa.table({k: v for k, v in rows(250, 350).items()}).cast(old.schema), old]))
    assert both(q) == ["ok 450", "ok 450"]
    np.testing.assert_array_equal(jouletrace.load(q).t_ns, rows(0, 450)["t_ns"])


@pytest.mark.parametrize("edit, match", [
    (lambda p: (p / "end.json").write_text(json.dumps({"format": "jouletrace.stream",
                                                       "metadata": {"dropped_ring": "x"}})), "dropped_ring"),
    (lambda p: setcol(p / "windows/part-000000.arrow", "t1_ns", lambda t: pa.array([0])), "ends before it begins"),
    (lambda p: setcol(p / "windows/part-000000.arrow", "work_json", lambda t: pa.array(["[1, 2]"])),
     "not a JSON object"),
    (lambda p: setcol(p / "stats/part-000001.arrow", "rows", lambda t: pa.array(np.full(len(t), -5))),
     "less than nothing"),
])
def test_fields_of_the_wrong_kind_are_refused_by_name(made: tuple[Path, Path], tmp_path: Path,
                                                     edit: Callable[[Path], Any], match: str) -> None:
    ended, _ = made
    p = copy(ended, tmp_path / "f.jt")
    edit(p)
    for res in both(p):
        assert res.startswith("refused") and match in res, res


def test_the_readers_accept_what_they_accepted(made: tuple[Path, Path]) -> None:
    ended, killed = made
    assert both(ended) == ["ok 450", "ok 450"] and both(killed) == ["ok 450", "ok 450"]
    rec = jouletrace.load(killed)
    np.testing.assert_array_equal(rec.t_ns, rows(0, 450)["t_ns"])
    assert rec.metadata["stream"]["ended"] == "abnormally" and rec.metadata["stream"]["truncated"] == []


def test_a_link_loop_at_the_metadata_is_named_not_taken_for_a_plain_folder(made: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    ended, _ = made
    p = copy(ended, tmp_path / "loop.jt")
    (p / "metadata.json").unlink()
    (p / "metadata.json").symlink_to("metadata.json")
    for res in both(p):
        assert res.startswith("refused") and "metadata.json" in res and "symbolic links" in res, res
