"""The shared training loop's ordering contract: a step's checkpoint is written before its held-out evaluation, so
an evaluation that fails (on a GPU: the first one, if a batch were left on the host) costs no training steps, and
the resumed run evaluates that step before it trains on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from pipeline.config import TrainConfig
from pipeline.train.checkpoint import latest
from pipeline.train.loop import StepResult, fit, make_accelerator


class Batches(Dataset):
    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        return {"x": torch.randn(4, 2, 1, 3, generator=g), "window": torch.arange(4)}


def _step(model, batch) -> StepResult:
    loss = model(batch["x"].flatten(1)).pow(2).mean()
    return StepResult(loss, {"losses": {"loss": float(loss.detach())}})


class EvaluationFailed(RuntimeError):
    pass


def test_a_failed_evaluation_keeps_its_steps_checkpoint_and_is_redone_on_resume(tmp_path: Path):
    tc = TrainConfig(batch_size=4, max_steps=4, lr=1e-2, warmup_steps=1, checkpoint_every=2, eval_every=2,
                     log_every=1)
    calls: list[int] = []

    def evaluate(model, step: int) -> dict:
        calls.append(step)
        if len(calls) == 1:
            raise EvaluationFailed(f"step {step}")
        return {"value": float(step)}

    def run():
        torch.manual_seed(0)
        return fit(torch.nn.Linear(6, 1), tmp_path, tc, make_accelerator(tc), make_data=lambda e, s: Batches(),
                   train_step=_step, evaluate=evaluate)

    with pytest.raises(EvaluationFailed):
        run()
    assert latest(tmp_path / "checkpoints").name == "step-0000002"  # the failed evaluation's step is kept
    result = run()
    assert result.step == 4 and calls == [2, 2, 4]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "heldout"] == [2, 4]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
