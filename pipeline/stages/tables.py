"""tables: gather fine-tuning metrics.json files → results.csv, summary.csv, results.md, table.md, table.rst, plots.

    python -m pipeline tables <finetune root> --out <folder> [--paper config/paper_tables.yaml] [--datasets A B]
                              [--quality DATASET=<stage quality JSON> ...]

Reads every `<root>/<dataset>/<method>/seed-<s>/metrics.json`, reports mean ± std (ddof=1) over seeds of the
test metrics, and lays each dataset out as the papers do, with the published rows of --paper beneath. Each
--quality file (standardize's montage_quality.json, the samples' quality.json) becomes part of its dataset's
data-quality footnote.
"""

from __future__ import annotations

import argparse
import logging

from pipeline.eval.quality_notes import parse_quality_args
from pipeline.eval.tables import write_tables
from pipeline.stages.common import StageFailed

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="fine-tuning root: results/<run>/finetune")
    parser.add_argument("--out", required=True, help="folder for the tables (md, rst, csv) and their figures")
    parser.add_argument("--paper", default=None, help="published numbers to print beside ours (paper_tables.yaml)")
    parser.add_argument("--datasets", nargs="+", default=None, help="only these datasets, in this order")
    parser.add_argument("--quality", nargs="+", default=None, metavar="DATASET=PATH",
                        help="a dataset's stage quality summary (montage_quality.json, samples/quality.json)")


def main(args: argparse.Namespace) -> None:
    try:
        write_tables(args.root, args.out, paper=args.paper, datasets=args.datasets,
                     quality=parse_quality_args(args.quality))
    except (FileNotFoundError, ValueError) as exc:
        raise StageFailed(str(exc)) from None
