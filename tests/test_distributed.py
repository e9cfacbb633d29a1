"""jouletrace.distributed over a real multi-process gloo group on simulated GPUs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jouletrace
from jouletrace.energy.measurement import Measurement
from jouletrace.integrations.distributed import merge_payloads, rank_payload

pytest.importorskip("torch.distributed", reason="torch is not installed (pip install 'jouletrace[torch]')")

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gloo_group_counts_each_gpu_once(make_sim, now_ns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Two GPUs; rank 0 and 1 are one node's two ranks (LOCAL_RANK picks GPU 0 and 1), rank 2
    # another "node" whose only visible GPU is GPU 1 again: two ranks share it.
    sim = make_sim(gpus=2, update_period_s=0.01, idle_w=[60.0, 90.0])
    sim.add_segment(now_ns, now_ns + 60 * 10**9, 150.0, gpu=0)
    sim.add_segment(now_ns, now_ns + 60 * 10**9, 300.0, gpu=1)
    ranks = [{"CUDA_VISIBLE_DEVICES": "0,1", "LOCAL_RANK": "0"},
             {"CUDA_VISIBLE_DEVICES": "0,1", "LOCAL_RANK": "1"},
             {"CUDA_VISIBLE_DEVICES": "1", "LOCAL_RANK": "0"}]
    port, out = _free_port(), tmp_path / "gathered.json"
    src = str(Path(jouletrace.__file__).resolve().parent.parent)  # the jouletrace this test imports
    procs = []
    for r, extra in enumerate(ranks):
        env = sim.env()
        env.update(extra)
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        env["OMP_NUM_THREADS"] = "1"
        procs.append(subprocess.Popen([sys.executable, str(HERE / "dist_worker.py"), str(r), str(len(ranks)),
                                       str(port), str(out)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(logs)
    res = json.loads(out.read_text())
    g = res["gathered"]
    assert g["world_size"] == 3 and len(g["steps"]) == 3
    u0, u1 = sim._gpus[0].uuid, sim._gpus[1].uuid
    total_truth = 0.0
    for st in g["steps"]:
        assert st["name"] == "step" and st["ranks"] == [0, 1, 2]
        assert set(st["energy_j"]) == {u0, u1}  # GPU 1 seen by ranks 1 and 2: counted once
        assert st["duplicates"] == {u1: [2]}
        # Each GPU's value is the lowest rank's, over that rank's own window (cuda:0 on both).
        assert st["source"][u0][:2] == [0, "gpu0"] and st["source"][u1][:2] == [1, "gpu1"]
        truth = 0.0
        for gpu, u in ((0, u0), (1, u1)):
            _, _, t0, t1 = st["source"][u]
            e = float(sim.true_energy(t0, t1, gpu=gpu))
            assert abs(st["energy_j"][u] - e) <= st["uncertainty_j"][u]
            truth += e
        assert abs(st["total_j"] - truth) <= st["total_uncertainty_j"]
        assert st["total_j"] == pytest.approx(sum(st["energy_j"].values()))
        total_truth += truth
    assert abs(g["total_j"] - total_truth) <= g["total_uncertainty_j"]
    # Rank 0's own windows are keyed as its framework sees them, with the UUID.
    assert {tuple(m["uuid"].items()) for m in res["rank0"]} == {(("gpu0", u0),)}


def _m(name: str, t0: int, t1: int, e: dict[str, float], uuid: dict[str, str]) -> Measurement:
    m = Measurement(name, t0, t1)
    m._fill(e, {k: 0.1 for k in e}, {}, {})
    m.uuid = uuid
    return m


def test_merge_counts_cpu_domains_once_per_host() -> None:
    a = rank_payload([_m("step", 0, 10, {"gpu0": 5.0, "cpu0.package": 2.0, "cpu0.core": 1.0}, {"gpu0": "U0"})], 0, "h1")
    b = rank_payload([_m("step", 1, 11, {"gpu0": 7.0, "cpu0.package": 2.5}, {"gpu0": "U1"})], 1, "h1")
    c = rank_payload([_m("step", 2, 12, {"gpu0": 9.0, "cpu0.package": 3.0}, {"gpu0": "U2"})], 2, "h2")
    g = merge_payloads([c, a, b])
    (st,) = g.steps
    # Host h1's package once (rank 0's), h2's once; the core sub-domain is kept but not in the total.
    assert st.energy_j == {"U0": 5.0, "h1:cpu0.package": 2.0, "h1:cpu0.core": 1.0, "U1": 7.0, "U2": 9.0,
                           "h2:cpu0.package": 3.0}
    assert st.total_j == pytest.approx(5 + 2 + 7 + 9 + 3) and st.duplicates == {"h1:cpu0.package": [1]}
    assert np.isclose(st.total_uncertainty_j, 0.5)
