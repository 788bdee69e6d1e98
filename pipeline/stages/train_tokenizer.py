"""train-tokenizer: train a DD-RVQ tokenizer (or a variant) on pretraining shards.

    python -m pipeline train-tokenizer results/demo/demo_bids/shards [more shard folders] \\
        --out results/demo/tokenizer/ddrvq-demo --settings JSON
    accelerate launch -m pipeline train-tokenizer ...        (several processes / GPUs)

Writes <out>/model.safetensors (config and fingerprint in its metadata), metrics.jsonl (per step),
metrics.json (held-out reconstruction), loss.png, codebook_usage.png, reconstructions.png, and
resumable checkpoints in <out>/checkpoints/. Rerunning after a kill resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os

from pipeline.config import TokenizerSection, load_settings, with_epochs

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", help="shard folders (with index.parquet) to train on")
    parser.add_argument("--out", required=True, help="tokenizer folder")
    parser.add_argument("--settings", default=None, help="TokenizerSection as JSON (or @file)")
    parser.add_argument("--stop-after", type=int, default=None, help="stop at this step (resumption tests)")


def epoch_schedule(shards, tc, where: str):
    """An epoch-held schedule (train.epochs) as steps over the windows these shards train on (train + val)."""
    if tc.epochs is None and tc.warmup_epochs is None:
        return tc
    from pipeline.data.windows import WindowIndex

    n = len(WindowIndex.from_shard_dirs(shards, splits=["train", "val"]))
    resolved = with_epochs(tc, n, where=where)
    log.info("%s: %s epochs over %d windows = %d steps (%d warm-up)", where, tc.epochs, n, resolved.max_steps,
             resolved.warmup_steps)
    return resolved


def main(args: argparse.Namespace) -> None:
    from pipeline.train.tokenizer import train_tokenizer

    section = load_settings(TokenizerSection, args.settings)
    section = dataclasses.replace(section, train=epoch_schedule(args.shards, section.train, "tokenizer.train"))
    # What the scheduler granted, as this process sees it (one line per process under accelerate launch). The
    # launcher (pipeline.launch) refuses a GPU job without a usable CUDA device unless BRAINRVQ_FAKE_GPUS=1
    # (the SLURM test's fake GPUs), which then trains the granted number of processes on the CPU.
    import torch

    env = os.environ.get
    log.info("launch: CUDA_VISIBLE_DEVICES=%s SLURM_JOB_ID=%s processes=%s rank=%s cuda=%s",
             env("CUDA_VISIBLE_DEVICES", "unset"), env("SLURM_JOB_ID", "unset"), env("WORLD_SIZE", "1"),
             env("RANK", "0"), torch.cuda.is_available())
    result = train_tokenizer(args.shards, args.out, section, stop_after=args.stop_after)
    print(f"step {result.step}: held-out {result.heldout}")
