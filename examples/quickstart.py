"""Quick start: record a (simulated) GPU at 1 kHz and compare with the truth.

On a machine with an NVIDIA GPU, replace ``Sampler("sim", sim=sim)`` by
``Sampler("nvml")``; everything else is the same.
"""

from __future__ import annotations

import time

import numpy as np

import jouletrace
from jouletrace import _core
from jouletrace.sim import SimGPU

# An H100-like sensor: energy counter and instant power update every 100 ms,
# instant power averages the last 25 ms. 60 W idle; 400 W more for 0.6 s.
with SimGPU(update_period_s=0.1, avg_window_s=0.025, idle_w=60.0) as sim:
    now = _core.monotonic_ns()
    sim.add_segment(now + 300_000_000, now + 900_000_000, 400.0)

    with jouletrace.Sampler("sim", rate_hz=1000, sim=sim) as sampler:
        time.sleep(1.5)
    rec = sampler.recording()

    print(rec)
    e = rec["gpu0.energy_j"]
    measured = e[-1] - e[0]
    truth = sim.true_energy(rec.t_ns[0], rec.t_ns[-1])
    print(f"samples: {len(rec)} at {rec.metadata['rate_hz']:g} Hz, dropped {rec.dropped}, "
          f"missed deadlines {rec.missed_deadlines}")
    print(f"energy from the counter: {measured:.3f} J; true energy: {truth:.3f} J "
          f"(the counter lags the truth by up to one 100 ms update at each edge)")
    period = rec.update_period_ns("gpu0.energy_j")
    print(f"observed counter update period: {period / 1e6:.1f} ms" if period else "update period: not seen")
    print(f"peak instant power: {np.nanmax(rec['gpu0.power_w']):.1f} W")
    print(f"zero copy: t_ns writeable={rec.t_ns.flags.writeable}, owns its data={rec.t_ns.flags.owndata}")
    print("which call fed each channel:",
          {k: v for k, v in rec.metadata["device"].items() if k.endswith(".feed")})
