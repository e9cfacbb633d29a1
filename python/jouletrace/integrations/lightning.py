"""A PyTorch Lightning callback: energy per training batch and epoch to the Trainer's loggers.

>>> from jouletrace.integrations.lightning import JouletraceLightningCallback   # doctest: +SKIP
>>> trainer = L.Trainer(callbacks=[JouletraceLightningCallback()])             # doctest: +SKIP

Each training batch and epoch is a jouletrace window. A batch's energy is
final a few sensor periods after it ends; the callback reports each batch when
it is final — at a later batch end, without blocking — through every logger's
``log_metrics(metrics, step=<that batch's global step>)``, so the values land
on the step they belong to (``energy/step_j``, ``energy/step_uncertainty_j``,
``energy/step_j_per_token`` with ``tokens_per_batch``, ``energy/total_j``,
``energy/epoch_j``). The rest is flushed at ``on_train_end``.

The class derives from ``lightning.pytorch.Callback`` (or
``pytorch_lightning.Callback``) when one is installed; importing it imports
Lightning then, not before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..energy.monitor import Monitor
from ._steps import StepEnergy

__all__ = ["JouletraceLightningCallback"]


def _base() -> type:
    for mod in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return __import__(mod, fromlist=["Callback"]).Callback
        except ImportError:
            continue
    return object


class JouletraceLightningCallback(_base()):  # type: ignore[misc]
    """Energy per batch and epoch for Lightning (see the module docstring).

    ``tokens_per_batch``: a function of the batch giving its number of tokens,
    for joules per token.
    """

    def __init__(
        self, monitor: Monitor | None = None, *, tokens_per_batch: Callable[[Any], float] | None = None,
        prefix: str = "energy/",
    ) -> None:
        super().__init__()
        self.steps = StepEnergy(monitor, prefix=prefix)
        self.tokens_per_batch = tokens_per_batch
        self._tokens = 0.0
        #: (step, metrics) as logged.
        self.history: list[tuple[int, dict[str, float]]] = []

    def _log(self, trainer: Any, final: list[tuple[int, dict[str, float]]]) -> None:
        loggers = list(getattr(trainer, "loggers", None) or [])
        for step, metrics in final:
            for lg in loggers:
                lg.log_metrics(metrics, step=step)
        self.history.extend(final)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.steps.monitor.start()

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.steps.begin("epoch", int(getattr(trainer, "global_step", 0)))

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._tokens = float(self.tokens_per_batch(batch)) if self.tokens_per_batch else 0.0
        self.steps.begin("step", int(getattr(trainer, "global_step", batch_idx)))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.steps.end("step", tokens=self._tokens)
        self._log(trainer, self.steps.final())

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.steps.end("epoch")

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.steps.end("step")
        self.steps.end("epoch")
        self._log(trainer, self.steps.final(wait=True))
