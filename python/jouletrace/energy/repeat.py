"""Short work measured by repetition: :func:`measure` (``jouletrace.measure``).

A call far shorter than the sensor's update period cannot be measured once
(DESIGN.md §4). Run back to back, its energy per call is the energy of many
periods divided by the calls, and that is a *statistical* number with a
confidence interval. Method:

1. An idle stretch (at least five update periods) gives the idle power ``p0``
   from the counter (a constant load is read exactly even by a part-time counter).
2. A warm-up runs ``fn`` for ``warmup_s`` (clocks, caches, JIT), uncounted.
3. ``trials`` trials; each runs ``fn`` back to back for ``periods_per_trial``
   update periods, padded by two idle periods on each side so that the trial's
   window opens and closes on flat idle power (no edge error), and preceded by
   a random idle delay so trials start at random phases. Inside a trial, about
   once per update period, a random pause of up to one call's duration shifts
   the phase of the calls against the sensor: a part-time sensor's window then
   samples every part of the call evenly instead of locking onto one part.
4. Per trial: ``e = (E_window - p0 * (T_window - T_calls)) / n``, the energy of
   the window less the idle energy of the time not spent in ``fn``, per call.
   The estimate pools the trials (all the calls' energy over all the calls: a ratio
   estimator, so trials of few slow calls weigh as their calls do); its interval is
   Student's t over the trials, with the ratio's standard error by the delta method. ``cooldown_s`` idles between trials.

It refuses (raises :class:`~jouletrace.errors.InsufficientDataError`) when fewer
than three trials completed or the interval's half-width exceeds ``max_rel_ci``
of the estimate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _core
from ..errors import InvalidArgumentError, JouletraceError
from .sampler import Sampler

__all__ = ["measure", "RepeatResult", "InsufficientDataError", "t_quantile"]


class InsufficientDataError(JouletraceError):
    """The repetitions do not support a number at the asked confidence."""


def t_quantile(level: float, dof: int) -> float:
    """Two-sided Student t quantile: ``P(|T| <= t) = level`` for ``dof`` degrees of freedom.

    With ``x = t^2 / (dof + t^2) = sin^2(theta)`` the two-sided probability is
    ``int_0^theta cos^(dof-1) / int_0^(pi/2) cos^(dof-1)``, a smooth integrand
    (no singularity), integrated on a fine grid; accurate to ~1e-6 relative.
    """
    if not 0.0 < level < 1.0:
        raise InvalidArgumentError(f"level must be in (0, 1), got {level!r}")
    if dof < 1:
        raise InvalidArgumentError(f"dof must be >= 1, got {dof!r}")
    theta = np.linspace(0.0, math.pi / 2, 200_001)
    f = np.cos(theta) ** (dof - 1)
    cdf = np.concatenate(([0.0], np.cumsum((f[1:] + f[:-1]) * 0.5)))
    cdf /= cdf[-1]
    th = float(np.interp(level, cdf, theta))
    return math.sqrt(dof) * math.tan(th)


@dataclass
class RepeatResult:
    """Energy and time per call of a repeated callable (statistical, with a 95 % interval)."""

    energy_j: float  # per call, all the device's power while the call ran (idle included)
    energy_ci_j: float  # half-width of the 95 % interval
    energy_se_j: float  # standard error (delta method over trials); other levels: interval()
    dynamic_energy_j: float  # per call, above idle power
    time_s: float  # mean wall time per call
    time_ci_s: float
    idle_power_w: float
    calls: int
    trials: int
    per_trial_j: list[float]
    sensor_model: dict[str, Any]
    device: str
    kind: str = "statistical"
    call_spans_ns: np.ndarray | None = field(default=None, repr=False)

    @property
    def dof(self) -> int:
        """Degrees of freedom of the interval (trials - 1)."""
        return self.trials - 1

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Energy per call (J): the two-sided Student t interval at ``level`` over the trials."""
        h = t_quantile(level, self.dof) * self.energy_se_j
        return self.energy_j - h, self.energy_j + h

    def __str__(self) -> str:
        return (f"{self.energy_j * 1e3:.4g} mJ ± {self.energy_ci_j * 1e3:.2g} mJ per call (95 %, statistical, "
                f"{self.calls} calls in {self.trials} trials; counter {self.sensor_model.get('counter')} "
                f"({self.sensor_model.get('source')})), {self.time_s * 1e6:.4g} µs per call")


def _spin_until(t_ns: int) -> None:
    while _core.monotonic_ns() < t_ns:
        pass


def _idle_until(t_ns: int) -> None:
    left = t_ns - _core.monotonic_ns()
    if left > 2_000_000:
        time.sleep((left - 1_000_000) * 1e-9)
    _spin_until(t_ns)


def measure(fn: Callable[[], Any], *, sampler: Any = None, sim: Any = None, device: str = "gpu0",
            trials: int = 5, periods_per_trial: int = 10, warmup_s: float = 0.2, cooldown_s: float = 0.0,
            max_rel_ci: float = 0.05, seed: int | None = None, keep_spans: bool = False,
            rate_hz: float = 1000.0) -> RepeatResult:
    """Energy and time per call of ``fn`` (module docstring). ``fn`` must return when its work is done.

    ``sampler``: a running :class:`jouletrace.Sampler` of the device; else one
    is started (``Sampler("sim", sim=sim)`` with ``sim``, else ``"nvml"``).
    ``keep_spans`` keeps each call's (start, end) CLOCK_MONOTONIC ns.
    """
    if trials < 3:
        raise InvalidArgumentError("trials must be >= 3 (the interval comes from the spread between trials)")
    own = sampler is None
    if own:
        sampler = Sampler("sim", sim=sim, rate_hz=rate_hz) if sim is not None else Sampler("nvml", rate_hz=rate_hz)
        sampler.start()
    rng = np.random.default_rng(seed)
    try:
        # 1. idle: the period, then idle power over >= 5 periods.
        time.sleep(0.3)
        u = sampler.recording().updates(device)
        if u.period_ns is None:
            time.sleep(0.5)
            u = sampler.recording().updates(device)
        if u.period_ns is None:
            raise InsufficientDataError(f"{device}'s energy counter shows no updates; nothing to measure with")
        P = int(u.period_ns)
        i0 = _core.monotonic_ns()
        _idle_until(i0 + 5 * P)
        i1 = _core.monotonic_ns()
        _idle_until(i1 + 3 * P // 2)  # the interval holding i1 must stay idle too
        # 2. warm-up
        end = _core.monotonic_ns() + int(warmup_s * 1e9)
        while _core.monotonic_ns() < end:
            fn()
        # 3. trials
        windows, idle_ns, calls, spans = [], [], [], []
        for _ in range(trials):
            _idle_until(_core.monotonic_ns() + 2 * P + int(rng.uniform(0, P)))
            w0 = _core.monotonic_ns() - 2 * P
            stop = _core.monotonic_ns() + periods_per_trial * P
            next_pause = _core.monotonic_ns() + int(P * rng.uniform(0.5, 1.5))
            n, busy, last = 0, 0, 0
            while True:
                a = _core.monotonic_ns()
                fn()
                b = _core.monotonic_ns()
                n += 1
                busy += b - a
                last = b - a
                if keep_spans:
                    spans.append((a, b))
                if b >= stop:
                    break
                if b >= next_pause:
                    _spin_until(b + int(rng.uniform(0, last)))
                    next_pause = _core.monotonic_ns() + int(P * rng.uniform(0.5, 1.5))
            w1 = _core.monotonic_ns() + 2 * P
            _idle_until(w1 + P // 2 + int(cooldown_s * 1e9))
            windows.append((w0, w1))
            idle_ns.append((w1 - w0) - busy)
            calls.append((n, busy))
        time.sleep(2 * P * 1e-9)
        rec = sampler.recording()
    finally:
        if own:
            sampler.stop()
    a_ns = np.array([i0] + [w[0] for w in windows], dtype=np.int64)
    b_ns = np.array([i1] + [w[1] for w in windows], dtype=np.int64)
    we = rec.energies(a_ns, b_ns, channels=[device], edges="independent")
    key = next(iter(we.energy_j))
    e = we.energy_j[key]
    p0 = float(e[0] / ((i1 - i0) * 1e-9))
    n_arr = np.array([c[0] for c in calls], dtype=np.float64)
    busy_s = np.array([c[1] for c in calls], dtype=np.float64) * 1e-9
    num = e[1:] - p0 * np.array(idle_ns, dtype=np.float64) * 1e-9  # each trial's energy in its calls
    per_trial = num / n_arr
    t_call = busy_s / n_arr
    k = per_trial.size
    tq = t_quantile(0.95, k - 1)
    # Pooled (a ratio estimator: all the calls' energy over all the calls), not the mean of the
    # trials' means, which weighs a trial of few slow calls like one of many fast ones; its
    # standard error by the delta method over trials.
    n_tot = float(n_arr.sum())
    est = float(num.sum() / n_tot)
    se = float(math.sqrt(k / (k - 1) * float(np.sum((num - est * n_arr) ** 2))) / n_tot)
    ci = tq * se
    t_est = float(busy_s.sum() / n_tot)
    model = we.sensor_model.get(key, {})
    if not (np.isfinite(est) and est > 0) or ci > max_rel_ci * abs(est):
        raise InsufficientDataError(
            f"{k} trials of {int(n_arr.sum())} calls give {est * 1e3:.4g} mJ ± {ci * 1e3:.2g} mJ per call, wider than "
            f"{max_rel_ci:.0%}: run more trials or periods_per_trial (counter {model.get('counter')})")
    return RepeatResult(
        energy_j=est, energy_ci_j=ci, energy_se_j=se, dynamic_energy_j=est - p0 * t_est, time_s=t_est,
        time_ci_s=float(tq * t_call.std(ddof=1) / math.sqrt(k)), idle_power_w=p0, calls=int(n_arr.sum()),
        trials=k, per_trial_j=per_trial.tolist(), sensor_model=model, device=key,
        call_spans_ns=np.array(spans, dtype=np.int64).reshape(-1, 2) if keep_spans else None,
    )
