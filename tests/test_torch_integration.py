"""jouletrace.torch on torch's CPU build: windows as profiler ranges, the on_trace_ready handler,
and the Hugging Face / Lightning callbacks driven through fakes of their callback protocols
(transformers and lightning are not installed here: the fakes call the hooks in the order those
trainers do)."""

from __future__ import annotations

import gzip
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from jouletrace.energy.monitor import Monitor

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'jouletrace[torch]')")
import jouletrace.torch as jt  # noqa: E402
from jouletrace.testing.traces import write_kineto_json  # noqa: E402
from jouletrace.testing.workloads import kernel_table  # noqa: E402


@pytest.fixture
def mon(make_sim, now_ns):  # type: ignore[no-untyped-def]
    sim = make_sim(update_period_s=0.01, idle_w=60.0)
    sim.add_segment(now_ns, now_ns + 60 * 10**9, 140.0)
    m = Monitor(sim=sim, cpu=False, rate_hz=500).start()
    m.sim = sim  # type: ignore[attr-defined]
    yield m
    m.stop()


def test_window_is_a_profiler_range_and_measures(mon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with jt.window("train_step", mon, work={"tokens": 64}) as m:
            x = torch.ones(64, 64)
            (x @ x).sum()
    prof.export_chrome_trace(str(tmp_path / "t.json"))
    events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    ranges = [e for e in events if e.get("name") == "train_step" and e.get("ph") == "X"]
    assert len(ranges) == 1
    # The profiler range encloses the window (same clock: Kineto µs since the epoch).
    rng = ranges[0]
    assert rng["dur"] * 1000 >= (m.t1_ns - m.t0_ns) * 0.999
    truth = float(mon.sim.true_energy(m.t0_ns, m.t1_ns))
    assert abs(m.total_j - truth) <= m.total_uncertainty_j and m.energy_per("tokens") == pytest.approx(m.total_j / 64)


def test_profiler_handler_attributes_kernels_and_merges_the_trace(make_sim, now_ns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sim = make_sim(update_period_s=0.01, idle_w=60.0)
    rng = np.random.default_rng(5)
    # Two kernel names back to back for ~1.2 s: "gemm" at +300 W, "softmax" at +80 W above idle.
    t0 = now_ns + 300_000_000
    dur = rng.integers(2_000_000, 6_000_000, 300)
    start = t0 + np.concatenate([[0], np.cumsum(dur[:-1] + 200_000)])
    end = start + dur
    name_id = rng.integers(0, 2, 300)
    sim.add_segments(start, end, np.where(name_id == 0, 300.0, 80.0))
    with Monitor(sim=sim, cpu=False, rate_hz=1000) as mon:
        offset = time.time_ns() - time.monotonic_ns()
        table = kernel_table(start, end, name_id, ["gemm", "softmax"], epoch_offset=offset)

        class FakeProfile:  # what on_trace_ready receives: step_num and export_chrome_trace
            step_num = 7

            def export_chrome_trace(self, path: str) -> None:
                write_kineto_json(path, table, base_time_ns=int(table.start_ns.min()) - 1_000_000)

        handler = jt.ProfilerEnergy(tmp_path, mon, worker_name="w")
        while time.monotonic_ns() < int(end.max()) + 50_000_000:
            time.sleep(0.05)
        te = handler(FakeProfile())
    assert te.step == 7 and te.trace_path.name == "w.7.pt.trace.json" and te.note == ""
    names = te.attribution.names
    per_launch = {str(n): float(e) for n, e in zip(names["name"], names["energy_per_launch_j"], strict=True)
                  if n in ("gemm", "softmax")}
    # Known truth per launch: (idle + above idle) x duration; the regression recovers it within 15 %.
    for k, w in ((0, 360.0), (1, 140.0)):
        true = float(np.mean(w * (end - start)[name_id == k] * 1e-9))
        assert per_launch[["gemm", "softmax"][k]] == pytest.approx(true, rel=0.15)
    with gzip.open(te.merged_path, "rt") as f:
        merged = json.load(f)["traceEvents"]
    assert any(e.get("ph") == "C" for e in merged)  # power/energy counter tracks
    assert sum(e.get("cat") == "kernel" for e in merged) == 300


@pytest.mark.filterwarnings("ignore:Profiler clears events:UserWarning")
def test_profiler_handler_on_a_cpu_only_run(mon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    handler = jt.ProfilerEnergy(tmp_path, mon, worker_name="cpu")
    sched = torch.profiler.schedule(wait=0, warmup=1, active=2, repeat=1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], schedule=sched,
                                on_trace_ready=handler) as prof:
        for _ in range(4):
            with jt.window("step", mon):
                torch.ones(32, 32).sum()
            prof.step()
    (te,) = handler.results
    assert te.attribution is None and "no CUDA kernel" in te.note and te.merged_path.exists()
    with gzip.open(te.merged_path, "rt") as f:
        events = json.load(f)["traceEvents"]
    # The profiler's two active steps, as record_function ranges ...
    assert sum(e.get("name") == "step" and e.get("ph") == "X" and e.get("cat") != "jouletrace.window"
               for e in events) == 2
    # ... and jouletrace's own window slices (each with its energy) on their own track.
    ours = [e for e in events if e.get("cat") == "jouletrace.window"]
    assert ours and all(e["name"] == "step" and "gpu0" in json.dumps(e["args"]) for e in ours)


class _Logger:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.rows.append((step, dict(metrics)))


def test_hugging_face_callback_logs_energy_per_step_and_token(mon) -> None:  # type: ignore[no-untyped-def]
    cb = jt.JouletraceCallback(mon)
    args, control = SimpleNamespace(), SimpleNamespace()
    state = SimpleNamespace(global_step=0, epoch=0.0, num_input_tokens_seen=0)
    logged: list[dict[str, float]] = []
    cb.on_init_end(args, state, control)  # an event it does not use
    cb.on_train_begin(args, state, control)
    cb.on_epoch_begin(args, state, control)
    for _ in range(4):
        cb.on_step_begin(args, state, control)
        time.sleep(0.03)
        state.num_input_tokens_seen += 512
        state.global_step += 1
        cb.on_step_end(args, state, control)
        logs = {"loss": 1.0}
        cb.on_log(args, state, control, logs=logs)
        logged.append(logs)
    cb.on_epoch_end(args, state, control)
    cb.on_train_end(args, state, control)
    steps = [m for m in cb.steps.measurements if m.name == "step"]
    assert len(steps) == 4 and all(m.work == {"tokens": 512.0} for m in steps)
    hist = {i: d for i, d in cb.history if "energy/step_j" in d}
    assert sorted(hist) == [1, 2, 3, 4]  # every step reported once, under its own step number
    for i, m in enumerate(steps, start=1):
        assert hist[i]["energy/step_j"] == m.total_j
        assert hist[i]["energy/step_j_per_token"] == pytest.approx(m.total_j / 512)
        truth = float(mon.sim.true_energy(m.t0_ns, m.t1_ns))
        assert abs(m.total_j - truth) <= m.total_uncertainty_j
    assert cb.steps.total_j == pytest.approx(sum(m.total_j for m in steps))
    assert any("energy/epoch_j" in d for _, d in cb.history)
    assert all(set(d) >= {"loss"} for d in logged)  # the Trainer's own logs are kept


def test_lightning_callback_logs_to_every_logger_at_the_steps_own_number(mon) -> None:  # type: ignore[no-untyped-def]
    cb = jt.JouletraceLightningCallback(mon, tokens_per_batch=lambda b: b.numel())
    loggers = [_Logger(), _Logger()]
    trainer = SimpleNamespace(global_step=0, loggers=loggers)
    cb.on_train_start(trainer, None)
    cb.on_train_epoch_start(trainer, None)
    for i in range(3):
        batch = torch.zeros(4, 8)
        cb.on_train_batch_start(trainer, None, batch, i)
        time.sleep(0.03)
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, None, None, batch, i)
    cb.on_train_epoch_end(trainer, None)
    cb.on_train_end(trainer, None)
    steps = [m for m in cb.steps.measurements if m.name == "step"]
    for lg in loggers:
        per_step = {s: d["energy/step_j"] for s, d in lg.rows if "energy/step_j" in d}
        assert per_step == {0: steps[0].total_j, 1: steps[1].total_j, 2: steps[2].total_j}
        assert [d["energy/step_j_per_token"] for s, d in lg.rows if "energy/step_j" in d] == pytest.approx(
            [m.total_j / 32 for m in steps])
        assert sum("energy/epoch_j" in d for _, d in lg.rows) == 1


def test_hugging_face_callback_in_a_real_trainer(mon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A real transformers.Trainer (a tiny GPT-2 built from its config: no download) on the CPU, with
    the simulated GPU under the callback: every step is logged once, with its tokens, within its bound."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    pytest.importorskip("accelerate", reason="the Trainer needs accelerate")

    class Data(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 32

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = torch.arange(16) % 50
            return {"input_ids": ids, "labels": ids}

    cfg = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    args = transformers.TrainingArguments(str(tmp_path), per_device_train_batch_size=8, num_train_epochs=1,
                                          logging_steps=1, include_num_input_tokens_seen=True, report_to=[],
                                          use_cpu=True, save_strategy="no", disable_tqdm=True)
    trainer = transformers.Trainer(model=transformers.GPT2LMHeadModel(cfg), args=args, train_dataset=Data())
    cb = jt.JouletraceCallback.install(trainer, mon)
    trainer.train()
    steps = [m for m in cb.steps.measurements if m.name == "step"]
    assert len(steps) == 4 and all(m.work == {"tokens": 128.0} for m in steps)  # 8 x 16 tokens a step
    hist = {i: d for i, d in cb.history if "energy/step_j" in d}
    assert sorted(hist) == [1, 2, 3, 4]
    for i, m in enumerate(steps, start=1):
        assert hist[i]["energy/step_j_per_token"] == pytest.approx(m.total_j / 128)
        assert abs(m.total_j - float(mon.sim.true_energy(m.t0_ns, m.t1_ns))) <= m.total_uncertainty_j
