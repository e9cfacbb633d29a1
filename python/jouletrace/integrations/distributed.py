"""Energy across processes and nodes over ``torch.distributed``: each physical GPU counted once.

>>> import jouletrace.distributed as jd                      # doctest: +SKIP
>>> mon = jouletrace.Monitor(gpus="local")                  # this rank's GPU (LOCAL_RANK)
>>> ... with mon.window("step"): train_step() ...
>>> steps = jd.gather(mon)                                   # rank 0: per-step totals over every node

:func:`gather` sends every rank's ended windows (names, edges, energy and
bound per device key, each GPU's UUID, the host) to ``dst`` with
``torch.distributed.gather_object`` on an existing process group (gloo on
CPUs; NCCL on GPUs, after ``torch.cuda.set_device(local_rank)`` as NCCL
requires for object collectives). There the k-th window named ``name`` of
every rank is one step, and its devices are merged:

* a GPU is identified by its UUID, so ranks that see the same GPU (several
  ranks per GPU, MIG instances of one GPU, ``gpus="visible"`` on every rank of
  a node) count it once — the lowest rank's value over that rank's window;
* CPU domains (RAPL) are identified by host and key, so every node's CPUs
  count once whatever the number of ranks on it.

A step's total is the sum over those devices of the energies that count in a
total (not RAPL sub-domains or psys), and its bound the sum of theirs (each
device's bound holds by itself; the sum bounds the sum). Ranks' windows for
one step need not coincide: each device is measured over the window of the
rank chosen for it.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._default import default_monitor
from .._optional import require
from ..energy.measurement import Measurement, counts_in_total
from ..energy.monitor import Monitor
from ..errors import InvalidArgumentError

__all__ = ["gather", "GatheredStep", "Gathered", "rank_payload", "merge_payloads"]


@dataclass
class GatheredStep:
    """One step (the k-th window of one name) over every rank."""

    name: str | None
    index: int
    total_j: float
    total_uncertainty_j: float
    #: Physical device id (GPU UUID, or ``host:key`` for CPU domains) -> energy (J).
    energy_j: dict[str, float] = field(default_factory=dict)
    uncertainty_j: dict[str, float] = field(default_factory=dict)
    #: Physical device id -> (rank whose value was used, its device key, t0_ns, t1_ns).
    source: dict[str, tuple[int, str, int, int]] = field(default_factory=dict)
    #: Ranks that had this step.
    ranks: list[int] = field(default_factory=list)
    #: Ranks that saw a device another rank also saw (its value counted once).
    duplicates: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class Gathered:
    """Every step over every rank (what :func:`gather` returns on ``dst``)."""

    steps: list[GatheredStep]
    world_size: int
    hosts: dict[int, str]

    @property
    def total_j(self) -> float:
        return float(sum(s.total_j for s in self.steps))

    @property
    def total_uncertainty_j(self) -> float:
        return float(sum(s.total_uncertainty_j for s in self.steps))

    def by_name(self, name: str) -> list[GatheredStep]:
        return [s for s in self.steps if s.name == name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "world_size": self.world_size,
            "hosts": {str(k): v for k, v in self.hosts.items()},
            "total_j": self.total_j,
            "total_uncertainty_j": self.total_uncertainty_j,
            "steps": [s.__dict__ for s in self.steps],
        }


def rank_payload(measurements: Sequence[Measurement], rank: int, host: str | None = None) -> dict[str, Any]:
    """What one rank sends: plain values only (picklable, small)."""
    wins = []
    for m in measurements:
        if m.t1_ns is None or not m.available:
            continue
        wins.append({
            "name": m.name, "t0_ns": m.t0_ns, "t1_ns": m.t1_ns, "energy_j": m.energy_j,
            "uncertainty_j": m.uncertainty_j, "uuid": dict(m.uuid),
        })
    return {"rank": int(rank), "host": host or socket.gethostname(), "windows": wins}


def merge_payloads(payloads: Sequence[dict[str, Any]]) -> Gathered:
    """Merge every rank's payload into steps, each physical device once (module docstring)."""
    payloads = sorted(payloads, key=lambda p: p["rank"])
    steps: dict[tuple[Any, int], GatheredStep] = {}
    order: list[tuple[Any, int]] = []
    for p in payloads:
        seen_count: dict[Any, int] = {}
        for w in p["windows"]:
            k = seen_count.get(w["name"], 0)
            seen_count[w["name"]] = k + 1
            key = (w["name"], k)
            st = steps.get(key)
            if st is None:
                st = steps[key] = GatheredStep(w["name"], k, 0.0, 0.0)
                order.append(key)
            st.ranks.append(p["rank"])
            for dev, e in w["energy_j"].items():
                phys = w["uuid"].get(dev) or f"{p['host']}:{dev}"
                if phys in st.energy_j:
                    st.duplicates.setdefault(phys, []).append(p["rank"])
                    continue
                st.energy_j[phys] = float(e)
                st.uncertainty_j[phys] = float(w["uncertainty_j"].get(dev, float("inf")))
                st.source[phys] = (p["rank"], dev, int(w["t0_ns"]), int(w["t1_ns"]))
                if counts_in_total(dev):
                    st.total_j += float(e)
                    st.total_uncertainty_j += st.uncertainty_j[phys]
    return Gathered([steps[k] for k in order], len(payloads), {p["rank"]: p["host"] for p in payloads})


def gather(
    source: Monitor | Sequence[Measurement] | None = None,
    *,
    names: Sequence[str] | None = None,
    group: Any = None,
    dst: int = 0,
) -> Gathered | None:
    """Gather every rank's windows on rank ``dst`` (a collective: every rank of ``group`` calls it).

    ``source``: a Monitor (its ended windows, waiting for their final values),
    a list of Measurements, or None for the default Monitor. ``names``: only
    windows with these names. Returns a :class:`Gathered` on ``dst``, None elsewhere.
    """
    dist = require("torch.distributed", "jouletrace.distributed.gather")
    if not dist.is_available() or not dist.is_initialized():
        raise InvalidArgumentError(
            "jouletrace.distributed.gather needs an initialised torch.distributed process group "
            "(torch.distributed.init_process_group(...)) on every rank"
        )
    if source is None:
        source = default_monitor()
    ms = source.measurements() if isinstance(source, Monitor) else [m.resolve() for m in source]
    if names is not None:
        ms = [m for m in ms if m.name in set(names)]
    rank = dist.get_rank(group)
    payload = rank_payload(ms, rank)
    world = dist.get_world_size(group)
    out: list[Any] | None = [None] * world if rank == dst else None
    global_dst = dst if group is None else dist.get_global_rank(group, dst)
    dist.gather_object(payload, out, dst=global_dst, group=group)
    if out is None:
        return None
    return merge_payloads(out)
