"""Map a function over recordings with dask.distributed, showing progress.

By default a LocalCluster of single-threaded worker processes (one per core granted to the job);
with `scheduler` an existing dask.distributed scheduler is used instead (e.g. one started by
dask-jobqueue's SLURMCluster, see docs/scaling.md). No cluster is started, and the items run in this
process, when one worker suffices (`n_workers=1`, or a single item) or when there are fewer items than
`cluster_min_items` (config `dask.cluster_min_recordings`): starting a local cluster costs seconds of
wall time and each worker's imports, more than two workers save on a few recordings
(docs/benchmarks.md, "Start-up"). An existing scheduler is always used when given: it costs no start-up.

A local cluster is shut down in an order that logs nothing in a run that succeeded: the workers' heartbeats
stop first (one in flight while the scheduler drops its worker fails, and the worker logs a CommClosedError
traceback), then the workers close one by one (when two close at once, the scheduler tells the one still
closing that the other left, and that write fails with the same traceback), then the scheduler.
distributed's INFO chatter (nanny and scheduler start/stop lines) is kept out of the stage's log; its warnings and
errors stay.

Progress: `pipeline.progress.Progress` lines (items done / total, rate, ETA) every 30 s in the stage's log, and on
the terminal when Snakemake runs in one (tqdm's bar drew nothing into a rule log).

The mapped function must not raise for a bad recording: stages catch per-recording problems and
return a rejected row, so one corrupt file never takes the others down.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Iterator, Sequence, TypeVar

from pipeline.progress import Progress

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 30.0  # per worker, while shutting a local cluster down


def runs_in_process(n_items: int, *, scheduler: str | None, n_workers: int, cluster_min_items: int = 1) -> bool:
    """Whether map_items runs these items here, without a cluster."""
    if scheduler is not None:
        return False
    return min(n_workers, n_items) <= 1 or n_items < cluster_min_items


@contextlib.contextmanager
def _quiet_distributed() -> Iterator[None]:
    """distributed's loggers at WARNING for the cluster's lifetime (unless a caller asked for more detail)."""
    logger = logging.getLogger("distributed")
    before = logger.level
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # --verbose keeps them
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


def _stop_heartbeats(dask_worker) -> None:
    """Run on each worker (client.run) before shutdown: a heartbeat in flight when the scheduler drops its worker
    fails, and the worker logs that as an ERROR with a CommClosedError traceback."""
    for name in ("heartbeat", "keep-alive"):
        callback = dask_worker.periodic_callbacks.get(name)
        if callback is not None:
            callback.stop()


def _close_workers_one_by_one(cluster) -> None:
    """Scale the local cluster down one worker at a time, each gone from the scheduler before the next goes."""
    for n in range(len(cluster.worker_spec) - 1, -1, -1):
        cluster.scale(n)
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while len(cluster.scheduler_info.get("workers", {})) > n or len(cluster.workers) > n:
            if time.monotonic() > deadline:
                log.warning("dask: a worker did not close within %.0f s; closing the cluster", CLOSE_TIMEOUT_S)
                return
            time.sleep(0.05)


@contextlib.contextmanager
def dask_client(*, scheduler: str | None, n_workers: int) -> Iterator[object | None]:
    if scheduler is None and n_workers <= 1:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler, timeout="30s") as client:
            log.info("using dask scheduler %s", scheduler)
            yield client
        return
    # Single-threaded worker processes: the numerical work holds the GIL in places and BLAS/FFT
    # threads would oversubscribe the cores the job was granted. No dashboard; the scheduler's HTTP
    # server (health/metrics routes) on a free port, so concurrent jobs do not race for 8787.
    with _quiet_distributed():
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        log.info("local dask cluster: %d worker processes", n_workers)
        try:
            with Client(cluster) as client:
                yield client
                client.run(_stop_heartbeats)
                time.sleep(0.1)  # a heartbeat sent just before the stop gets its answer from the live scheduler
            # the client is gone and its futures with it: workers hold nothing, so closing them moves no data
            _close_workers_one_by_one(cluster)
        finally:
            cluster.close()


def map_items(fn: Callable[[T], R], items: Sequence[T], *, scheduler: str | None = None, n_workers: int = 1,
              cluster_min_items: int = 1, desc: str = "", unit: str = "recording") -> list[R]:
    """[fn(item) for item in items], in order, on the configured dask cluster (in this process for fewer than
    `cluster_min_items` items, or when one worker suffices)."""
    items = list(items)
    if not items:
        return []
    if runs_in_process(len(items), scheduler=scheduler, n_workers=n_workers, cluster_min_items=cluster_min_items):
        if scheduler is None and min(n_workers, len(items)) > 1:
            log.info("%s: %d %s(s), fewer than dask.cluster_min_recordings=%d: in-process, no dask cluster",
                     desc or "map", len(items), unit, cluster_min_items)
        progress = Progress(desc or "map", len(items), unit=unit)
        results = []
        for item in items:
            results.append(fn(item))
            progress.update(len(results))
        return results
    with dask_client(scheduler=scheduler, n_workers=min(n_workers, len(items))) as client:
        from distributed import as_completed

        futures = client.map(fn, items, pure=False)
        order = {f.key: i for i, f in enumerate(futures)}
        results: list = [None] * len(items)
        progress = Progress(desc or "map", len(items), unit=unit)
        for done, fut in enumerate(as_completed(futures), 1):
            results[order[fut.key]] = fut.result()
            progress.update(done)
        return results
