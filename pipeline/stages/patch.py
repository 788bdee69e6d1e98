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

from pipeline.config import DaskConfig, PatchSettings, load_settings
from pipeline.prep.shards import patch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preprocessed", help="folder written by the preprocess stage")
    parser.add_argument("--out", required=True, help="shards folder to write")
    parser.add_argument("--settings", default=None, help="PatchSettings as JSON (or @file)")
    parser.add_argument("--workers", type=int, default=1, help="local dask workers (1 = in-process)")
    parser.add_argument("--scheduler", default=None, help="address of a running dask scheduler")
    parser.add_argument("--cluster-min-recordings", type=int, default=DaskConfig.cluster_min_recordings,
                        help="fewer recordings run in-process, without a local cluster (config dask.cluster_min_recordings)")
    parser.add_argument("--ingested", default=None,
                        help="folder with manifest.parquet/events.parquet (default: the preprocessed folder's parent)")


def main(args: argparse.Namespace) -> None:
    settings = load_settings(PatchSettings, args.settings)
    patch(args.preprocessed, args.out, settings, n_workers=args.workers, scheduler=args.scheduler,
          ingested=args.ingested, cluster_min_recordings=args.cluster_min_recordings)
