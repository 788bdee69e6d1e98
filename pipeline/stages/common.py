"""What the stages share: the failure type the CLI turns into an exit code (defined in pipeline.errors, where
the libraries raise it), and the dask options of the data stages that map over recordings."""

from __future__ import annotations

import argparse

from pipeline.config import DaskConfig
from pipeline.errors import StageFailed  # noqa: F401  (re-exported for the stage modules)


def add_dask_arguments(parser: argparse.ArgumentParser) -> None:
    """--workers, --scheduler, --cluster-min-recordings (pipeline.parallel.map_items; the rules pass them in the
    shell command, not as params: how a job runs, not what it computes)."""
    parser.add_argument("--workers", type=int, default=1, help="local dask workers (1 = in-process)")
    parser.add_argument("--scheduler", default=None, help="address of a running dask scheduler")
    parser.add_argument("--cluster-min-recordings", type=int, default=DaskConfig.cluster_min_recordings,
                        help="fewer recordings run in-process, without a local cluster (config dask.cluster_min_recordings)")


def dask_kwargs(args: argparse.Namespace) -> dict:
    """add_dask_arguments' values as the data-plane functions' keywords."""
    return {"n_workers": args.workers, "scheduler": args.scheduler, "cluster_min_recordings": args.cluster_min_recordings}
