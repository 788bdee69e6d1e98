"""extract-codes: run a trained tokenizer over every window of a dataset's shards → code stores.

    python -m pipeline extract-codes results/<ds>/shards --tokenizer results/tokenizer/<name> \\
        --out results/codes/<name>/<ds>
    accelerate launch -m pipeline extract-codes ...        (one process per GPU; shards split between them)

What it writes (code stores keyed by the tokenizer's fingerprint, reused when it matches), how processes share
the shards and why the codes do not depend on batch size, process count or precision: pipeline.prep.codes.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", help="a dataset's shard folder")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder (model.safetensors)")
    parser.add_argument("--out", required=True, help="code folder for this dataset")
    parser.add_argument("--batch-windows", type=int, default=256,
                        help="windows per forward pass (memory only: the codes do not depend on it)")


def load_trained_tokenizer(folder: str | Path):
    """(model in eval mode, fingerprint) from <folder>/model.safetensors, checked (pipeline.store.model_file)."""
    from pipeline.store import model_file

    model, info = model_file.load(folder, "tokenizer")
    return model.eval(), info.fingerprint


def extract_codes(shards: str | Path, tokenizer: str | Path, out: str | Path, *, batch_windows: int = 256) -> dict:
    """Codes of the tokenizer in folder `tokenizer` for every shard of `shards` (pipeline.prep.codes)."""
    from pipeline.prep.codes import write_codes

    model, fingerprint = load_trained_tokenizer(tokenizer)
    return write_codes(model, fingerprint, shards, out, batch_windows=batch_windows)


def main(args: argparse.Namespace) -> None:
    extract_codes(args.shards, args.tokenizer, args.out, batch_windows=args.batch_windows)
