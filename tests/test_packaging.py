"""What a user installs: one version, numpy as the only run-time dependency, optional
modules imported lazily with the extra named, and every public import of today."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jouletrace

ROOT = Path(__file__).resolve().parents[1]

try:  # Python 3.11+; the test extra does not add tomli for 3.10
    import tomllib
except ImportError:  # pragma: no cover
    tomllib = None  # type: ignore[assignment]

# Every public name importable today, by module. Removing one breaks users: add, never drop.
PUBLIC = {
    "jouletrace": [
        "DeviceLostError", "InvalidArgumentError", "JouletraceError", "Measurement", "Monitor",
        "PermissionDeniedError", "Recording", "RecordingFormatError", "SOURCE_NAMES", "Sampler",
        "SourceInfo", "SourceUnavailableError", "SyncMarkers", "TraceFormatError", "WindowEnergies",
        "__version__", "attribute", "calibrate", "configure", "default_monitor", "export", "load",
        "markers", "measure", "sim", "sources", "window",
    ],
    "jouletrace.attribute": [
        "Alignment", "Attribution", "LaunchEnergies", "NameEnergies", "align", "attribute",
        "attribute_launches", "attribute_names", "device_channels", "interval_matrix", "nnls",
        "share_times",
    ],
    "jouletrace.traces": [
        "KernelTable", "RangeTable", "TraceFormatError", "load", "load_kineto", "load_nsys",
        "load_table", "sniff",
    ],
    "jouletrace.integrate": [
        "AUTO_MIN_WINDOWS", "FLAG_BELOW_RESOLUTION", "FLAG_EDGE_OUTSIDE_RECORDING",
        "FLAG_EXTRAPOLATED", "FLAG_NAMES", "FLAG_NO_SAMPLES", "FLAG_SPANS_PAUSE",
        "RESOLUTION_PERIODS", "Updates", "characterize", "choose_edges", "counter_energy",
        "counter_quantum", "derive_power", "flag_names", "infer_update_period", "locate_updates",
        "power_energy",
    ],
    "jouletrace.sim": [
        "COUNTER_KINDS", "FIELD_ENERGY", "FIELD_ENERGY_ALT", "FIELD_POWER_INSTANT", "SimGPU",
        "library_file",
    ],
    "jouletrace.export": ["counter_tracks", "merge_kineto", "write_perfetto"],
    "jouletrace.markers": ["BACKENDS", "MarkerLog", "SyncMarkers", "available_backends"],
    "jouletrace.torch": [
        "EnergyWindow", "JouletraceCallback", "JouletraceLightningCallback", "ProfilerEnergy",
        "TraceEnergy", "cuda_sync", "window",
    ],
    "jouletrace.distributed": ["Gathered", "GatheredStep", "gather", "merge_payloads", "rank_payload"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_imports_of_today_still_work(module):
    mod = importlib.import_module(module)
    for name in PUBLIC[module]:
        assert hasattr(mod, name), f"from {module} import {name} no longer works"
        assert name in mod.__all__, f"{module}.__all__ lost {name}"
    # the `from jouletrace import x` spelling, for the submodules of today
    if module != "jouletrace":
        parent, _, child = module.rpartition(".")
        exec(f"from {parent} import {child}", {})


def test_version_is_written_once_and_matches_the_installed_metadata():
    assert re.fullmatch(r"\d+\.\d+\.\d+(\S*)", jouletrace.__version__)
    text = (ROOT / "pyproject.toml").read_text()
    if tomllib is not None:
        project = tomllib.loads(text)
        assert "version" not in project["project"]
        assert "version" in project["project"]["dynamic"]
        regex = project["tool"]["scikit-build"]["metadata"]["version"]
        assert regex["input"] == "python/jouletrace/_version.py"
    try:
        dist = importlib.metadata.distribution("jouletrace")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("jouletrace is imported from the source tree, not installed")
    installed = Path(str(dist.locate_file("jouletrace/__init__.py"))).resolve()
    if installed != Path(jouletrace.__file__).resolve():
        pytest.skip(f"the installed jouletrace ({installed}) is not the one imported here")
    assert dist.version == jouletrace.__version__


@pytest.mark.skipif(tomllib is None, reason="reads pyproject.toml with tomllib (3.11+)")
def test_numpy_is_the_only_runtime_dependency_and_the_rest_are_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~; \[]", d, maxsplit=1)[0] for d in project["dependencies"]]
    assert names == ["numpy"]
    extras = project["optional-dependencies"]
    from jouletrace._optional import EXTRAS

    for module, (extra, dist) in EXTRAS.items():
        assert any(d.startswith(dist) for d in extras[extra]), (module, extra, dist)


def test_import_loads_no_optional_module():
    optional = ["pynvml", "pandas", "matplotlib", "torch", "prometheus_client", "scipy"]
    code = (
        "import sys, jouletrace; "
        f"print([m for m in {optional!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_missing_optional_module_names_its_extra(monkeypatch):
    from jouletrace import _optional
    from jouletrace.sampling.sim import SimGPU

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'jouletrace\[nvml\]'"):
        SimGPU.use_in_pynvml(object.__new__(SimGPU))
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"jouletrace\[pandas\]") as e:
        _optional.require("pandas", "Recording.to_pandas()")
    assert "Recording.to_pandas()" in str(e.value) and "pandas" in str(e.value)
