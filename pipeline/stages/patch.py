"""patch: cut preprocessed recordings into windows of 1 s patches → Zarr v3 shards + index.parquet.

    python -m pipeline patch results/<dataset>/preprocessed --out results/<dataset>/shards
    python -m pipeline patch results/<dataset>/preprocessed --out results/<dataset>/samples --settings JSON

Without labels (pretraining) windows tile each recording; with `labels` in the settings (downstream samples)
they follow the dataset's label source. Splits and labels come from the ingest tables (manifest.parquet,
events.parquet) in --ingested (default: beside `preprocessed/`). The library: pipeline.prep.shards (writing),
pipeline.prep.windows (planning), pipeline.prep.splits.
"""

from __future__ import annotations

import argparse

from pipeline.config import PatchSettings, load_settings
from pipeline.prep.shards import patch
from pipeline.stages.common import add_dask_arguments, dask_kwargs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preprocessed", help="folder written by the preprocess stage")
    parser.add_argument("--out", required=True, help="shards folder to write")
    parser.add_argument("--settings", default=None, help="PatchSettings as JSON (or @file)")
    add_dask_arguments(parser)
    parser.add_argument("--ingested", default=None,
                        help="folder with manifest.parquet/events.parquet (default: the preprocessed folder's parent)")


def main(args: argparse.Namespace) -> None:
    settings = load_settings(PatchSettings, args.settings)
    patch(args.preprocessed, args.out, settings, ingested=args.ingested, **dask_kwargs(args))
