"""Per kernel launch, directly: each launch's share of the interpolated counter energy."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...energy.recording import Recording
from ...energy.windows import FLAG_BELOW_RESOLUTION
from ...errors import InvalidArgumentError
from ..alignment import Alignment, align, device_channels
from ..traces.table import KernelTable
from .sweep import _sweep
from .tables import LaunchEnergies

__all__ = ["attribute_launches"]


def attribute_launches(
    recording: Recording,
    kernels: KernelTable,
    *,
    alignment: Alignment | None = None,
    device_map: dict[int, str] | None = None,
    power_limit_w: float | None = None,
) -> LaunchEnergies:
    """Per launch, directly: each launch's share of the interpolated counter energy, with a bound.

    The counter is interpolated between its located updates and integrated
    over every elementary segment between consecutive kernel starts and ends
    (:meth:`jouletrace.Recording.energies`, the windows' method); a segment's
    energy is shared equally among the kernels running in it (module
    docstring), so the launches' energies plus the energy of the segments with
    no kernel add up to the energy over the trace's span. ``bound_j`` is the
    bound of the launch's whole window; ``below_resolution`` marks launches
    shorter than ten sensor update periods, which for kernels is nearly all of
    them: there the number is the interval's mean power times the launch's
    share time, not this launch's own, and the per-name statistical estimate
    (:func:`attribute_names`) is the one to use.

    For those launches the bound is also at least what the board's power
    limit allows: the launch's share energy lies between 0 and
    ``power_limit_w`` times its share time, so the error of ``r * share`` is at
    most ``max(limit - r, r) * share``. The limit defaults to the recording's
    ``gpuN.power_limit_w`` (NVML); without one, ``bound_j`` is the window
    bound of :mod:`jouletrace.energy.windows` alone, whose coverage was checked for
    windows of 1 ms and more.
    """
    if alignment is None:
        alignment = align(kernels, recording)
    chans = device_channels(kernels, recording, device_map)
    cols: dict[str, list[np.ndarray]] = {}
    meta: dict[str, Any] = {"alignment": alignment, "devices": {}}
    names_arr = np.empty(len(kernels.names), dtype=object)
    names_arr[:] = list(kernels.names)
    for dev, (ch, how) in chans.items():
        sel = np.flatnonzero(kernels.device == dev)
        if sel.size == 0:
            continue
        s = alignment.to_monotonic(kernels.start_ns[sel])
        e = alignment.to_monotonic(kernels.end_ns[sel])
        sw = _sweep(s, e)
        # A launch's share is its window's energy less, for each segment where m > 1
        # kernels overlap, (1 - 1/m) of that segment's energy: only those segments need
        # windows of their own (interpolated energies add up over adjacent windows).
        ms = sw.m[:-1]
        multi = np.flatnonzero((ms > 1) & (sw.t[1:] > sw.t[:-1]))
        span0, span1 = int(sw.t[0]), int(sw.t[-1])
        we = recording.energies(np.concatenate([s, sw.t[multi], [span0]]),
                                np.concatenate([e, sw.t[multi + 1], [span1]]), channels=[ch])
        (key,) = list(we.energy_j)
        energy_all = we.energy_j[key]
        own = energy_all[: s.size]
        seg_e = np.nan_to_num(energy_all[s.size:-1])
        excess = np.zeros(ms.size)
        excess[multi] = seg_e * (1.0 - 1.0 / ms[multi])
        Q = np.concatenate([[0.0], np.cumsum(excess)])
        energy = own - (Q[sw.end_pos] - Q[sw.start_pos])
        span_e = float(energy_all[-1])
        nseg = s.size
        flags = we.flags[key][:nseg]
        share = sw.w[sw.end_pos] - sw.w[sw.start_pos]
        bound = we.uncertainty_j[key][:nseg]
        below = (flags & FLAG_BELOW_RESOLUTION) != 0
        limit = power_limit_w
        if limit is None:
            dev_meta = getattr(recording, "metadata", {}).get("device", {}) or {}
            try:
                limit = float(dev_meta.get(f"{key}.power_limit_w", "nan"))
            except (TypeError, ValueError):
                limit = None
        if limit is not None and np.isfinite(limit) and limit > 0:
            r = np.divide(energy, share, out=np.zeros(share.size), where=share > 0)
            floor = share * np.maximum(limit - r, r)
            bound = np.where(below, np.fmax(bound, floor), bound)
        meta["devices"][dev] = {
            "channel": ch,
            "device_mapping": how,
            "idle_energy_j": span_e - float(np.nansum(energy)),
            "power_limit_w": limit,
        }
        part = {
            "index": sel.astype(np.int64),
            "device": np.full(sel.size, dev, dtype=np.int64),
            "name_id": kernels.name_id[sel].astype(np.int64),
            "name": names_arr[kernels.name_id[sel]],
            "start_ns": s,
            "end_ns": e,
            "duration_s": (e - s).astype(np.float64) * 1e-9,
            "share_s": share,
            "energy_j": energy,
            "bound_j": bound,
            "flags": flags,
            "below_resolution": below,
        }
        for k, v in part.items():
            cols.setdefault(k, []).append(v)
    if not cols:
        raise InvalidArgumentError(
            "no energy channel of the recording matches the trace's devices; "
            "pass device_map={trace_device: 'gpu0'}"
        )
    return LaunchEnergies({k: np.concatenate(v) for k, v in cols.items()}, meta)
