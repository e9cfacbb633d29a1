"""One rank of the multi-process gloo test (tests/test_distributed.py); not a test by itself.

argv: rank world_size port out.json. The environment names the GPUs (CUDA_VISIBLE_DEVICES,
LOCAL_RANK) and the simulated NVML library (JOULETRACE_NVML_LIBRARY).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta

import torch.distributed as dist

import jouletrace
import jouletrace.distributed as jd


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    with jouletrace.Monitor(gpus="local", cpu=False, rate_hz=500) as mon:
        dist.barrier()
        time.sleep(0.05)
        for _ in range(3):
            dist.barrier()
            with mon.window("step"):
                time.sleep(0.12)
        got = jd.gather(mon)
        mine = [m.to_dict() for m in mon.measurements()]
    if got is not None:
        with open(out, "w") as f:
            json.dump({"gathered": got.to_dict(), "rank0": mine}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
