"""The examples in examples/ run as their docstrings say (on simulated GPUs where no GPU is here)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import jouletrace

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torchrun_example_gathers_every_rank_once(tmp_path):  # type: ignore[no-untyped-def]
    pytest.importorskip("torch.distributed", reason="torch is not installed (pip install 'jouletrace[torch]')")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torch is installed but its torchrun entry point is not"
    env = dict(os.environ, JOULETRACE_SIM="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(Path(jouletrace.__file__).resolve().parent.parent))
    r = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                        "--master-port", str(_free_port()), str(EXAMPLES / "torchrun_energy.py")],
                       capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    steps = re.findall(r"^step \d+: ([\d.]+) ± ([\d.]+) J over (\d+) device\(s\)$", r.stdout, re.M)
    assert len(steps) == 20
    assert {n for _, _, n in steps} == {"2"}  # each rank's own GPU, each counted once
    # 60 W idle on each of the two simulated GPUs: a step's energy is about 120 W times its length,
    # and never negative; the bound says how far a single short step can be from that.
    assert all(float(e) >= 0 and float(b) > 0 for e, b, _ in steps)
    total = re.search(r"^total: ([\d.]+) ± ([\d.]+) J$", r.stdout, re.M)
    assert total and abs(float(total.group(1)) - sum(float(e) for e, _, _ in steps)) < 0.05 + 0.01 * len(steps)
