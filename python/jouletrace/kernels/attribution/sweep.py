"""Share times: one sweep over kernel starts and ends.

Concurrency rule (one GPU)
==========================

At each instant the GPU's power is shared **equally among the kernels running
at that instant**; with none running it is *idle* power. A launch's *share time*
is the integral of ``1/m(t)`` over its duration (``m``: kernels running). Both
estimates follow this one rule:

* per launch, each elementary segment's energy (between consecutive kernel
  starts and ends) is divided equally among the kernels active in it;
* per name, the regressor of a name is the sum of its launches' share times in
  the counter interval, and the idle regressor is the time with no kernel.

So, for a name, "power" is the GPU's total power while it runs (its share of it
under overlap), idle included; the names' energies plus the idle energy add up
to the measured total. Kernels on one stream never overlap, and there the rule
is no assumption at all. Under overlap it models the GPU's power with ``m``
kernels as the mean of their solo powers; the ``overlap_fraction`` column says
how much of a name's time that concerns.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["share_times", "interval_matrix"]


class _Sweep(NamedTuple):
    t: np.ndarray  # knot times (int64), sorted
    m: np.ndarray  # kernels running on [t[q], t[q + 1]) (0 after the last)
    w: np.ndarray  # cumulative share time (s) at each knot: integral of [m > 0] / m
    idle: np.ndarray  # cumulative idle time (s) at each knot: integral of [m == 0]
    start_pos: np.ndarray  # knot index of each launch's start
    end_pos: np.ndarray  # knot index of each launch's end


def _sweep(start: np.ndarray, end: np.ndarray) -> _Sweep:
    n = start.size
    times = np.concatenate([start, end])
    # Stable sort of (nearly sorted) runs; a start sorts before an end at the same instant.
    order = np.argsort(times, kind="stable")
    t = times[order]
    m = np.cumsum(np.where(order < n, 1, -1).astype(np.int32))
    dt = np.diff(t).astype(np.float64) * 1e-9
    ms = m[:-1]
    rate = np.zeros(ms.shape)
    np.divide(1.0, ms, out=rate, where=ms > 0)
    w = np.concatenate([[0.0], np.cumsum(dt * rate)])
    idle = np.concatenate([[0.0], np.cumsum(dt * (ms == 0))])
    pos = np.empty(2 * n, dtype=np.intp)
    pos[order] = np.arange(2 * n)
    return _Sweep(t, m, w, idle, pos[:n], pos[n:])


def _sweep_eval(sw: _Sweep, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative share and idle time (s) at arbitrary times ``x``."""
    idx = np.searchsorted(sw.t, x, side="right") - 1
    before = idx < 0
    i = np.maximum(idx, 0)
    d = (x - sw.t[i]).astype(np.float64) * 1e-9
    mm = np.where(before, 0, sw.m[i])
    rate = np.zeros(mm.shape)
    np.divide(1.0, mm, out=rate, where=mm > 0)
    w = np.where(before, 0.0, sw.w[i] + d * rate)
    idle = np.where(before, d, sw.idle[i] + d * (mm == 0))
    return w, idle


def share_times(start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray:
    """Each launch's share time (s): its duration, divided among the kernels running alongside.

    The integral over the launch of ``1/m(t)`` (``m``: kernels running at ``t``),
    from one sweep over starts and ends. Equal to the duration for kernels that
    never overlap another.
    """
    s = np.asarray(start_ns, dtype=np.int64)
    e = np.asarray(end_ns, dtype=np.int64)
    if s.size == 0:
        return np.zeros(0)
    sw = _sweep(s, e)
    return sw.w[sw.end_pos] - sw.w[sw.start_pos]


def _pieces(sw: _Sweep, start: np.ndarray, end: np.ndarray, u: np.ndarray,
            idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(launch index, interval index, share time) of every launch piece inside the intervals.

    ``start``/``end`` may be a subset of the sweep's launches: ``idx`` holds their
    indices in the sweep (default: all of them, in order)."""
    K = u.size - 1
    wu, _ = _sweep_eval(sw, u)
    k_lo = np.searchsorted(u, start, side="right") - 1
    k_hi = np.maximum(np.searchsorted(u, end, side="left") - 1, k_lo)
    a = np.maximum(k_lo, 0)
    b = np.minimum(k_hi, K - 1)
    cnt = b - a + 1
    keep = np.flatnonzero(cnt > 0)
    cnt_k = cnt[keep]
    if keep.size == cnt_k.sum():  # every launch in exactly one interval (the usual case)
        rep = keep
        k = a[keep]
    else:
        rep = np.repeat(keep, cnt_k)
        offs = np.cumsum(cnt_k) - cnt_k
        k = a[rep] + (np.arange(rep.size) - np.repeat(offs, cnt_k))
    at = rep if idx is None else idx[rep]
    lo = np.where(k == k_lo[rep], sw.w[sw.start_pos[at]], wu[k])
    hi = np.where(k == k_hi[rep], sw.w[sw.end_pos[at]], wu[k + 1])
    return rep, k, hi - lo


def interval_matrix(
    start_ns: np.ndarray,
    end_ns: np.ndarray,
    name_id: np.ndarray,
    n_names: int,
    boundaries_ns: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Share time (s) of every name in every interval, and each interval's idle time (s).

    ``boundaries_ns`` (sorted, K + 1 values) delimit K intervals. Returns
    ``(share, idle)`` shaped (K, n_names) and (K,); for each interval
    ``share.sum(1) + idle`` is its length. Vectorised: one sweep, one
    :func:`numpy.bincount`.
    """
    s = np.asarray(start_ns, dtype=np.int64)
    e = np.asarray(end_ns, dtype=np.int64)
    u = np.asarray(boundaries_ns, dtype=np.int64)
    nid = np.asarray(name_id, dtype=np.int64)
    K = max(u.size - 1, 0)
    if K == 0:
        return np.zeros((0, n_names)), np.zeros(0)
    if s.size == 0:
        return np.zeros((K, n_names)), np.diff(u).astype(np.float64) * 1e-9
    # The same routine the estimator runs (on its precomputed sweep), so tests of this
    # function test that one.
    return _matrix_from_sweep(_sweep(s, e), s, e, nid, n_names, u)


def _matrix_from_sweep(sw: _Sweep, s: np.ndarray, e: np.ndarray, gid: np.ndarray, n_groups: int,
                       u: np.ndarray, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Share per group and idle time (s) of the intervals between ``u``; ``s``, ``e``, ``gid``
    may be a subset of the sweep's launches (``idx``: their indices in it): then only they
    count in the shares, while the idle time is always the whole sweep's."""
    K = u.size - 1
    _, idle_u = _sweep_eval(sw, u)
    rep, k, val = _pieces(sw, s, e, u, idx)
    share = np.bincount(k * n_groups + gid[rep], weights=val, minlength=K * n_groups)
    return share.reshape(K, n_groups), np.diff(idle_u)
