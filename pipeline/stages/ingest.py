"""ingest: find recordings, validate them, hash them → manifest.parquet + events.parquet.

    python -m pipeline ingest <folder or file> --out <folder> [--dataset NAME] [--settings JSON]

Every file found gets a manifest row; unusable ones are `rejected` with a reason that names the
file and the problem, and the stage goes on. It fails only when no recording is usable (or on the
first problem with --strict). The library: pipeline.prep.ingest.
"""

from __future__ import annotations

import argparse

from pipeline.config import IngestConfig, load_settings
from pipeline.errors import StageFailed
from pipeline.prep.ingest import ingest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="EDF/BDF file, folder of them, or BIDS root")
    parser.add_argument("--out", required=True, help="folder for manifest.parquet and events.parquet")
    parser.add_argument("--dataset", default=None, help="dataset name (default: the source folder's name)")
    parser.add_argument("--format", default="auto", help="auto | edf | bdf | bids | a dataset adapter (tuab, tuev, …)")
    parser.add_argument("--settings", default=None, help="IngestConfig as JSON (or @file)")
    parser.add_argument("--strict", action="store_true", help="stop at the first unusable recording")


def main(args: argparse.Namespace) -> None:
    cfg = load_settings(IngestConfig, args.settings)
    try:
        ingest(args.source, args.out, dataset=args.dataset, fmt=args.format, cfg=cfg, strict=args.strict)
    except FileNotFoundError as exc:
        raise StageFailed(str(exc)) from None
