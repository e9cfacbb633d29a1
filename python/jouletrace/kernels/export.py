"""Power and energy beside the kernels, on one timeline: Chrome-trace JSON for Perfetto.

:func:`write_perfetto` writes a trace that ui.perfetto.dev (and chrome://tracing)
opens: the kernels of a :class:`~jouletrace.kernels.traces.KernelTable` as slices on
one process per GPU ("GPU 0") and one thread per stream, the trace's NVTX /
annotation ranges on a host process, the recording's windows (Monitor windows,
``jouletrace record``'s command: ``metadata["windows"]``) as slices on a
process of their own ("jouletrace windows", :func:`window_events`: name, edges,
energy ± bound and work in ``args``), and jouletrace's channels as counter
tracks beside them:

* ``<device> power (W)``: a power channel (``gpu0.power_w``), at each change;
* ``<device> power from counter (W)``: the mean power over each interval between
  two counter updates (a step at each update), from an energy counter;
* ``<device> energy (J)``: the counter's energy since the first sample, at each update.

GPU counter tracks sit in the same process as that GPU's kernels (devices
matched as in :func:`jouletrace.attribute.device_channels`). Per-launch and per-name
results, when given, are added to each kernel's ``args`` under ``jouletrace``.

:func:`merge_kineto` keeps a PyTorch profiler trace as it is (every event,
every key, numbers as written) and appends the counter tracks in the trace's
own time base (``ts`` in µs after ``baseTimeNanoseconds``, or absolute epoch µs
for old traces).

Times are written as exact decimal microseconds (three decimals: ns), relative
to ``baseTimeNanoseconds`` (which the output carries, as Kineto does), so the
file loads back with :func:`jouletrace.kernels.traces.load_kineto` with every kernel
time exact.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._json import plain
from .._safe_output import write_bytes
from ..energy.measurement import counts_in_total
from ..energy.recording import Recording
from ..energy.windows import flag_names
from ..errors import TraceFormatError
from .alignment import Alignment, align, device_channels
from .traces.kineto import load_kineto, us_to_ns
from .traces.table import KernelTable

if TYPE_CHECKING:  # for annotations only: exporting loads no attribution code
    from .attribution.tables import LaunchEnergies, NameEnergies

__all__ = ["write_perfetto", "merge_kineto", "counter_tracks", "window_events"]

#: Process id of the host-side ranges (NVTX, user annotations) in jouletrace's own traces.
HOST_PID = 1_000_000
#: Counter tracks of channels that match no GPU of the trace go to HOST_PID + 1 + n.
#: Process id of the recording's windows (:func:`window_events`).
WINDOWS_PID = HOST_PID - 1

_RAW = "\x00F"
_RAW_END = "\x00"
_RAW_RE = re.compile(r'"\\u0000F(-?[0-9][0-9.eE+\-]*)\\u0000"')


def _raw(text: str) -> str:
    """Mark a number's exact text so that it is written unquoted (see :func:`_dumps`)."""
    return _RAW + text + _RAW_END


def _us(ns: int) -> str:
    """Exact decimal microseconds with three decimals."""
    sign = "-" if ns < 0 else ""
    a = -ns if ns < 0 else ns
    return f"{sign}{a // 1000}.{a % 1000:03d}"


def _ts_list(ns: np.ndarray) -> list[str]:
    return [_raw(_us(x)) for x in ns.tolist()]


def _dumps(doc: Any) -> str:
    text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    return _RAW_RE.sub(r"\1", text)


def _clean(x: Any) -> Any:
    """A JSON-safe plain value: NaN/inf -> None, numpy -> Python (:func:`jouletrace._json.plain`)."""
    return plain(x, nonfinite=None)


def _read_json_exact(path: str) -> Any:
    """A JSON file (plain or gzip) with every non-integer number kept as its exact text."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return json.loads(raw, parse_float=_raw)
    except (OSError, EOFError, ValueError) as exc:
        raise TraceFormatError(f"{path}: cannot read it as a (gzip) JSON trace: {exc}") from None


def _write(path: str | os.PathLike[str], text: str) -> str:
    path = os.fspath(path)
    data = text.encode("utf-8")
    if path.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return write_bytes(path, data)


# ---------------------------------------------------------------------------------------------
# Counter tracks
# ---------------------------------------------------------------------------------------------
def _device_key(channel: str) -> str:
    return channel.rsplit(".", 1)[0]


def counter_tracks(
    recording: Recording,
    to_trace: Callable[[np.ndarray], np.ndarray],
    base_ns: int,
    pid_of: dict[str, int],
    channels: Iterable[str] | None = None,
    *,
    t_range_ns: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Counter events (``ph: "C"``) for a recording's energy and power channels.

    ``to_trace`` maps CLOCK_MONOTONIC ns to the output's clock; ``base_ns`` is
    subtracted before writing µs; ``pid_of`` gives the process of a device key
    (``gpu0``), others get their own. ``t_range_ns`` (CLOCK_MONOTONIC) keeps
    only that stretch (plus the update before it, so the tracks start with a
    value). Returns event dicts whose ``ts`` are exact decimal text.
    """
    chans = list(channels) if channels is not None else list(recording.channels)
    events: list[dict[str, Any]] = []
    extra = 0
    names: dict[int, str] = {}
    for ch in chans:
        cum = recording.is_cumulative(ch)
        if not (cum and ch.endswith("_j")) and not (not cum and ch.endswith("_w")):
            continue  # timestamps and other levels: no track
        key = _device_key(ch)
        pid = pid_of.get(key)
        if pid is None:
            pid = pid_of[key] = HOST_PID + 1 + extra
            extra += 1
            names[pid] = f"jouletrace {key}"
        t = np.asarray(recording.t_ns, dtype=np.int64)
        v = np.asarray(recording[ch], dtype=np.float64)
        if cum:
            # The counter updates as the windows place them (NVML timestamps, the periodic
            # grid), so these tracks agree with Recording.energies and Recording.power.
            loc = recording.updates(ch)
            ut, uv = np.asarray(loc.t_ns, dtype=np.int64), np.asarray(loc.value, dtype=np.float64)
            ok = np.isfinite(v)
            if ut.size == 0 or not ok.any():
                continue
            first_v = v[ok][0]
            sel = _in_range(ut, t_range_ns)
            et = np.concatenate([[t[ok][0]], ut])
            ev = np.concatenate([[0.0], uv - first_v])
            esel = np.concatenate([[t_range_ns is None], sel])
            _emit(events, f"{key} energy (J)", "J", pid, to_trace(et[esel]) - base_ns, ev[esel])
            if ut.size >= 2:
                dt = np.diff(ut).astype(np.float64) * 1e-9
                p = np.diff(uv) / np.where(dt > 0, dt, np.nan)
                good = np.isfinite(p) & sel[:-1]
                # A step at each update: the mean power of the interval that begins there.
                pt = np.concatenate([ut[:-1][good], ut[-1:]])
                pv = np.concatenate([p[good], [p[good][-1] if good.any() else 0.0]])
                _emit(events, f"{key} power from counter (W)", "W", pid, to_trace(pt) - base_ns, pv)
        else:
            ok = np.isfinite(v)
            tt, vv = t[ok], v[ok]
            if tt.size == 0:
                continue
            chg = np.concatenate([[True], vv[1:] != vv[:-1]])
            chg[-1] = True  # the last reading, so the track spans the recording
            tt, vv = tt[chg], vv[chg]
            sel = _in_range(tt, t_range_ns)
            label = "power average (W)" if ch.endswith("power_avg_w") else "power (W)"
            _emit(events, f"{key} {label}", "W", pid, to_trace(tt[sel]) - base_ns, vv[sel])
    for pid, name in names.items():
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}})
    return events


def _in_range(t: np.ndarray, r: tuple[int, int] | None) -> np.ndarray:
    if r is None:
        return np.ones(t.shape, dtype=bool)
    inside = (t >= r[0]) & (t <= r[1])
    # keep the point just before the range so the track has a value at its start
    i = int(np.searchsorted(t, r[0], side="right")) - 1
    if 0 <= i < t.size:
        inside[i] = True
    return inside


def _emit(events: list[dict[str, Any]], name: str, unit: str, pid: int, rel_ns: np.ndarray,
          values: np.ndarray) -> None:
    for ts, val in zip(_ts_list(np.asarray(rel_ns, dtype=np.int64)), values.tolist(), strict=True):
        if val == val and abs(val) != float("inf"):
            events.append({"ph": "C", "name": name, "pid": pid, "tid": 0, "ts": ts,
                           "cat": "jouletrace", "args": {unit: val}})


# ---------------------------------------------------------------------------------------------
# Windows (Monitor windows, ``jouletrace record``'s command) as slices
# ---------------------------------------------------------------------------------------------
def window_events(
    recording: Recording,
    to_trace: Callable[[np.ndarray], np.ndarray],
    base_ns: int,
    *,
    t_range_ns: tuple[int, int] | None = None,
    pid: int = WINDOWS_PID,
) -> list[dict[str, Any]]:
    """Slices (``ph: "X"``, ``cat: "jouletrace.window"``) for the windows of
    ``recording.metadata["windows"]``, on a process of their own ("jouletrace windows").

    Each slice is named as the window and spans its edges (CLOCK_MONOTONIC, mapped
    by ``to_trace``); its ``args`` hold the energy per device and the total, each with
    its bound (direct: :meth:`Recording.energies <jouletrace.Recording.energies>`
    over the window, the same placement as the counter tracks), the flags, and the
    window's work with the energy per unit. Overlapping windows go to separate
    rows (threads) so that none hides another; a window nested in another stays
    on its row. ``t_range_ns`` keeps the windows that overlap it.
    """
    wins = [w for w in (recording.metadata.get("windows") or [])
            if isinstance(w, dict) and w.get("t0_ns") is not None and w.get("t1_ns") is not None]
    if t_range_ns is not None:
        wins = [w for w in wins if int(w["t1_ns"]) >= t_range_ns[0] and int(w["t0_ns"]) <= t_range_ns[1]]
    if not wins or len(recording) < 2:
        return []
    wins.sort(key=lambda w: (int(w["t0_ns"]), -int(w["t1_ns"])))
    t0 = np.array([int(w["t0_ns"]) for w in wins], dtype=np.int64)
    t1 = np.array([int(w["t1_ns"]) for w in wins], dtype=np.int64)
    we = recording.energies(t0, t1)
    keys = list(we.energy_j)
    total = np.zeros(t0.size)
    total_u = np.zeros(t0.size)
    for k in keys:
        if counts_in_total(k):
            total += we.energy_j[k]
            total_u += we.uncertainty_j[k]
    # Rows: a window goes on the first row whose open windows all contain it or have ended.
    rows: list[list[int]] = []  # per row: the stack of ends of windows still open there
    tid = np.zeros(t0.size, dtype=np.int64)
    for i in range(t0.size):
        for r, stack in enumerate(rows):
            while stack and stack[-1] <= t0[i]:
                stack.pop()
            if not stack or stack[-1] >= t1[i]:
                stack.append(int(t1[i]))
                tid[i] = r
                break
        else:
            rows.append([int(t1[i])])
            tid[i] = len(rows) - 1
    ts = _ts_list(np.asarray(to_trace(t0), dtype=np.int64) - base_ns)
    te = np.asarray(to_trace(t1), dtype=np.int64) - base_ns
    dur = _ts_list(np.maximum(te - (np.asarray(to_trace(t0), dtype=np.int64) - base_ns), 0))
    events: list[dict[str, Any]] = []
    for i, w in enumerate(wins):
        a: dict[str, Any] = {
            "energy_kind": "direct",
            "total_energy_j": _clean(total[i]),
            "total_bound_j": _clean(total_u[i]),
            "energy_j": {k: _clean(we.energy_j[k][i]) for k in keys},
            "bound_j": {k: _clean(we.uncertainty_j[k][i]) for k in keys},
            "flags": sorted({f for k in keys for f in flag_names(int(we.flags[k][i]))}),
            "t0_ns": int(t0[i]), "t1_ns": int(t1[i]),
        }
        work = w.get("work")
        if isinstance(work, dict) and work:
            a["work"] = {str(u): _clean(v) for u, v in work.items()}
            a["energy_per_unit_j"] = {str(u): _clean(total[i] / v) for u, v in work.items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0}
        events.append({"ph": "X", "cat": "jouletrace.window", "name": str(w.get("name")), "pid": pid,
                       "tid": int(tid[i]), "ts": ts[i], "dur": dur[i], "args": a})
    events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": "jouletrace windows"}})
    return events


# ---------------------------------------------------------------------------------------------
# Per-kernel args from attribution results
# ---------------------------------------------------------------------------------------------
def _kernel_args(n: int, launches: LaunchEnergies | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    if launches is not None:
        idx = np.asarray(launches["index"], dtype=np.int64)
        for i, e, b, br in zip(idx.tolist(), launches["energy_j"].tolist(), launches["bound_j"].tolist(),
                               launches["below_resolution"].tolist(), strict=True):
            if 0 <= i < n:
                out[i]["energy_j"] = _clean(e)
                out[i]["energy_bound_j"] = _clean(b)
                out[i]["below_sensor_resolution"] = bool(br)
                out[i]["energy_kind"] = "direct"
    return out


def _name_args(names: NameEnergies | None) -> dict[tuple[int, int], dict[str, Any]]:
    if names is None:
        return {}
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for i in range(len(names)):
        nid = int(names["name_id"][i])
        if nid < 0:
            continue
        out[(int(names["device"][i]), nid)] = {
            "name_energy_per_launch_j": _clean(names["energy_per_launch_j"][i]),
            "name_energy_per_launch_ci_j": [_clean(names["energy_per_launch_ci_low_j"][i]),
                                            _clean(names["energy_per_launch_ci_high_j"][i])],
            "name_power_w": _clean(names["power_w"][i]),
            "name_kind": "statistical",
        }
    return out


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------
def _gpu_pids(kernels: KernelTable | None, recording: Recording, device_map: dict[int, str] | None) -> dict[str, int]:
    """Device key (gpu0) -> the trace's GPU process id (its device id, as Kineto does)."""
    if kernels is None or len(kernels) == 0:
        return {}
    pids: dict[str, int] = {}
    for dev, (ch, _how) in device_channels(kernels, recording, device_map).items():
        pids.setdefault(_device_key(ch), int(dev))
    return pids


def write_perfetto(
    path: str | os.PathLike[str],
    recording: Recording,
    kernels: KernelTable | None = None,
    *,
    alignment: Alignment | None = None,
    launches: LaunchEnergies | None = None,
    names: NameEnergies | None = None,
    channels: Iterable[str] | None = None,
    device_map: dict[int, str] | None = None,
    clip: bool = True,
) -> str:
    """Write kernels and power/energy counter tracks as Chrome-trace JSON (``.gz``: gzip).

    ``kernels``: a KernelTable (or None for the counters alone). ``alignment``
    defaults to :func:`jouletrace.attribute.align`. ``launches`` / ``names``:
    results of :func:`jouletrace.attribute.attribute_launches` /
    :func:`~jouletrace.attribute.attribute_names`, added to each kernel's args.
    ``clip``: counters only over the kernels' span (plus a second either side).
    The time base is the trace's clock (epoch for profiler traces), or epoch
    for a recording alone when it holds clock pairs. Returns the path.
    """
    ktab = kernels if kernels is not None and len(kernels) > 0 else None  # None: the counters alone
    if ktab is not None:
        al = alignment if alignment is not None else align(ktab, recording)
    elif len(getattr(recording, "clock_pairs", ())):
        al = Alignment("clock_pairs", "epoch", 0, 0, np.asarray(recording.clock_pairs, dtype=np.int64))
    else:
        al = Alignment("identity", "monotonic", 0, 0, np.zeros((0, 3), np.int64))
    t = np.asarray(recording.t_ns, dtype=np.int64)
    if ktab is not None:
        lo = int(ktab.start_ns.min())
        if len(ktab.ranges):
            lo = min(lo, int(ktab.ranges.start_ns.min()))
        base = (lo // 1_000_000_000) * 1_000_000_000
        span = (int(al.to_monotonic(ktab.start_ns.min())) - 1_000_000_000,
                int(al.to_monotonic(ktab.end_ns.max())) + 1_000_000_000)
    else:
        base = (int(al.to_trace(t[:1])[0]) // 1_000_000_000) * 1_000_000_000 if t.size else 0
        span = None
    events: list[dict[str, Any]] = []
    pid_of = _gpu_pids(ktab, recording, device_map) if ktab is not None else {}
    if ktab is not None:
        events += _kernel_events(ktab, base, launches, names)
    events += counter_tracks(recording, al.to_trace, base, pid_of, channels,
                             t_range_ns=span if clip else None)
    events += window_events(recording, al.to_trace, base, t_range_ns=span if clip else None)
    for key, pid in pid_of.items():
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": f"GPU {pid} ({key})"}})
    doc: dict[str, Any] = {
        "schemaVersion": 1,
        "displayTimeUnit": "ms",
        "traceEvents": events,
        "jouletrace": {
            "clock": al.trace_clock,
            "alignment": al.method,
            "alignment_uncertainty_ns": int(al.uncertainty_ns),
            "source": getattr(ktab, "source", None) if ktab is not None else None,
        },
    }
    if al.trace_clock == "epoch":
        doc["baseTimeNanoseconds"] = base
    else:
        doc["jouletrace"]["base_monotonic_ns"] = base
    return _write(path, _dumps(doc))


def _kernel_events(kernels: KernelTable, base: int, launches: LaunchEnergies | None,
                   names: NameEnergies | None) -> list[dict[str, Any]]:
    n = len(kernels)
    args = _kernel_args(n, launches)
    nargs = _name_args(names)
    name_list = kernels.names
    events: list[dict[str, Any]] = []
    ts = _ts_list(kernels.start_ns - base)
    dur = _ts_list(kernels.end_ns - kernels.start_ns)
    for i, (dev, stream, nid, corr, ext) in enumerate(zip(
        kernels.device.tolist(), kernels.stream.tolist(), kernels.name_id.tolist(),
        kernels.correlation.tolist(), kernels.external_id.tolist(), strict=True,
    )):
        a: dict[str, Any] = {"device": dev, "stream": stream}
        if corr >= 0:
            a["correlation"] = corr
        if ext >= 0:
            a["External id"] = ext
        jt = dict(args[i])
        jt.update(nargs.get((dev, nid), {}))
        if jt:
            a["jouletrace"] = jt
        events.append({"ph": "X", "cat": "kernel", "name": name_list[nid], "pid": dev,
                       "tid": stream, "ts": ts[i], "dur": dur[i], "args": a})
    seen: set[tuple[int, int]] = set()
    for dev, stream in zip(kernels.device.tolist(), kernels.stream.tolist(), strict=True):
        if (dev, stream) not in seen:
            seen.add((dev, stream))
            events.append({"ph": "M", "name": "thread_name", "pid": dev, "tid": stream,
                           "args": {"name": f"stream {stream}"}})
    r = kernels.ranges
    if len(r):
        rts = _ts_list(r.start_ns - base)
        rdur = _ts_list(r.end_ns - r.start_ns)
        for i, (dev, nid) in enumerate(zip(r.device.tolist(), r.name_id.tolist(), strict=True)):
            if dev < 0:
                cat, pid, tid = "user_annotation", HOST_PID, 1
            else:
                cat, pid, tid = "gpu_user_annotation", dev, 0
            events.append({"ph": "X", "cat": cat, "name": r.names[nid], "pid": pid, "tid": tid,
                           "ts": rts[i], "dur": rdur[i], "args": {}})
        events.append({"ph": "M", "name": "process_name", "pid": HOST_PID, "tid": 0,
                       "args": {"name": "host (NVTX / annotations)"}})
    return events


def merge_kineto(
    trace_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    recording: Recording,
    *,
    kernels: KernelTable | None = None,
    alignment: Alignment | None = None,
    launches: LaunchEnergies | None = None,
    names: NameEnergies | None = None,
    channels: Iterable[str] | None = None,
    device_map: dict[int, str] | None = None,
    clip: bool = True,
) -> str:
    """A PyTorch profiler trace with jouletrace's counter tracks added, in its own time base.

    Every original event and key is kept, numbers as written. Counter tracks
    go into each GPU's process (pid = device id, as Kineto lays them out).
    ``kernels`` (default: the trace loaded with
    :func:`~jouletrace.kernels.traces.load_kineto`) gives the alignment and device
    matching; ``launches`` / ``names`` add per-kernel ``args["jouletrace"]``.
    ``out_path`` ending in ``.gz`` is gzip-compressed. Returns the path.
    """
    if kernels is None:
        kernels = load_kineto(trace_path)
    al = alignment if alignment is not None else align(kernels, recording)
    doc = _read_json_exact(os.fspath(trace_path))
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise TraceFormatError(f"{os.fspath(trace_path)}: not a PyTorch profiler trace (no traceEvents list)")
    base_raw = doc.get("baseTimeNanoseconds")
    base = int(base_raw) if isinstance(base_raw, int) else 0
    if base_raw is not None and not isinstance(base_raw, int):
        raise TraceFormatError(f"{os.fspath(trace_path)}: baseTimeNanoseconds is not an integer")
    pid_of = _gpu_pids(kernels, recording, device_map)
    span = None
    if clip and len(kernels):
        span = (int(al.to_monotonic(kernels.start_ns.min())) - 1_000_000_000,
                int(al.to_monotonic(kernels.end_ns.max())) + 1_000_000_000)
    if launches is not None or names is not None:
        _annotate_kineto(doc["traceEvents"], kernels, base, launches, names, us_to_ns)
    doc["traceEvents"].extend(counter_tracks(recording, al.to_trace, base, pid_of, channels, t_range_ns=span))
    doc["traceEvents"].extend(window_events(recording, al.to_trace, base, t_range_ns=span))
    doc["jouletrace"] = {
        "alignment": al.method,
        "alignment_uncertainty_ns": int(al.uncertainty_ns),
        "counter_tracks": "ph C events with cat jouletrace",
        "windows": f"ph X events with cat jouletrace.window on pid {WINDOWS_PID}",
    }
    return _write(out_path, _dumps(doc))


def _annotate_kineto(events: list[Any], kernels: KernelTable, base: int, launches: LaunchEnergies | None,
                     names: NameEnergies | None, us_to_ns: Callable[[Any], int]) -> None:
    args = _kernel_args(len(kernels), launches)
    nargs = _name_args(names)
    key_to_row = {
        (s, e, kernels.names[nid]): i
        for i, (s, e, nid) in enumerate(zip(kernels.start_ns.tolist(), kernels.end_ns.tolist(),
                                            kernels.name_id.tolist(), strict=True))
    }
    name_id = {n: i for i, n in enumerate(kernels.names)}
    for ev in events:
        if type(ev) is not dict or ev.get("cat") not in ("kernel", "Kernel") or ev.get("ph") != "X":
            continue
        try:
            s = us_to_ns(_unraw(ev["ts"])) + base
            e = s + us_to_ns(_unraw(ev.get("dur", 0)))
        except (KeyError, TypeError, ValueError, ArithmeticError):
            continue
        row = key_to_row.get((s, e, str(ev.get("name"))))
        if row is None:
            continue
        jt = dict(args[row])
        jt.update(nargs.get((int(kernels.device[row]), name_id.get(str(ev.get("name")), -1)), {}))
        if jt:
            a = ev.get("args")
            if type(a) is not dict:
                a = ev["args"] = {}
            a["jouletrace"] = jt


def _unraw(x: Any) -> Any:
    if isinstance(x, str) and x.startswith(_RAW) and x.endswith(_RAW_END):
        return x[len(_RAW):-len(_RAW_END)]
    return x
