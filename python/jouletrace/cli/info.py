"""``jouletrace info``: every source, usable here or not (why, and the fix), and the devices."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..sources import sources


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="list sources, whether each is usable here, and why not")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    infos = sources(refresh=True)
    if args.json:
        print(json.dumps([vars(i) if hasattr(i, "__dict__") else i.__dict__ for i in infos], indent=2))
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
    if not any(i.usable and i.name != "sim" for i in infos):
        print("\nNo hardware source is usable here; `Sampler('sim')` (the simulated GPU) runs anywhere.")
    return 0
