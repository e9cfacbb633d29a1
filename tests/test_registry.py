"""The source registry: a source is one module plus its native part.

A test-only source ("toy"), backed by the simulated GPU through the native NVML source, is
registered here and nowhere else, and is then usable by name everywhere a source name is:
``Sampler``, ``jouletrace.sources()``, ``jouletrace info``, ``jouletrace record --source`` and
``Monitor(sources=...)``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import jouletrace
from jouletrace import _core
from jouletrace.cli import main
from jouletrace.errors import InvalidArgumentError
from jouletrace.sampling import registry
from jouletrace.sampling.registry import OpenedSource, SourceInfo, SourceSpec
from jouletrace.sampling.sim import SimGPU

TOY_DESCRIPTION = "test-only toy source: the simulated GPU under another name"


def _open_toy(options: dict[str, Any], config: _core.SamplerConfig) -> OpenedSource:
    sim = options.get("sim")
    if sim is None:
        sim = SimGPU(idle_w=float(options.get("watts", 80.0)), update_period_s=0.01)
    native = _core.Sampler.nvml(
        _core.NvmlOptions(library=str(sim.library_path), source_name="toy", timestamps=False), config
    )
    return OpenedSource(native, sim=sim)


def _probe_toy() -> SourceInfo:
    return SourceInfo("toy", TOY_DESCRIPTION, True, detail="a simulated GPU per sampler")


TOY = SourceSpec("toy", TOY_DESCRIPTION, _open_toy, _probe_toy, options=frozenset({"sim", "watts"}),
                 hardware=False)


@pytest.fixture
def toy():  # type: ignore[no-untyped-def]
    registry.register(TOY)
    yield TOY
    registry.unregister("toy")


def test_a_registered_source_samples_by_name(toy):
    with jouletrace.Sampler("toy", rate_hz=500, watts=120.0) as s:
        time.sleep(0.3)
    rec = s.recording()
    assert s.source == "toy" and rec.metadata["source"] == "toy"
    assert rec.channels == ["gpu0.energy_j", "gpu0.power_w"]
    assert rec.counter_width("gpu0.energy_j").bits == 64  # published by the native source it runs on
    t0, t1 = int(rec.t_ns[10]), int(rec.t_ns[-10])
    m = rec.energy(t0, t1)
    truth = float(s.sim.true_energy(t0, t1))
    assert abs(m.energy_j["gpu0"] - truth) <= m.uncertainty_j["gpu0"]
    assert truth == pytest.approx(120.0 * (t1 - t0) * 1e-9, rel=1e-6)
    with pytest.raises(InvalidArgumentError, match=r"unknown option\(s\) for source 'toy': gpus; it takes sim, watts"):
        jouletrace.Sampler("toy", gpus=[0])


def test_a_registered_source_is_listed_by_sources_and_info(toy, capsys):
    infos = {i.name: i for i in jouletrace.sources()}  # the cache knows the registry changed
    assert infos["toy"] == SourceInfo("toy", TOY_DESCRIPTION, True, detail="a simulated GPU per sampler")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("toy"))
    assert "usable" in line and TOY_DESCRIPTION in line
    assert main(["info", "--json"]) == 0
    listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)["sources"]}
    assert listed["toy"]["usable"] and listed["toy"]["description"] == TOY_DESCRIPTION
    registry.unregister("toy")
    try:
        assert "toy" not in {i.name for i in jouletrace.sources()}
    finally:
        registry.register(TOY)


def test_a_registered_source_records_and_monitors(toy, tmp_path, capsys):
    out = tmp_path / "toy.npz"
    assert main(["record", "--source", "toy", "--no-stream", "--no-status", "-o", str(out), "--",
                 "sleep", "0.3"]) == 0
    rec = jouletrace.load(out)
    assert rec.metadata["source"] == "toy" and len(rec) > 10
    sim = SimGPU(idle_w=50.0, update_period_s=0.01)
    try:
        with jouletrace.Monitor(sources=["toy"], source_options={"toy": {"sim": sim}}, rate_hz=500) as mon:
            time.sleep(0.05)
            assert [s.source for s in mon.samplers] == ["toy"]
            with mon.window("step") as m:
                time.sleep(0.2)
            m.resolve()
        truth = float(sim.true_energy(m.t0_ns, m.t1_ns))
        assert abs(m.energy_j["gpu0"] - truth) <= m.uncertainty_j["gpu0"]
    finally:
        sim.close()


def test_registration_rules():
    with pytest.raises(InvalidArgumentError, match="already registered"):
        registry.register(registry.lookup("sim"))
    registry.register(registry.lookup("sim"), replace=True)  # keeps its place
    assert registry.names() == jouletrace.SOURCE_NAMES
    with pytest.raises(InvalidArgumentError, match="no source named 'toy'"):
        registry.unregister("toy")
    with pytest.raises(InvalidArgumentError, match=r"unknown source 'cuda'; known sources: nvml, sim, rapl"):
        registry.lookup("cuda")
    for bad in ("", " toy", "a,b"):
        with pytest.raises(InvalidArgumentError, match="source name"):
            registry.register(SourceSpec(bad, "x", _open_toy, _probe_toy))
    with pytest.raises(InvalidArgumentError, match="SourceSpec"):
        registry.register("toy")  # type: ignore[arg-type]


def test_built_in_sources_are_registered_by_their_modules():
    assert jouletrace.SOURCE_NAMES == ("nvml", "sim", "rapl", "rapl-perf", "rapl-msr", "rapl-powercap")
    assert [i.name for i in jouletrace.sources(refresh=True)] == list(jouletrace.SOURCE_NAMES)
    modules = {s.name: s.open.__module__ for s in registry.specs()}
    assert modules == {"nvml": "jouletrace.sampling.nvml", "sim": "jouletrace.sampling.nvml",
                       **{n: "jouletrace.sampling.rapl" for n in jouletrace.SOURCE_NAMES[2:]}}
    assert [s.name for s in registry.specs() if s.default] == ["nvml", "rapl"]
    assert [s.name for s in registry.specs() if not s.hardware] == ["sim"]
    assert registry.lookup("rapl").parts == ("rapl-perf", "rapl-msr", "rapl-powercap")


def test_a_probe_that_raises_is_reported_not_raised(toy):
    def broken() -> SourceInfo:
        raise RuntimeError("boom")

    registry.register(SourceSpec("toy", TOY_DESCRIPTION, _open_toy, broken), replace=True)
    info = {i.name: i for i in jouletrace.sources()}["toy"]
    assert not info.usable and "RuntimeError: boom" in info.reason
