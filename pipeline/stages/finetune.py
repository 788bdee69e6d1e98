"""finetune: train and evaluate one method with one seed on a dataset's labelled samples.

    python -m pipeline finetune results/<dataset>/samples --out results/finetune/<dataset>/<method>/seed-<s> \\
        --method full|probe|scratch|ablation:<run>|tokenizer:<variant>|<baseline> --seed 0 --labels JSON --settings JSON \\
        [--pretrained results/pretrain/<run>]
    accelerate launch -m pipeline finetune ...

Writes <out>/metrics.json (validation-selected test metrics), metrics.jsonl (per step and epoch),
curves.png, test_predictions.parquet and resumable checkpoints. A pretrained model whose corpus contains a
test recording (same signal content) stops the stage with the list of recordings.
"""

from __future__ import annotations

import argparse
import json

from pipeline.config import FinetuneSection, LabelConfig, check_method, load_settings
from pipeline.stages.common import StageFailed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("samples", help="a dataset's labelled samples folder (written by patch with labels)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", required=True, help="the dataset's LabelConfig as JSON (or @file)")
    parser.add_argument("--settings", default=None, help="FinetuneSection as JSON (or @file)")
    parser.add_argument("--pretrained", default=None, help="pretraining run folder (model.safetensors, metrics.json)")
    parser.add_argument("--dataset", default="")


def main(args: argparse.Namespace) -> None:
    check_method(args.method, "--method")  # before torch is imported: a typo fails at once
    from pipeline.train.finetune import LeakageError, finetune

    section = load_settings(FinetuneSection, args.settings)
    labels = load_settings(LabelConfig, args.labels, "--labels")
    if len(labels.classes) < 2:
        raise StageFailed(f"--labels: at least two classes are needed, got {list(labels.classes)}")
    try:
        result = finetune(args.samples, args.out, section, labels, method=args.method, seed=args.seed,
                          pretrained=args.pretrained, dataset=args.dataset)
    except (LeakageError, ValueError, FileNotFoundError) as exc:
        raise StageFailed(str(exc)) from None
    if result:
        print(json.dumps({"best_epoch": result.get("best_epoch"), "test": result["test"]}))
