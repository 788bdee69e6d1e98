"""standardize: map each recording's channels onto the global vocabulary → montage.parquet.

    python -m pipeline standardize results/<dataset>/manifest.parquet --out results/<dataset>/montage.parquet

One row per manifest row: the manifest's columns plus the channel plan. The library: pipeline.prep.standardize.
"""

from __future__ import annotations

import argparse

from pipeline.config import MontageConfig, load_settings
from pipeline.prep.standardize import standardize


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", help="manifest.parquet from ingest")
    parser.add_argument("--out", required=True, help="montage.parquet to write")
    parser.add_argument("--settings", default=None, help="MontageConfig as JSON (or @file)")


def main(args: argparse.Namespace) -> None:
    standardize(args.manifest, args.out, load_settings(MontageConfig, args.settings))
