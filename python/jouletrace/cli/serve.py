"""``jouletrace serve``: sample this node and serve the energy to Prometheus."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Any

from .._optional import require
from ..energy.monitor import Monitor
from ..errors import InvalidArgumentError
from ..integrations.prometheus import expose


def add_parser(sub: Any, help: str) -> None:
    p = sub.add_parser(
        "serve", help=help,
        description="Run a Monitor over every usable source and serve it at http://ADDRESS:PORT/metrics "
        "(prometheus_client) until interrupted.",
    )
    p.add_argument("--port", type=int, default=9464, help="TCP port (default 9464; 0 picks a free one)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default loopback; 0.0.0.0 to be scraped from other hosts)")
    p.add_argument("--source", action="append", metavar="NAME",
                   help="sample only this source (repeatable): nvml, sim, rapl, ... (default: every usable one)")
    p.add_argument("--gpus", default="all", help="all (default), visible, local, or indices like 0,2")
    p.add_argument("--rate-hz", type=float, default=100.0, help="sampling rate (default 100)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until interrupted)")


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise InvalidArgumentError(f"--port must be 0..65535, got {args.port}")
    gpus: Any = args.gpus
    if gpus not in ("all", "visible", "local"):
        try:
            gpus = [int(x) for x in gpus.split(",") if x.strip()]
        except ValueError:
            raise InvalidArgumentError(f"--gpus must be all, visible, local or indices like 0,2; got {gpus!r}") from None
    require("prometheus_client", "serve", error=InvalidArgumentError)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Monitor(gpus=gpus, sources=args.source, rate_hz=args.rate_hz) as mon:
        try:
            exporter = expose(mon, port=args.port, address=args.address)
        except OSError as e:
            raise InvalidArgumentError(f"cannot listen on {args.address}:{args.port}: {e.strerror or e}") from None
        srcs = ", ".join(s.source for s in mon.samplers)
        print(f"jouletrace serve: {srcs} at {args.rate_hz:g} Hz on {exporter.url}", flush=True)
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while not stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            stop.wait(0.5 if left is None else min(0.5, left))
        exporter.close()
    return 0
