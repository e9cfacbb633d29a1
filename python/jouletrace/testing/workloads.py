"""Synthetic kernel workloads and recordings for the attribution tests and benchmarks.

Ground truth comes from :class:`jouletrace.sampling.sim.SimGPU`: the launches become
power segments of the simulated GPU, whose counter model
(``sensor_energy_j``) gives the readings a sampler would see, and whose
``true_energy`` gives the exact energy of any interval.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from jouletrace.energy.recording import Recording
from jouletrace.kernels.traces import KernelTable
from jouletrace.sampling.sim import SimGPU

#: A wall-clock offset for synthetic runs: epoch = monotonic + EPOCH_OFFSET.
EPOCH_OFFSET = 1_700_000_000_000_000_000


def synthetic_launches(rng: np.random.Generator, t0_ns: int, seconds: float, n_names: int = 8,
                       min_dur_ns: int = 20_000, max_dur_ns: int = 5_000_000,
                       power_noise: float = 0.1, rate_hz: float | None = None) -> dict[str, np.ndarray]:
    """Launches of ``n_names`` kernel names on one stream, with a mix that changes over time.

    Each name has a typical duration (log-uniform, 30 µs .. 2.5 ms; each launch
    varies around it, clipped to [min_dur, max_dur]) and a power above idle
    (40..350 W; each launch varies by ``power_noise``). The run is a sequence
    of phases of 0.2..3 s, each with its own mix of names (Dirichlet) and its
    own utilisation (10..95 %), or, with ``rate_hz``, its own launch rate (0.3..1.7 times
    ``rate_hz``); launches never overlap.
    """
    dur_mean = np.exp(rng.uniform(np.log(30e3), np.log(2.5e6), n_names))
    watts = rng.uniform(40.0, 350.0, n_names)
    S, E, N, W = [], [], [], []
    t = int(t0_ns)
    end = t + int(seconds * 1e9)
    while t < end:
        plen = int(rng.uniform(0.2, 3.0) * 1e9)
        mix = rng.dirichlet(np.full(n_names, 0.5))
        util = rng.uniform(0.1, 0.95)
        nm = rng.choice(n_names, p=mix, size=20000)
        d = np.clip(dur_mean[nm] * rng.lognormal(0.0, 0.3, nm.size), min_dur_ns, max_dur_ns).astype(np.int64)
        if rate_hz is None:
            mean_gap = float(np.mean(d)) * (1 - util) / util
        else:
            mean_gap = max(1e9 / (rate_hz * rng.uniform(0.3, 1.7)) - float(np.mean(d)), 1_000.0)
        gap = rng.exponential(mean_gap, nm.size).astype(np.int64) + 1_000
        st = t + np.cumsum(d + gap) - d
        keep = st + d < min(t + plen, end)
        S.append(st[keep])
        E.append(st[keep] + d[keep])
        N.append(nm[keep])
        W.append(watts[nm[keep]] * np.maximum(rng.normal(1.0, power_noise, int(keep.sum())), 0.0))
        t += plen
    return {
        "start": np.concatenate(S), "end": np.concatenate(E), "name_id": np.concatenate(N).astype(np.int32),
        "watts": np.concatenate(W), "name_watts": watts, "names": np.array([f"kernel_{i}" for i in range(n_names)]),
    }


def synthetic_recording(sim: SimGPU, t0_ns: int, t1_ns: int, rng: np.random.Generator, rate_hz: float = 1000.0,
                        gpu: int = 0, epoch_offset: int = EPOCH_OFFSET) -> Recording:
    """What a Sampler polling ``sim`` at ``rate_hz`` over [t0, t1] would record (no real time).

    Sample times carry up to 30 µs of jitter; each read takes 4 µs
    (t_before/t_after); values are the simulated counter (``sensor_energy_j``).
    Clock pairs map CLOCK_MONOTONIC to epoch by ``epoch_offset``.
    """
    n = int((t1_ns - t0_ns) * 1e-9 * rate_hz)
    t = t0_ns + (np.arange(n) * (1e9 / rate_hz)).astype(np.int64) + rng.integers(0, 30_000, n)
    v = sim.sensor_energy_j(t, gpu=gpu)
    pairs = np.array([[t0_ns, t0_ns + epoch_offset, 40], [t1_ns, t1_ns + epoch_offset, 40]], dtype=np.int64)
    return Recording(
        t_ns=t, t_before_ns=t - 2_000, t_after_ns=t + 2_000, seq=np.arange(n, dtype=np.uint64),
        status=np.zeros(n, dtype=np.uint8), values={f"gpu{gpu}.energy_j": v},
        cumulative={f"gpu{gpu}.energy_j": True}, clock_pairs=pairs,
        metadata={"source": "synthetic", "device": {
            f"gpu{gpu}.uuid": sim._gpus[gpu].uuid,
            f"gpu{gpu}.power_limit_w": f"{sim._gpus[gpu].power_limit_mw / 1000:.6f}"}},
    )


def kernel_table(start: np.ndarray, end: np.ndarray, name_id: np.ndarray, names: Iterable[object],
                 stream: npt.ArrayLike | None = None,
                 epoch_offset: int = EPOCH_OFFSET) -> KernelTable:
    """An epoch-clock KernelTable of launches given in CLOCK_MONOTONIC ns."""
    order = np.argsort(start, kind="stable")
    return KernelTable(
        start[order] + epoch_offset, end[order] + epoch_offset, np.zeros(start.size, np.int32),
        np.asarray(name_id)[order], [str(x) for x in names],
        stream=None if stream is None else np.asarray(stream)[order],
        correlation=np.arange(start.size, dtype=np.int64) + 1,
    )


def name_watts(names: Iterable[object], lo: float = 40.0, hi: float = 350.0) -> np.ndarray:
    """A fixed, reproducible power above idle for each kernel name (from a hash of the name)."""
    return np.array([lo + (zlib.crc32(str(n).encode()) % 10_000) / 10_000 * (hi - lo) for n in names])


def sharing_segments(start: np.ndarray, end: np.ndarray,
                     watts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power segments under the equal-sharing physics: while m kernels run, the power above idle
    is the mean of their powers. Running sums of counts and watts over the sorted edges."""
    t = np.concatenate([start, end]).astype(np.int64)
    dm = np.concatenate([np.ones(start.size), -np.ones(end.size)])
    dw = np.concatenate([watts, -np.asarray(watts)])
    order = np.lexsort((-dm, t))  # by time; at equal times starts first
    t, m, w = t[order], np.cumsum(dm[order]), np.cumsum(dw[order])
    keep = (np.diff(t) > 0) & (m[:-1] > 0.5)
    return t[:-1][keep], t[1:][keep], w[:-1][keep] / m[:-1][keep]


def tile(table: KernelTable, t0_mono_ns: int, seconds: float, rng: np.random.Generator,
         gap_ns: tuple[int, int] = (5_000_000, 80_000_000)) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A trace's kernel timeline repeated back to back from ``t0_mono_ns`` for ``seconds``,
    with a random gap between copies. Returns (start, end, name_id, stream) in CLOCK_MONOTONIC."""
    s0 = table.start_ns - table.start_ns.min()
    e0 = table.end_ns - table.start_ns.min()
    length = int(e0.max())
    S, E, N, ST = [], [], [], []
    t = int(t0_mono_ns)
    end = t + int(seconds * 1e9)
    while t + length < end:
        S.append(s0 + t)
        E.append(e0 + t)
        N.append(table.name_id)
        ST.append(table.stream)
        t += length + int(rng.integers(*gap_ns))
    return np.concatenate(S), np.concatenate(E), np.concatenate(N), np.concatenate(ST)
