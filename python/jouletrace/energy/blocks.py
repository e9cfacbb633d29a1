"""Recordings too large for memory, analysed block by block: :class:`BlockRecording`.

A month of one GPU polled at 1 kHz keeps ~52 M rows after compaction and ~26 M
counter updates; holding them, and the placement's arrays for every update, took
8 GB. Here nothing but a block of rows (:data:`BLOCK_ROWS`) and the updates of a
grid segment are in memory at once:

1. **Plan** (one pass over the rows): what the placement of
   :mod:`jouletrace.energy.updates` decides over the whole recording before it places
   any update: the sensor's period (the median over its first
   :data:`~jouletrace.energy.updates.MEDIAN_CHANGES` changes), whether its
   timestamps are credible (counts over every read), whether a grid applies
   (the first changes' bracket widths), the first value and sample, the extent.
2. **Placement and windows** (a second pass): each block's changes are placed
   where they are (a bracket, a sensor stamp) or, under a grid, once every update
   of their segment has been seen (grids are fitted per segment of
   :data:`~jouletrace.energy.updates.SEGMENT_BLOCKS` blocks, anchored at the first
   sample: the same segments as in memory). The window edges that fall among
   the placed updates are evaluated there, with a few updates of context on each
   side; each window's energy and bound combine its two edges at the end.

The results equal those of :meth:`jouletrace.Recording.energies` on the same
recording loaded whole, to floating-point rounding (``tests/test_blocks.py``).
:func:`open_recording` gives a :class:`BlockRecording` for a streamed recording
whose columns would take more than ``max_memory_bytes``, else the recording in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .._input import input_budget, open_regular
from ..errors import InvalidArgumentError, RecordingFormatError
from . import storage, stream, windows
from . import updates as up
from .measurement import WindowEnergies
from .recording import Recording

__all__ = ["BlockRecording", "open_recording", "open_blocks", "BLOCK_ROWS", "IN_MEMORY_BYTES"]

#: Rows read at a time.
BLOCK_ROWS = 1 << 19
#: :func:`open_recording` keeps a recording in memory when its columns take at most this.
IN_MEMORY_BYTES = 256 << 20
#: Updates of context kept on each side of the edges evaluated.
_CONTEXT = 10
_BASE = ("t_ns", "t_before_ns", "t_after_ns", "seq", "status")

Blocks = Callable[[], Iterator[dict[str, np.ndarray]]]
#: Recording's methods that read only metadata, channels and clock pairs, shared below.
_R: Any = Recording


def recording_blocks(rec: Recording, rows: int = BLOCK_ROWS) -> Blocks:
    """Blocks of a recording in memory (for tests, and to compare both paths)."""

    def it() -> Iterator[dict[str, np.ndarray]]:
        for a in range(0, len(rec), rows):
            b = min(a + rows, len(rec))
            blk = {k: np.asarray(getattr(rec, k))[a:b] for k in _BASE}
            blk.update({c: np.asarray(rec[c])[a:b] for c in rec.channels})
            yield blk

    return it


class _Scan:
    """Pass 1 over one counter channel: what :class:`~jouletrace.energy.updates.Plan` needs."""

    def __init__(self, rec: BlockRecording, ch: str) -> None:
        self.rec, self.ch = rec, ch
        self.ts_ch = rec._ts_channel(ch)
        self.carry: dict[str, np.ndarray] | None = None
        self.n_valid = 0
        self.changes = 0
        self.first: tuple[int, float] | None = None
        self.last_t: int | None = None
        self.mids_t: list[np.ndarray] = []
        self.n_mids = 0
        self.widths: list[np.ndarray] = []
        self.n_widths = 0
        self.ts = up.TsStats()

    def feed(self, blk: Mapping[str, np.ndarray]) -> None:
        rows = _valid_rows(self.rec, blk, self.ch, self.ts_ch)
        n_new = rows["v"].size
        if n_new == 0:
            return
        if self.first is None:
            self.first = (int(rows["t"][0]), float(rows["v"][0]))
        self.last_t = int(rows["t"][-1])
        self.n_valid += n_new
        skip = self.carry is not None
        ext = _join(self.carry, rows)
        self.carry = {k: a[-1:] for k, a in ext.items()}
        t, v = ext["t"], ext["v"]
        chg, lo, hi, _mid, _h = up.brackets(t, v, ext["tb"], ext["ta"])
        self.changes += chg.size
        if self.n_mids < up.MEDIAN_CHANGES + 1 and chg.size:
            take = chg[: up.MEDIAN_CHANGES + 1 - self.n_mids]
            self.mids_t.append(t[take - 1] + (t[take] - t[take - 1]) // 2)
            self.n_mids += take.size
        if self.n_widths < up.MEDIAN_CHANGES and chg.size:
            w = (hi - lo)[: up.MEDIAN_CHANGES - self.n_widths]
            self.widths.append(w)
            self.n_widths += w.size
        if "ts" in ext:
            self.ts.add(up.ts_stats(v, chg, lo, hi, ext["ts"], ext["seq"], skip_first=skip))

    def plan(self) -> up.Plan | None:
        if self.first is None or self.n_valid < 2 or self.changes == 0:
            return None
        cache = self.rec.metadata.setdefault("observed_update_period_ns", {})
        if self.ch not in cache:
            period = None
            if self.n_valid >= 4 and self.changes >= 3:
                period = float(np.median(np.diff(np.concatenate(self.mids_t))))
            cache[self.ch] = period
        period = cache[self.ch]
        period = float(period) if period else None
        use_ts = self.ts_ch is not None and self.ts.credible(self.changes)
        widths = np.concatenate(self.widths) if self.widths else np.zeros(0, np.int64)
        grid = up.grid_eligible(period, widths, self.changes, "auto", use_ts)
        return up.Plan(period, self.first[0], use_ts, grid, self.ts.inside / self.changes, self.first[1],
                       self.changes)


def _valid_rows(rec: BlockRecording, blk: Mapping[str, np.ndarray], ch: str, ts_ch: str | None) -> dict[str, np.ndarray]:
    v = np.asarray(blk[ch], dtype=np.float64)
    ok = np.isfinite(v)
    every = bool(ok.all())

    def sel(a: np.ndarray) -> np.ndarray:
        return a if every else a[ok]

    out = {"t": sel(np.asarray(blk["t_ns"], dtype=np.int64)), "v": sel(v),
           "tb": sel(np.asarray(blk["t_before_ns"], dtype=np.int64)),
           "ta": sel(np.asarray(blk["t_after_ns"], dtype=np.int64)), "seq": sel(np.asarray(blk["seq"]))}
    if ts_ch is not None:
        out["ts"] = sel(rec._to_mono_ts(np.asarray(blk[ts_ch], dtype=np.float64)))
    return out


def _join(carry: Mapping[str, np.ndarray] | None, rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if carry is None:
        return dict(rows)
    return {k: np.concatenate([carry[k], rows[k]]) for k in rows}


class _Edges:
    """Window edges evaluated among the placed updates as they come (module docstring, step 2)."""

    _FIELDS = windows._Edge._fields

    def __init__(self, q: np.ndarray) -> None:
        self.order = np.argsort(q, kind="stable")
        self.q = q[self.order]
        m = q.size
        self.out: dict[str, np.ndarray] = {}
        for f in self._FIELDS:
            dt = bool if f in ("extrapolated", "stall") else (np.int64 if f in ("i", "block") else np.float64)
            self.out[f] = np.zeros(m, dtype=dt)
        self.buf: dict[str, np.ndarray] | None = None
        self.bu0 = 0  # global index of the buffer's first update
        self.e0 = 0  # next interval (global) whose edges are to be evaluated
        self.pos = 0  # edges (in time order) evaluated so far
        self.cum_at = 0.0  # the part-time prefix sum at interval e0
        self.r_max = 0.0
        self.total = 0
        self.first_t: int | None = None

    def feed(self, part: Mapping[str, np.ndarray], plan: up.Plan) -> None:
        if part["t_ns"].size == 0:
            return
        if self.first_t is None:
            self.first_t = int(part["t_ns"][0])
        self.total += part["t_ns"].size
        fields = ("t_ns", "value", "h_ns", "hc_ns", "block", "rate_rel")
        self.buf = ({f: part[f] for f in fields} if self.buf is None
                    else {f: np.concatenate([self.buf[f], part[f]]) for f in fields})
        self._run(plan, final=False)

    def _run(self, plan: up.Plan, final: bool) -> None:
        buf = self.buf
        if buf is None or plan.period is None:
            return
        n_upd = buf["t_ns"].size
        first = self.bu0 == 0
        if n_upd < 2:
            return
        k = windows.knots_span(buf["t_ns"], buf["value"], buf["h_ns"], buf["hc_ns"], buf["block"],
                               buf["rate_rel"], first=first, last=final, first_value=plan.first_value,
                               period_ns=plan.period)
        goff = 0 if first else self.bu0 + 1  # global knot index of local knot 0
        nk = k.t.size
        e1 = goff + nk - 1 if final else goff + nk - 1 - _CONTEXT
        if e1 <= self.e0:
            return
        l0, l1 = self.e0 - goff, e1 - goff
        lo_q = self.pos
        hi_q = self.q.size if final else int(np.searchsorted(self.q, k.t[l1], side="left"))
        # r_max: over located intervals (not the virtual ones at the recording's ends).
        a_r = max(l0, 1 if first else 0)
        b_r = min(l1, nk - 2) if final else l1
        if b_r > a_r:
            self.r_max = max(self.r_max, float(np.nanmax(np.abs(k.r[a_r:b_r]))))
        if hi_q > lo_q:
            e = windows._edge(k, self.q[lo_q:hi_q])
            idx = self.order[lo_q:hi_q]
            base = k.tvar_cum[l0]
            vals = e._asdict()
            vals["cum0"] = self.cum_at + (e.cum0 - base)
            vals["cum1"] = self.cum_at + (e.cum1 - base)
            vals["i"] = e.i + goff
            for f in self._FIELDS:
                self.out[f][idx] = vals[f]
            self.pos = hi_q
        self.cum_at += float(k.tvar_cum[l1] - k.tvar_cum[l0])
        self.e0 = e1
        # Keep the context the next intervals need.
        keep_from = max(self.bu0, e1 - 1 - _CONTEXT)
        cut = keep_from - self.bu0
        if cut > 0:
            self.buf = {f: a[cut:] for f, a in buf.items()}
            self.bu0 = keep_from

    def finish(self, plan: up.Plan) -> bool:
        """Evaluate what is left; False when there are too few updates for any knots."""
        if self.total < 2 or plan.period is None:
            return False
        self._run(plan, final=True)
        return True

    def edges(self, m: int) -> tuple[windows._Edge, windows._Edge]:
        f0 = {f: a[:m] for f, a in self.out.items()}
        f1 = {f: a[m:] for f, a in self.out.items()}
        return windows._Edge(**f0), windows._Edge(**f1)


class _Place:
    """Pass 2 over one counter channel: its updates placed block by block, fed to consumers."""

    def __init__(self, rec: BlockRecording, ch: str, plan: up.Plan, consumers: Sequence[Any],
                 quantum_at: np.ndarray | None = None) -> None:
        self.rec, self.ch, self.plan = rec, ch, plan
        self.ts_ch = rec._ts_channel(ch) if plan.use_ts else None
        self.consumers = consumers
        self.carry: dict[str, np.ndarray] | None = None
        self.pending: dict[str, np.ndarray] | None = None
        self.seen = 0
        self.quantum_at = quantum_at
        self.quantum_vals: list[np.ndarray] = []
        self.on = 0
        self.placed = 0

    def feed(self, blk: Mapping[str, np.ndarray]) -> None:
        rows = _valid_rows(self.rec, blk, self.ch, self.ts_ch)
        n_new = rows["v"].size
        if n_new == 0:
            return
        if self.quantum_at is not None:
            j = self.quantum_at[(self.quantum_at >= self.seen) & (self.quantum_at < self.seen + n_new)] - self.seen
            self.quantum_vals.append(rows["v"][j])
        self.seen += n_new
        ext = _join(self.carry, rows)
        self.carry = {k: a[-1:] for k, a in ext.items()}
        chg, lo, hi, mid, h = up.brackets(ext["t"], ext["v"], ext["tb"], ext["ta"])
        if chg.size == 0:
            return
        ch = {"lo": lo, "hi": hi, "mid": mid, "h": h, "value": ext["v"][chg].astype(np.float64),
              "cand": ext["ts"][chg] if "ts" in ext else np.zeros(0)}
        if not self.plan.grid:
            self._emit(ch)
            return
        self.pending = ch if self.pending is None else {k: np.concatenate([self.pending[k], ch[k]]) for k in ch}
        assert self.plan.period is not None
        _blk, seg = up.segment_of(self.pending["mid"], self.plan.period, self.plan.ref)
        done = int(np.searchsorted(seg, seg[-1], side="left"))  # whole segments before the last one
        if done > 0:
            self._emit({k: a[:done] for k, a in self.pending.items()})
            self.pending = {k: a[done:] for k, a in self.pending.items()}

    def _emit(self, ch: Mapping[str, np.ndarray]) -> None:
        part = up.place(self.plan, ch["lo"], ch["hi"], ch["mid"], ch["h"], ch["value"],
                        ch["cand"] if self.plan.use_ts else None)
        self.on += int(part["on"].sum())
        self.placed += part["on"].size
        for c in self.consumers:
            c.feed(part, self.plan)

    def finish(self) -> None:
        if self.pending is not None and self.pending["mid"].size:
            self._emit(self.pending)
        self.pending = None

    @property
    def method(self) -> str:
        if self.plan.use_ts:
            return "timestamps"
        return "periodic" if self.on else "brackets"

    @property
    def quantum(self) -> float:
        vals = np.concatenate(self.quantum_vals) if self.quantum_vals else np.zeros(0)
        return windows.counter_quantum(vals)


class _PowerPeak:
    """The largest mean power between located updates in a span (a counter's power timeline)."""

    def __init__(self, t0: int, t1: int) -> None:
        self.t0, self.t1 = t0, t1
        self.last: tuple[int, float] | None = None
        self.peak: float | None = None

    def feed(self, part: Mapping[str, np.ndarray], plan: up.Plan) -> None:
        t, v = part["t_ns"], part["value"]
        if self.last is not None:
            t = np.concatenate([[self.last[0]], t])
            v = np.concatenate([[self.last[1]], v])
        if t.size:
            self.last = (int(t[-1]), float(v[-1]))
        if t.size < 2:
            return
        dt = np.diff(t)
        keep = dt > 0
        mid = (t[:-1] + dt // 2)[keep]
        watts = (np.diff(v)[keep]) / (dt[keep].astype(np.float64) * 1e-9)
        sel = (mid >= self.t0) & (mid <= self.t1)
        if sel.any():
            p = float(np.max(watts[sel]))
            self.peak = p if self.peak is None else max(self.peak, p)


class _Interp:
    """``np.interp(grid, t, w)`` over the points of a timeline in ``[t0, t1]``, fed in time order;
    also how many points there are (a timeline of fewer than the grid's points is kept whole)."""

    def __init__(self, t0: int, t1: int, points: int) -> None:
        self.t0, self.t1, self.points = t0, t1, points
        self.grid = np.linspace(t0, t1, points)
        self.val = np.full(points, np.nan)
        self.count = 0
        self.small: list[tuple[np.ndarray, np.ndarray]] = []
        self.last: tuple[float, float] | None = None
        self.first_w: float | None = None

    def add(self, t: np.ndarray, w: np.ndarray) -> None:
        sel = (t >= self.t0) & (t <= self.t1)
        t, w = t[sel], w[sel]
        if t.size == 0:
            return
        self.count += t.size
        if self.count <= self.points:
            self.small.append((t, w))
        else:
            self.small = []
        tf = t.astype(np.float64)
        if self.first_w is None:
            self.first_w = float(w[0])
            self.val[self.grid < tf[0]] = w[0]
        if self.last is not None:
            tf = np.concatenate([[self.last[0]], tf])
            w = np.concatenate([[self.last[1]], w])
        at = (self.grid >= tf[0]) & (self.grid <= tf[-1])
        self.val[at] = np.interp(self.grid[at], tf, w)
        self.last = (float(tf[-1]), float(w[-1]))

    def feed(self, part: Mapping[str, np.ndarray], plan: up.Plan) -> None:
        """Updates placed (a counter): the mean power between them, at their middle."""
        t, v = part["t_ns"], part["value"]
        if self._upd is not None:
            t = np.concatenate([[self._upd[0]], t])
            v = np.concatenate([[self._upd[1]], v])
        if t.size:
            self._upd = (int(t[-1]), float(v[-1]))
        if t.size < 2:
            return
        dt = np.diff(t)
        keep = dt > 0
        self.add((t[:-1] + dt // 2)[keep], (np.diff(v)[keep]) / (dt[keep].astype(np.float64) * 1e-9))

    _upd: tuple[int, float] | None = None

    def result(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.count == 0 or self.last is None:
            return None
        if self.count <= self.points:
            t = np.concatenate([a for a, _ in self.small])
            w = np.concatenate([b for _, b in self.small])
            grid = np.linspace(self.t0, self.t1, max(t.size, 2))
            return grid, np.interp(grid, t.astype(np.float64), w)
        self.val[self.grid > self.last[0]] = self.last[1]
        return self.grid, self.val


class BlockRecording:
    """A recording read block by block from its file (module docstring).

    Offers what ``report`` and ``compare`` use of a :class:`~jouletrace.Recording`:
    ``metadata``, ``channels``, ``energy_sources``, ``energies``/``energy`` (counters),
    ``peak_power_w``, ``power_timeline``, the extent and the drop counts. The
    columns are never all in memory; each call reads the file again.
    """

    def __init__(self, blocks: Blocks, *, channels: Sequence[str], cumulative: Mapping[str, bool],
                 clock_pairs: np.ndarray | None = None, metadata: Mapping[str, Any] | None = None,
                 dropped: int = 0, missed_deadlines: int = 0) -> None:
        self._blocks = blocks
        self._values: dict[str, None] = dict.fromkeys(channels)
        self._cumulative = dict(cumulative)
        self._extent: tuple[int, int | None, int | None] | None = None
        self.clock_pairs = (np.zeros((0, 3), dtype=np.int64) if clock_pairs is None
                            else np.asarray(clock_pairs, dtype=np.int64).reshape(-1, 3))
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.dropped = int(dropped)
        self.missed_deadlines = int(missed_deadlines)
        self._plans: dict[str, up.Plan | None] = {}
        self._scans: dict[str, _Scan] = {}
        self._quantum: dict[str, float] = {}
        self._methods: dict[str, str] = {}

    @classmethod
    def of(cls, rec: Recording, rows: int = BLOCK_ROWS) -> BlockRecording:
        """The block path over a recording in memory (``rows`` per block): for tests and comparisons."""
        return cls(recording_blocks(rec, rows), channels=rec.channels,
                   cumulative={c: rec.is_cumulative(c) for c in rec.channels},
                   clock_pairs=rec.clock_pairs, metadata=rec.metadata, dropped=rec.dropped,
                   missed_deadlines=rec.missed_deadlines)

    # -- what Recording offers, shared (these read only metadata, channels and clock pairs) ----
    channels = property(lambda self: list(self._values))
    energy_sources = _R.energy_sources
    sensor_model = _R.sensor_model
    set_sensor_model = _R.set_sensor_model
    power_limit_w = _R.power_limit_w
    energy = _R.energy
    to_epoch_ns = _R.to_epoch_ns
    to_monotonic_ns = _R.to_monotonic_ns
    _may_wrap_unseen = _R._may_wrap_unseen
    _flag_pauses = _R._flag_pauses
    PAUSE_WRAP_RISK_NS = _R.PAUSE_WRAP_RISK_NS

    def __len__(self) -> int:
        return self.rows

    @property
    def rows(self) -> int:
        """Rows (samples kept) in the recording."""
        return self._count()[0]

    @property
    def t_first_ns(self) -> int | None:
        """The first sample's time (CLOCK_MONOTONIC ns), None when there is none."""
        return self._count()[1]

    @property
    def t_last_ns(self) -> int | None:
        return self._count()[2]

    def _count(self) -> tuple[int, int | None, int | None]:
        if self._extent is None:  # the counters' plan pass counts too (it is what comes next)
            self._plan([c for c in self.channels if self._cumulative[c]])
        if self._extent is None:
            self._pass([])
        assert self._extent is not None
        return self._extent

    def __contains__(self, channel: object) -> bool:
        return channel in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __getitem__(self, channel: str) -> np.ndarray:
        raise InvalidArgumentError(
            f"{channel!r}: a recording read block by block does not hold its columns in memory; "
            "load it whole with jouletrace.load(path) (it needs memory for every row)")

    def is_cumulative(self, channel: str) -> bool:
        if channel not in self._values:
            raise KeyError(f"no channel {channel!r} in this recording; it has: {', '.join(self._values) or 'none'}")
        return self._cumulative[channel]

    @property
    def duration_s(self) -> float:
        if self.t_first_ns is None or self.t_last_ns is None or self.rows < 2:
            return 0.0
        return (self.t_last_ns - self.t_first_ns) * 1e-9

    def __repr__(self) -> str:
        return (f"<BlockRecording source={self.metadata.get('source', '?')} rows={self.rows} "
                f"duration={self.duration_s:.3f}s channels={self.channels}>")

    # -- helpers ---------------------------------------------------------------------------
    def _ts_channel(self, channel: str) -> str | None:
        if not channel.endswith("_j"):
            return None
        ts = channel[: -len("_j")] + "_ts_us"
        return ts if ts in self._values and len(self.clock_pairs) else None

    def _to_mono_ts(self, us: np.ndarray) -> np.ndarray:
        good = np.isfinite(us) & (us > 0)
        out = np.full(us.shape, np.nan)
        if good.any():
            out[good] = self.to_monotonic_ns(us[good].astype(np.int64) * 1000).astype(np.float64)
        return out

    def _pass(self, consumers: Sequence[Any]) -> None:
        n, first, last = 0, None, None
        for blk in self._blocks():
            t = blk["t_ns"]
            if len(t):
                n += len(t)
                first = int(t[0]) if first is None else first
                last = int(t[-1])
            for c in consumers:
                c.feed(blk)
        self._extent = (n, first, last)

    def _plan(self, channels: Sequence[str]) -> None:
        """Pass 1 for the counters in ``channels`` not planned yet."""
        todo = [c for c in dict.fromkeys(channels) if c not in self._plans]
        if not todo:
            return
        scans = [_Scan(self, c) for c in todo]
        self._pass(scans)
        for s in scans:
            self._plans[s.ch] = s.plan()
            self._scans[s.ch] = s

    def update_period_ns(self, channel: str) -> float | None:
        self._plan([channel])
        return self.metadata.get("observed_update_period_ns", {}).get(channel)

    def _counter(self, channel: str) -> str:
        if channel not in self._values and f"{channel}.energy_j" in self._values:
            channel = f"{channel}.energy_j"
        if not self.is_cumulative(channel):
            raise InvalidArgumentError(f"{channel!r} is not a cumulative counter; updates are placed for counters only")
        return channel

    def update_method(self, channel: str) -> str:
        """How the counter's updates were placed ("timestamps", "periodic", "brackets", "none")."""
        ch = self._counter(channel)
        if ch not in self._methods:
            self._plan([ch])
            plan = self._plans[ch]
            if plan is None:
                self._methods[ch] = "none"
            else:
                placer = _Place(self, ch, plan, [])
                self._pass([placer])
                placer.finish()
                self._methods[ch] = placer.method
        return self._methods[ch]

    # -- energy ----------------------------------------------------------------------------
    def energies(self, t0s: Any, t1s: Any, channels: Sequence[str] | None = None, *,
                 edges: str = "auto") -> Any:
        """As :meth:`jouletrace.Recording.energies`, block by block (counters; see the module docstring)."""
        a, b, _ = windows._windows(np.atleast_1d(np.asarray(t0s)), np.atleast_1d(np.asarray(t1s)))
        if edges not in ("auto", "independent", "aligned"):
            raise InvalidArgumentError(f"edges must be 'auto', 'independent' or 'aligned', got {edges!r}")
        out = WindowEnergies(t0_ns=a, t1_ns=b)
        sources = self.energy_sources(channels)
        power = [k for k, (_, m) in sources.items() if m == "power"]
        if power:
            raise InvalidArgumentError(
                f"{', '.join(power)}: energy from a power channel is computed on a recording in memory only; "
                "this one is read block by block (it is large): load it whole with jouletrace.load(path)")
        counters = [ch for ch, _ in sources.values()]
        self._plan(counters)
        m = a.size
        q = np.concatenate([a, b])
        work: list[tuple[str, str, up.Plan | None, _Place | None, _Edges | None]] = []
        consumers = []
        for key, (ch, _) in sources.items():
            plan = self._plans[ch]
            if plan is None:
                work.append((key, ch, None, None, None))
                continue
            edges_of = _Edges(q)
            n_valid = self._scans[ch].n_valid
            qat = (np.linspace(0, n_valid - 1, 4096).astype(np.intp) if n_valid > 4096 else np.arange(n_valid))
            place_of = _Place(self, ch, plan, [edges_of], quantum_at=qat)
            work.append((key, ch, plan, place_of, edges_of))
            consumers.append(place_of)
        if consumers and m:
            self._pass(consumers)
        for key, ch, plan, placer, ev in work:
            model = self.sensor_model(key)
            e = u = np.full(m, np.nan)
            f: np.ndarray = np.zeros(m, dtype=np.uint8)
            chosen, why = edges, "asked for by the caller"
            scan = self._scans[ch]
            ok = plan is not None and placer is not None and ev is not None and m > 0
            if ok:
                assert placer is not None and ev is not None and plan is not None
                placer.finish()
                self._methods[ch] = placer.method
                self._quantum[ch] = placer.quantum
                ok = ev.finish(plan) and scan.first is not None
            if edges == "auto":
                n_upd = ev.total if ev is not None else 0
                first_t = ev.first_t if ev is not None and ev.first_t is not None else 0
                period = float(plan.period or 0.0) if plan is not None else 0.0
                chosen, why = windows.choose_edges_for(a, b, period, first_t, n_upd)
            if ok:
                assert plan is not None and ev is not None and scan.last_t is not None and scan.first is not None
                e0, e1 = ev.edges(m)
                limit = self.power_limit_w(key)
                p_hi = ev.r_max if limit is None else max(float(limit), ev.r_max)
                e, u, f = windows.combine_edges(
                    e0, e1, a, b, q=self._quantum[ch], period=float(plan.period or 0.0),
                    extent=(scan.first[0], scan.last_t), p_hi=p_hi, edges=chosen, counter=model.counter,
                    seen_fraction=model.seen_fraction)
            else:
                f = f | windows.FLAG_NO_SAMPLES
            out.sensor_model[key] = model.to_dict()
            out.edges[key] = chosen
            out.edges_reason[key] = why
            if self._may_wrap_unseen(ch):
                e, u, f = self._flag_pauses(a, b, e, u, f)
            out.energy_j[key] = e
            out.uncertainty_j[key] = u
            out.flags[key] = f
            out.method[key] = "counter"
            out.channel[key] = ch
        return out

    # -- power -----------------------------------------------------------------------------
    def _power_channel(self, key: str) -> str:
        if key in self._values:
            return key
        for cand in (f"{key}.power_w", f"{key}.power_avg_w", f"{key}.energy_j"):
            if cand in self._values:
                return cand
        raise KeyError(f"no channel {key!r} in this recording; it has: {', '.join(self._values) or 'none'}")

    def peak_power_w(self, key: str, t0: int, t1: int) -> float | None:
        """The largest power in ``[t0, t1]`` on the timeline :meth:`Recording.power` gives for ``key``."""
        ch = self._power_channel(key)
        if not self._cumulative[ch]:
            peak: float | None = None
            for blk in self._blocks():
                t, v = np.asarray(blk["t_ns"]), np.asarray(blk[ch])
                sel = np.isfinite(v) & (t >= t0) & (t <= t1)
                if sel.any():
                    p = float(np.max(v[sel]))
                    peak = p if peak is None else max(peak, p)
            return peak
        self._plan([ch])
        plan = self._plans[ch]
        if plan is None:
            return None
        pk = _PowerPeak(int(t0), int(t1))
        placer = _Place(self, ch, plan, [pk])
        self._pass([placer])
        placer.finish()
        return pk.peak


    def power_timeline(self, key: str, t0: int, t1: int, points: int = 400) -> tuple[np.ndarray, np.ndarray] | None:
        """``(grid, watts)``: the power timeline :meth:`Recording.power` gives for ``key``, its
        points in ``[t0, t1]`` interpolated at ``min(points, their number)`` (at least 2) evenly spaced
        times, as ``np.interp`` does; None when there are none."""
        ch = self._power_channel(key)
        ip = _Interp(int(t0), int(t1), points)
        if not self._cumulative[ch]:
            for blk in self._blocks():
                t, v = np.asarray(blk["t_ns"]), np.asarray(blk[ch])
                ok = np.isfinite(v)
                ip.add(t[ok], v[ok])
            return ip.result()
        self._plan([ch])
        plan = self._plans[ch]
        if plan is None:
            return None
        placer = _Place(self, ch, plan, [ip])
        self._pass([placer])
        placer.finish()
        return ip.result()


def open_recording(path: str | os.PathLike[str], *, max_memory_bytes: int | None = None,
                   block_rows: int = BLOCK_ROWS) -> Any:
    """A recording for analysis: in memory (:func:`jouletrace.load`) when it is an ``.npz`` or its
    columns take at most ``max_memory_bytes`` (else ``$JOULETRACE_IN_MEMORY_BYTES``, else
    :data:`IN_MEMORY_BYTES`), else a :class:`BlockRecording` over the streamed folder."""
    p = os.fspath(path)
    env = os.environ.get("JOULETRACE_IN_MEMORY_BYTES")
    limit = (int(max_memory_bytes) if max_memory_bytes is not None else int(env) if env and env.isdigit()
             else IN_MEMORY_BYTES)
    if not (os.path.isdir(p) and stream.is_stream(p)):
        return storage.load(p)
    rows, channels = storage.stream_rows(p)
    if rows * (len(_BASE) + channels) * 8 <= limit:
        return storage.load(p)
    return open_blocks(p, block_rows)


def open_blocks(path: str | os.PathLike[str], block_rows: int, *, max_bytes: int | None = None) -> Any:
    """A streamed recording as a :class:`BlockRecording`: everything but
    its samples read now (windows, clock pairs, metadata), the samples block by block when used."""
    p = os.fspath(path)
    parts = storage._stream_parts(p, input_budget(max_bytes), samples=False)
    header = storage._stream_header(p, parts, int(parts.stats.get("rows") or 0))
    names = [c["name"] for c in header["channels"]]

    def blocks() -> Any:
        try:
            rows = 0
            for part in stream.iter_samples(p, names, lambda f: open_regular(f, RecordingFormatError, "recording"),
                                            lambda what: storage._bad(p, what), block_rows):
                rows += int(part["t_ns"].size)
                yield part
            stream.check_rows(parts, rows, lambda what: storage._bad(p, what))
        except RecordingFormatError:
            raise
        except storage._ARCHIVE_ERRORS as e:
            raise storage._bad(p, f"{type(e).__name__}: {e}") from e

    return BlockRecording(blocks, channels=names, cumulative={c["name"]: c["cumulative"] for c in header["channels"]},
                          clock_pairs=parts.clock_pairs, metadata=header["metadata"], dropped=header["dropped"],
                          missed_deadlines=header["missed_deadlines"] or 0)
