"""pretrain: masked hierarchical code prediction on cached codes (BrainRVQ), with curriculum masking.

    python -m pipeline pretrain --shards results/demo/demo_bids/shards results/demo/demo_physionet/shards \\
        --codes results/demo/codes/ddrvq-demo/demo_bids results/demo/codes/ddrvq-demo/demo_physionet \\
        --out results/demo/pretrain/brainrvq-demo --settings JSON [--tokenizer results/demo/tokenizer/ddrvq-demo]
    accelerate launch -m pipeline pretrain ...          (several processes / GPUs / nodes)

`--codes` are the extract-codes folders of the `--shards` folders, in the same order (this run's, or an existing
store on a shared filesystem). With `--tokenizer`, their fingerprint must match that tokenizer's; a mismatch stops
the stage with a message naming both. Writes <out>/model.safetensors (config and fingerprints in its metadata),
metrics.jsonl, metrics.json (held-out per-level accuracy), loss.png, accuracy.png and resumable checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path

from pipeline.config import PretrainSection, load_settings
from pipeline.stages.common import StageFailed
from pipeline.stages.train_tokenizer import epoch_schedule

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", nargs="+", required=True, help="shard folders (with index.parquet)")
    parser.add_argument("--codes", nargs="+", required=True, help="code folders of those shards, same order")
    parser.add_argument("--out", required=True, help="pretraining run folder")
    parser.add_argument("--settings", default=None, help="PretrainSection as JSON (or @file)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder whose fingerprint the codes must carry")
    parser.add_argument("--stop-after", type=int, default=None, help="stop at this step (resumption tests)")


def tokenizer_fingerprint(folder: str | Path) -> str:
    """The tokenizer's fingerprint, recomputed from its config and weights (a forged one is refused)."""
    from pipeline.store import model_file

    return model_file.verified_fingerprint(folder, "tokenizer").fingerprint


def main(args: argparse.Namespace) -> None:
    from pipeline.train.pretrain import CodeStoreMismatch, pretrain

    if len(args.shards) != len(args.codes):
        raise StageFailed(f"{len(args.codes)} --codes folders for {len(args.shards)} --shards folders")
    section = load_settings(PretrainSection, args.settings)
    section = dataclasses.replace(section, train=epoch_schedule(args.shards, section.train, "pretrain.train"))
    expect = tokenizer_fingerprint(args.tokenizer) if args.tokenizer else None
    log.info("devices: CUDA_VISIBLE_DEVICES=%s, WORLD_SIZE=%s, SLURM_JOB_ID=%s", os.environ.get("CUDA_VISIBLE_DEVICES"),
             os.environ.get("WORLD_SIZE", "1"), os.environ.get("SLURM_JOB_ID"))
    try:
        result = pretrain(args.shards, args.codes, args.out, section, expect_fingerprint=expect,
                          stop_after=args.stop_after)
    except CodeStoreMismatch as exc:
        raise StageFailed(str(exc)) from None
    print(f"step {result.step}: held-out {json.dumps(result.heldout)}")
