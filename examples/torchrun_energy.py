"""Energy per training step across every rank and node of a torchrun job.

    torchrun --nproc-per-node 8 examples/torchrun_energy.py          # one GPU per rank
    JOULETRACE_SIM=1 torchrun --nproc-per-node 2 examples/torchrun_energy.py   # no GPU: simulated ones

Each rank samples only its own GPU (gpus="local": LOCAL_RANK within
CUDA_VISIBLE_DEVICES); rank 0 gathers every rank's step energies, counting each
physical GPU once (by UUID), and prints the totals per step.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

import jouletrace
import jouletrace.distributed as jd
import jouletrace.torch as jt


def main() -> None:
    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    sim = None
    if os.environ.get("JOULETRACE_SIM"):
        from jouletrace.sim import SimGPU

        sim = SimGPU(gpus=int(os.environ.get("LOCAL_WORLD_SIZE", 1)), update_period_s=0.01)
    mon = jouletrace.Monitor(gpus="local", cpu=False, sim=sim, unavailable="warn")
    model = torch.nn.Linear(1024, 1024).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with mon:
        for _ in range(20):
            x = torch.randn(256, 1024, device=device)
            with jt.window("step", mon, work={"samples": 256}):
                loss = model(x).square().mean()
                loss.backward()
                opt.step()
                opt.zero_grad()
        gathered = jd.gather(mon)
    if gathered is not None:
        for st in gathered.steps:
            print(f"step {st.index}: {st.total_j:.3f} ± {st.total_uncertainty_j:.3f} J over {len(st.energy_j)} device(s)")
        print(f"total: {gathered.total_j:.2f} ± {gathered.total_uncertainty_j:.2f} J")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
