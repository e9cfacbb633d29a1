"""Malformed and hostile input for every reader: recordings, nsys SQLite, Kineto JSON, CSV.

Two parts:

- Named tests, one per failure a probe of ~1,300 bad inputs found (each failed
  before the readers were hardened): tracebacks, silent wraps, hangs, memory
  blow-ups, FIFOs, permission errors reported as corruption.
- A seeded batch of a few hundred mutations of the real files in
  tests/data/traces and of a small saved recording (truncation, bit flips,
  wrong types, huge numbers, deep nesting, bombs), run in a child process with
  a time limit and a small input budget: every case must either load into a
  consistent table or raise a JouletraceError subclass that names the file,
  and the child's peak memory must stay small.

The longer, coverage-guided run is ``tests/test_fuzz_readers.py -m slow``
(hypothesis); see the README section "What each reader accepts".
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jouletrace
from jouletrace._input import ENV_MAX_INPUT_BYTES, MIN_DEFAULT_BUDGET, input_budget
from jouletrace.energy.recording import Recording
from jouletrace.errors import (
    JouletraceError,
    RecordingFormatError,
    TraceFormatError,
)
from jouletrace.kernels import traces
from jouletrace.kernels.traces import nsys as nsys_mod

DATA = Path(__file__).parent / "data" / "traces"
NSYS = DATA / "nsys-2026.1-rtx3080-torch.sqlite"
NSYS_OLD = DATA / "nsys-2022.2-a100-saxpy.sqlite"
KINETO_GZ = DATA / "kineto-triton-tiny.json.gz"
I64_MAX = 2**63 - 1
MiB = 1 << 20


# -- inputs ---------------------------------------------------------------------------


def small_recording(n: int = 400) -> Recording:
    t = np.arange(n, dtype=np.int64) * 1_000_000 + 10**12
    e = np.floor(np.arange(n) / 20) * 0.5
    return Recording(
        t_ns=t,
        t_before_ns=t - 1_000,
        t_after_ns=t + 1_000,
        seq=np.arange(n, dtype=np.uint64),
        status=np.zeros(n, dtype=np.int32),
        values={"gpu0.energy_j": e, "gpu0.power_w": np.full(n, 250.0)},
        cumulative={"gpu0.energy_j": True, "gpu0.power_w": False},
        clock_pairs=np.array([[t[0], t[0] + 1_700_000_000 * 10**9, 500]], dtype=np.int64),
        metadata={"source": "sim", "rate_hz": 1000.0,
                  "windows": [{"name": "step", "t0_ns": int(t[10]), "t1_ns": int(t[300])}]},
    )


def npz_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def write_npz(path: Path, members: dict[str, bytes], compress: bool = False) -> Path:
    """A zip with these raw members: CRCs right, whatever the content says."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def with_header(path: Path, out: Path, edit: Any, compress: bool = False) -> Path:
    members = npz_members(path)
    raw = np.load(io.BytesIO(members["metadata_json.npy"]))
    header = json.loads(raw.tobytes())
    edit(header)
    text = header if isinstance(header, (bytes, str)) else json.dumps(header)
    blob = text.encode() if isinstance(text, str) else text
    members["metadata_json.npy"] = npy_bytes(np.frombuffer(blob, dtype=np.uint8))
    return write_npz(out, members, compress)


def kineto_doc() -> dict[str, Any]:
    return json.loads(gzip.decompress(KINETO_GZ.read_bytes()))


def write_json(path: Path, doc: Any, gz: bool = False) -> Path:
    data = (doc if isinstance(doc, str) else json.dumps(doc)).encode()
    path.write_bytes(gzip.compress(data, 6) if gz else data)
    return path


def nsys_copy(tmp: Path, name: str, sql: list[str], src: Path = NSYS) -> Path:
    out = tmp / name
    shutil.copyfile(src, out)
    con = sqlite3.connect(out)
    for stmt in sql:
        con.execute(stmt)
    con.commit()
    con.close()
    return out


def refused(fn: Any, path: Path, cls: type[JouletraceError] = JouletraceError,
            match: str | None = None) -> str:
    """Call fn(path); it must raise ``cls`` naming the file. Returns the message."""
    with pytest.raises(cls) as info:
        fn(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    if match:
        assert match in msg, msg
    return msg


def cli(*argv: str) -> tuple[int, str]:
    """Run the CLI in a child (a traceback, a hang or a crash shows up as such)."""
    r = subprocess.run([sys.executable, "-m", "jouletrace", *argv], capture_output=True,
                       text=True, timeout=60)
    return r.returncode, r.stderr


# -- item 5: recordings ----------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory: Any) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rec")
    rec = small_recording()
    return {"plain": Path(rec.save(d / "plain.npz")),
            "compressed": Path(rec.save(d / "compressed.npz", compress=True))}


def test_valid_recordings_load_exactly(saved: dict[str, Path]) -> None:
    ref = small_recording()
    for path in saved.values():
        rec = jouletrace.load(path)
        assert np.array_equal(rec.t_ns, ref.t_ns)
        assert np.array_equal(rec["gpu0.energy_j"], ref["gpu0.energy_j"])
        assert not rec.t_ns.flags.writeable
        assert rec.metadata["windows"] == ref.metadata["windows"]


def test_corrupt_compressed_recording(saved: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(saved["compressed"].read_bytes())
    with zipfile.ZipFile(saved["compressed"]) as z:
        info = z.getinfo("channel_000.npy")
    lh = info.header_offset  # local header: name and extra lengths at bytes 26..30
    start = lh + 30 + int.from_bytes(data[lh + 26:lh + 28], "little") + int.from_bytes(
        data[lh + 28:lh + 30], "little")
    for k, pos in enumerate(range(start, start + info.compress_size, 7)):
        bad = bytearray(data)
        bad[pos] ^= 0xA5
        p = tmp_path / f"flip{k}.npz"
        p.write_bytes(bytes(bad))
        refused(jouletrace.load, p, RecordingFormatError)


def test_declared_shape_of_10_12_is_refused_before_allocating(saved: dict[str, Path],
                                                              tmp_path: Path) -> None:
    members = npz_members(saved["plain"])
    hdr = members["t_ns.npy"]
    # the .npy header of the same length with a shape of 10**12
    text = hdr[10:10 + int.from_bytes(hdr[8:10], "little")].decode("latin1")
    grown = text.replace("(400,)", "(1000000000000,)")
    grown = grown[:len(text)] if len(grown) > len(text) else grown.ljust(len(text))
    assert "1000000000000" in grown
    members["t_ns.npy"] = hdr[:10] + grown.encode("latin1") + hdr[10 + len(text):]
    p = write_npz(tmp_path / "huge.npz", members)
    msg = refused(jouletrace.load, p, RecordingFormatError, "shape")
    assert "(1000000000000,)" in msg


@pytest.mark.parametrize("edit, what", [
    (lambda h: h.update(dropped="many"), "dropped"),
    (lambda h: h.update(missed_deadlines=-3), "missed_deadlines"),
    (lambda h: h.update(metadata=[1, 2]), "metadata is a list"),
    (lambda h: h["metadata"].update(rate_hz="fast"), "'rate_hz'"),
    (lambda h: h["metadata"].update(windows=[{"name": "x", "t0_ns": "0", "t1_ns": 5}]), "'windows'"),
    (lambda h: h["metadata"].update(pauses=[[1]]), "'pauses'"),
    (lambda h: h["metadata"].update(device=7), "'device'"),
    (lambda h: h["metadata"].update(sensors={"gpu0.power_w": {"update_period_ns": "x"}}), "'sensors'"),
    (lambda h: h["channels"][0].update(cumulative="yes"), "channel list"),
    (lambda h: h["channels"][1].update(name=h["channels"][0]["name"]), "twice"),
    (lambda h: h.update(n_samples=10**12), "shape"),
    (lambda h: h.update(schema_version=True), "schema_version"),
])
def test_malformed_recording_metadata(saved: dict[str, Path], tmp_path: Path, edit: Any,
                                      what: str) -> None:
    p = with_header(saved["plain"], tmp_path / "meta.npz", edit)
    refused(jouletrace.load, p, RecordingFormatError, what)


def test_deeply_nested_recording_metadata(saved: dict[str, Path], tmp_path: Path) -> None:
    for depth, name in ((100, "deep100"), (100_000, "deep100k")):
        p = with_header(saved["plain"], tmp_path / f"{name}.npz",
                        lambda h, d=depth: h["metadata"].update(extra=json.loads("[" * min(d, 500)
                                                                                   + "]" * min(d, 500)))
                        if d < 1000 else None)
        if depth >= 1000:  # too deep for json.dumps: splice the text in
            blob = json.dumps({"format": "jouletrace.recording", "schema_version": 1}).encode()
            blob = blob[:-1] + b', "metadata": ' + b"[" * depth + b"]" * depth + b"}"
            members = npz_members(saved["plain"])
            members["metadata_json.npy"] = npy_bytes(np.frombuffer(blob, dtype=np.uint8))
            write_npz(p, members)
        refused(jouletrace.load, p, RecordingFormatError, "nest")


def test_report_on_malformed_recording_is_clean(saved: dict[str, Path], tmp_path: Path) -> None:
    p = with_header(saved["plain"], tmp_path / "typed.npz",
                    lambda h: h["metadata"].update(windows=[{"name": "command", "t0_ns": None}]))
    rc, err = cli("report", str(p))
    assert rc == 1 and "Traceback" not in err, err
    assert f"jouletrace report: error: {p}: not a readable jouletrace recording" in err


# -- item 6: Kineto --------------------------------------------------------------------


def _kernel_event(doc: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in doc["traceEvents"] if e.get("cat") == "kernel")


@pytest.mark.parametrize("case, edit, match", [
    ("digits_ts", lambda d: _kernel_event(d).update(ts="@DIGITS@"), "not usable JSON"),
    ("digits_base", lambda d: d.update(baseTimeNanoseconds="7" * 5000), "out of range"),
    ("superscript_base", lambda d: d.update(baseTimeNanoseconds="\u00b2"), "not an integer"),
    ("superscript_device", lambda d: _kernel_event(d)["args"].update(device="\u00b2"), None),
    ("arabic_digits_ts", lambda d: _kernel_event(d).update(ts="\u0661\u0662.000"), "ts/dur"),
    ("device_2_40", lambda d: _kernel_event(d)["args"].update(device=2**40), "device"),
    ("stream_2_70", lambda d: _kernel_event(d)["args"].update(stream=2**70), "stream id"),
    ("correlation_neg", lambda d: _kernel_event(d)["args"].update(correlation=-(2**64)),
     "correlation id"),
    ("property_id", lambda d: d.update(deviceProperties=[{"id": 2**40, "name": "x"}]),
     "deviceProperties id"),
    ("name_object", lambda d: _kernel_event(d).update(name={"a": 1}), "name"),
])
def test_kineto_numbers_and_types(tmp_path: Path, case: str, edit: Any, match: str | None) -> None:
    doc = kineto_doc()
    edit(doc)
    p = write_json(tmp_path / f"{case}.json", json.dumps(doc).replace('"@DIGITS@"', "9" * 5000))
    if case == "superscript_device":  # not a number: the device falls back to the pid
        t = traces.load(p)
        assert t.device.tolist() == [0] and t.devices[0]["id"] == 0
        return
    refused(traces.load, p, TraceFormatError, match)


def test_kineto_base_time_near_2_63_does_not_wrap(tmp_path: Path) -> None:
    doc = kineto_doc()
    good = traces.load(write_json(tmp_path / "good.json", doc))
    assert good.start_ns.min() > 0
    doc["baseTimeNanoseconds"] = I64_MAX - 10
    refused(traces.load, write_json(tmp_path / "wrap.json", doc), TraceFormatError,
            "outside the 64-bit")


# -- item 7: nsys ----------------------------------------------------------------------


@pytest.mark.parametrize("case, sql, match", [
    ("text_start", ["UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = 'soon' WHERE rowid = 1"],
     "CUPTI_ACTIVITY_KIND_KERNEL.start"),
    ("numeric_text_device", ["UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET deviceId = '1' || x'00'"],
     "deviceId"),
    ("real_end", ['UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET "end" = "end" + 0.5'], '"end"'.strip('"')),
    ("text_gpu_id", ["UPDATE TARGET_INFO_GPU SET id = 'gpu'"], "TARGET_INFO_GPU.id"),
    ("nvtx_text_id", ["UPDATE NVTX_EVENTS SET textId = 'x', text = NULL"], "NVTX_EVENTS.textId"),
    ("nvtx_real_start", ["UPDATE NVTX_EVENTS SET start = start + 0.25"], "NVTX_EVENTS.start"),
    ("shift_digits", ["INSERT INTO META_DATA_EXPORT(name, value) VALUES "
                      "('EXPORT_CONFIG_TIME_SHIFT', '" + "9" * 5000 + "')"], "TIME_SHIFT"),
    ("shift_2_62", ["INSERT INTO META_DATA_EXPORT(name, value) VALUES "
                    f"('EXPORT_CONFIG_TIME_SHIFT', '{-(2**62)}')",
                    f"UPDATE TARGET_INFO_SESSION_START_TIME SET utcEpochNs = {2**62}"],
     "outside the 64-bit"),
    ("device_2_40", [f"UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET deviceId = {2**40}"], "deviceId"),
    ("cuda_device_2_40", [f"UPDATE TARGET_INFO_CUDA_DEVICE SET cudaId = {2**40}"], "cudaId"),
])
def test_nsys_column_types_and_ranges(tmp_path: Path, case: str, sql: list[str],
                                      match: str) -> None:
    p = nsys_copy(tmp_path, f"{case}.sqlite", sql, NSYS_OLD if "nvtx" in case else NSYS)
    refused(traces.load, p, TraceFormatError, match)


def test_nsys_device_2_40_is_not_device_0(tmp_path: Path) -> None:
    base = traces.load(NSYS)
    assert set(base.device.tolist()) == {0}
    p = nsys_copy(tmp_path, "dev.sqlite",
                  [f"UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET deviceId = {2**40} WHERE rowid = 1"])
    refused(traces.load, p, TraceFormatError, str(2**40))


def test_nsys_corrupt_schema_table(tmp_path: Path) -> None:
    p = nsys_copy(tmp_path, "schema.sqlite", [
        "PRAGMA writable_schema = ON",
        "UPDATE sqlite_master SET sql = 'CREATE TABLE StringIds(id INTEGER, value' "
        "WHERE name = 'StringIds'",
    ])
    refused(traces.load, p, TraceFormatError, "SQLite")
    # and one whose schema rows name a table with no root page
    p2 = nsys_copy(tmp_path, "rootpage.sqlite", [
        "PRAGMA writable_schema = ON",
        "UPDATE sqlite_master SET rootpage = 99999 WHERE name = 'CUPTI_ACTIVITY_KIND_KERNEL'",
    ])
    refused(traces.load, p2, TraceFormatError)


RECURSIVE_VIEW = [
    "ALTER TABLE CUPTI_ACTIVITY_KIND_KERNEL RENAME TO k_real",
    "CREATE VIEW CUPTI_ACTIVITY_KIND_KERNEL AS WITH RECURSIVE r(n) AS "
    "(SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT k.* FROM k_real k, r",
]


def test_nsys_recursive_view_is_refused_at_once(tmp_path: Path) -> None:
    p = nsys_copy(tmp_path, "view.sqlite", RECURSIVE_VIEW)
    code = ("import sys, jouletrace.traces as t\n"
            "try:\n    t.load(sys.argv[1])\nexcept t.TraceFormatError as e:\n    print(e)\n")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True,
                       timeout=30)
    assert time.monotonic() - t0 < 20
    assert "is a view, not a table" in r.stdout and str(p) in r.stdout, r.stdout + r.stderr


def test_nsys_query_budget_and_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    runaway = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
    monkeypatch.setattr(nsys_mod, "_QUERY_STEPS_BASE", 2_000_000)
    monkeypatch.setattr(nsys_mod, "QUERY_STEPS_PER_BYTE", 0)
    con, guard = nsys_mod.open_export(str(NSYS))
    t0 = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="interrupt"):
        con.execute(runaway).fetchone()
    assert guard.why == "budget" and time.monotonic() - t0 < 5
    con.close()
    # Ctrl-C (SIGINT) stops the same query, without a budget
    monkeypatch.setattr(nsys_mod, "_QUERY_STEPS_BASE", 10**15)
    con, guard = nsys_mod.open_export(str(NSYS))
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    prev_alarm = signal.signal(signal.SIGALRM, lambda *a: os.kill(os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    try:
        with pytest.raises(sqlite3.OperationalError, match="interrupt"):
            con.execute(runaway).fetchone()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, prev_alarm)
        signal.signal(signal.SIGINT, old)
        con.close()
    # (the interrupt may land before the handler's try: SQLite then aborts all the same)
    assert guard.why != "budget" and time.monotonic() - t0 < 5


# -- item 8: CSV -----------------------------------------------------------------------


def test_csv_field_over_128_kb(tmp_path: Path) -> None:
    p = tmp_path / "long.csv"
    p.write_text("name,device,start_ns,end_ns\n" + '"' + "k" * 200_000 + '",0,1,2\n')
    refused(traces.load, p, TraceFormatError, "field larger than field limit")
    ok = tmp_path / "ok.csv"
    ok.write_text("name,device,start_ns,end_ns\n" + "k" * 100_000 + ",0,1,2\n")
    assert len(traces.load(ok).names[0]) == 100_000


def test_csv_numbers(tmp_path: Path) -> None:
    for name, cell, match in (("superscript", "\u00b2", "not an integer"),
                              ("arabic", "\u0661\u0662", "not an integer"),
                              ("digits", "9" * 5000, "64-bit")):
        p = tmp_path / f"{name}.csv"
        p.write_text(f"name,device,start_ns,end_ns\nk,0,{cell},2\n")
        refused(traces.load, p, TraceFormatError, match)


# -- item 9: decompression limits ------------------------------------------------------


def _peak_in_child(code: str, env: dict[str, str] | None = None) -> tuple[dict[str, Any], int]:
    """Run ``code`` (which sets ``out``) in a child; its result and peak RSS growth in bytes."""
    wrapper = (
        "import json, resource, sys\n"
        "import numpy, jouletrace, jouletrace.traces\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{code}\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'out': out, 'grew': (peak - base) * 1024}))\n"
    )
    r = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                       timeout=60, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return res["out"], res["grew"]


_CATCH = ("try:\n    {call}\n    out = 'loaded'\n"
          "except jouletrace.JouletraceError as e:\n    out = type(e).__name__ + ': ' + str(e)\n")


def test_gzip_bomb_is_refused_within_the_budget(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.json.gz"
    with gzip.open(bomb, "wb", 9) as g:  # ~200 MB of JSON in ~200 kB
        g.write(b'{"traceEvents": [')
        chunk = b"0," * (1 << 20)
        for _ in range(100):
            g.write(chunk)
        g.write(b"0]}")
    assert bomb.stat().st_size < 1 * MiB
    out, grew = _peak_in_child(_CATCH.format(call=f"jouletrace.traces.load({str(bomb)!r})"),
                               {ENV_MAX_INPUT_BYTES: "64M"})
    assert out.startswith("TraceFormatError") and str(bomb) in out and ENV_MAX_INPUT_BYTES in out
    assert grew < 48 * MiB, grew


def test_npz_bomb_is_refused_before_inflating(saved: dict[str, Path], tmp_path: Path) -> None:
    members = npz_members(saved["plain"])
    n = 10_000_000  # 80 MB of zeros per member, deflated to ~80 kB each
    hdr = json.loads(np.load(io.BytesIO(members["metadata_json.npy"])).tobytes())
    hdr["n_samples"] = n
    members["metadata_json.npy"] = npy_bytes(np.frombuffer(json.dumps(hdr).encode(), np.uint8))
    for k in ("t_ns", "t_before_ns", "t_after_ns"):
        members[f"{k}.npy"] = npy_bytes(np.zeros(n, dtype=np.int64))
    bomb = write_npz(tmp_path / "bomb.npz", members, compress=True)
    assert bomb.stat().st_size < 2 * MiB
    out, grew = _peak_in_child(_CATCH.format(call=f"jouletrace.load({str(bomb)!r})"),
                               {ENV_MAX_INPUT_BYTES: "64M"})
    assert out.startswith("RecordingFormatError") and "input limit" in out, out
    assert grew < 24 * MiB, grew
    # the same file within a budget large enough: read (and refused for its missing seq)
    out, _ = _peak_in_child(_CATCH.format(call=f"jouletrace.load({str(bomb)!r}, max_bytes=2**31)"))
    assert "member 'seq' has shape (400,), expected (10000000,)" in out, out


def test_input_budget_default_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MAX_INPUT_BYTES, raising=False)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert input_budget() == max(MIN_DEFAULT_BUDGET, mem // 4)
    monkeypatch.setenv(ENV_MAX_INPUT_BYTES, "3G")
    assert input_budget() == 3 << 30
    assert input_budget(12345) == 12345
    monkeypatch.setenv(ENV_MAX_INPUT_BYTES, "lots")
    with pytest.raises(JouletraceError, match=ENV_MAX_INPUT_BYTES):
        input_budget()


def test_real_traces_fit_the_default_budget() -> None:
    # The real exports load unchanged, and a budget just below the JSON's needs refuses it.
    t = traces.load(DATA / "kineto-a100-nccl.json.gz")
    assert len(t) == 2700
    with pytest.raises(TraceFormatError, match="input limit"):
        traces.load(DATA / "kineto-a100-nccl.json.gz", max_bytes=8 * MiB)


# -- item 14: FIFOs and permissions ----------------------------------------------------


@pytest.mark.parametrize("argv", [("report", "{p}"), ("attribute", "{rec}", "--trace", "{p}")])
def test_fifo_is_refused_not_waited_on(saved: dict[str, Path], tmp_path: Path,
                                       argv: tuple[str, ...]) -> None:
    p = tmp_path / "pipe"
    os.mkfifo(p)
    args = [a.format(p=p, rec=saved["plain"]) for a in argv]
    rc, err = cli(*args)
    assert rc == 1 and "Traceback" not in err, err
    assert f"{p}: is a FIFO (named pipe), not a regular" in err


def _cli_without_root(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The CLI in a child; as root (which reads everything) it drops its effective uid first."""
    code = ("import os, sys\n"
            "import encodings.cp437, encodings.latin_1  # the stdlib may be root's only\n"
            "from jouletrace.cli import COMMANDS, _command, main\n"
            "for c in COMMANDS:  # each command's module too (the CLI imports the one it runs when it runs)\n"
            "    _command(c)\n"
            "if os.geteuid() == 0:\n"
            "    os.setegid(65534)\n"
            "    os.seteuid(65534)\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("kind", ["recording", "trace"])
def test_unreadable_file_is_a_permission_problem(saved: dict[str, Path], tmp_path: Path,
                                                 kind: str) -> None:
    # As root, the child runs as nobody: it must reach the readable file, so the files
    # live in a fresh directory under the world-searchable temporary directory.
    d = Path(tempfile.mkdtemp(prefix="jt-perm-")) if os.geteuid() == 0 else tmp_path
    try:
        os.chmod(d, 0o755)
        p = d / ("rec.npz" if kind == "recording" else "trace.json.gz")
        shutil.copyfile(saved["plain"] if kind == "recording" else KINETO_GZ, p)
        os.chmod(p, 0o000)
        readable = d / "readable.npz"
        shutil.copyfile(saved["plain"], readable)
        os.chmod(readable, 0o644)
        argv = (["report", str(p)] if kind == "recording"
                else ["attribute", str(readable), "--trace", str(p)])
        r = _cli_without_root(argv)
    finally:
        if d != tmp_path:
            shutil.rmtree(d)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{p}: permission denied" in r.stderr and "chmod" in r.stderr, r.stderr
    assert "corrupt" not in r.stderr


def test_directories_and_devices(tmp_path: Path) -> None:
    refused(jouletrace.load, tmp_path, RecordingFormatError, "folder, not a recording")
    refused(traces.load, tmp_path, TraceFormatError, "directory")
    dev = Path("/dev/zero")  # would read forever
    with pytest.raises(TraceFormatError, match="/dev/zero: is a character device"):
        traces.load(dev)
    with pytest.raises(RecordingFormatError, match="/dev/zero: is a character device"):
        jouletrace.load(dev)


# -- the seeded batch ------------------------------------------------------------------

NASTY: list[Any] = [
    None, True, -1, 0, 2**31, 2**40, I64_MAX, I64_MAX + 1, -(2**63) - 1, 10**30, 1.5, 1e308,
    "", "x", "\u00b2", "\u0661", "9" * 30, [], {}, [[[[[]]]]], {"a": {"b": {}}}, "-" * 3,
]


def _bitflips(rng: random.Random, data: bytes, n: int) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _byte_mutation(rng: random.Random, data: bytes) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return data[: rng.randrange(len(data))]
    if kind == 1:
        return _bitflips(rng, data, rng.choice((1, 2, 8, 64)))
    if kind == 2:
        i = rng.randrange(len(data))
        return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 32))) + data[i:]
    if kind == 3:
        i = rng.randrange(len(data))
        return data[:i] + data[i + rng.randrange(1, 64):]
    i = rng.randrange(len(data))
    return data[:i] + b"\xff" * rng.randrange(1, 16) + data[i + 8:]


def _walk(x: Any, rng: random.Random, value: Any) -> Any:
    """Replace one random leaf/member somewhere inside ``x`` by ``value``."""
    if isinstance(x, dict) and x:
        k = rng.choice(list(x))
        x[k] = value if rng.random() < 0.3 else _walk(x[k], rng, value)
        return x
    if isinstance(x, list) and x:
        i = rng.randrange(len(x))
        x[i] = value if rng.random() < 0.3 else _walk(x[i], rng, value)
        return x
    return value


def make_cases(d: Path, seed: int = 20240611) -> list[tuple[str, str]]:
    """(reader, path) pairs: ~300 hostile files built from the real ones."""
    rng = random.Random(seed)
    cases: list[tuple[str, str]] = []
    rec = small_recording()
    plain = Path(rec.save(d / "r-plain.npz"))
    comp = Path(rec.save(d / "r-comp.npz", compress=True))
    originals = {
        "rec": [plain.read_bytes(), comp.read_bytes()],
        "trace": [NSYS.read_bytes(), KINETO_GZ.read_bytes(), gzip.decompress(KINETO_GZ.read_bytes())],
    }
    csv_path = d / "t.csv"
    traces.plain.write_csv(csv_path, traces.load(KINETO_GZ))
    originals["trace"].append(csv_path.read_bytes())
    suffix = {0: ".sqlite", 1: ".json.gz", 2: ".json", 3: ".csv"}
    k = 0
    for reader, blobs in originals.items():  # byte-level mutations
        for j, blob in enumerate(blobs):
            for _ in range(40 if reader == "trace" else 50):
                p = d / f"m{k}{suffix[j] if reader == 'trace' else '.npz'}"
                p.write_bytes(_byte_mutation(rng, blob))
                cases.append((reader, str(p)))
                k += 1
    doc = kineto_doc()
    for i in range(50):  # structural: Kineto values
        mutated = _walk(json.loads(json.dumps(doc)), rng, rng.choice(NASTY))
        p = write_json(d / (f"k{i}.json" + (".gz" if i % 2 else "")), mutated, gz=bool(i % 2))
        cases.append(("trace", str(p)))
    nsys_cols = {"CUPTI_ACTIVITY_KIND_KERNEL": ["start", "end", "deviceId", "streamId",
                                                "correlationId", "demangledName", "shortName",
                                                "globalPid"],
                 "StringIds": ["id", "value"], "NVTX_EVENTS": ["start", "end", "text", "textId"],
                 "TARGET_INFO_GPU": ["id", "busLocation", "uuid", "cuDevice"],
                 "TARGET_INFO_SESSION_START_TIME": ["utcEpochNs"],
                 "TARGET_INFO_CUDA_DEVICE": ["cudaId", "pid", "gpuId"]}
    sql_values = ["'text'", "x'00ff'", "1.5", str(2**62), str(-(2**63)), str(I64_MAX), "NULL",
                  "-1", "'\u00b2'", str(2**40)]
    for i in range(60):  # structural: nsys cells
        table = rng.choice(list(nsys_cols))
        col = rng.choice(nsys_cols[table])
        where = "" if rng.random() < 0.3 else " WHERE rowid = 1"
        stmt = f'UPDATE {table} SET "{col}" = {rng.choice(sql_values)}{where}'
        try:
            p = nsys_copy(d, f"n{i}.sqlite", [stmt], NSYS_OLD if table == "NVTX_EVENTS" else NSYS)
        except sqlite3.Error:  # no such table in that file; a key column refusing text
            continue
        cases.append(("trace", str(p)))
    for i in range(40):  # structural: recording headers
        v_i, r_i = rng.choice(NASTY), rng.randrange(10**6)

        def edit(h: dict[str, Any], v: Any = v_i, r: int = r_i) -> None:
            _walk(h, random.Random(r), v)
        p = with_header(plain, d / f"h{i}.npz", edit, compress=bool(i % 2))
        cases.append(("rec", str(p)))
    return cases


def check_case(reader: str, path: str) -> str:
    """"ok", "refused", or what went wrong (for the report)."""
    try:
        if reader == "rec":
            rec = jouletrace.load(path)
            assert len(rec.t_ns) == len(rec.seq) and not np.any(np.diff(rec.t_ns) < 0)
            assert isinstance(rec.metadata, dict)
        else:
            t = traces.load(path)
            assert np.all(t.end_ns >= t.start_ns) and np.all(np.diff(t.start_ns) >= 0)
            assert len(t) == 0 or (t.device.min() >= -1 and t.name_id.max() < len(t.names))
            assert len(t) == 0 or t.clock != "epoch" or t.start_ns.min() >= 0
        return "ok"
    except JouletraceError as e:
        return "refused" if path in str(e) else f"unnamed {type(e).__name__}: {e}"
    except FileNotFoundError as e:
        return f"missing: {e}"
    except BaseException as e:  # noqa: BLE001 - this is what the fuzz looks for
        return f"{type(e).__name__}: {str(e)[:300]}"


def _worker(d: str) -> None:
    cases = make_cases(Path(d))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = []
    for reader, path in cases:
        t0 = time.monotonic()
        res = check_case(reader, path)
        out.append({"path": path, "result": res, "s": time.monotonic() - t0})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"cases": out, "grew": (peak - base) * 1024}))


def test_seeded_fuzz_batch(tmp_path: Path) -> None:
    env = {**os.environ, ENV_MAX_INPUT_BYTES: "64M", "OPENBLAS_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, __file__, "worker", str(tmp_path)], capture_output=True,
                       text=True, timeout=50, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    cases = res["cases"]
    assert len(cases) >= 300
    bad = [c for c in cases if c["result"] not in ("ok", "refused")]
    assert not bad, "\n".join(f"{c['path']}: {c['result']}" for c in bad[:20])
    assert max(c["s"] for c in cases) < 5
    assert res["grew"] < 128 * MiB, res["grew"]
    # the batch exercises both outcomes of every reader
    refused_n = sum(c["result"] == "refused" for c in cases)
    assert refused_n > 100 and len(cases) - refused_n > 10


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(sys.argv[2])


# -- the longer, coverage-guided run (by hand: see the README) ---------------------------

def _long_run_settings() -> Any:
    from hypothesis import HealthCheck, settings

    return settings(max_examples=int(os.environ.get("JOULETRACE_FUZZ", "0") or 0) or 200,
                    deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("JOULETRACE_FUZZ"),
                    reason="set JOULETRACE_FUZZ=<examples> to run the long fuzz")
@pytest.mark.parametrize("which", ["rec-plain", "rec-compressed", "nsys", "kineto-gz",
                                   "kineto-json", "csv"])
def test_long_fuzz(which: str, tmp_path: Path, saved: dict[str, Path]) -> None:
    pytest.importorskip("hypothesis")
    from hypothesis import given
    from hypothesis import strategies as st

    base = {"rec-plain": saved["plain"], "rec-compressed": saved["compressed"], "nsys": NSYS,
            "kineto-gz": KINETO_GZ}.get(which)
    if which == "kineto-json":
        blob = gzip.decompress(KINETO_GZ.read_bytes())
    elif which == "csv":
        traces.plain.write_csv(tmp_path / "t.csv", traces.load(KINETO_GZ))
        blob = (tmp_path / "t.csv").read_bytes()
    else:
        blob = base.read_bytes()  # type: ignore[union-attr]
    reader = "rec" if which.startswith("rec") else "trace"
    suffix = {"nsys": ".sqlite", "kineto-gz": ".json.gz", "kineto-json": ".json",
              "csv": ".csv"}.get(which, ".npz")
    edits = st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 3),
                               st.binary(min_size=0, max_size=16)), min_size=1, max_size=8)

    @_long_run_settings()
    @given(edits=edits, cut=st.one_of(st.none(), st.integers(0, len(blob))))
    def run(edits: list[tuple[int, int, bytes]], cut: int | None) -> None:
        data = bytearray(blob if cut is None else blob[:cut])
        for pos, kind, payload in edits:
            pos = min(pos, len(data))
            if kind == 0 and pos < len(data):
                data[pos] ^= 0xFF
            elif kind == 1:
                data[pos:pos] = payload
            elif kind == 2:
                del data[pos:pos + len(payload) + 1]
            else:
                data[pos:pos + len(payload)] = payload
        p = tmp_path / f"case{suffix}"
        p.write_bytes(bytes(data))
        res = check_case(reader, str(p))
        assert res in ("ok", "refused"), res

    run()
