"""A Hugging Face ``transformers.Trainer`` callback: energy per step and epoch in the Trainer's logs.

>>> from jouletrace.integrations.huggingface import JouletraceCallback   # doctest: +SKIP
>>> trainer = Trainer(..., callbacks=[JouletraceCallback()])              # doctest: +SKIP

Each optimizer step and each epoch is a jouletrace window. At every ``on_log``
the energies that have become final since the last one (a step is final a few
sensor periods after it ends; reading it earlier would block the loop) are
added to the logs, so the reporting integrations that come after this
callback (TensorBoard, W&B, MLflow, ...) see them: ``energy/step_j`` (the
mean of the steps reported), ``energy/step_uncertainty_j``,
``energy/step_j_per_token`` when the Trainer counts tokens
(``include_num_input_tokens_seen=True``), ``energy/total_j`` and
``energy/epoch_j`` when an epoch is final. Callbacks that run before this one
do not see them: ``JouletraceCallback.install(trainer)`` puts it first.
Everything is also in ``log_history`` order in ``callback.history`` and in
``callback.steps.measurements``.

The callback implements the TrainerCallback protocol itself (every event is a
method), so importing it does not import transformers.
"""

from __future__ import annotations

from typing import Any

from ..energy.monitor import Monitor
from ._steps import StepEnergy

__all__ = ["JouletraceCallback"]


class JouletraceCallback:
    """Energy per step and epoch for ``transformers.Trainer`` (see the module docstring)."""

    def __init__(self, monitor: Monitor | None = None, *, prefix: str = "energy/") -> None:
        self.steps = StepEnergy(monitor, prefix=prefix)
        #: (global step, metrics) as reported.
        self.history: list[tuple[int, dict[str, float]]] = []
        self._tokens_at_begin: float | None = None
        self._tokens_at_end: float | None = None

    @classmethod
    def install(cls, trainer: Any, monitor: Monitor | None = None) -> JouletraceCallback:
        """Add a callback to ``trainer`` ahead of the reporting ones, so they log its values."""
        cb = cls(monitor)
        trainer.callback_handler.callbacks.insert(0, cb)
        return cb

    # -- events ---------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.steps.monitor.start()
        self._tokens_at_end = getattr(state, "num_input_tokens_seen", None)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.steps.begin("epoch", int(getattr(state, "epoch", 0) or 0))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._tokens_at_begin = getattr(state, "num_input_tokens_seen", None)
        self.steps.begin("step", int(state.global_step) + 1)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # A step's tokens: the count now less the count at the previous step's end. The
        # Trainer adds a batch's tokens before it calls on_step_begin (so the count at the
        # begin may already hold them) or after (a callback of another design): the count
        # between two step ends is right either way.
        tokens = getattr(state, "num_input_tokens_seen", None)
        before = self._tokens_at_end if self._tokens_at_end is not None else self._tokens_at_begin
        work = {}
        if tokens is not None and before is not None and tokens > before:
            work["tokens"] = float(tokens - before)
        self._tokens_at_end = tokens
        self.steps.end("step", **work)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.steps.end("epoch")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        final = self.steps.final()
        if logs is not None and final:
            logs.update(self._merge(final))
        self.history.extend(final)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.steps.end("step")
        self.steps.end("epoch")
        self.history.extend(self.steps.final(wait=True))

    @staticmethod
    def _merge(final: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
        """Several final steps in one log line: step values averaged, totals and epochs last."""
        out: dict[str, float] = {}
        sums: dict[str, list[float]] = {}
        for _, d in final:
            for k, v in d.items():
                if k.split("/")[-1].startswith("step_"):
                    sums.setdefault(k, []).append(v)
                else:
                    out[k] = v
        out.update({k: sum(v) / len(v) for k, v in sums.items()})
        return out

    def __getattr__(self, name: str) -> Any:
        # Every other TrainerCallback event (on_init_end, on_evaluate, on_save, on_substep_end, ...,
        # and those later versions add) is a no-op, as in transformers.TrainerCallback.
        if name.startswith("on_"):
            return _noop
        raise AttributeError(name)


def _noop(*args: Any, **kwargs: Any) -> None:
    return None
