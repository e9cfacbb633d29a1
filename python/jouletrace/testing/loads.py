"""Test fakes shared by the tests and the benchmarks: random loads and synthesised recordings.

A synthesised recording reads the simulated GPU's sensor model (:meth:`SimGPU.sensor_energy_j`)
at perfect polling times, without a sampler thread: fast, for the maths. Figures
measured on one say "synthetic"; real-time checks go through :class:`jouletrace.Sampler`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import _core
from ..energy.recording import Recording
from ..sampling.sim import SimGPU

__all__ = ["random_load", "synthetic_recording", "live_call"]


def random_load(sim: SimGPU, t0_ns: int, t1_ns: int, rng: np.random.Generator, *, gpu: int = 0,
                min_s: float = 0.001, max_s: float = 0.05, max_w: float = 400.0) -> None:
    """Back-to-back segments of 1–50 ms (uniform) at 0..max_w watts above idle over [t0, t1]."""
    n = int((t1_ns - t0_ns) / (0.5 * (min_s + max_s) * 1e9) * 1.2) + 8
    d = rng.uniform(min_s, max_s, n) * 1e9
    edges = t0_ns + np.concatenate([[0], np.cumsum(d)]).astype(np.int64)
    keep = edges[:-1] < t1_ns
    sim.add_segments(edges[:-1][keep], np.minimum(edges[1:][keep], t1_ns), rng.uniform(0.0, max_w, keep.sum()), gpu=gpu)


def synthetic_recording(sim: SimGPU, t0_ns: int, t1_ns: int, rng: np.random.Generator, *, rate_hz: float = 1000.0,
                        gpu: int = 0, state_model: bool = True) -> Recording:
    """The counter of ``sim``'s GPU polled at ``rate_hz`` (±15 µs jitter, 4 µs reads) over [t0, t1].

    ``state_model`` stamps the simulation's sensor model into the metadata as a
    sampler would; False leaves the recording with an NVIDIA architecture and no
    model, so that it reads as ``unknown`` (published).
    """
    n = int((t1_ns - t0_ns) * 1e-9 * rate_hz)
    t = t0_ns + (np.arange(n) * (1e9 / rate_hz)).astype(np.int64) + rng.integers(0, 30_000, n)
    key = f"gpu{gpu}"
    meta: dict[str, object] = {"source": "synthetic", "device": {f"{key}.architecture": "9",
                                                                f"{key}.uuid": sim._gpus[gpu].uuid,
                                                                f"{key}.power_limit_w": str(sim._gpus[gpu].power_limit_mw / 1000)}}
    if state_model:
        meta["sensor_model"] = {key: sim.sensor_model(gpu)}
    return Recording(
        t_ns=t, t_before_ns=t - 2_000, t_after_ns=t + 2_000, seq=np.arange(n, dtype=np.uint64),
        status=np.zeros(n, dtype=np.uint8), values={f"{key}.energy_j": sim.sensor_energy_j(t, gpu=gpu)},
        cumulative={f"{key}.energy_j": True}, metadata=meta,
    )


def live_call(sim: SimGPU, d_ns: int, watts: float = 200.0, gpu: int = 0) -> Callable[[], None]:
    """A callable that, each time it runs, adds ``watts`` for ``d_ns`` to ``sim``'s live schedule
    from now and busy-waits that long: a short GPU call whose true energy the simulation knows."""
    def fn() -> None:
        t = _core.monotonic_ns()
        sim.live_segment(t, t + d_ns, watts, gpu=gpu)
        while _core.monotonic_ns() < t + d_ns:
            pass
    return fn
