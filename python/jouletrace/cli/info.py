"""``jouletrace info``: every source, usable here or not (why, and the fix), the GPUs, and their sensors."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from .. import _core
from ..energy.calibrate import calibrate, cuda_load
from ..energy.sampler import Sampler
from ..errors import JouletraceError
from ..sampling import registry
from ..sampling.sensors import facts_for
from ..sampling.sources import sources


def add_parser(sub: Any, help: str) -> None:
    p = sub.add_parser("info", help=help)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--measure", type=float, nargs="?", const=-1.0, default=0.0, metavar="SECONDS",
                   help="calibrate each GPU's sensor (update period, averaging window, part-time counter) with a "
                        "CUDA load from torch or cupy; with SECONDS and no CUDA load, only sample it passively")
    p.add_argument("--save", action="store_true",
                   help="keep the calibration for later recordings of that GPU (by UUID; see jouletrace.sampling.sensor_model)")


def _gpus(measure_s: float) -> list[dict[str, Any]]:
    """Devices NVML reports, with their metadata, the published sensor facts and, optionally, a measurement."""
    try:
        native = _core.Sampler.nvml(config=_core.SamplerConfig(rate_hz=1.0, max_records=1024))
    except JouletraceError:
        return []
    meta = dict(native.metadata)
    channels = {name for name, _ in native.channels}
    del native
    out = []
    for key in sorted({k.split(".")[0] for k in meta if k.startswith("gpu")}, key=lambda g: int(g[3:])):
        arch = meta.get(f"{key}.architecture")
        d: dict[str, Any] = {
            "device": key,
            "name": meta.get(f"{key}.name"),
            "uuid": meta.get(f"{key}.uuid"),
            "pci_bus_id": meta.get(f"{key}.pci_bus_id"),
            "driver_version": meta.get("nvml.driver_version"),
            "nvml_version": meta.get("nvml.version"),
            "power_limit_w": float(meta[f"{key}.power_limit_w"]) if f"{key}.power_limit_w" in meta else None,
            "energy_feed": meta.get(f"{key}.energy_j.feed"),
            "power_feed": meta.get(f"{key}.power_w.feed") if f"{key}.power_w" in channels
            else meta.get(f"{key}.power_avg_w.feed", meta.get(f"{key}.power_w.feed")),
            "known_sensor": vars(facts_for(int(arch) if arch else None, meta.get(f"{key}.name") or "")),
        }
        out.append(d)
    if measure_s > 0 and out:
        with Sampler("nvml", rate_hz=1000.0, timestamps=False) as s:
            time.sleep(measure_s)
        sensors = s.recording().characterize()
        for d in out:
            got = {}
            for ch in (f"{d['device']}.energy_j", f"{d['device']}.power_w"):
                info = sensors.get(ch)
                if info is not None:
                    got[ch] = {k: info.get(k) for k in ("update_period_ns", "updates", "averaged", "quantum_j")
                               if k in info}
            d["measured_sensor"] = got
    return out


def _calibrate(gpus: list[dict[str, Any]], save: bool) -> None:
    for i, d in enumerate(gpus):
        try:
            cal = calibrate(gpu=i, load=cuda_load(i), save=save)
        except JouletraceError as e:
            d["calibration"] = {"error": str(e)}
            continue
        d["calibration"] = {**cal.model.to_dict(), "saved_to": cal.saved_to, "text": str(cal)}


def run(args: argparse.Namespace) -> int:
    infos = sources(refresh=True)
    passive = args.measure if args.measure and args.measure > 0 else 0.0
    gpus = _gpus(passive)
    if args.measure and args.measure < 0 and gpus:
        _calibrate(gpus, args.save)
    if args.json:
        print(json.dumps({"sources": [vars(i) for i in infos], "gpus": gpus}, indent=2))
        return 0
    width = max(len(i.name) for i in infos)
    print("Sources:")
    for i in infos:
        state = "usable" if i.usable else "not usable"
        print(f"  {i.name:<{width}}  {state:<10}  {i.description}")
        if i.usable and i.detail:
            print(f"  {'':<{width}}  {'':<10}  {i.detail}")
        if not i.usable:
            print(f"  {'':<{width}}  {'':<10}  why: {i.reason}")
            if i.fix:
                print(f"  {'':<{width}}  {'':<10}  fix: {i.fix}")
    hardware = {s.name for s in registry.specs() if s.hardware}
    if not any(i.usable and i.name in hardware for i in infos):
        print("\nNo hardware source is usable here; `jouletrace demo` and `--source sim` (the simulated GPU) "
              "run anywhere.")
    for d in gpus:
        print(f"\n{d['device']}: {d['name']}")
        print(f"  UUID {d['uuid']}, PCI {d['pci_bus_id']}, driver {d['driver_version']}, NVML {d['nvml_version']}")
        if d["power_limit_w"] is not None:
            print(f"  power limit {d['power_limit_w']:.0f} W")
        print(f"  energy from {d['energy_feed']}; power from {d['power_feed']}")
        k = d["known_sensor"]
        print(f"  sensor (published, {k['architecture']}):")
        print(f"    energy counter: {k['energy_counter']}")
        print(f"    instant power:  {k['instant_power']}")
        print(f"    power usage:    {k['power_usage']}")
        print(f"    accuracy:       {k['accuracy']}   [{k['sources']}]")
        cal = d.get("calibration")
        if cal is not None:
            print(f"  calibrated: {cal.get('text', cal.get('error'))}")
            if cal.get("saved_to"):
                print(f"    saved to {cal['saved_to']}; later recordings of this GPU use it")
        for ch, m in (d.get("measured_sensor") or {}).items():
            p = m.get("update_period_ns")
            per = f"{p / 1e6:.1f} ms" if p else "not seen"
            extra = "" if m.get("averaged") is None else f", averaged over its whole period: {m['averaged']}"
            print(f"  measured {ch}: updates every {per} ({m.get('updates')} updates seen){extra}")
    return 0
