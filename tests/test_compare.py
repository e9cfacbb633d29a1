"""Work units, breakdowns and `compare` against simulated models of known energy.

The three-model claims run twice: on synthesised recordings (jouletrace.testing.models.
synthetic_model_run: perfect sample timing, the simulated GPU's counter model) and in real time
(realtime_model_runs: each model's simulated GPU read by its own Sampler thread while it plays).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jouletrace.analysis import breakdown, categorize, per_work
from jouletrace.analysis.breakdown import IDLE, OUTSIDE
from jouletrace.analysis.compare import JSON_SCHEMA, Run, compare
from jouletrace.analysis.projection import intensity_for, parse_rate, project
from jouletrace.errors import InvalidArgumentError
from jouletrace.kernels import traces
from jouletrace.testing.models import realtime_model_runs, synthetic_model_run
from jouletrace.testing.traces import write_kineto_json
from jouletrace.testing.workloads import synthetic_recording

DATA = Path(__file__).parent / "data" / "traces"


@pytest.fixture(scope="module", params=["synthetic", "real time"])
def models(request):
    """Three models: a baseline, slower GEMMs at equal power, hotter GEMMs at equal time. Recorded
    synthetically (perfect timing: the maths) and in real time (three simulated GPUs, each read by
    its own Sampler thread at 1 kHz while the schedules play: what a user gets)."""
    specs = [{"seed": 1}, {"seed": 2, "time_scale": {"gemm": 1.5}}, {"seed": 3, "power_scale": {"gemm": 1.4}}]
    if request.param == "real time":
        return tuple(realtime_model_runs(15, specs))
    return tuple(synthetic_model_run(20, s["seed"], time_scale=s.get("time_scale"), power_scale=s.get("power_scale"))
                 for s in specs)


def test_categorize_default_table_and_override():
    names = ["ampere_sgemm_128x64_nn", "flash_attn_fwd_kernel", "void at::native::layer_norm_kernel",
             "ncclAllReduceRingLLKernel", "vectorized_elementwise_kernel", "reduce_kernel<512>", "mystery"]
    assert categorize(names) == ["gemm", "attention", "normalisation", "communication", "elementwise",
                                 "reduction", "other"]
    assert categorize(["mystery"], [["attention", "myst"]]) == ["attention"]
    with pytest.raises(InvalidArgumentError, match="not a regex"):
        categorize(["x"], [["gemm", "("]])


def test_per_token_ratio_within_two_percent(models):
    a, b, c = models
    for m in (a, b, c):
        w = per_work(m["rec"])
        truth = m["true_energy_j"] / m["tokens"]
        assert w.work["tokens"] == m["tokens"]
        assert abs(w.per_unit["tokens"]["energy_j"] - truth) <= w.per_unit["tokens"]["bound_j"] + 1e-3 * truth
    doc = compare([Run(m["rec"], label=k) for m, k in ((a, "a"), (b, "b"), (c, "c"))])
    for run, m in zip(doc["runs"][1:], (b, c), strict=True):
        true_ratio = (m["true_energy_j"] / m["tokens"]) / (a["true_energy_j"] / a["tokens"])
        assert abs(run["ratio"]["value"] / true_ratio - 1) < 0.02
        assert run["ratio"]["low"] <= true_ratio <= run["ratio"]["high"]
        assert not run["ratio"]["within_uncertainty"]
    assert doc["unit"] == "tokens" and doc["differences"] == []


def test_category_breakdown_within_five_percent(models):
    for m in models:
        bd = breakdown(m["rec"], m["kernels"])
        total = sum(m["truth"].values())
        # direct: the parts add up exactly to the span's energy, which is within its bound of the truth
        assert sum(r["energy_j"] for r in bd.rows) == pytest.approx(bd.span_energy_j, rel=1e-9)
        assert abs(bd.span_energy_j - total) <= bd.span_bound_j + 1e-6 * total
        for g, true_e in m["truth"].items():
            if true_e < 0.05 * total:
                continue
            r = bd.row(g)
            assert abs(r["stat_energy_j"] - true_e) / true_e < 0.05, (g, r["stat_energy_j"], true_e)
            assert r["stat_resolved"]


def test_decomposition_names_the_known_cause(models):
    a, b, c = models
    doc = compare([Run(m["rec"], m["kernels"], label=k) for m, k in ((a, "a"), (b, "b"), (c, "c"))])
    assert doc["basis"] == "statistical"
    by_run = {d["run"]: {x["group"]: x for x in d["categories"]} for d in doc["differences"]}
    gb, gc = by_run["b"]["gemm"], by_run["c"]["gemm"]
    assert gb["cause"] == "time (slower)" and gb["time_effect_j"] > 5 * abs(gb["power_effect_j"])
    assert gc["cause"] == "power (hotter)" and gc["power_effect_j"] > 5 * abs(gc["time_effect_j"])
    for d in doc["differences"]:
        for x in d["categories"]:
            assert x["time_effect_j"] + x["power_effect_j"] + x["residual_j"] == pytest.approx(x["delta_j"], abs=1e-12)
        assert d["top_names"][0]["name"] == "ampere_sgemm_128x64_nn"
    # GEMM power truth: C's GEMM power above idle is 1.4x A's
    pa = by_run["c"]["gemm"]["baseline_power_w"] - 70.0
    pc = by_run["c"]["gemm"]["run_power_w"] - 70.0
    assert pc / pa == pytest.approx(1.4, rel=0.03)


def _replayed(kernels, rng):
    """A recording covering a real trace's kernels (their timeline on the simulated GPU)."""
    from jouletrace.sampling.sim import SimGPU

    off = int(kernels.start_ns.min()) - 10_000_000_000  # the trace's first kernel at 10 s monotonic
    t0, t1 = int(kernels.start_ns.min()) - off, int(kernels.end_ns.max()) - off
    with SimGPU(update_period_s=0.02, avg_window_s=0.01, idle_w=60.0) as sim:
        sim.add_segments(kernels.start_ns - off, kernels.end_ns - off, np.full(len(kernels), 200.0))
        rec = synthetic_recording(sim, t0 - 200_000_000, t1 + 200_000_000, rng, rate_hz=2000, epoch_offset=off)
    return rec


@pytest.mark.parametrize("trace", ["kineto-a100-nccl.json.gz", "nsys-2022.2-a100-saxpy.sqlite"])
def test_breakdown_by_range_on_real_traces_sums_to_whole(trace):
    k = traces.load(DATA / trace)
    rec = _replayed(k, np.random.default_rng(0))
    bd = breakdown(rec, k, "range", statistical=False)
    assert sum(r["energy_j"] for r in bd.rows) == pytest.approx(bd.span_energy_j, rel=1e-9)
    assert sum(r["launches"] for r in bd.rows) == len(k)
    groups = bd.groups
    if trace.startswith("kineto"):
        assert "## backward ##" in groups and "DistributedDataParallel.forward" in groups
    else:
        assert OUTSIDE in groups or "saxpy" in groups
    assert IDLE in groups


def test_breakdown_by_op_and_scope_on_a_real_kineto_trace():
    k = traces.load(DATA / "kineto-a100-nccl.json.gz")
    rec = _replayed(k, np.random.default_rng(1))
    op = breakdown(rec, k, "op", statistical=False)
    assert sum(r["energy_j"] for r in op.rows) == pytest.approx(op.span_energy_j, rel=1e-9)
    assert sum(r["launches"] for r in op.rows) == len(k)
    assert any(g.startswith("aten::") for g in op.groups)
    assert "(no op)" not in op.groups or op.row("(no op)")["launches"] < len(k) / 2
    sc = breakdown(rec, k, "scope", statistical=False)
    assert sum(r["energy_j"] for r in sc.rows) == pytest.approx(sc.span_energy_j, rel=1e-9)
    assert {"## backward ##", "DistributedDataParallel.forward"} <= set(sc.groups)  # innermost scopes
    phases = breakdown(rec, k, "scope", ranges="## *", level="outermost", statistical=False)
    assert len(set(phases.groups) & {"## forward ##", "## backward ##", "## optimizer ##"}) >= 2
    assert sum(r["energy_j"] for r in phases.rows) == pytest.approx(phases.span_energy_j, rel=1e-9)
    with pytest.raises(InvalidArgumentError, match="PyTorch-profiler"):
        breakdown(rec, traces.load(DATA / "nsys-2022.2-a100-saxpy.sqlite"), "op")


def test_projection_is_labelled_and_scales():
    assert parse_rate("1000/s") == 1000 and parse_rate("86400/day") == pytest.approx(1.0)
    with pytest.raises(InvalidArgumentError, match="per unit of time"):
        parse_rate("fast")
    p = project(0.01, 0.009, 0.011, rate_per_s=1000, unit="tokens", price_per_kwh=0.2, currency="USD", region="FR")
    assert p["kind"] == "projection"
    assert p["kwh_per_day"]["value"] == pytest.approx(0.01 * 1000 * 86400 / 3.6e6)
    assert p["kwh_per_year"]["value"] == pytest.approx(p["kwh_per_day"]["value"] * 365)
    assert p["cost_per_year"]["value"] == pytest.approx(p["kwh_per_year"]["value"] * 0.2)
    fr = intensity_for("france")
    assert fr["year"] and fr["source"] and p["co2e_kg_per_year"]["value"] == pytest.approx(
        p["kwh_per_year"]["value"] * fr["g_per_kwh"] / 1000)
    with pytest.raises(InvalidArgumentError, match="no region"):
        intensity_for("Atlantis")


# ------------------------------------------------------------------------------------------------
# The command line


def jt(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "jouletrace", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def files(models, tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    out = []
    for m, name in zip(models, ("a", "b", "c"), strict=True):
        rec_path = m["rec"].save(d / f"{name}.npz")
        k = m["kernels"]
        trace = d / f"{name}-trace.json.gz"
        write_kineto_json(trace, k, base_time_ns=int(k.start_ns.min()) // 10**9 * 10**9, gz=True)
        out.append((rec_path, str(trace)))
    return d, out


def test_cli_json_validates_against_the_schema(files):
    jsonschema = pytest.importorskip("jsonschema")
    _, f = files
    r = jt("compare", f"{f[0][0]}:{f[0][1]}", f"{f[1][0]}:{f[1][1]}", "--json", "--rate", "1000/s",
           "--price", "0.2", "--currency", "EUR", "--region", "DE")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, JSON_SCHEMA)
    assert doc["runs"][1]["projection"]["kind"] == "projection"
    bad = dict(doc, basis="guess")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, JSON_SCHEMA)


def test_cli_text_csv_and_errors(files, tmp_path):
    _, f = files
    r = jt("compare", f[0][0], f[2][0], "--trace", f[0][1], "--trace", f[2][1])
    assert r.returncode == 0, r.stderr
    assert "Why c differs from a" in r.stdout and "power (hotter)" in r.stdout
    r = jt("compare", f[0][0], f[1][0], "--csv")
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith("label,file,trace,unit")
    assert len(r.stdout.splitlines()) == 3
    for args, msg in ((["compare", str(tmp_path / "nope.npz")], "no recording"),
                      (["compare", f[0][0], "--unit", "images"], "not counted"),
                      (["compare", f[0][0], "--region", "DE"], "need --rate"),
                      (["compare", f[0][0], "--window", "zzz*"], "no window matches"),
                      (["compare", f"{f[0][0]}:{tmp_path / 'missing.json'}"], "no trace")):
        r = jt(*args)
        assert r.returncode != 0 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_html_report_renders_in_a_headless_browser(files, tmp_path):
    d, f = files
    html = tmp_path / "report.html"
    html.write_text("keep me")
    r = jt("compare", f"{f[0][0]}:{f[0][1]}", f"{f[1][0]}:{f[1][1]}", "--html", str(html))
    assert r.returncode == 0, r.stderr
    text = html.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in \
        text.replace("https://json-schema", "")
    assert "<script" not in text
    # a failed write leaves the old file whole
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "r.html").write_text("old")
    os.chmod(ro, 0o500)
    try:
        r2 = jt("compare", f[0][0], "--html", str(ro / "r.html"))
        if os.geteuid() != 0:
            assert r2.returncode == 1 and "Traceback" not in r2.stderr
        assert (ro / "r.html").read_text() in ("old",) or os.geteuid() == 0
    finally:
        os.chmod(ro, 0o700)
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium (scripts/test.sh installs it with apt when run as root)")
    p = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
                        "--v=0", "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr[-2000:]
    dom = p.stdout
    assert 'id="chart-categories"' in dom and 'id="chart-power"' in dom
    assert dom.count("<polyline") == 2 and dom.count('class="seg"') >= 8
    assert "top-kernels" in dom
    errors = [ln for ln in p.stderr.splitlines() if "Uncaught" in ln or ":CONSOLE(" in ln]
    assert not errors, errors


def test_png_charts_signature_size_and_bars(files, tmp_path):
    """--png: two real PNGs of the stated size; the category chart has one bar segment per run
    and category and the power chart one line per run."""
    pytest.importorskip("matplotlib")
    import matplotlib.image

    from jouletrace.cli.compare import category_figure, power_figure

    _, f = files
    prefix = tmp_path / "fig"
    r = jt("compare", f"{f[0][0]}:{f[0][1]}", f"{f[2][0]}:{f[2][1]}", "--png", str(prefix))
    assert r.returncode == 0, r.stderr
    for name, size in (("categories", (7, 0.6 * 2 + 1.6)), ("power", (7, 3))):
        path = tmp_path / f"fig-{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        h, w = matplotlib.image.imread(path).shape[:2]
        assert (w, h) == (round(size[0] * 150), round(size[1] * 150))
        assert f"wrote {path}" in r.stdout
    assert not [p for p in os.listdir(tmp_path) if ".jt-tmp-" in p]
    doc = json.loads(jt("compare", f"{f[0][0]}:{f[0][1]}", f"{f[2][0]}:{f[2][1]}", "--json").stdout)
    fig = category_figure(doc)
    (ax,) = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    groups = {row["group"] for run in doc["runs"] for row in run["breakdown"]["rows"]}
    assert len(ax.patches) == 2 * len(groups)
    # the stacked bars end at each run's total energy per unit (the chart's basis)
    key = "stat_per_unit_j" if doc["basis"] == "statistical" else "per_unit_j"
    for i, run in enumerate(doc["runs"]):
        total = sum(max(row[key] or 0.0, 0.0) for row in run["breakdown"]["rows"])
        ends = [p.get_x() + p.get_width() for p in ax.patches if abs(p.get_y() + p.get_height() / 2 - i) < 0.5]
        assert max(ends) == pytest.approx(total)
    assert len(power_figure(doc).axes[0].lines) == 2
    r = jt("compare", f[0][0], "--png", str(tmp_path / "no-such-dir" / "x"))
    assert r.returncode != 0 and "does not exist" in r.stderr and "Traceback" not in r.stderr
