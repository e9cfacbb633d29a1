"""The on-disk layout of streamed recordings: every row readable by plain pyarrow (no jouletrace),
restarted runs included; the layout of stream schema 1 still read by jouletrace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import jouletrace
from jouletrace.errors import RecordingFormatError

pytest.importorskip("pyarrow")

V1 = Path(__file__).parent / "data" / "stream_v1"

# Only pyarrow and pandas: what another tool does with a recording (the README's snippet).
PLAIN = textwrap.dedent("""
    import glob, json, sys
    import pyarrow as pa, pyarrow.dataset as ds, pyarrow.ipc
    path = sys.argv[1]
    whole = ds.dataset(path + "/samples", format="arrow").to_table()
    parts = sorted(glob.glob(path + "/samples/part-*.arrow"))
    each = pa.concat_tables([pa.ipc.open_file(p).read_all() for p in parts])
    import pandas as pd
    df = pd.concat([pd.read_feather(p) for p in parts], ignore_index=True)
    pairs = ds.dataset(path + "/clock_pairs", format="arrow").to_table()
    assert not any(m == "jouletrace" or m.startswith("jouletrace.") for m in sys.modules)
    print(json.dumps({"parts": len(parts), "rows": whole.num_rows,
                      "t_ns": sorted(whole.column("t_ns").to_pylist()), "each_t_ns": each.column("t_ns").to_pylist(),
                      "pandas_t_ns": df["t_ns"].tolist(), "pairs": pairs.num_rows,
                      "columns": whole.column_names}))
""")


def plain_pyarrow(path: Path) -> dict:  # type: ignore[type-arg]
    r = subprocess.run([sys.executable, "-c", PLAIN, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_plain_pyarrow_reads_every_row_of_a_restarted_recording(make_sim, tmp_path):
    path = tmp_path / "restarted.jt"
    s = jouletrace.Sampler("sim", sim=make_sim(update_period_s=0.02), rate_hz=500, stream_to=path, compact=False,
                           keep_s=None)
    for _ in range(3):  # three starts: three segments
        s.start()
        time.sleep(0.3)
        s.stop()
    rec = jouletrace.load(path)
    assert rec.metadata["stream"]["ended"] == "normally" and len(rec) > 100
    got = plain_pyarrow(path)
    assert got["parts"] == 3
    assert got["rows"] == len(rec)
    assert got["t_ns"] == got["each_t_ns"] == got["pandas_t_ns"] == rec.t_ns.tolist()
    assert got["pairs"] == len(rec.clock_pairs) >= 6  # a pair at each start and each stop
    assert got["columns"] == ["t_ns", "t_before_ns", "t_after_ns", "seq", "status", *rec.channels]
    # jouletrace and pyarrow see the same rows of each segment (the second start's polls follow the first's).
    assert len(np.unique(rec.seq)) == len(rec) and np.all(np.diff(rec.t_ns) > 0)


def test_a_killed_run_reads_with_jouletrace_and_its_closed_parts_with_pyarrow(tmp_path):
    """The part being written has no footer yet: jouletrace reads it and its journal; pyarrow reads
    its committed batches as an IPC stream after the 8-byte magic (the README's recipe)."""
    import pyarrow as pa

    from jouletrace.energy.stream import StreamWriter

    live = tmp_path / "live.jt"
    w = StreamWriter(live, [("gpu0.energy_j", True)], {"source": "sim"}, commit_every=3)

    def rows(a: int, b: int) -> dict[str, np.ndarray]:
        i = np.arange(a, b)
        return {"t_ns": i * 1000, "t_before_ns": i * 1000 - 5, "t_after_ns": i * 1000 + 5,
                "seq": i.astype(np.uint64), "status": np.zeros(i.size, np.int32), "gpu0.energy_j": i * 0.5}

    w.append("samples", rows(0, 100))
    w.flush()
    w.end({"source": "sim"})
    w.reopen()  # segment 1 (commits at flushes 3 and 6): rows 100-349 committed, 350-449 only in the journal
    for a in range(100, 450, 50):
        w.append("samples", rows(a, a + 50))
        w.flush()
    killed = tmp_path / "killed.jt"
    shutil.copytree(live, killed)  # what a SIGKILL leaves: no footer on part 1, no end.json
    w.close()
    rec = jouletrace.load(killed)
    np.testing.assert_array_equal(rec.t_ns, np.arange(450) * 1000)
    assert rec.metadata["stream"]["ended"] == "abnormally" and rec.metadata["stream"]["truncated"] == []
    assert sorted(os.listdir(killed / "samples")) == ["_journal-000001-250.arrows", "part-000000.arrow",
                                                      "part-000001.arrow"]
    first = pa.ipc.open_file(str(killed / "samples" / "part-000000.arrow")).read_all()
    with pytest.raises(pa.ArrowInvalid):
        pa.ipc.open_file(str(killed / "samples" / "part-000001.arrow"))
    with open(killed / "samples" / "part-000001.arrow", "rb") as f:
        assert f.read(8) == b"ARROW1\0\0"
        second = pa.ipc.open_stream(f).read_all()
    assert first.num_rows == 100 and second.column("t_ns").to_pylist() == list(range(100_000, 350_000, 1000))
    # Once closed, every part is a complete IPC file.
    assert pa.ipc.open_file(str(live / "samples" / "part-000001.arrow")).read_all().num_rows == 350


def test_a_part_that_is_not_arrow_is_refused_by_name(tmp_path):
    from jouletrace.energy.stream import StreamWriter

    path = tmp_path / "bad.jt"
    w = StreamWriter(path, [("gpu0.energy_j", True)], {"source": "sim"})
    w.end({"source": "sim"})
    (path / "samples" / "part-000001.arrow").write_bytes(b"PK\x03\x04 not arrow at all")
    with pytest.raises(RecordingFormatError, match=r"samples/part-000001.arrow is not an Arrow IPC file"):
        jouletrace.load(path)


# -- schema 1 (NAME.arrows with a stream segment per start, NAME.journal-N.arrows) --------------------------
def v1_rows(a: int, b: int) -> np.ndarray:
    return 5_000_000_000 + np.arange(a, b) * 1_000_000


def test_schema_1_restarted_recording_is_read_whole(tmp_path):
    src = tmp_path / "restarted.jt"
    shutil.copytree(V1 / "restarted.jt", src)  # read in a copy: a reader never writes, but be sure
    rec = jouletrace.load(src)
    np.testing.assert_array_equal(rec.t_ns, v1_rows(0, 230))
    np.testing.assert_array_equal(rec["gpu0.energy_j"], np.arange(230) * 0.5)
    np.testing.assert_array_equal(rec["gpu0.power_w"], 100.0 + np.arange(230) % 7)
    assert len(rec.clock_pairs) == 23 and rec.metadata["stream"]["ended"] == "normally"
    assert [w["name"] for w in rec.metadata["windows"]] == ["seg0", "seg1", "seg2"]
    from jouletrace.energy.blocks import open_blocks

    blocks = list(open_blocks(src, 64)._blocks())
    np.testing.assert_array_equal(np.concatenate([b["t_ns"] for b in blocks]), v1_rows(0, 230))


def test_schema_1_killed_recording_keeps_its_journal_rows():
    rec = jouletrace.load(V1 / "killed.jt")
    np.testing.assert_array_equal(rec.t_ns, v1_rows(0, 130))
    assert len(rec.clock_pairs) == 13
    assert rec.metadata["stream"]["ended"] == "abnormally" and rec.metadata["ended_abnormally"]


def test_a_part_cut_after_a_normal_end_is_an_error_not_a_short_run(make_sim, tmp_path):
    """A copy interrupted after the run: the last part holds fewer rows than the run's stats say it
    wrote. Both readers (whole and block by block) say so instead of reporting a short recording."""
    from jouletrace.energy.blocks import open_recording
    from jouletrace.errors import RecordingFormatError

    path = tmp_path / "cut.jt"
    s = jouletrace.Sampler("sim", sim=make_sim(update_period_s=0.02), rate_hz=500, stream_to=path, compact=False,
                           keep_s=None)
    s.start()
    time.sleep(0.5)
    s.stop()
    assert len(jouletrace.load(path)) > 100
    part = sorted((path / "samples").glob("part-*.arrow"))[0]
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(RecordingFormatError, match="rows the run wrote"):
        jouletrace.load(path)
    rec = open_recording(path, max_memory_bytes=0)
    with pytest.raises(RecordingFormatError, match="rows the run wrote"):
        rec.energies([0], [1])
