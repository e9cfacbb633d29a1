"""Shared fixtures: simulated GPUs that clean up after themselves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jouletrace import _core
from jouletrace.sampling.sim import SimGPU


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


@pytest.fixture(autouse=True)
def _private_sensor_file(tmp_path_factory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Calibrations saved by a test never reach the user's sensor file, nor one test's another's."""
    monkeypatch.setenv("JOULETRACE_SENSOR_FILE", str(tmp_path_factory.mktemp("sensors") / "sensors.json"))
