"""Per kernel name, statistically.

Statistical estimate (per name)
===============================

1. *Counter updates.* When each update happened, and how sure that is, comes
   from the recording's one placement (:meth:`jouletrace.Recording.updates`,
   :mod:`jouletrace.energy.updates`): NVML's timestamps where informative (±2 µs),
   else a fitted periodic grid (a phase and a tilt shared by the updates of a
   block, each with a stated range), else sample brackets (an independent
   offset per update). The windows and the per-launch energies use the same one.
2. *Intervals.* Between consecutive updates ``k`` and ``k + 1`` the counter
   rose by ``dE_k`` over ``T_k``. Only intervals inside the trace's span (from
   the first kernel start to the last kernel end on the device, or ``span_ns=``)
   whose edges are placed to within a quarter of an interval are used: outside
   the span the GPU may run work the trace did not see.
3. *Regressors.* For each interval, the share time of every kernel name inside
   it and the idle time (they sum to ``T_k``), from one sweep over the sorted
   kernel starts and ends with cumulative sums and :func:`numpy.bincount`: no
   Python loop per launch (:func:`interval_matrix`).
4. *Timing, within the placement's own uncertainty and nowhere else.* An
   update's independent offset is averaged over (the expected regressor of an
   update anywhere in its range: regression calibration). A grid's shared phase
   and tilt are searched: 9 phases x 5 tilts across their ranges, then finer
   grids around the least weighted residual until the timings the residuals
   allow (within ``3.84 sigma^2`` of the best, an F-like test at 95 %) span
   several grid points. A 1 kHz poller and a 100 ms sensor on one clock keep
   every update at the same place in its 1 ms bracket, so a shared error of up
   to a polling period is the rule, not the exception: it moves short
   neighbouring kernels of a repeated step into the wrong interval.
   *The counter's model* (:meth:`jouletrace.Recording.sensor_model`): a
   full-period counter's update ``k + 1`` brings the energy of the whole interval;
   a part-time one's brings the energy of the averaging window ``W`` before it,
   scaled to the interval, so its regressors are the shares inside that window
   times ``T_k / W``. An unknown counter is fitted both ways (its stated window,
   else a quarter of the period); the model whose residual is smaller by at least
   10 residual variances is used, and when neither is, the other's timings join the
   bootstrap's candidates so the intervals carry the doubt. ``meta["devices"]``
   says which model and why (``counter_model``, ``counter_model_basis``).
5. *Fit.* ``dE_k = P_idle * idle_k + sum_j P_j * share_kj + e_k``, solved by
   non-negative least squares (:func:`nnls`, Lawson–Hanson), rows weighted by
   ``1 / sqrt(T_k)`` (an interval's noise grows with its length).
6. *Uncertainty.* The confidence interval of every reported number (power,
   energy per launch, total, power above idle; all linear in the coefficients)
   is the union of

   * a block bootstrap over intervals (blocks of about ``n^(1/3)`` consecutive
     intervals keep the correlation between neighbours, which share an update)
     in which every replicate also draws one of the allowed timings of step 4:
     the replicates' spread carries the noise, the non-negativity bound *and*
     the timing uncertainty (an error in the regressors, which resampling the
     intervals alone cannot see); percentile interval;
   * the unconstrained least-squares estimate plus or minus ``z`` standard
     errors, the larger of the classical one (residual variance with
     ``n - p`` degrees of freedom) and one robust to correlation within the
     same blocks; names whose regressors are collinear (always launched
     together in the same proportion) get an infinite one — this sees how well
     the data separate the names, which the bootstrap cannot;
   * the estimate itself.

   A side nothing bounds is infinite (0 below for quantities that cannot be
   negative), never NaN.
7. *Resolved or not.* A name is ``resolved`` only if none of these holds, and
   ``unresolved_reason`` names the first that does: no estimate; lumped with
   others; fewer than ``min_launches`` launches or ``min_intervals`` intervals;
   a degenerate fit (zero estimate where the unconstrained fit is negative, an
   interval of zero width, an estimate above the board's power limit from the
   recording's metadata); an interval wider than ``max_relative_ci`` (±5 %) of
   the estimate. ``enough_data`` is ``resolved`` (its old name).

Then per name: ``power_w`` (W, the GPU's power while it runs, idle included),
``power_above_idle_w``, ``energy_per_launch_j`` = ``power_w`` times the mean
share time per launch (J, idle included), ``dynamic_energy_per_launch_j``
(above idle), ``total_energy_j`` over all its launches in the trace. The
estimate does not need kernels to be longer than the sensor's update period:
it needs many intervals whose kernel mix differs.

Checked end to end through the real sampler thread in real time
(``tests/test_attribution_realtime.py``, ``bench/bench_attribution_realtime.py``;
figures in bench/RESULTS.md): the kernel timelines of the real exports in
tests/data/traces replayed by the simulated GPU, H100-like and A100-like
sensors, 1 kHz polling, with and without NVML timestamps: resolved names with
≥ 5 % of the kernel energy within 5 %, intervals of resolved names covering the
truth about 95 % of the time.

Limits: names that always run together in the same proportion cannot be told
apart (their intervals say so: unbounded); "(other kernels)" (beyond
``max_names``) is one regressor for names of different power, a misfit that
leaks into the others when the lump's mix changes; a counter that sees only
part of each period (Hopper's 25 % power window, if the counter were built from
it) or lags its update instant adds noise and, when the mix changes in step
with the sensor, bias that this model does not see.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from ...energy.recording import Recording
from ...energy.updates import Updates
from ...errors import InvalidArgumentError
from ..alignment import Alignment, align, device_channels
from ..traces.table import KernelTable
from .nnls import _nnls_gram
from .sweep import _matrix_from_sweep, _Sweep, _sweep
from .tables import NameEnergies

__all__ = ["attribute_names"]

#: A timing search's result: the design matrix, the bootstrap's candidate matrices, its details.
_Timing = tuple[np.ndarray, list[np.ndarray], dict[str, Any]]


def _block_grams(Xs: np.ndarray, yw: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block of ``block`` consecutive rows: X'X (nb, q, q) and X'y (nb, q)."""
    n, q = Xs.shape
    nb = math.ceil(n / block)
    pad = nb * block - n
    Xp = np.concatenate([Xs, np.zeros((pad, q))]).reshape(nb, block, q)
    yp = np.concatenate([yw, np.zeros(pad)]).reshape(nb, block)
    return np.matmul(Xp.transpose(0, 2, 1), Xp), np.einsum("blq,bl->bq", Xp, yp)


@dataclass
class _Fit:
    coef: np.ndarray  # (p,) W: names..., idle last
    reps: np.ndarray  # (B, p)
    n_int: int
    rms_j: float
    r2: float
    block: int
    cov: np.ndarray  # (p, p) cluster-robust covariance of the linear model (inf: not identifiable)
    ols: np.ndarray  # (p,) the unconstrained least-squares coefficients
    cov_classical: np.ndarray  # (p, p) sigma^2 (X'X)^-1, sigma^2 from the residuals with n - p dof
    rank_deficient: int  # directions of the regressors that the data cannot tell apart


def _fit(X: np.ndarray, y: np.ndarray, T: np.ndarray, bootstrap: int, seed: int | None,
         timing: list[np.ndarray] | None = None) -> _Fit:
    """Weighted NNLS, its covariances, and ``bootstrap`` replicates.

    Each replicate draws whole blocks of consecutive intervals with replacement
    and, when ``timing`` holds the regressors of the update timings the data allow
    (:func:`_timing_search`), one of those timings at random: its spread carries
    both the noise and the timing uncertainty.
    """
    n, p = X.shape
    sw = 1.0 / np.sqrt(T / np.median(T))
    Xw = X * sw[:, None]
    yw = y * sw
    norms = np.sqrt(np.einsum("ij,ij->j", Xw, Xw))
    live = norms > 0
    scale = np.where(live, norms, 1.0)
    Xs = (Xw / scale)[:, live]
    q = Xs.shape[1]
    G = Xs.T @ Xs
    h = Xs.T @ yw
    ys = _nnls_gram(G, h)
    coef = np.zeros(p)
    coef[live] = ys / scale[live]
    resid = y - X @ coef
    rms = float(np.sqrt(np.mean(resid**2))) if n else float("nan")
    ss = float(np.sum((y - y.mean()) ** 2)) if n else 0.0
    r2 = 1.0 - float(np.sum(resid**2)) / ss if ss > 0 else float("nan")
    block = max(1, int(round(n ** (1.0 / 3.0))))
    cov, deficient, ys_ols, cov_c = _robust_cov(G, h, Xs, yw - Xs @ ys, block)
    cov_full = np.full((p, p), np.inf)
    cov_cl = np.full((p, p), np.inf)
    li = np.flatnonzero(live)
    cov_full[np.ix_(li, li)] = cov / np.outer(scale[live], scale[live])
    cov_cl[np.ix_(li, li)] = cov_c / np.outer(scale[live], scale[live])
    ols = np.zeros(p)
    ols[live] = ys_ols / scale[live]
    reps = np.full((bootstrap, p), np.nan)
    if bootstrap > 0 and n > 1:
        # A replicate's normal equations are the sums of its drawn blocks' Gram matrices.
        rng = np.random.default_rng(seed)
        alts = timing if timing else [X]
        which = rng.integers(0, len(alts), size=bootstrap)
        nb = math.ceil(n / block)
        draws_all = rng.integers(0, nb, size=(bootstrap, nb))
        init = ys > 0
        chunk = max(1, int(4e6 // max(q * q, 1)))
        for a_i, Xa in enumerate(alts):
            mine = np.flatnonzero(which == a_i)
            if mine.size == 0:
                continue
            Xas = ((Xa * sw[:, None]) / scale)[:, live]
            Gblk, hblk = _block_grams(Xas, yw, block)
            Gflat = Gblk.reshape(nb, q * q)
            for c0 in range(0, mine.size, chunk):
                idx = mine[c0:c0 + chunk]
                m = idx.size
                counts = np.zeros((m, nb))
                np.add.at(counts, (np.repeat(np.arange(m), nb), draws_all[idx].ravel()), 1.0)
                Gb = (counts @ Gflat).reshape(m, q, q)
                hb = counts @ hblk
                for i in range(m):
                    r = np.zeros(p)
                    r[live] = _nnls_gram(Gb[i], hb[i], init=init) / scale[live]
                    reps[idx[i]] = r
    return _Fit(coef, reps, n, rms, r2, block, cov_full, ols, cov_cl, deficient)


def _robust_cov(G: np.ndarray, h: np.ndarray, Xs: np.ndarray, rs: np.ndarray,
                block: int) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """Covariance of the unconstrained coefficients, robust to correlation within blocks,
    and the unconstrained solution itself.

    Sandwich ``G^-1 M G^-1`` with ``M`` the sum over blocks of consecutive
    intervals of ``(X_b' r_b)(X_b' r_b)'``. Directions in which the regressors
    are (nearly) collinear cannot be estimated from the data: every
    coefficient that has weight in one gets an infinite variance.
    """
    n, q = Xs.shape
    if q == 0:
        return np.zeros((0, 0)), 0, np.zeros(0), np.zeros((0, 0))
    lam, V = np.linalg.eigh(G)
    tiny = lam <= 1e-9 * max(float(lam.max()), 1e-300)
    inv = np.zeros_like(lam)
    np.divide(1.0, lam, out=inv, where=~tiny)
    Ginv = (V * inv) @ V.T
    nb = math.ceil(n / block)
    pad = nb * block - n
    Xp = np.concatenate([Xs, np.zeros((pad, q))]).reshape(nb, block, q)
    rp = np.concatenate([rs, np.zeros(pad)]).reshape(nb, block)
    g = np.einsum("blq,bl->bq", Xp, rp)
    M = g.T @ g * (nb / max(nb - 1, 1))
    cov = Ginv @ M @ Ginv
    # The classical one too: with few blocks per coefficient the sandwich runs low.
    sigma2 = float(rs @ rs) / max(n - q, 1)
    cov_c = sigma2 * Ginv
    if tiny.any():
        bad = (V[:, tiny] ** 2).sum(axis=1) > 1e-6
        for c in (cov, cov_c):
            c[bad, :] = np.inf
            c[:, bad] = np.inf
    return cov, int(tiny.sum()), Ginv @ h, cov_c


def _ci(reps: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    a = (1.0 - level) / 2.0
    if reps.shape[0] == 0 or np.all(np.isnan(reps)):
        nan = np.full(reps.shape[1:], np.nan)
        return nan, nan.copy()
    return np.nanquantile(reps, a, axis=0), np.nanquantile(reps, 1.0 - a, axis=0)


def _usable_intervals(upd: Updates, span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boundaries, dE and a keep-mask of the intervals inside ``span`` whose edges are placed sharply."""
    u = upd.t_ns
    dE = np.diff(upd.value)
    T = np.diff(u)
    half = upd.h_ns + upd.hc_ns
    lo = upd.lo_ns if upd.lo_ns.size == u.size else u
    hi = upd.hi_ns if upd.hi_ns.size == u.size else u
    inside = (lo[:-1] >= span[0]) & (hi[1:] <= span[1])
    med = float(np.median(T)) if T.size else 0.0
    sharp = (half[:-1] <= 0.25 * med) & (half[1:] <= 0.25 * med)
    keep = inside & sharp & (T > 0) & (dE >= 0)
    return u, dE, keep


def attribute_names(
    recording: Recording,
    kernels: KernelTable,
    *,
    alignment: Alignment | None = None,
    device_map: dict[int, str] | None = None,
    span_ns: tuple[int, int] | None = None,
    by: str = "name",
    max_names: int = 128,
    bootstrap: int = 400,
    level: float = 0.95,
    min_launches: int = 20,
    min_intervals: int = 30,
    max_relative_ci: float = 0.05,
    timing: bool = True,
    seed: int | None = 0,
    updates: Mapping[str, Updates] | None = None,
) -> NameEnergies:
    """Per kernel name, statistically: power and energy per launch with a confidence interval.

    ``kernels`` is a :class:`~jouletrace.kernels.traces.KernelTable`; ``alignment``
    defaults to :func:`align` (clock pairs). ``span_ns`` (CLOCK_MONOTONIC)
    limits the counter intervals used (default: first kernel start to last
    kernel end, per device). ``by`` = "name" or "short_name" (nsys).
    ``max_names``: names beyond this many, ranked by share time, are lumped
    into one "(other kernels)" regressor. ``bootstrap`` replicates give the
    ``level`` confidence intervals (``seed`` for reproducibility; 0 replicates:
    no intervals). ``timing=False`` uses the update placement as it is, without
    searching its shared phase or resampling it. ``min_launches``,
    ``min_intervals`` and ``max_relative_ci`` decide ``resolved``; a name that is
    not resolved says why in ``unresolved_reason``. The counter updates are
    :meth:`Recording.updates <jouletrace.Recording.updates>` — the placement the
    windows and the per-launch energies use — unless ``updates`` maps a channel to
    another :class:`~jouletrace.energy.updates.Updates` (e.g. the exact instants of
    a simulation, as an oracle). Method: module docstring.
    """
    if alignment is None:
        alignment = align(kernels, recording)
    names, name_id = _grouped_names(kernels, by)
    chans = device_channels(kernels, recording, device_map)
    if not chans:
        raise InvalidArgumentError(
            "no energy channel of the recording matches the trace's devices "
            f"(trace devices {sorted(set(np.unique(kernels.device).tolist()))}, recording "
            f"channels {recording.channels}); pass device_map={{trace_device: 'gpu0'}}"
        )
    cols: dict[str, list[np.ndarray]] = {}
    meta: dict[str, Any] = {"alignment": alignment, "level": level, "bootstrap": bootstrap,
                            "by": by, "devices": {}}
    for dev, (ch, how) in chans.items():
        sel = np.flatnonzero(kernels.device == dev)
        s = alignment.to_monotonic(kernels.start_ns[sel])
        e = alignment.to_monotonic(kernels.end_ns[sel])
        nid = name_id[sel]
        order = np.argsort(s, kind="stable")
        s, e, nid = s[order], e[order], nid[order]
        upd = updates[ch] if updates is not None and ch in updates else recording.updates(ch)
        res, dmeta = _names_one_device(
            recording, ch, s, e, nid, names, span_ns, max_names, bootstrap, level,
            min_launches, min_intervals, max_relative_ci, timing, seed, upd,
        )
        dmeta["channel"] = ch
        dmeta["device_mapping"] = how
        meta["devices"][dev] = dmeta
        res["device"] = np.full(len(res["name"]), dev, dtype=np.int64)
        for k, v in res.items():
            cols.setdefault(k, []).append(v)
    first = ["device", "name", "name_id"]
    out = {k: np.concatenate(cols[k]) for k in first + [k for k in cols if k not in first]}
    return NameEnergies(out, meta).sort()


def _grouped_names(kernels: KernelTable, by: str) -> tuple[list[str], np.ndarray]:
    if by == "name":
        return list(kernels.names), np.asarray(kernels.name_id, dtype=np.int64)
    if by == "short_name":
        short = kernels.short_names or kernels.names
        uniq, inv = np.unique(np.asarray(short, dtype=object), return_inverse=True)
        return [str(x) for x in uniq], inv[np.asarray(kernels.name_id)].astype(np.int64)
    raise InvalidArgumentError(f"by must be 'name' or 'short_name', got {by!r}")


def _names_one_device(recording: Recording, ch: str, s: np.ndarray, e: np.ndarray, nid: np.ndarray,
                      names: list[str], span_ns: tuple[int, int] | None, max_names: int, bootstrap: int,
                      level: float, min_launches: int, min_intervals: int, max_relative_ci: float,
                      timing: bool, seed: int | None, upd: Updates) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    n_all = len(names)
    span = span_ns if span_ns is not None else (int(s.min()), int(e.max())) if s.size else (0, 0)
    sw = _sweep(s, e) if s.size else None
    share_launch = (sw.w[sw.end_pos] - sw.w[sw.start_pos]) if sw is not None else np.zeros(0)
    launches = np.bincount(nid, minlength=n_all)
    active = np.bincount(nid, weights=(e - s).astype(np.float64) * 1e-9, minlength=n_all)
    share_tot = np.bincount(nid, weights=share_launch, minlength=n_all)
    present = np.flatnonzero(launches > 0)
    # Regressor groups: the max_names names with most share time, then "(other kernels)".
    rank = present[np.argsort(-share_tot[present], kind="stable")]
    own = rank[:max_names]
    lumped = rank[max_names:]
    group_of = np.full(n_all, -1, dtype=np.int64)
    group_of[own] = np.arange(own.size)
    if lumped.size:
        group_of[lumped] = own.size
    n_groups = own.size + (1 if lumped.size else 0)
    p = n_groups + 1
    u_all, dE_all, keep = (
        _usable_intervals(upd, span) if upd.t_ns.size >= 2 else (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool))
    )
    dmeta: dict[str, Any] = {"updates": int(upd.t_ns.size), "update_placement": upd.summary()}
    if upd.t_ns.size >= 3:
        dmeta["update_period_ns"] = float(np.median(np.diff(upd.t_ns)))
    if keep.sum() < 2 or sw is None:  # sw is None when there are no launches
        X = np.zeros((0, p))
        dE = np.zeros(0)
        T = np.zeros(0)
        cands: list[np.ndarray] = []
    else:
        dE = dE_all[keep]
        T = np.diff(u_all).astype(np.float64)[keep] * 1e-9
        period = float(np.median(np.diff(upd.t_ns)))
        fits = [(label, window, _timing_search(sw, s, e, group_of[nid], n_groups, upd, keep, dE, T, timing, window))
                for label, window in _counter_models(recording, ch, period)]
        X, cands, tmeta, cmeta = _choose_counter_model(fits, T.size - p)
        dmeta.update(tmeta)
        dmeta.update(cmeta)
    share_k, idle_k = X[:, :n_groups], X[:, n_groups]
    dmeta["intervals"] = int(T.size)
    fitted = T.size >= 2
    if fitted:
        fit = _fit(X, dE, T, bootstrap, seed, cands)
        coef, reps = fit.coef, fit.reps
        dmeta.update(residual_rms_j=fit.rms_j, r2=fit.r2, block_length=fit.block,
                     collinear_directions=fit.rank_deficient)
        cov, cov_c, ols = fit.cov, fit.cov_classical, fit.ols
    else:
        coef = np.full(p, np.nan)
        reps = np.full((max(bootstrap, 0), p), np.nan)
        cov = cov_c = np.full((p, p), np.inf)
        ols = np.full(p, np.nan)
        dmeta["note"] = "fewer than two counter intervals inside the trace's span: no estimate"
    p_idle = coef[-1]

    def lin_se(A: np.ndarray) -> np.ndarray:
        return np.maximum(_lin_se(cov, A), _lin_se(cov_c, A))

    idle_row = np.zeros((1, p))
    idle_row[0, -1] = 1.0
    i_lo, i_hi = _interval(np.array([p_idle]), reps[:, -1:], idle_row @ ols, lin_se(idle_row), level, True)
    dmeta.update(idle_power_w=float(p_idle), idle_power_ci_low_w=float(i_lo[0]),
                 idle_power_ci_high_w=float(i_hi[0]),
                 idle_energy_j=float(p_idle * idle_k.sum()) if T.size else float("nan"))
    # Rows: one per own name, one for the lump.
    g_launch = np.bincount(group_of[present], weights=launches[present], minlength=n_groups)
    g_active = np.bincount(group_of[present], weights=active[present], minlength=n_groups)
    g_share = np.bincount(group_of[present], weights=share_tot[present], minlength=n_groups)
    g_int = (share_k > 0).sum(axis=0) if share_k.size else np.zeros(n_groups, np.int64)
    mean_share = np.divide(g_share, g_launch, out=np.full(n_groups, np.nan), where=g_launch > 0)
    P = coef[:n_groups]
    Pr = reps[:, :n_groups]
    above = Pr - reps[:, -1:]
    # Each reported number is linear in the coefficients: its rows of A in A @ coef.
    eye = np.eye(n_groups, p)
    minus_idle = eye.copy()
    minus_idle[:, -1] = -1.0
    ms = np.nan_to_num(mean_share)

    def ci(est: np.ndarray, rep: np.ndarray, A: np.ndarray, nonneg: bool) -> tuple[np.ndarray, np.ndarray]:
        return _interval(est, rep, A @ ols, lin_se(A), level, nonneg)

    row_names = np.empty(n_groups, dtype=object)
    row_names[: own.size] = [names[i] for i in own]
    row_ids = np.concatenate([own, [-1] * (n_groups - own.size)]).astype(np.int64)
    if lumped.size:
        row_names[-1] = f"(other kernels: {lumped.size} names)"
    p_lo, p_hi = ci(P, Pr, eye, True)
    a_lo, a_hi = ci(P - p_idle, above, minus_idle, False)
    epl_lo, epl_hi = ci(P * mean_share, Pr * mean_share, eye * ms[:, None], True)
    dyn_lo, dyn_hi = ci((P - p_idle) * mean_share, above * mean_share, minus_idle * ms[:, None], False)
    tot_lo, tot_hi = ci(P * g_share, Pr * g_share, eye * g_share[:, None], True)
    limit = recording.power_limit_w(ch.split(".", 1)[0]) if hasattr(recording, "power_limit_w") else None
    reason = _unresolved_reasons(P, p_lo, p_hi, ols[:n_groups], g_launch, np.asarray(g_int), row_ids,
                                 min_launches, min_intervals, max_relative_ci, limit)
    resolved = reason == ""
    res = {
        "name": row_names,
        "name_id": row_ids,
        "launches": g_launch.astype(np.int64),
        "active_s": g_active,
        "share_s": g_share,
        "overlap_fraction": np.divide(g_active - g_share, g_active, out=np.zeros(n_groups), where=g_active > 0),
        "intervals": np.asarray(g_int, dtype=np.int64),
        "power_w": P,
        "power_ci_low_w": p_lo,
        "power_ci_high_w": p_hi,
        "power_above_idle_w": P - p_idle,
        "power_above_idle_ci_low_w": a_lo,
        "power_above_idle_ci_high_w": a_hi,
        "energy_per_launch_j": P * mean_share,
        "energy_per_launch_ci_low_j": epl_lo,
        "energy_per_launch_ci_high_j": epl_hi,
        "dynamic_energy_per_launch_j": (P - p_idle) * mean_share,
        "dynamic_energy_per_launch_ci_low_j": dyn_lo,
        "dynamic_energy_per_launch_ci_high_j": dyn_hi,
        "total_energy_j": P * g_share,
        "total_energy_ci_low_j": tot_lo,
        "total_energy_ci_high_j": tot_hi,
        "resolved": resolved,
        "enough_data": resolved.copy(),
        "unresolved_reason": reason,
    }
    return res, dmeta


def _counter_models(recording: Recording, ch: str, period_ns: float) -> list[tuple[str, float | None]]:
    """The counter models to fit: (label, part-time window in ns or None for full-period).

    A counter known to be full-period or part-time (the recording's sensor model,
    :meth:`jouletrace.Recording.sensor_model`) is fitted as such; an unknown one both
    ways (its window as stated, else the published ~25 % of the period)."""
    model = recording.sensor_model(ch.split(".", 1)[0]) if hasattr(recording, "sensor_model") else None
    counter = getattr(model, "counter", "full")
    window = getattr(model, "avg_window_ns", None) or 0.25 * period_ns
    if window >= 0.999 * period_ns:  # a window as long as the period: the same as full
        return [("full", None)]
    if counter == "part_time":
        return [("part_time", float(window))]
    if counter == "unknown":
        return [("full", None), ("part_time", float(window))]
    return [("full", None)]


#: Residual sum of squares, in units of the residual variance, by which one counter model
#: must fit better than the other to be chosen alone.
_MODEL_DECISIVE = 10.0


def _choose_counter_model(fits: list[tuple[str, float | None, _Timing]],
                          dof: int) -> tuple[np.ndarray, list[np.ndarray], dict[str, Any], dict[str, Any]]:
    """The counter model whose fit leaves the least residual; when the other is not clearly
    worse (by ``_MODEL_DECISIVE`` residual variances), its timings stay among the bootstrap's
    candidates too, so the intervals carry the doubt about the model."""
    best = min(fits, key=lambda f: f[2][2]["rss"])
    label, window, (X, cands, tmeta) = best
    cmeta: dict[str, Any] = {"counter_model": label, "part_time_window_ns": window}
    if len(fits) == 1:
        cmeta["counter_model_basis"] = "the recording's sensor model"
        return X, cands, tmeta, cmeta
    other = next(f for f in fits if f is not best)
    sigma2 = best[2][2]["rss"] / max(dof, 1)
    margin = (other[2][2]["rss"] - best[2][2]["rss"]) / max(sigma2, 1e-300)
    if margin >= _MODEL_DECISIVE:
        cmeta["counter_model_basis"] = (f"counter model unknown; the residuals favour {label} "
                                        f"by {margin:.0f} residual variances")
        return X, cands, tmeta, cmeta
    cmeta["counter_model_basis"] = (f"counter model unknown and not told apart by the residuals "
                                    f"({margin:.1f} residual variances): both in the intervals")
    return X, cands + other[2][1], tmeta, cmeta


def _unresolved_reasons(P: np.ndarray, lo: np.ndarray, hi: np.ndarray, ols: np.ndarray, launches: np.ndarray,
                        intervals: np.ndarray, row_ids: np.ndarray, min_launches: int, min_intervals: int,
                        max_relative_ci: float, limit_w: float | None) -> np.ndarray:
    """Why each name's estimate is not resolved ("" when it is), first reason that applies.

    A fit is degenerate, whatever its interval says, when the estimate sits on the
    non-negativity bound while the unconstrained fit is negative (the data want a
    negative power: a misfit, not a measurement), when its interval has zero width
    (no information about it reached the fit), or when it exceeds the board's power
    limit (physically impossible).
    """
    n = P.size
    out = np.full(n, "", dtype=object)
    half = 0.5 * (hi - lo)

    def mark(mask: np.ndarray, text: Any) -> None:
        free = mask & (out == "")
        for i in np.flatnonzero(free):
            out[i] = text(i) if callable(text) else text

    mark(~np.isfinite(P), "no estimate (too few counter intervals)")
    mark(row_ids < 0, "several names lumped together (raise max_names)")
    mark(launches < min_launches, lambda i: f"{int(launches[i])} launches (fewer than {min_launches})")
    mark(intervals < min_intervals,
         lambda i: f"seen in {int(intervals[i])} counter intervals (fewer than {min_intervals})")
    mark((P <= 0) & (ols < 0), "estimate at zero where the unconstrained fit is negative (misfit)")
    mark(~np.isfinite(half), "not separable from other names (collinear launches)")
    mark(half <= 0, "interval of zero width")
    if limit_w is not None and np.isfinite(limit_w):
        mark(P > limit_w, lambda i: f"above the board's power limit ({limit_w:g} W)")
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        rel = np.where(np.abs(P) > 0, half / np.abs(P), np.inf)
    mark(~(rel <= max_relative_ci),
         lambda i: f"interval ±{100 * rel[i]:.3g} % (wider than ±{100 * max_relative_ci:g} %)")
    return out


def _lin_se(cov: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Standard error of each row of ``A @ coef`` (inf where a row leans on an unidentifiable coefficient)."""
    bad = ~np.isfinite(np.diag(cov))
    finite = np.where(np.isfinite(cov), cov, 0.0)
    var = np.einsum("ri,ij,rj->r", A, finite, A)
    se = np.sqrt(np.maximum(var, 0.0))
    leans = (np.abs(A[:, bad]) > 0).any(axis=1) if bad.any() else np.zeros(A.shape[0], bool)
    return np.where(leans, np.inf, se)


def _interval(est: np.ndarray, reps: np.ndarray, lin: np.ndarray, se: np.ndarray,
              level: float, nonneg: bool) -> tuple[np.ndarray, np.ndarray]:
    """The union of the bootstrap percentile interval (whose replicates resample the update
    timing too), the estimate, and ``lin +- z se`` (``lin``: the unconstrained estimate).

    Where nothing bounds a side (no replicates, an unidentifiable direction) it is
    infinite — 0 below for a quantity that cannot be negative — never NaN.
    """
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    b_lo, b_hi = _ci(reps, level)
    lo = np.fmin(np.fmin(b_lo, est), lin - z * se)
    hi = np.fmax(np.fmax(b_hi, est), lin + z * se)
    lo = np.where(np.isnan(lo), -np.inf, lo)
    hi = np.where(np.isnan(hi), np.inf, hi)
    if nonneg:
        lo = np.maximum(lo, 0.0)
    return lo, hi


def _weighted_nnls(X: np.ndarray, y: np.ndarray, T: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
    """The fit of :func:`_fit` alone (rows weighted by 1/sqrt(T)); ``init``: a nearby
    problem's positive coefficients, to start from."""
    sw = 1.0 / np.sqrt(T / np.median(T))
    A = X * sw[:, None]
    norms = np.sqrt(np.einsum("ij,ij->j", A, A))
    live = norms > 0
    scale = np.where(live, norms, 1.0)
    out = np.zeros(X.shape[1])
    if live.any():
        Al = (A / scale)[:, live]
        out[live] = _nnls_gram(Al.T @ Al, Al.T @ (y * sw), init=None if init is None else init[live])
    return out / scale


#: The timing search: a coarse grid of shared phases x tilts, then finer passes.
_PHASES = 9
_TILTS = 5
_MAX_PASSES = 10
#: Longer recordings search the timing on this many intervals (blocks of _SEARCH_BLOCK
#: consecutive ones spread over the recording), then check the allowed timings (at most
#: _FULL_CANDIDATES of them) on every interval.
_SEARCH_INTERVALS = 4096
_SEARCH_BLOCK = 64
_FULL_CANDIDATES = 12
#: Finer passes stop once this many timings are within the residuals' allowance.
_MIN_CANDIDATES = 6
#: Positions across each update's independent half-width (their average is the regressor).
_OWN_LEVELS = 5


def _cumulative_at(sw: _Sweep, s: np.ndarray, e: np.ndarray, gid: np.ndarray, n_groups: int,
                   upd: Updates, cands: np.ndarray, cache: dict[str, Any] | None = None,
                   shift_ns: int = 0, at: np.ndarray | None = None) -> np.ndarray:
    """Cumulative regressors (share per group, idle; s) at every update for each timing candidate.

    Candidate ``(a, b)`` puts update ``k`` at ``t_k + a phase_k + b tilt_k``
    (:class:`~jouletrace.energy.updates.Updates`); where it has an independent
    half-width ``h_k`` too, the regressors are averaged over ``+ g h_k`` for ``g``
    across [-1, 1] (trapezoid rule): the expected regressor of an update anywhere in
    its own range. ``shift_ns`` moves every position earlier by that much (the start
    of a part-time counter's window). ``at``: only these updates (indices, sorted).
    Shape (len(cands), len(upd) or len(at), n_groups + 1).
    """
    u = upd.t_ns - int(shift_ns)
    K = u.size
    gaps = np.diff(u).astype(np.float64)
    left = np.concatenate([[gaps[0]], gaps])
    right = np.concatenate([gaps, [gaps[-1]]])
    room = 0.45 * np.minimum(left, right)  # never past a neighbour
    ph = upd.phase_ns if upd.phase_ns.size == K else np.zeros(K)
    tl = upd.tilt_ns if upd.tilt_ns.size == K else np.zeros(K)
    h = np.minimum(upd.h_ns, room)
    if at is not None:
        u, room, ph, tl, h = u[at], room[at], ph[at], tl[at], h[at]
        K = u.size
    own = np.linspace(-1.0, 1.0, _OWN_LEVELS) if np.any(h > 0) else np.zeros(1)
    wts = np.ones(own.size)
    if own.size > 1:
        wts[[0, -1]] = 0.5
    wts /= wts.sum()
    shared = cands[:, 0:1] * ph[None, :] + cands[:, 1:2] * tl[None, :]
    off = shared[:, :, None] + own[None, None, :] * h[None, :, None]
    off = np.clip(np.rint(off), -np.floor(room)[None, :, None], np.floor(room)[None, :, None]).astype(np.int64)
    n_c, L = cands.shape[0], own.size
    # Only launches near an update differ between candidates. Zone k, [u_k - z_k, u_k + z_k],
    # holds every position update k may take (its whole range, so one set of zones serves
    # every pass of a search: ``cache``); the cumulative regressors at the zone starts come
    # from every launch once, the rest from the launches that overlap a zone alone.
    key = f"zone{int(shift_ns)}" + ("" if at is None else f"/{at.size}")
    zone = None if cache is None else cache.get(key)
    if zone is None:
        reach = np.minimum(np.abs(ph) + np.abs(tl) + h, np.floor(room))
        z = np.ceil(reach).astype(np.int64) + 1
        zs = u - z
        # From a common origin before every launch and zone, so that cumulative values of
        # different calls (a part-time window's start and end) can be subtracted.
        # (one origin for every shift: 10 s before the first launch or update, more than any
        # shift or zone reaches).
        origin = min(int(sw.t[0]), int(upd.t_ns[0])) - 10_000_000_000
        share0, idle0 = _matrix_from_sweep(sw, s, e, gid, n_groups, np.concatenate([[origin], zs]))
        C0 = np.cumsum(np.column_stack([share0, idle0]), axis=0)
        j = np.searchsorted(u + z, s, side="right")  # the first zone ending after each start
        near = np.flatnonzero((j < K) & (zs[np.minimum(j, K - 1)] < e))
        zone = (zs, C0, near)
        if cache is not None:
            cache[key] = zone
    zs, C0, near = zone
    pos = u[None, :, None] + off  # (n_c, K, L)
    pts = np.concatenate([zs, pos.ravel()])
    order = np.argsort(pts, kind="stable")
    share, idle = _matrix_from_sweep(sw, s[near], e[near], gid[near], n_groups, pts[order], near)
    cum = np.concatenate([np.zeros((1, n_groups + 1)), np.cumsum(np.column_stack([share, idle]), axis=0)])
    at_pt = np.empty((pts.size, n_groups + 1))
    at_pt[order] = cum
    at_zs = at_pt[:K]
    at_pos = at_pt[K:].reshape(n_c, K, L, n_groups + 1) - at_zs[None, :, None, :] + C0[None, :, None, :]
    return np.einsum("fklp,l->fkp", at_pos, wts)


def _timing_search(sw: _Sweep, s: np.ndarray, e: np.ndarray, gid: np.ndarray, n_groups: int, upd: Updates,
                   keep: np.ndarray, y: np.ndarray, T: np.ndarray, timing: bool,
                   window_ns: float | None = None) -> _Timing:
    """The update timing within the placement's own uncertainty (module docstring, step 4).

    Independent offsets (sample brackets) are averaged over; a grid's shared phase
    and tilt are searched: ``_PHASES x _TILTS`` candidates across their ranges, then
    finer passes around the best. Every candidate whose weighted residual sum of
    squares is within ``3.84 sigma^2`` of the best (an F-like test at 95 %) stays;
    the bootstrap draws among them, so the intervals carry the timing uncertainty.
    Returns the best candidate's regressors, every kept candidate's, metadata.

    With ``window_ns`` the counter is part-time: update ``k + 1`` brings the energy of
    the last ``window_ns`` before it, scaled to the interval (``T_k / window``), so the
    regressors are the shares inside that window, scaled the same way.
    """
    ki = np.flatnonzero(keep)
    wsq = 1.0 / np.sqrt(T / np.median(T))
    K = upd.t_ns.size
    has_phase = upd.phase_ns.size == K and bool(np.any(upd.phase_ns > 0))
    has_tilt = upd.tilt_ns.size == K and bool(np.any(upd.tilt_ns != 0))
    searched = timing and has_phase
    w = int(round(window_ns)) if window_ns else 0
    # A long recording is searched on blocks of consecutive intervals spread over it (the
    # timing is a few numbers for the whole grid); the timings allowed there are then checked
    # on every interval.
    if searched and ki.size > _SEARCH_INTERVALS:
        nb = _SEARCH_INTERVALS // _SEARCH_BLOCK
        st = np.linspace(0, ki.size - _SEARCH_BLOCK, nb).astype(np.int64)
        rows = np.unique((st[:, None] + np.arange(_SEARCH_BLOCK)).ravel())
    else:
        rows = np.arange(ki.size)
    results: list[tuple[float, tuple[float, float], np.ndarray]] = []  # rss, (phase, tilt), X
    cache: dict[str, Any] = {}
    warm: list[np.ndarray | None] = [None]  # the first fit's positive set starts the others

    def regressors(cands: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(len(cands), len(r), p) regressors of intervals ``r`` (indices into ``ki``)."""
        at = None if r.size == ki.size else np.unique(np.concatenate([ki[r], ki[r] + 1]))
        lo = ki[r] if at is None else np.searchsorted(at, ki[r])
        hi = ki[r] + 1 if at is None else np.searchsorted(at, ki[r] + 1)
        C = _cumulative_at(sw, s, e, gid, n_groups, upd, cands, cache, at=at)
        if not w:
            return C[:, hi] - C[:, lo]
        C0 = _cumulative_at(sw, s, e, gid, n_groups, upd, cands, cache, shift_ns=w, at=at)
        return (C[:, hi] - C0[:, hi]) * (T[r] * 1e9 / w)[None, :, None]

    def fit_rss(X: np.ndarray, r: np.ndarray) -> float:
        c = _weighted_nnls(X, y[r], T[r], warm[0])
        if warm[0] is None:
            warm[0] = c > 0
        res = (X @ c - y[r]) * wsq[r]
        return float(res @ res)

    def evaluate(cands: np.ndarray) -> None:
        Xs = regressors(cands, rows)
        for j in range(cands.shape[0]):
            results.append((fit_rss(Xs[j], rows), (float(cands[j, 0]), float(cands[j, 1])), Xs[j]))

    def grid(a0: float, b0: float, da: float, db: float, na: int, nb: int) -> np.ndarray:
        a = np.clip(a0 + da * np.linspace(-1.0, 1.0, na), -1.0, 1.0)
        b = np.clip(b0 + db * np.linspace(-1.0, 1.0, nb), -1.0, 1.0) if has_tilt else np.zeros(1)
        c = np.array([(x, y) for x in np.unique(a) for y in np.unique(b)])
        done = {r[1] for r in results}
        return np.array([x for x in c if (float(x[0]), float(x[1])) not in done]).reshape(-1, 2)

    def allowed() -> np.ndarray:
        rss = np.array([r[0] for r in results])
        s2 = rss.min() / max(rows.size - n_groups - 1, 1)
        return np.flatnonzero(rss - rss.min() <= 3.84 * s2)

    if not searched:
        evaluate(np.zeros((1, 2)))
    else:
        da, db = 1.0, 1.0
        evaluate(grid(0.0, 0.0, da, db, _PHASES, _TILTS))
        da, db = 2.0 / (_PHASES - 1), 2.0 / (_TILTS - 1)
        # Finer passes around the best until the timings the residuals allow span several
        # grid points (the allowed region is resolved), or the grid is below 1 ns.
        for _ in range(_MAX_PASSES):
            a0, b0 = min(results, key=lambda r: r[0])[1]
            c = grid(a0, b0, da, db, 5, 5)
            if c.size:
                evaluate(c)
            if allowed().size >= _MIN_CANDIDATES:
                break
            if da * float(np.max(upd.phase_ns)) < 1.0:
                break
            da, db = da / 2.0, db / 2.0
    ok = allowed()
    searched_on = int(rows.size)
    if rows.size < ki.size:
        # The timings the blocks allow, checked on every interval (at most _FULL_CANDIDATES,
        # spread over the allowed set, the best first).
        best_first = ok[np.argsort([results[i][0] for i in ok])]
        pick = best_first[np.unique(np.linspace(0, best_first.size - 1,
                                                min(best_first.size, _FULL_CANDIDATES)).astype(np.int64))]
        rows = np.arange(ki.size)
        checked = []
        for i in pick:
            X = regressors(np.array([results[i][1]]), rows)[0]
            checked.append((fit_rss(X, rows), results[i][1], X))
        results = checked
        ok = allowed()
    rss = np.array([r[0] for r in results])
    b = int(np.argmin(rss))
    cands = [results[i][2] for i in ok]
    ph = float(np.median(upd.phase_ns)) if has_phase else 0.0
    meta = {
        "rss": float(rss[b]),
        "update_timing": upd.method if not searched else f"{upd.method}, shared phase and tilt searched",
        "update_phase_ns": results[b][1][0] * ph,
        "update_phase_half_width_ns": ph,
        "update_tilt_fraction": results[b][1][1],
        "timing_candidates": int(ok.size),
        "timing_searched_on_intervals": searched_on,
        "timing_candidate_phase_range_ns": [min(results[i][1][0] for i in ok) * ph,
                                            max(results[i][1][0] for i in ok) * ph],
    }
    return results[b][2], cands, meta
