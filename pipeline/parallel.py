"""Map a function over recordings with dask.distributed, showing progress.

By default a LocalCluster of single-threaded worker processes (one per core granted to the job);
with `scheduler` an existing dask.distributed scheduler is used instead (e.g. one started by
dask-jobqueue's SLURMCluster, see docs/scaling.md). `n_workers=1` with no scheduler runs in this
process: no cluster start-up for small inputs and tests.

The mapped function must not raise for a bad recording: stages catch per-recording problems and
return a rejected row, so one corrupt file never takes the others down.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


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
    # threads would oversubscribe the cores the job was granted.
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def map_items(fn: Callable[[T], R], items: Sequence[T], *, scheduler: str | None = None, n_workers: int = 1,
              desc: str = "", unit: str = "recording") -> list[R]:
    """[fn(item) for item in items], in order, on the configured dask cluster."""
    items = list(items)
    if not items:
        return []
    with dask_client(scheduler=scheduler, n_workers=min(n_workers, len(items))) as client:
        if client is None:
            return [fn(item) for item in tqdm(items, desc=desc, unit=unit, disable=None)]
        from distributed import as_completed

        futures = client.map(fn, items, pure=False)
        order = {f.key: i for i, f in enumerate(futures)}
        results: list = [None] * len(items)
        for fut in tqdm(as_completed(futures), total=len(futures), desc=desc, unit=unit, disable=None):
            results[order[fut.key]] = fut.result()
        return results
