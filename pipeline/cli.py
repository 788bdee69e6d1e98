"""`python -m pipeline <stage> ...`: one subcommand per stage; Snakemake rules call the same CLI."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# subcommand → (module under pipeline.stages, one-line help). Each module has add_arguments(parser)
# and main(args); only the chosen one is imported, so `ingest` does not pay for torch's import.
STAGES = {
    "fetch-demo": ("fetch_demo", "download the pinned demo wheels and extract their EEG"),
    "ingest": ("ingest", "find, validate and hash recordings → manifest.parquet, events.parquet"),
    "standardize": ("standardize", "map channels onto the global vocabulary → montage.parquet"),
    "preprocess": ("preprocess", "filter, notch, resample to 200 Hz, scale, flag → preprocessed/"),
    "patch": ("patch", "cut windows into 1 s patches → Zarr shards + index.parquet"),
    "train-tokenizer": ("train_tokenizer", "train a DD-RVQ / NeuroRVQ / LaBraM tokenizer on shards"),
    "extract-codes": ("extract_codes", "tokenize every window of a dataset → code stores"),
    "pretrain": ("pretrain", "masked hierarchical code prediction on cached codes → pretrained encoder"),
    "embed": ("embed", "features from your own EDF files: one embedding per window → parquet"),
    "finetune": ("finetune", "fine-tune and evaluate one method × seed on a dataset's labelled samples"),
    "tables": ("tables", "gather fine-tuning results → Markdown/CSV tables beside the published numbers"),
}


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (module, summary) in STAGES.items():
        p = sub.add_parser(name, help=summary)
        if name == stage:
            mod = importlib.import_module(f"pipeline.stages.{module}")
            p.description = mod.__doc__
            p.formatter_class = argparse.RawDescriptionHelpFormatter
            mod.add_arguments(p)
            p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import ConfigError
    from pipeline.stages.common import StageFailed
    from pipeline.store.jsonl import JsonlError
    from pipeline.store.model_file import ModelFileError

    argv = list(sys.argv[1:] if argv is None else argv)
    stage = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(stage if stage in STAGES else None).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if os.environ.get("PIPELINE_DEVICE_CHECK", "") not in ("", "0"):
            # a separate device played on the CPU (pipeline.train.device): forgotten moves fail here too
            from pipeline.train.device import device_check

            with device_check(True):
                args._module.main(args)
        else:
            args._module.main(args)
    except (StageFailed, ConfigError, ModelFileError, JsonlError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
