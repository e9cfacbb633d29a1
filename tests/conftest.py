"""Shared fixtures: simulated GPUs that clean up after themselves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jouletrace import _core
from jouletrace.sim import SimGPU


@pytest.fixture
def make_sim() -> Iterator:
    made: list[SimGPU] = []

    def make(*args, **kwargs) -> SimGPU:  # type: ignore[no-untyped-def]
        s = SimGPU(*args, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def now_ns() -> int:
    return int(_core.monotonic_ns())
