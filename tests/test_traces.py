"""Trace importers: real exports, malformed input, exact time, synthetic round trips.

The expected numbers for the real traces (kernel counts, first and last start
times in epoch ns) were found independently of jouletrace: with the sqlite3
command-line tool (min/max of ``start`` plus ``utcEpochNs``) for the Nsight
Systems exports, and with a line-based awk scan of the decompressed JSON text
(ts digits concatenated as integers, plus ``baseTimeNanoseconds``) for the
PyTorch profiler traces.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from jouletrace.errors import TraceFormatError
from jouletrace.kernels.traces import (
    KernelTable,
    RangeTable,
    load,
    load_kineto,
    load_nsys,
    load_table,
    sniff,
)
from jouletrace.kernels.traces.kineto import us_to_ns
from jouletrace.testing.traces import write_kineto_json, write_nsys_sqlite

# Real exports from public repositories (origins and licences in data/traces/README.md),
# copied unmodified into the repository so that these tests run on any clean checkout.
TRACES = Path(os.environ.get("JOULETRACE_TRACES_DIR") or Path(__file__).resolve().parent / "data" / "traces")


# file -> (format, kernels, first start, last start, ranges, first range start, last range start)
REAL = {
    "nsys-2022.2-a100-saxpy.sqlite": (
        "nsys-sqlite", 5, 1687813258562219690, 1687813259585080121,
        22, 1687813257702415328, 1687813259719890740,
    ),
    "nsys-2026.1-rtx3080-torch.sqlite": (
        "nsys-sqlite", 2, 1776781228075022108, 1776781228093274086, 0, None, None,
    ),
    "kineto-a100-nccl.json.gz": (
        "kineto-json", 2700, 1716423322422880181, 1716423323083276404,
        72, 1716423322416788066, 1716423323073938185,
    ),
    "kineto-2021-resnet50.json.gz": (
        "kineto-json", 8772, 1623142623531625000, 1623142624525724000, 0, None, None,
    ),
    "kineto-triton-tiny.json.gz": (
        "kineto-json", 1, 1730156791097444592, 1730156791097444592,
        1, 1730156791096090100, 1730156791096090100,
    ),
}

# a session start a little before the synthetic kernels of _small_table()
SESSION = 1_699_999_999_000_000_000

COLUMNS = ("start_ns", "end_ns", "device", "stream", "correlation", "external_id")


def assert_same_kernels(a: KernelTable, b: KernelTable, columns=COLUMNS) -> None:
    assert len(a) == len(b)
    for c in columns:
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c), err_msg=c)
    assert a.name.tolist() == b.name.tolist()


def assert_same_ranges(a: RangeTable, b: RangeTable, device: bool = True) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.start_ns, b.start_ns)
    np.testing.assert_array_equal(a.end_ns, b.end_ns)
    if device:
        np.testing.assert_array_equal(a.device, b.device)
    assert a.name.tolist() == b.name.tolist()


# --------------------------------------------------------------------------------------
# real exports
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fname", sorted(REAL))
def test_real_trace_imports(fname: str) -> None:
    fmt, n, first, last, nranges, rfirst, rlast = REAL[fname]
    path = TRACES / fname
    t = load(path)
    assert isinstance(t, KernelTable)
    assert t.format == fmt
    assert t.clock == "epoch"
    assert t.source == os.fspath(path)
    assert len(t) == n
    assert int(t.start_ns[0]) == first
    assert int(t.start_ns[-1]) == last
    for c, dt in [("start_ns", np.int64), ("end_ns", np.int64), ("device", np.int32),
                  ("stream", np.int64), ("name_id", np.int32), ("correlation", np.int64)]:
        assert getattr(t, c).dtype == dt, c
    assert np.all(np.diff(t.start_ns) >= 0)
    assert np.all(t.end_ns >= t.start_ns)
    assert len(set(t.names)) == len(t.names)
    assert {d["id"] for d in t.devices} >= set(np.unique(t.device).tolist())
    assert t.metadata["device_mapping"] in ("known", "guessed")
    assert len(t.ranges) == nranges
    if nranges:
        assert int(t.ranges.start_ns[0]) == rfirst
        assert int(t.ranges.start_ns[-1]) == rlast
    # the format-specific loader gives the same table
    direct = (load_nsys if fmt == "nsys-sqlite" else load_kineto)(path)
    assert_same_kernels(t, direct)


def test_nsys_2022_details() -> None:
    t = load_nsys(TRACES / "nsys-2022.2-a100-saxpy.sqlite")
    assert t.names == ["saxpy(double *, double *, double *, double, int)"]
    assert t.short_names == ["saxpy"]
    assert t.name_of(0) == t.names[0]
    assert t.metadata["tool_version"] == "2022.2.1.31"
    assert t.metadata["schema_version"] == "2.9.1"
    assert t.metadata["session_start_epoch_ns"] == 1687813257637297504
    # session-relative start 924922186 ns (sqlite3 CLI) + utcEpochNs
    assert int(t.start_ns[0]) == 1687813257637297504 + 924922186
    assert int(t.end_ns[-1]) == 1687813259602794081
    assert t.correlation.tolist() == [140, 156, 172, 188, 204]
    assert t.stream.tolist() == [7] * 5
    assert t.device.tolist() == [0] * 5
    # one GPU in TARGET_INFO_GPU, one CUDA device number: the mapping is certain
    assert t.devices == [{
        "id": 0, "name": "NVIDIA A100-SXM4-40GB",
        "uuid": "GPU-74e128b2-90b6-b409-07c8-33bee5ff6f88", "pci_bus_id": "0000:03:00.0",
        "mapping": "uuid",
    }]
    assert t.metadata["device_mapping"] == "known"
    # NVTX: 24 rows, of which 2 have no end (a domain creation and a thread name): 22 ranges.
    # Text inline ("saxpy") and through textId into StringIds (MPI_*).
    r = t.ranges
    counts = {name: int(np.sum(r.name_id == i)) for i, name in enumerate(r.names)}
    assert counts == {"MPI_Init": 1, "MPI_Send": 10, "MPI_Recv": 5, "saxpy": 5,
                      "MPI_Finalize": 1}
    assert np.all(r.device == -1)
    assert np.all(np.diff(r.start_ns) >= 0)


def test_nsys_2026_details() -> None:
    t = load_nsys(TRACES / "nsys-2026.1-rtx3080-torch.sqlite")
    assert t.metadata["schema_version"] == "3.24.14"
    assert t.metadata["session_start_system_clock_ns"] == 515396806359142
    assert t.short_names == ["vectorized_elementwise_kernel", "reduce_kernel"]
    assert t.names[0].startswith("void at::native::vectorized_elementwise_kernel<(int)4")
    assert t.correlation.tolist() == [143, 159]
    assert int(t.end_ns[-1]) == 1776781228093276775
    # linked through TARGET_INFO_CUDA_DEVICE (pid 91186, cudaId 0 -> gpuId 0)
    assert t.devices == [{
        "id": 0, "name": "NVIDIA GeForce RTX 3080",
        "uuid": "GPU-554a6988-03dd-6206-3dd1-f43fb60a3ed0", "pci_bus_id": "0000:01:00.0",
        "mapping": "uuid",
    }]
    assert t.metadata["device_mapping"] == "known"
    short = load_nsys(TRACES / "nsys-2026.1-rtx3080-torch.sqlite",
                      names="short")
    assert short.names == ["vectorized_elementwise_kernel", "reduce_kernel"]
    np.testing.assert_array_equal(short.start_ns, t.start_ns)


def test_kineto_nccl_details() -> None:
    t = load_kineto(TRACES / "kineto-a100-nccl.json.gz")
    assert t.metadata["base_time_ns"] == 1711964646000000000
    assert t.metadata["distributed"] == {"backend": "nccl", "rank": 0, "world_size": 2}
    assert set(t.stream.tolist()) == {7, 40}
    assert int(np.sum(t.stream == 40)) == 21  # the NCCL kernels
    assert np.all(t.correlation >= 0) and np.all(t.external_id >= 0)
    # first kernel by time: ts 4458676422880.181 µs after the base
    assert int(t.start_ns[0]) == 1711964646000000000 + 4458676422880181
    # no UUID in a Kineto trace: every device is guessed
    assert all(d["mapping"] == "guessed" and d["uuid"] is None for d in t.devices)
    assert t.device_info(0)["name"] == "NVIDIA A100-PG509-200"
    r = t.ranges
    assert int(np.sum(r.device == -1)) == 42  # user_annotation
    assert int(np.sum(r.device == 0)) == 30  # gpu_user_annotation
    assert "## backward ##" in r.names


def test_kineto_2021_old_conventions() -> None:
    t = load_kineto(TRACES / "kineto-2021-resnet50.json.gz")
    assert "base_time_ns" in t.metadata and t.metadata["base_time_ns"] is None
    assert set(t.stream.tolist()) == {7}  # from "stream 7" / args.stream
    assert set(t.device.tolist()) == {0}
    assert np.all(t.external_id >= 0)  # "external id", lower case
    i = int(np.flatnonzero(t.correlation == 34441)[0])
    assert t.name_of(i) == "cask_cudnn::computeOffsetsKernel(cask_cudnn::ComputeOffsetsParams)"
    assert int(t.external_id[i]) == 544
    assert int(t.end_ns[i] - t.start_ns[i]) == 2000


def test_kineto_triton_details() -> None:
    t = load_kineto(TRACES / "kineto-triton-tiny.json.gz")
    assert t.names == ["triton_poi_fused_add_cos_sin_0"]
    assert int(t.end_ns[0] - t.start_ns[0]) == 1760  # dur 1.76 µs
    assert t.metadata["cupti_version"] == 18
    assert t.ranges.names == ["ProfilerStep#1"]
    assert int(t.ranges.end_ns[0] - t.ranges.start_ns[0]) == 13336315805


def test_sniff_real_files() -> None:
    for fname, spec in REAL.items():
        assert sniff(TRACES / fname) == spec[0]


# --------------------------------------------------------------------------------------
# exact time
# --------------------------------------------------------------------------------------


def _kineto_doc(events, **top) -> dict:
    return {"schemaVersion": 1, **top, "traceEvents": events}


def _write_text(path: Path, text: str, gz: bool = False) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_absolute_microseconds_are_exact(tmp_path: Path) -> None:
    # Old traces: absolute epoch µs with three decimals. A float cannot hold them.
    assert int(float("1623143089861123.456") * 1000) != 1623143089861123456
    text = (
        '{"schemaVersion": 1, "traceEvents": [{"ph": "X", "cat": "Kernel", "name": "k", '
        '"pid": 0, "tid": "stream 7", "ts": 1623143089861123.456, "dur": 1.5, '
        '"args": {"device": 0, "stream": 7, "correlation": 9, "external id": 3}}]}'
    )
    t = load(_write_text(tmp_path / "old.json", text))
    assert int(t.start_ns[0]) == 1623143089861123456
    assert int(t.end_ns[0]) == 1623143089861124956
    assert int(t.external_id[0]) == 3 and int(t.correlation[0]) == 9


def test_relative_microseconds_with_base_are_exact(tmp_path: Path) -> None:
    text = (
        '{"schemaVersion": 1, "baseTimeNanoseconds": 1711964646000000000, "traceEvents": ['
        '{"ph": "X", "cat": "kernel", "name": "k", "pid": 3, "tid": 9, '
        '"ts": 4458676983543.183, "dur": 41.407, "args": {"External id": 12}}]}'
    )
    t = load_kineto(_write_text(tmp_path / "new.json.gz", text, gz=True))
    assert int(t.start_ns[0]) == 1711964646000000000 + 4458676983543183
    assert int(t.end_ns[0] - t.start_ns[0]) == 41407
    assert int(t.device[0]) == 3 and int(t.stream[0]) == 9  # from pid and tid
    assert int(t.external_id[0]) == 12 and int(t.correlation[0]) == -1


@pytest.mark.parametrize("value,ns", [
    (1623143089861123, 1623143089861123000),
    ("1623143089861123.456", 1623143089861123456),
    ("0.001", 1),
    ("-1.500", -1500),
    ("2.5", 2500),
    ("1.7600", 1760),
    ("1e3", 1000000),
    ("0.0005", 0),  # half to even
    ("0.0015", 2),
])
def test_us_to_ns(value, ns) -> None:
    assert us_to_ns(value) == ns


def test_us_to_ns_refuses_floats() -> None:
    with pytest.raises(TypeError):
        us_to_ns(1.5)


# --------------------------------------------------------------------------------------
# malformed input
# --------------------------------------------------------------------------------------


def _raises(path: Path, loader=load, match: str | None = None, **opts) -> TraceFormatError:
    with pytest.raises(TraceFormatError) as info:
        loader(path, **opts)
    msg = str(info.value)
    assert os.fspath(path) in msg, msg
    if match:
        assert match in msg, msg
    assert isinstance(info.value, ValueError)
    return info.value


@pytest.mark.parametrize("name", ["empty.sqlite", "empty.json", "empty.json.gz", "empty.csv",
                                  "empty.bin"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_bytes(b"")
    _raises(p, match="empty")


def test_empty_file_each_loader(tmp_path: Path) -> None:
    p = tmp_path / "e"
    p.write_bytes(b"")
    for loader in (load_nsys, load_kineto, load_table):
        _raises(p, loader, match="empty")


def test_truncated_gzip(tmp_path: Path) -> None:
    data = (TRACES / "kineto-triton-tiny.json.gz").read_bytes()
    p = tmp_path / "cut.json.gz"
    p.write_bytes(data[: len(data) // 2])
    _raises(p, match="truncated gzip")


def test_corrupt_gzip(tmp_path: Path) -> None:
    p = tmp_path / "bad.json.gz"
    p.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"not deflate data at all" * 3)
    _raises(p, match="gzip")


def test_truncated_json(tmp_path: Path) -> None:
    p = _write_text(tmp_path / "cut.json", '{"traceEvents": [{"ph": "X", "cat": "kernel"')
    _raises(p, match="not valid JSON")


def test_json_without_trace_events(tmp_path: Path) -> None:
    p = _write_text(tmp_path / "other.json", json.dumps({"foo": [1, 2, 3]}))
    _raises(p, match="without traceEvents")


def test_json_trace_events_not_a_list(tmp_path: Path) -> None:
    p = _write_text(tmp_path / "x.json", json.dumps({"traceEvents": {"a": 1}}))
    _raises(p, match="not a list")


def test_json_scalar_top_level(tmp_path: Path) -> None:
    p = _write_text(tmp_path / "x.json", "[1, 2]")
    t = load(p)  # a bare array of events is accepted; it has no kernels
    assert len(t) == 0
    p = _write_text(tmp_path / "y.json", '"text"')
    _raises(p, load_kineto, match="top level")


def test_kernel_without_ts(tmp_path: Path) -> None:
    doc = _kineto_doc([{"ph": "X", "cat": "kernel", "name": "k", "dur": 1, "args": {}}],
                      baseTimeNanoseconds=10**18)
    p = _write_text(tmp_path / "x.json", json.dumps(doc))
    _raises(p, match="ts")


def test_kineto_unknown_schema_version(tmp_path: Path) -> None:
    ev = [{"ph": "X", "cat": "kernel", "name": "k", "ts": 5, "dur": 1, "pid": 0, "tid": 7}]
    doc = {"schemaVersion": 99, "baseTimeNanoseconds": 10**18, "traceEvents": ev}
    p = _write_text(tmp_path / "v99.json", json.dumps(doc))
    _raises(p, match="schemaVersion 99")
    t = load(p, check_version=False)
    assert int(t.start_ns[0]) == 10**18 + 5000
    assert any("99" in n for n in t.metadata["notes"])


def test_kineto_relative_times_without_base(tmp_path: Path) -> None:
    ev = [{"ph": "X", "cat": "kernel", "name": "k", "ts": 1234.5, "dur": 1, "pid": 0, "tid": 7}]
    p = _write_text(tmp_path / "nobase.json", json.dumps(_kineto_doc(ev)))
    _raises(p, match="baseTimeNanoseconds")
    t = load(p, base_time_ns=10**18)
    assert int(t.start_ns[0]) == 10**18 + 1234500


def _make_sqlite(path: Path, script: str) -> Path:
    with closing(sqlite3.connect(path)) as con:
        con.executescript(script)
        con.commit()
    return path


STRING_IDS_SQL = "CREATE TABLE StringIds (id INTEGER NOT NULL PRIMARY KEY, value TEXT NOT NULL);"


def test_sqlite_without_kernel_table(tmp_path: Path) -> None:
    p = _make_sqlite(tmp_path / "nokernels.sqlite",
                     STRING_IDS_SQL +
                     "CREATE TABLE TARGET_INFO_SESSION_START_TIME (utcEpochNs INTEGER);"
                     "INSERT INTO TARGET_INFO_SESSION_START_TIME VALUES (1000);")
    err = _raises(p, match="no kernels")
    assert "--trace=cuda" in str(err)


def test_sqlite_not_nsys(tmp_path: Path) -> None:
    p = _make_sqlite(tmp_path / "other.sqlite", "CREATE TABLE foo (a INTEGER);")
    _raises(p, match="not an Nsight Systems export")


def test_sqlite_missing_kernel_columns(tmp_path: Path) -> None:
    p = _make_sqlite(tmp_path / "cols.sqlite",
                     STRING_IDS_SQL +
                     "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INTEGER, end INTEGER);")
    err = _raises(p, match="lacks column(s)")
    assert "deviceId" in str(err) and "demangledName" in str(err)


def test_sqlite_unknown_schema_version(tmp_path: Path) -> None:
    p = tmp_path / "v9.sqlite"
    write_nsys_sqlite(p, _small_table(), SESSION)
    with closing(sqlite3.connect(p)) as con:
        con.execute("UPDATE META_DATA_EXPORT SET value = '9.0.1' "
                    "WHERE name = 'EXPORT_SCHEMA_VERSION'")
        con.commit()
    _raises(p, match="schema version '9.0.1'")
    assert len(load(p, check_version=False)) == len(_small_table())


def test_sqlite_without_session_start(tmp_path: Path) -> None:
    p = tmp_path / "nostart.sqlite"
    write_nsys_sqlite(p, _small_table(), SESSION)
    with closing(sqlite3.connect(p)) as con:
        con.execute("DROP TABLE TARGET_INFO_SESSION_START_TIME")
        con.commit()
    _raises(p, match="session start")
    t = load(p, session_start_epoch_ns=SESSION)
    assert_same_kernels(t, _small_table(), COLUMNS[:-1])


def test_truncated_sqlite(tmp_path: Path) -> None:
    data = (TRACES / "nsys-2022.2-a100-saxpy.sqlite").read_bytes()
    p = tmp_path / "cut.sqlite"
    p.write_bytes(data[: len(data) // 3])
    _raises(p)


def test_garbage_after_sqlite_header(tmp_path: Path) -> None:
    p = tmp_path / "garbage.sqlite"
    p.write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    _raises(p)


def test_not_sqlite_to_nsys_loader(tmp_path: Path) -> None:
    p = _write_text(tmp_path / "x.sqlite", "hello")
    _raises(p, load_nsys, match="not a SQLite database")


def test_unknown_format(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(b"\x00\x01\x02 binary")
    _raises(p, match="unknown trace format")
    r = tmp_path / "report.nsys-rep"
    r.write_bytes(b"\x00\x01\x02 binary")
    _raises(r, match="nsys export --type sqlite")


def test_missing_file_is_not_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.sqlite")


@pytest.mark.parametrize("text,match", [
    ("name,device,start_ns\nk,0,1\n", "lacks column(s) end_ns"),
    ("name,device,start_ns,end_ns\nk,0,1.5,3\n", "line 2: column start_ns is not an integer"),
    ("name,device,start_ns,end_ns\nk,0,1\n", "line 2: 3 fields"),
    ("name,device,start_ns,end_ns\nk,0,5,3\n", "ends before it starts"),
    ("# only a comment\n", "no header row"),
])
def test_bad_csv(tmp_path: Path, text: str, match: str) -> None:
    p = _write_text(tmp_path / "bad.csv", text)
    _raises(p, match=match)


# --------------------------------------------------------------------------------------
# plain tables
# --------------------------------------------------------------------------------------


def _small_table(clock: str = "epoch") -> KernelTable:
    base = 1_700_000_000_123_456_789
    return load_table(
        {
            "name": ["gemm", "relu", "gemm", "nccl:all_reduce", "weird \"name\", with comma"],
            "device": np.array([0, 0, 1, 1, 0], dtype=np.int32),
            "start_ns": np.array([base, base + 10, base + 5, base + 7, base + 10], dtype=np.int64),
            "end_ns": np.array([base + 4, base + 20, base + 9, base + 1000, base + 11]),
            "stream": [7, 7, 9, 40, 7],
            "correlation": [11, 12, 13, -1, 15],
        },
        clock=clock,
    )


def test_table_from_arrays() -> None:
    t = _small_table()
    assert t.format == "table" and t.clock == "epoch" and t.source is None
    assert np.all(np.diff(t.start_ns) >= 0)  # sorted by start
    assert t.name.tolist() == ["gemm", "gemm", "nccl:all_reduce", "relu",
                               "weird \"name\", with comma"]
    assert t.stream.tolist() == [7, 9, 40, 7, 7]
    assert t.external_id.tolist() == [-1] * 5
    assert t.duration_ns.tolist() == [4, 4, 993, 10, 1]
    assert t.name_of(-1) == "weird \"name\", with comma"
    assert all(d["mapping"] == "guessed" for d in t.devices)
    assert [d["id"] for d in t.devices] == [0, 1]


def test_table_monotonic_clock_is_kept() -> None:
    t = _small_table("monotonic")
    assert t.clock == "monotonic"
    assert t.sorted().clock == "monotonic" and t.select(t.device == 0).clock == "monotonic"
    with pytest.raises(ValueError, match="clock"):
        load_table({"name": [], "device": [], "start_ns": [], "end_ns": []}, clock="tai")


def test_table_csv_round_trip(tmp_path: Path) -> None:
    for clock in ("epoch", "monotonic"):
        t = _small_table(clock)
        p = tmp_path / f"k-{clock}.csv"
        t.to_csv(p)
        u = load(p, clock=clock)
        assert u.clock == clock and u.format == "table" and u.source == os.fspath(p)
        assert_same_kernels(t, u)


def test_table_csv_by_hand(tmp_path: Path) -> None:
    text = ("# exported by hand\n"
            "start_ns,end_ns,name,device\n"
            "1623143089861123456,1623143089861124956,k1,0\n"
            "\n"
            "5,6,k2,1\n")
    t = load_table(_write_text(tmp_path / "hand.csv", text), clock="monotonic")
    assert t.start_ns.tolist() == [5, 1623143089861123456]  # exact, sorted
    assert t.stream.tolist() == [-1, -1] and t.correlation.tolist() == [-1, -1]
    assert t.name.tolist() == ["k2", "k1"]


def test_table_structured_array_and_name_ids() -> None:
    arr = np.zeros(3, dtype=[("name_id", "i4"), ("device", "i4"), ("start_ns", "i8"),
                             ("end_ns", "i8")])
    arr["name_id"] = [1, 0, 1]
    arr["start_ns"] = [30, 10, 20]
    arr["end_ns"] = [31, 11, 21]
    t = load_table(arr, names=["a", "b"])
    assert t.name.tolist() == ["a", "b", "b"]
    assert t.start_ns.tolist() == [10, 20, 30]


def test_table_refuses_inexact_times() -> None:
    cols = {"name": ["k"], "device": [0], "start_ns": np.array([1.7e18 + 0.5]),
            "end_ns": np.array([1.8e18])}
    with pytest.raises(ValueError, match="integers"):
        load_table(cols)
    cols = {"name": ["k"], "device": [0], "start_ns": np.array([10.0]),
            "end_ns": np.array([20.0])}
    assert load_table(cols).start_ns.tolist() == [10]  # exact integral floats are fine


def test_table_select_and_sorted() -> None:
    t = _small_table()
    sub = t.select(t.device == 1)
    assert len(sub) == 2 and set(sub.device.tolist()) == {1}
    assert sub.names is t.names or sub.names == t.names
    assert sub.name.tolist() == ["gemm", "nccl:all_reduce"]
    picked = t.select(np.array([4, 0]))
    assert picked.start_ns.tolist() == [t.start_ns[4], t.start_ns[0]]
    assert picked.sorted().start_ns.tolist() == sorted(picked.start_ns.tolist())
    assert len(t.select(np.zeros(len(t), dtype=bool))) == 0
    with pytest.raises(ValueError):
        t.select(np.ones(2, dtype=bool))


def test_kernel_table_validation() -> None:
    with pytest.raises(ValueError, match="name_id"):
        KernelTable([1], [2], [0], [3], ["a"])
    with pytest.raises(ValueError, match="unique"):
        KernelTable([1], [2], [0], [0], ["a", "a"])
    with pytest.raises(ValueError, match="expected 1"):
        KernelTable([1], [2, 3], [0], [0], ["a"])
    with pytest.raises(ValueError, match="clock"):
        KernelTable([1], [2], [0], [0], ["a"], clock="utc")


def test_to_pandas() -> None:
    t = _small_table()
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            t.to_pandas()
        with pytest.raises(ImportError, match="pip install pandas"):
            t.ranges.to_pandas()
        return
    df = t.to_pandas()
    assert list(df["name"].astype(str)) == t.name.tolist()
    assert df["start_ns"].tolist() == t.start_ns.tolist()


# --------------------------------------------------------------------------------------
# synthetic traces: write in the real formats, read back exactly
# --------------------------------------------------------------------------------------


def _table_with_ranges() -> KernelTable:
    t = _small_table()
    base = int(t.start_ns[0])
    ranges = RangeTable.from_names(
        ["step", "fwd", "gpu step"],
        np.array([base - 100, base, base + 1], dtype=np.int64),
        np.array([base + 2000, base + 9, base + 999], dtype=np.int64),
        np.array([-1, -1, 1], dtype=np.int32),
    ).sorted()
    devices = [
        {"id": 0, "name": "NVIDIA H200", "uuid": "GPU-00000000-1111-2222-3333-444444444444",
         "pci_bus_id": "0000:18:00.0", "mapping": "uuid"},
        {"id": 1, "name": "NVIDIA H200", "uuid": None, "pci_bus_id": "0000:2a:00.0",
         "mapping": "pci"},
    ]
    return KernelTable(t.start_ns, t.end_ns, t.device, t.name_id, t.names, stream=t.stream,
                       correlation=t.correlation, external_id=np.arange(len(t)) + 100,
                       devices=devices, ranges=ranges)


@pytest.mark.parametrize("base", [None, 1_700_000_000_000_000_000])
@pytest.mark.parametrize("gz", [False, True])
def test_synth_kineto_round_trip(tmp_path: Path, base, gz: bool) -> None:
    t = _table_with_ranges()
    p = tmp_path / ("t.json.gz" if gz else "t.json")
    write_kineto_json(p, t, base_time_ns=base, gz=gz)
    assert sniff(p) == "kineto-json"
    u = load(p)
    assert u.format == "kineto-json"
    assert_same_kernels(t, u)
    assert_same_ranges(t.ranges, u.ranges)
    assert [(d["id"], d["name"]) for d in u.devices] == [(0, "NVIDIA H200"), (1, "NVIDIA H200")]
    assert u.metadata["time_base"] == (
        "baseTimeNanoseconds" if base else "absolute epoch µs (no baseTimeNanoseconds)")
    raw = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
    doc = json.loads(raw)
    kern = [e for e in doc["traceEvents"] if e["cat"].lower() == "kernel"]
    if base is None:  # the 2021 layout
        assert kern[0]["cat"] == "Kernel" and kern[0]["tid"].startswith("stream ")
        assert "external id" in kern[0]["args"]
    else:
        assert kern[0]["cat"] == "kernel" and isinstance(kern[0]["tid"], int)
        assert "External id" in kern[0]["args"] and doc["baseTimeNanoseconds"] == base


def test_synth_nsys_round_trip(tmp_path: Path) -> None:
    t = _table_with_ranges()
    start = int(t.start_ns[0]) - 1_000_000
    p = tmp_path / "t.sqlite"
    write_nsys_sqlite(p, t, start)
    assert sniff(p) == "nsys-sqlite"
    u = load(p)
    assert u.format == "nsys-sqlite"
    assert u.metadata["session_start_epoch_ns"] == start
    # nsys has no external id
    assert_same_kernels(t, u, COLUMNS[:-1])
    assert np.all(u.external_id == -1)
    # NVTX ranges are host-side in nsys: device -1
    assert_same_ranges(t.ranges, u.ranges, device=False)
    assert np.all(u.ranges.device == -1)
    assert u.devices == t.devices
    assert u.metadata["device_mapping"] == "known"
    # written with the real column names and types
    with closing(sqlite3.connect(p)) as con:
        cols = {r[1]: r[2] for r in con.execute("PRAGMA table_info(CUPTI_ACTIVITY_KIND_KERNEL)")}
        assert cols["start"] == "INTEGER" and cols["demangledName"] == "INTEGER"
        rel = con.execute("SELECT min(start) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0]
    assert rel == 1_000_000
    # rewriting replaces the file
    write_nsys_sqlite(p, t.select(t.device == 0), start)
    assert len(load(p)) == int(np.sum(t.device == 0))


@pytest.mark.parametrize("fname", sorted(REAL))
def test_real_traces_survive_synth_round_trips(tmp_path: Path, fname: str) -> None:
    t = load(TRACES / fname)
    write_kineto_json(tmp_path / "k.json.gz", t, base_time_ns=t.metadata.get("base_time_ns"),
                      gz=True)
    assert_same_kernels(t, load(tmp_path / "k.json.gz"))
    session = t.metadata.get("session_start_epoch_ns", int(t.start_ns[0]) - 10**9)
    write_nsys_sqlite(tmp_path / "n.sqlite", t, session)
    u = load(tmp_path / "n.sqlite")
    assert_same_kernels(t, u, COLUMNS[:-1])
    assert_same_ranges(t.ranges, u.ranges, device=False)
    if t.short_names is not None:
        assert u.short_names == t.short_names


def test_nsys_non_utf8_text(tmp_path: Path) -> None:
    t = _table_with_ranges()
    p = tmp_path / "latin1.sqlite"
    write_nsys_sqlite(p, t, SESSION)
    with closing(sqlite3.connect(p)) as con:
        con.execute("UPDATE StringIds SET value = CAST(X'72656cff75' AS TEXT) "
                    "WHERE value = 'relu'")
        con.commit()
    u = load(p)
    assert "rel\ufffdu" in u.names


def test_nsys_inline_nvtx_text_and_markers(tmp_path: Path) -> None:
    t = _table_with_ranges()
    p = tmp_path / "nvtx.sqlite"
    write_nsys_sqlite(p, t, SESSION)
    with closing(sqlite3.connect(p)) as con:
        con.execute("INSERT INTO NVTX_EVENTS (start, end, eventType, text) "
                    "VALUES (5, 9, 59, 'inline')")
        con.execute("INSERT INTO NVTX_EVENTS (start, end, eventType, text) "
                    "VALUES (6, NULL, 34, 'a marker')")
        con.commit()
    u = load(p)
    assert len(u.ranges) == len(t.ranges) + 1
    assert "inline" in u.ranges.names and "a marker" not in u.ranges.names
    i = u.ranges.names.index("inline")
    k = int(np.flatnonzero(u.ranges.name_id == i)[0])
    assert (int(u.ranges.start_ns[k]), int(u.ranges.end_ns[k])) == (SESSION + 5, SESSION + 9)


def test_nsys_ts_normalized_export(tmp_path: Path) -> None:
    # --ts-normalize=true: times already epoch ns; the session start must not be added again
    t = _small_table()
    p = tmp_path / "norm.sqlite"
    write_nsys_sqlite(p, t, 0)
    with closing(sqlite3.connect(p)) as con:
        con.execute("UPDATE TARGET_INFO_SESSION_START_TIME SET utcEpochNs = 1700000000000000000")
        con.execute("UPDATE META_DATA_EXPORT SET value = 'true' "
                    "WHERE name = 'EXPORT_PARAM_TIME_NORMALIZE'")
        con.commit()
    u = load(p)
    assert_same_kernels(t, u, COLUMNS[:-1])
    assert "normalize" in u.metadata["time_base"]


def test_nsys_times_already_epoch_without_flag(tmp_path: Path) -> None:
    # Kernel times too large to be session-relative (> 3 years) are taken as epoch ns.
    t = _small_table()
    p = tmp_path / "abs.sqlite"
    write_nsys_sqlite(p, t, 0)
    with closing(sqlite3.connect(p)) as con:
        con.execute(f"UPDATE TARGET_INFO_SESSION_START_TIME SET utcEpochNs = {SESSION}")
        con.commit()
    u = load(p)
    assert_same_kernels(t, u, COLUMNS[:-1])
    assert any("already epoch" in n for n in u.metadata["notes"])


def test_nsys_empty_kernel_table(tmp_path: Path) -> None:
    p = tmp_path / "none.sqlite"
    write_nsys_sqlite(p, _small_table().select(np.zeros(5, dtype=bool)), SESSION)
    u = load(p)
    assert len(u) == 0 and u.devices == []
    assert any("empty" in n for n in u.metadata["notes"])


def test_nsys_device_mapping_guessed_without_cuda_device_table(tmp_path: Path) -> None:
    t = _table_with_ranges()
    p = tmp_path / "guess.sqlite"
    write_nsys_sqlite(p, t, SESSION)
    with closing(sqlite3.connect(p)) as con:
        con.execute("DROP TABLE TARGET_INFO_CUDA_DEVICE")
        con.commit()
    u = load(p)
    assert u.metadata["device_mapping"] == "guessed"
    assert [d["mapping"] for d in u.devices] == ["guessed", "guessed"]
    # the GPU table's identifiers are still offered, matched by cuDevice
    assert u.devices[0]["uuid"] == t.devices[0]["uuid"]
    assert u.devices[1]["pci_bus_id"] == "0000:2a:00.0"


def test_nsys_one_cuda_number_two_gpus(tmp_path: Path) -> None:
    # Two ranks, one GPU each through CUDA_VISIBLE_DEVICES: both call their GPU "device 0".
    t = _small_table()
    t = KernelTable(t.start_ns, t.end_ns, np.zeros(len(t), dtype=np.int32), t.name_id,
                    t.names, stream=t.stream, correlation=t.correlation)
    p = tmp_path / "ranks.sqlite"
    write_nsys_sqlite(p, t, SESSION)
    pid_a, pid_b = 1000, 2000
    with closing(sqlite3.connect(p)) as con:
        con.execute("DELETE FROM TARGET_INFO_GPU")
        con.execute("DELETE FROM TARGET_INFO_CUDA_DEVICE")
        con.executemany(
            "INSERT INTO TARGET_INFO_GPU (vmId, id, name, busLocation, uuid, cuDevice) "
            "VALUES (0, ?, 'H200', ?, ?, ?)",
            [(3, "0000:18:00.0", "aaaaaaaa-0000-0000-0000-000000000003", 3),
             (5, "0000:2A:00.0", "bbbbbbbb-0000-0000-0000-000000000005", 5)])
        con.executemany("INSERT INTO TARGET_INFO_CUDA_DEVICE VALUES (?, 0, ?, '')",
                        [(3, pid_a), (5, pid_b)])
        con.execute(f"UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET globalPid = {pid_a << 24}")
        con.execute(f"UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET globalPid = {pid_b << 24} "
                    "WHERE streamId IN (9, 40)")
        con.commit()
    u = load(p)
    assert u.metadata["device_ids"] == "nsys-gpu"
    assert u.metadata["device_mapping"] == "known"
    np.testing.assert_array_equal(u.device, np.where(np.isin(u.stream, [9, 40]), 5, 3))
    assert u.devices == [
        {"id": 3, "name": "H200", "uuid": "GPU-aaaaaaaa-0000-0000-0000-000000000003",
         "pci_bus_id": "0000:18:00.0", "mapping": "uuid"},
        {"id": 5, "name": "H200", "uuid": "GPU-bbbbbbbb-0000-0000-0000-000000000005",
         "pci_bus_id": "0000:2a:00.0", "mapping": "uuid"},
    ]


def test_writers_refuse_monotonic_tables(tmp_path: Path) -> None:
    t = _small_table("monotonic")
    with pytest.raises(ValueError, match="epoch"):
        write_nsys_sqlite(tmp_path / "m.sqlite", t, 0)
    with pytest.raises(ValueError, match="epoch"):
        write_kineto_json(tmp_path / "m.json", t)
