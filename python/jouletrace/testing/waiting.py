"""Liveness waits for real-time tests: wait for a condition, never for a fixed time.

A test that sleeps a fixed time and then counts what the sampler thread did asserts on the
machine's load, not on the code: on a busy two-core CI machine a thread can go without the CPU
for a few hundred milliseconds. These helpers wait for the condition itself, with a deadline
long enough that missing it means the code is stuck (a liveness bound, not a timing claim).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["LIVENESS_S", "wait_until", "wait_for_reads"]

#: Seconds a condition may take before the wait fails: generous, so that only a stuck thread misses it.
LIVENESS_S = 60.0


def wait_until(cond: Callable[[], object], what: str, timeout_s: float = LIVENESS_S, poll_s: float = 0.001) -> None:
    """Return once ``cond()`` is true; raise AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def wait_for_reads(sampler: Any, n: int, timeout_s: float = LIVENESS_S) -> int:
    """Return once ``sampler`` (a running :class:`jouletrace.Sampler`) has completed at least ``n``
    reads since it was made; returns its count of reads then."""
    wait_until(lambda: sampler.reads >= n, f"{n} reads of {sampler!r}", timeout_s)
    return int(sampler.reads)
