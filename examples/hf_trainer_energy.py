"""Energy per step, epoch and token in a Hugging Face Trainer's logs (TensorBoard, W&B, ...).

    pip install 'jouletrace[torch]' transformers datasets
    python examples/hf_trainer_energy.py

JouletraceCallback.install puts the callback ahead of the reporting ones, so they log
energy/step_j, energy/step_j_per_token (include_num_input_tokens_seen=True), energy/total_j and
energy/epoch_j. Without a GPU or RAPL it warns once and logs nothing for energy.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from jouletrace.torch import JouletraceCallback

MODEL = "sshleifer/tiny-gpt2"


class Texts(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, tok, n: int = 256) -> None:  # type: ignore[no-untyped-def]
        enc = tok(["jouletrace measures energy per training step."] * n, padding="max_length", max_length=32,
                  truncation=True, return_tensors="pt")
        self.ids = enc["input_ids"]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main() -> None:
    tok = AutoTokenizer.from_pretrained(MODEL)
    tok.pad_token = tok.eos_token
    args = TrainingArguments("hf-energy-out", per_device_train_batch_size=8, num_train_epochs=2, logging_steps=5,
                             include_num_input_tokens_seen=True, report_to=["tensorboard"])
    trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(MODEL), args=args, train_dataset=Texts(tok))
    cb = JouletraceCallback.install(trainer)
    trainer.train()
    s = cb.steps.summary()
    print(f"training: {s['total_j']:.1f} ± {s['total_uncertainty_j']:.1f} J, {s['work'].get('tokens', 0):.0f} tokens")


if __name__ == "__main__":
    main()
