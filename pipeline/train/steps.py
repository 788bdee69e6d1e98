"""The training steps of the tokenizer and pretraining stages: a batch on the device → (loss, metrics record).

Kept apart from the stages (which read shards through zarr/polars) so that benchmarks/gpu_check.py, on a machine
with torch but no data libraries, times exactly the steps the stages train with.
Records hold device tensors: nothing is read by the host until fit() logs a step (pipeline.train.loop.host_record).
"""

from __future__ import annotations

from pipeline.train.loop import StepResult


def tokenizer_step(model, batch: dict) -> StepResult:
    result = model(batch["x"], batch["ch"])
    return StepResult(result.loss, {"losses": dict(result.losses), "usage": result.usage,
                                    "perplexity": result.perplexity})


def pretrain_step(model, batch: dict) -> StepResult:
    """The loss is a SUM over the scored tokens: fit() divides by the global batch's target count."""
    out = model(batch["x"], batch["ch"], batch["codes"], batch["mask"])
    valid = (batch["ch"] >= 0).sum() * batch["x"].shape[2]
    return StepResult(out.loss_sum, {"losses": out.losses, "accuracy": out.accuracy,
                                     "mask_ratio": batch["mask"].sum() / valid.clamp_min(1)})
