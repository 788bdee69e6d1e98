"""preprocess: montage → band-pass + notch → 200 Hz → µV/100, streamed, with quality flags.

    python -m pipeline preprocess results/<dataset>/montage.parquet --out results/<dataset>/preprocessed

Per recording <out>/<recording>.zarr (signal, quality flags, provenance) and <out>/recordings.parquet;
recordings already done with the same fingerprint are reused. The library: pipeline.prep.preprocess.
"""

from __future__ import annotations

import argparse

from pipeline.config import PreprocessConfig, load_settings
from pipeline.prep.preprocess import preprocess
from pipeline.stages.common import add_dask_arguments, dask_kwargs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("montage", help="montage.parquet from standardize")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--settings", default=None, help="PreprocessConfig as JSON (or @file)")
    add_dask_arguments(parser)
    parser.add_argument("--strict", action="store_true", help="stop at the first failing recording")


def main(args: argparse.Namespace) -> None:
    cfg = load_settings(PreprocessConfig, args.settings)
    preprocess(args.montage, args.out, cfg, strict=args.strict, **dask_kwargs(args))
