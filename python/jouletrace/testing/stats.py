"""Thresholds for tests that assert a coverage *rate*: derived from the binomial, not guessed.

An interval (or bound) that covers the truth with probability ``level`` covers a fraction of
``n`` independent cases that scatters around ``level``: asserting ``coverage >= level`` fails
about half the runs of a perfectly calibrated interval. :func:`coverage_floor` is the coverage
below which a calibrated interval falls only with probability ``odds`` (per check), so a
test asserting it fails by chance at most that often, and still fails when the interval
really under-covers by more than the sampling noise of ``n`` cases.
"""

from __future__ import annotations

import math

__all__ = ["coverage_floor"]


def coverage_floor(n: int, level: float = 0.95, odds: float = 1e-4) -> float:
    """The largest ``c`` with ``P(Binomial(n, level) / n < c) <= odds``: the coverage of ``n``
    independent cases that an interval of coverage ``level`` stays at or above but for ``odds``
    of the runs."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if not (0.0 < level < 1.0 and 0.0 < odds < 1.0):
        raise ValueError(f"level and odds must be in (0, 1), got {level!r}, {odds!r}")

    def log_pmf(k: int) -> float:  # P(exactly k cases covered)
        return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                + k * math.log(level) + (n - k) * math.log1p(-level))

    below = 0.0  # P(covered < k)
    for k in range(n + 1):
        p = math.exp(log_pmf(k))
        if below + p > odds:
            return k / n
        below += p
    return 1.0
