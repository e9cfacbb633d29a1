"""Streaming recordings (issue 15): bytes on disk, memory over simulated hours, sampler timing, windows at 30 days.

1. **Disk and memory over hours, faster than real time.** The streaming writer
   (:class:`jouletrace.energy.stream.Streamer`, the code a streaming Sampler runs) is driven
   with a stand-in for the native sampler whose columns are generated on demand: one GPU polled
   at 1 kHz (±30 µs jitter, reads of 5–25 µs), an NVML-like sensor updating every 100 ms (an
   mJ counter and instant power with NVML timestamps; the power level changes at every update,
   as under a training load), a clock pair a second. Each flush hands the writer the next
   0.5 s of polls, as the real one does. Reported: bytes on disk per GPU-hour, and the
   process's resident memory after 1 h and 10 h of data. The native side's memory is shown by
   a real Sampler fed with ``inject_for_test`` while ``release_before`` gives back what was
   written (``committed_bytes`` flat).
2. **Sampler timing with streaming on and off**: real Sampler("sim") at 1 kHz, main thread
   busy in Python, p50/p99/max of |interval − period|. ``--timing-pairs N`` alternates the two
   N times (paired); ``--compare slice`` alternates the sampler thread's wake slice off and on
   while streaming.
3. **1 M windows over a 30-day compacted recording of one GPU** (synthesised: the rows the
   compaction keeps, two per update, 100 ms updates; energy counter only), in memory.
4. **A 30-day streamed recording read block by block** (synthetic, written by
   ``StreamWriter`` as a streaming sampler would: the rows compaction keeps of one GPU polled at
   1 kHz against a 100 ms NVML-like sensor: energy counter, power and their NVML timestamps):
   peak resident memory of ``jouletrace report`` on it (``ru_maxrss`` of the child process),
   its wall time, and 1 M random windows over it through
   :class:`jouletrace.energy.blocks.BlockRecording` (time and peak memory, in a child process).

    python bench/bench_stream.py [--hours 10] [--skip-30d] [--blocks-30d-only] [--days 30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import threading
import time

import numpy as np

import jouletrace
from jouletrace import _core
from jouletrace.energy.stream import Streamer
from jouletrace.sampling.sim import SimGPU

RATE = 1000.0
PERIOD_NS = 100_000_000
EPOCH = 1_700_000_000_000_000_000


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _Column:
    """Rows [a, b) of one synthetic column, computed when sliced (nothing is held)."""

    def __init__(self, feed: _Feed, name: str) -> None:
        self.feed, self.name = feed, name

    def __len__(self) -> int:
        return self.feed.n

    def __getitem__(self, sl: slice) -> np.ndarray:
        a, b, _ = sl.indices(self.feed.n)
        return self.feed.rows(a, b)[self.name]


class _Feed:
    """A stand-in for the native sampler: 1 kHz polls of an NVML-like 100 ms sensor, made on demand."""

    channels = [("gpu0.energy_j", True), ("gpu0.power_w", False), ("gpu0.energy_ts_us", False),
                ("gpu0.power_ts_us", False)]
    config = _core.SamplerConfig(rate_hz=RATE)
    running = False
    dropped_ring = dropped_storage = missed_deadlines = 0

    def __init__(self) -> None:
        self.n = 0
        self.t0 = 1_000_000_000_000
        self.phase = 37_000_000
        self._cache: tuple[int, int, dict[str, np.ndarray]] | None = None

    @property
    def reads(self) -> int:
        return self.n

    def drain(self) -> None:
        pass

    def release_before(self, n: int) -> None:
        pass

    clock_pairs_released = 0

    def release_clock_pairs_before(self, n: int) -> None:
        self.clock_pairs_released = max(self.clock_pairs_released, min(n, int(self.n / RATE) + 1))

    def clock_pairs(self, start: int = 0) -> np.ndarray:
        secs = int(self.n / RATE)
        k = np.arange(max(start, self.clock_pairs_released), secs + 1, dtype=np.int64)
        mono = self.t0 + k * 1_000_000_000
        return np.stack([mono, mono + EPOCH, np.full(k.size, 40)], axis=1)

    def _power(self, k: np.ndarray) -> np.ndarray:
        # A level per sensor period, reproducible from its number (a training-like load).
        return 150.0 + 300.0 * ((k * 2654435761) % 1000) / 1000.0

    def rows(self, a: int, b: int) -> dict[str, np.ndarray]:
        if self._cache is not None and self._cache[:2] == (a, b):
            return self._cache[2]
        i = np.arange(a, b, dtype=np.int64)
        rng = np.random.default_rng(a)
        tb = self.t0 + i * 1_000_000 + rng.integers(0, 30_000, i.size)
        ta = tb + rng.integers(5_000, 25_000, i.size)
        t = tb + (ta - tb) // 2
        k = (tb - self.phase) // PERIOD_NS  # updates seen by the read (at its start)
        p = self._power(k)
        # Counter: the energy of every whole period before update k, in mJ.
        e = np.floor(k * 0.1 * 300.0 * 1000.0 + p * 0) / 1000.0  # mean 300 W: 30 J a period
        e = np.floor((k * 30.0 + (self._power(k) - 300.0) * 0.1) * 1000.0) / 1000.0
        ts = ((self.phase + k * PERIOD_NS + EPOCH) // 1000).astype(np.float64)
        out = {"t_ns": t, "t_before_ns": tb, "t_after_ns": ta, "seq": i.astype(np.uint64),
               "status": np.zeros(i.size, np.int32), "values": None}
        vals = {"gpu0.energy_j": e, "gpu0.power_w": p, "gpu0.energy_ts_us": ts, "gpu0.power_ts_us": ts}
        out.update(vals)
        self._cache = (a, b, out)
        return out

    def columns(self) -> dict[str, object]:
        cols: dict[str, object] = {k: _Column(self, k) for k in ("t_ns", "t_before_ns", "t_after_ns", "seq", "status")}
        cols["values"] = {c: _Column(self, c) for c, _ in self.channels}
        return cols


class _FakeSampler:
    def __init__(self, feed: _Feed) -> None:
        self._native = feed


def disk_and_memory(hours: float, folder: str) -> dict[str, float]:
    feed = _Feed()
    path = os.path.join(folder, "hours.jt")
    st = Streamer(_FakeSampler(feed), path, keep_s=600.0, flush_s=0.5, metadata={"source": "bench"})
    step = int(RATE * 0.5)
    out: dict[str, float] = {"rss_start_mb": _rss_mb()}
    t_start = time.perf_counter()
    marks = {0.5, 1.0, hours}
    while feed.n < hours * 3600 * RATE:
        feed.n += step
        st.tick(final=False)
        h = feed.n / RATE / 3600
        if any(abs(h - m) < 1e-9 for m in marks):
            out[f"rss_{h:g}h_mb"] = _rss_mb()
            out[f"disk_{h:g}h_bytes"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    out["clock_pairs_held"] = len(feed.clock_pairs(0))  # before the end: the writer's releases over the run
    out["clock_pairs_taken"] = int(feed.n / RATE) + 1
    st.tick(final=True)
    st.writer.end({})
    if st.error is not None:
        raise st.error
    out["wall_s"] = time.perf_counter() - t_start
    out["rows"] = st.writer.rows
    out["polls"] = feed.n
    out["mb_per_gpu_hour"] = out[f"disk_{hours:g}h_bytes"] / hours / 1e6
    rec = jouletrace.load(path)
    out["loaded_rows"] = len(rec)
    return out


def native_memory(folder: str) -> list[int]:
    """A real Sampler's committed memory while 10 M records pass and the writer's releases follow."""
    s = jouletrace.Sampler("sim", rate_hz=RATE)
    seen = []
    for _ in range(10):
        s._native.inject_for_test(1_000_000)
        s._native.release_before(max(0, s._native.size - 600_000))
        seen.append(s.memory_bytes)
    return seen


def timing(seconds: float, folder: str) -> dict[str, tuple[float, float, float]]:
    out = {}
    sim = SimGPU()
    for label, kw in (("off", {}), ("on", {"stream_to": tempfile.mkdtemp(dir=folder) + "/timing.jt", "keep_s": None})):
        stop = threading.Event()
        s = jouletrace.Sampler("sim", sim=sim, rate_hz=RATE, **kw)
        s.start()
        t_end = time.monotonic() + seconds
        x = 0
        while time.monotonic() < t_end:  # the main thread busy in Python
            x += 1
        s.stop()
        stop.set()
        t = np.asarray(s.recording().t_before_ns)
        dev = np.abs(np.diff(t) - 1e9 / RATE) / 1000.0
        out[label] = (float(np.percentile(dev, 50)), float(np.percentile(dev, 99)), float(dev.max()))
    sim.close()
    return out


def timing_paired(pairs: int, seconds: float, folder: str, busy: bool = True,
                  compare: str = "stream") -> dict[str, object]:
    """Two settings alternated ``pairs`` times (``seconds`` each): whatever else the machine does
    drifts slowly, so each pair's difference of p99 cancels it; the count of pairs where the second
    setting's p99 is higher is the sign test (no timed assert: a figure for RESULTS).
    ``compare="stream"``: streaming off, then on (the sampler's default wake slice in both);
    ``compare="slice"``: streaming on in both, the sampler thread without, then with its short
    scheduling slice (``wake_slice``)."""
    def settings(i: int) -> dict[str, object]:
        return {"keep_s": None, "stream_to": tempfile.mkdtemp(dir=folder) + f"/timing{i}.jt"}
    if compare == "stream":
        labels = (("off", lambda i: {}), ("on", settings))
    else:
        labels = (("off", lambda i: {**settings(i), "wake_slice": False}), ("on", settings))
    p99: dict[str, list[float]] = {"off": [], "on": []}
    late: dict[str, list[float]] = {"off": [], "on": []}
    sim = SimGPU()
    for i in range(pairs):
        for label, make in (labels if i % 2 == 0 else labels[::-1]):
            s = jouletrace.Sampler("sim", sim=sim, rate_hz=RATE, **make(i))
            s.start()
            t_end = time.monotonic() + seconds
            x = 0
            while busy and time.monotonic() < t_end:  # the main thread busy in Python
                x += 1
            if not busy:
                time.sleep(seconds)
            s.stop()
            t = np.asarray(s.recording().t_before_ns)
            dev = np.abs(np.diff(t) - 1e9 / RATE) / 1000.0
            p99[label].append(float(np.percentile(dev, 99)))
            late[label].append(float(np.mean(dev > 100.0)))
    sim.close()
    d = np.array(p99["on"]) - np.array(p99["off"])
    names = {"stream": ("streaming off", "streaming on"), "slice": ("no wake slice", "wake slice")}[compare]
    return {"pairs": pairs, "off": names[0], "on": names[1],
            "p99_off_median_us": float(np.median(p99["off"])),
            "p99_on_median_us": float(np.median(p99["on"])), "p99_diff_median_us": float(np.median(d)),
            "on_higher_in": int(np.sum(d > 0)), "late_100us_off": float(np.median(late["off"])),
            "late_100us_on": float(np.median(late["on"]))}


def windows_30_days(n_windows: int = 1_000_000) -> dict[str, float]:
    days = 30
    n_upd = int(days * 86400 * 1e9 / PERIOD_NS)
    rng = np.random.default_rng(0)
    k = np.arange(n_upd, dtype=np.int64)
    upd_t = 1_000_000_000 + k * PERIOD_NS + 37_000_000
    # The two kept polls around each update: the last before (1 ms earlier at most) and the first after.
    before = upd_t - rng.integers(1_000, 999_000, n_upd)
    after = before + 1_000_000
    t = np.empty(2 * n_upd, np.int64)
    t[0::2], t[1::2] = before, after
    del before, after
    tb = t - 10_000
    ta = t + 10_000
    p = 150.0 + 300.0 * rng.random(n_upd)
    e_after = np.floor(np.cumsum(p * 0.1) * 1000.0) / 1000.0
    e = np.empty(2 * n_upd)
    e[1::2] = e_after
    e[0::2] = np.concatenate([[0.0], e_after[:-1]])
    del e_after, p
    rec = jouletrace.Recording(t_ns=t, t_before_ns=tb, t_after_ns=ta, seq=np.arange(t.size, dtype=np.uint64),
                               status=np.zeros(t.size, np.int32), values={"gpu0.energy_j": e},
                               cumulative={"gpu0.energy_j": True},
                               clock_pairs=np.array([[t[0], t[0] + EPOCH, 40]]), metadata={"source": "bench"})
    t0 = rng.integers(int(t[0]), int(t[-1]) - 10_000_000_000, n_windows)
    t1 = t0 + rng.integers(1_000_000, 10_000_000_000, n_windows)
    a = time.perf_counter()
    rec.updates("gpu0")
    placed = time.perf_counter() - a
    a = time.perf_counter()
    rec.energies(t0, t1, edges="independent")
    first = time.perf_counter() - a
    a = time.perf_counter()
    rec.energies(t0, t1, edges="independent")
    again = time.perf_counter() - a
    return {"rows": float(t.size), "placement_s": placed, "first_1M_windows_s": first, "next_1M_windows_s": again,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def write_long(path: str, days: float, seed: int = 0) -> int:
    """A streamed recording of ``days`` of one GPU (module docstring, 4), written an hour at a time."""
    from jouletrace.energy.stream import StreamWriter

    chans = [("gpu0.energy_j", True), ("gpu0.power_w", False), ("gpu0.energy_ts_us", False),
             ("gpu0.power_ts_us", False)]
    w = StreamWriter(path, chans, {"source": "sim", "rate_hz": RATE, "device": {"gpu0.power_limit_w": "700"}},
                     commit_every=1)
    rng = np.random.default_rng(seed)
    per_hour = int(3600e9 // PERIOD_NS)
    n_upd = int(days * 86400e9 // PERIOD_NS)
    e_last, p_last, rows, seq0 = 0.0, 300.0, 0, 0
    t_first = 1_000_000_000
    for k0 in range(0, n_upd, per_hour):
        k = np.arange(k0, min(k0 + per_hour, n_upd), dtype=np.int64)
        upd_t = t_first + 37_000_000 + k * PERIOD_NS
        before = upd_t - rng.integers(1_000, 999_000, k.size)  # the last poll before the update
        after = before + 1_000_000  # the first poll after it
        t = np.empty(2 * k.size, np.int64)
        t[0::2], t[1::2] = before, after
        p = 150.0 + 300.0 * rng.random(k.size)
        e_after = e_last + np.floor(np.cumsum(p * 0.1) * 1000.0) / 1000.0
        e = np.empty(t.size)
        e[1::2], e[0::2] = e_after, np.concatenate([[e_last], e_after[:-1]])
        pw = np.empty(t.size)
        pw[1::2], pw[0::2] = p, np.concatenate([[p_last], p[:-1]])
        st = ((upd_t + EPOCH) // 1000).astype(np.float64)
        prev = st[0] - PERIOD_NS // 1000
        ts = np.empty(t.size)
        ts[1::2], ts[0::2] = st, np.concatenate([[prev], st[:-1]])
        seq = np.empty(t.size, np.uint64)
        seq[0::2] = seq0 + (k - k0) * 100 + 99
        seq[1::2] = seq0 + (k - k0) * 100 + 100
        w.append("samples", {"t_ns": t, "t_before_ns": t - 10_000, "t_after_ns": t + 10_000, "seq": seq,
                             "status": np.zeros(t.size, np.int32), "gpu0.energy_j": e, "gpu0.power_w": pw,
                             "gpu0.energy_ts_us": ts, "gpu0.power_ts_us": ts})
        secs = np.arange(int(t[0] // 1_000_000_000), int(t[-1] // 1_000_000_000) + 1) * 1_000_000_000
        w.append("clock_pairs", {"monotonic_ns": secs, "realtime_ns": secs + EPOCH, "uncertainty_ns": np.full(secs.size, 40)})
        rows += t.size
        seq0 = int(seq[-1])
        w.append("stats", {"t_ns": [int(t[-1])], "polls": [seq0], "rows": [rows], "reads": [seq0], "dropped_ring": [0],
                           "dropped_storage": [0], "missed_deadlines": [0]})
        w.flush()
        e_last, p_last = float(e_after[-1]), float(p[-1])
    w.end({"source": "sim", "rate_hz": RATE, "device": {"gpu0.power_limit_w": "700"}})
    return rows


_CHILD_WINDOWS = """
import resource, sys, time
import numpy as np
from jouletrace.energy.blocks import open_blocks
t = time.perf_counter()
rec = open_blocks(sys.argv[1], 1 << 19)
rng = np.random.default_rng(0)
a0, a1 = rec.t_first_ns, rec.t_last_ns
t0 = rng.integers(a0, a1 - 10_000_000_000, int(sys.argv[2]))
t1 = t0 + rng.integers(1_000_000, 10_000_000_000, t0.size)
opened = time.perf_counter() - t
t = time.perf_counter()
rec.update_period_ns("gpu0.energy_j")
plan = time.perf_counter() - t
t = time.perf_counter()
out = rec.energies(t0, t1, edges="independent")
first = time.perf_counter() - t
hwm = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")][0]
print(rec.rows, opened, plan, first, float(np.nansum(out.energy_j["gpu0"])), hwm / 1024)
"""


def blocks_30_days(folder: str, days: float, n_windows: int = 1_000_000) -> dict[str, float]:
    """Write the long recording, then report it and take 1 M windows over it in child processes."""
    import subprocess
    import sys

    path = os.path.join(folder, "month.jt")
    a = time.perf_counter()
    rows = write_long(path, days)
    out: dict[str, float] = {"days": days, "rows": rows, "write_s": time.perf_counter() - a,
                             "disk_mb": sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1e6}
    # Peak resident memory of the report from /usr/bin/time -v (its child is forked from `time`, a
    # small process: ru_maxrss would otherwise carry a forked parent's pages).
    a = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "jouletrace", "report", "--json", path],
                       capture_output=True, text=True)
    out["report_s"] = time.perf_counter() - a
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    out["report_peak_rss_mb"] = [int(x.split(":")[1]) for x in r.stderr.splitlines()
                                 if "Maximum resident set size" in x][0] / 1024
    out["report_energy_j"] = json.loads(r.stdout)["devices"][0]["energy_j"]
    r = subprocess.run([sys.executable, "-c", _CHILD_WINDOWS, path, str(n_windows)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    n, opened, plan, first, _total, rss = (float(x) for x in r.stdout.split())
    out.update({"open_s": opened, "plan_pass_s": plan, "1M_windows_s": first, "windows_peak_rss_mb": rss})
    return out


def test_bench_stream_runs_once(tmp_path: object) -> None:
    """The paired timing (both comparisons) and the writer driven over simulated time, briefly, so
    this file's code cannot rot (its figures come from full runs: bench/RESULTS.md)."""
    for compare in ("stream", "slice"):
        out = timing_paired(1, 0.2, str(tmp_path), compare=compare)
        assert out["pairs"] == 1 and np.isfinite(out["p99_on_median_us"]) and np.isfinite(out["p99_off_median_us"])
    dm = disk_and_memory(0.005, str(tmp_path))  # 18 s of polls: 36 flushes
    assert dm["loaded_rows"] == dm["rows"] > 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=3.0, help="each timing run")
    ap.add_argument("--skip-30d", action="store_true")
    ap.add_argument("--timing-pairs", type=int, metavar="N", help="only: streaming off/on alternated N times")
    ap.add_argument("--idle-main", action="store_true", help="with --timing-pairs: the main thread sleeps")
    ap.add_argument("--compare", choices=("stream", "slice"), default="stream",
                    help="with --timing-pairs: streaming off/on (default), or the wake slice off/on while streaming")
    ap.add_argument("--blocks-30d-only", action="store_true", help="only part 4 (a month read block by block)")
    ap.add_argument("--days", type=float, default=30.0, help="length of part 4's recording")
    args = ap.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="jt-bench-stream-")
    try:
        if args.timing_pairs:
            print("timing, paired:", timing_paired(args.timing_pairs, args.seconds, folder, busy=not args.idle_main,
                                                      compare=args.compare),
                  flush=True)
            return
        if args.blocks_30d_only:
            print(f"{args.days:g} days read block by block:", blocks_30_days(folder, args.days), flush=True)
            return
        print("disk and memory:", disk_and_memory(args.hours, folder), flush=True)
        print("native committed bytes per 1 M records streamed:", native_memory(folder), flush=True)
        print("timing p50/p99/max µs:", timing(args.seconds, folder), flush=True)
        if not args.skip_30d:
            print("30 days:", windows_30_days(), flush=True)
            print(f"{args.days:g} days read block by block:", blocks_30_days(folder, args.days), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
