"""compare names the run whose windows are bad (a window's own checks do not know the file)."""

from __future__ import annotations

import numpy as np
import pytest

from jouletrace.analysis.compare import Run, compare
from jouletrace.errors import InvalidArgumentError
from jouletrace.sampling.sim import SimGPU
from jouletrace.testing.workloads import synthetic_recording


@pytest.mark.parametrize("bad", [{"work": [1, 2]}, {"work": {"tokens": -1}}])
def test_a_bad_window_in_one_run_names_that_run(bad):
    sim = SimGPU(update_period_s=0.001)
    try:
        good = synthetic_recording(sim, 0, 200_000_000, np.random.default_rng(0))
        broken = synthetic_recording(sim, 0, 200_000_000, np.random.default_rng(1))
    finally:
        sim.close()
    good.metadata["windows"] = [{"name": "step", "t0_ns": 10_000_000, "t1_ns": 90_000_000, "work": {"tokens": 5}}]
    broken.metadata["windows"] = [{"name": "step", "t0_ns": 10_000_000, "t1_ns": 90_000_000, **bad}]
    with pytest.raises(InvalidArgumentError, match=r"^runs/b\.npz: window 'step'"):
        compare([Run(good, path="runs/a.npz"), Run(broken, path="runs/b.npz")])
