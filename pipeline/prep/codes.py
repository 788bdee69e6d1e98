"""Code stores: a trained tokenizer over every window of a dataset's shards.

Per shard: <out>/<shard path>.zarr with `codes` int16 [window, channel, patch, domain, level]
(−1 at padding channels), keyed by the tokenizer's fingerprint (hash of its config and weights),
plus <out>/index.parquet (the shards' index) and <out>/fingerprint.json. Codes whose store already
carries the same fingerprint are reused, not recomputed.

Under Accelerate each process takes whole shards (balanced by window count) and writes them itself
(each shard is published by its own rename); the main process writes the index and the fingerprint
after every process is done. The tokenizer runs in eval mode, in fp32, outside autocast, one batch of
up to `--batch-windows` windows at a time on the process's device: codes do not depend on the batch size,
the process count or the device's mixed-precision setting (tested).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipeline.progress import Progress

log = logging.getLogger(__name__)

PRECISION = "fp32"  # of the encoder and the code assignment; recorded in fingerprint.json


def assign_shards(sizes: dict[str, int], world_size: int) -> list[list[str]]:
    """Shards → processes, largest first onto the least-loaded process (deterministic: ties by name, rank)."""
    loads, out = [0] * world_size, [[] for _ in range(world_size)]
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        out[rank].append(name)
        loads[rank] += sizes[name]
    return out


def write_codes(model, fingerprint: str, shards: str | Path, out: str | Path, *, batch_windows: int = 256) -> dict:
    """Codes of a trained tokenizer (`model`, with its `fingerprint`) for every shard of `shards` (this process's
    share under Accelerate); the stats on every process."""
    import polars as pl
    import torch
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from pipeline.store.atomic import write_text_atomic
    from pipeline.store.manifest import reusable
    from pipeline.store.tables import write_table
    from pipeline.store.zarr_store import open_group
    from pipeline.train.device import place

    shards, out = Path(shards), Path(out)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
    model = place(model, accelerator.device)
    index = pl.read_parquet(shards / "index.parquet")
    sizes = dict(index.group_by("shard").len().iter_rows())
    mine = assign_shards(sizes, accelerator.num_processes)[accelerator.process_index]
    # a code store is reused only for the same tokenizer *and* the same shard content (a rebuilt recording
    # keeps its shard names)
    source = {n: _shard_fingerprint(shards, n) for n in mine}
    todo = [n for n in mine if not ((out / n).is_dir() and _stamp(open_group(out / n).attrs) == (fingerprint, source[n])
                                    and reusable(out / n, "code store"))]
    progress = Progress(f"extract-codes (process {accelerator.process_index + 1}/{accelerator.num_processes})",
                        sum(sizes[n] for n in todo), unit="window", enabled=accelerator.is_main_process)
    for name in todo:
        _encode_shard(model, shards / name, out / name, fingerprint, batch_windows, accelerator.device, progress,
                      source_fingerprint=source[name])
    counts = gather_object([(len(mine) - len(todo), len(todo))])
    stats = {"fingerprint": fingerprint, "domains": list(model.config.domains), "levels": model.config.levels,
             "codebook_size": model.config.codebook_size, "precision": PRECISION,
             "reused": sum(r for r, _ in counts), "computed": sum(c for _, c in counts), "windows": index.height,
             "processes": accelerator.num_processes}
    if accelerator.is_main_process:
        write_table(index.to_arrow(), out / "index.parquet")
        write_text_atomic(out / "fingerprint.json", json.dumps(stats, indent=2))
        log.info("extract-codes %s: %d shard(s) computed, %d reused, %d process(es) on %s (fingerprint %s)", shards,
                 stats["computed"], stats["reused"], accelerator.num_processes, accelerator.device, fingerprint)
    accelerator.wait_for_everyone()
    return stats


def _shard_fingerprint(shards: Path, name: str) -> str | None:
    """The fingerprint of the recording folder (pipeline.prep.shards) that holds shard `name` ("<rec>/part-N.zarr")."""
    stamp = shards / Path(name).parent / "fingerprint.json"
    return json.loads(stamp.read_text())["fingerprint"] if stamp.is_file() else None


def _stamp(attrs) -> tuple:
    return attrs.get("tokenizer_fingerprint"), attrs.get("source_fingerprint")


def _encode_shard(model, source: Path, dest: Path, fingerprint: str, batch_windows: int, device,
                  progress: Progress, *, source_fingerprint: str | None = None) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import torch
    import zarr

    from pipeline.store.atomic import atomic_path
    from pipeline.store.zarr_store import compressors, open_shard
    from pipeline.train.device import to_device, to_host

    shard = open_shard(source)
    n, c, p = shard.x.shape[:3]
    pin = device.type == "cuda"

    def read(lo: int):
        # decoded on a thread while the device encodes the previous batch; pinned for an asynchronous copy
        x = torch.as_tensor(np.asarray(shard.x[lo:lo + batch_windows], dtype=np.float32))
        ch = torch.as_tensor(np.asarray(shard.ch[lo:lo + batch_windows], dtype=np.int64))
        return (x.pin_memory(), ch.pin_memory()) if pin else (x, ch)

    with atomic_path(dest, directory=True) as tmp:
        g = zarr.open_group(store=str(tmp), mode="w", zarr_format=3, attributes={
            "tokenizer_fingerprint": fingerprint, "domains": list(model.config.domains),
            "levels": model.config.levels, "codebook_size": model.config.codebook_size, "precision": PRECISION,
            "source_shard": str(source), "source_fingerprint": source_fingerprint})
        codes = g.create_array("codes", shape=(n, c, p, *model.config.code_shape),
                               chunks=(min(n, shard.x.chunks[0]), c, p, *model.config.code_shape),
                               dtype="int16", compressors=compressors("zstd"),
                               dimension_names=("window", "channel", "patch", "domain", "level"))
        starts = list(range(0, n, batch_windows))
        with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
            pending = pool.submit(read, starts[0]) if starts else None
            for i, lo in enumerate(starts):
                x, ch = to_device(pending.result(), device)
                pending = pool.submit(read, starts[i + 1]) if i + 1 < len(starts) else None
                with torch.autocast(device.type, enabled=False):
                    batch_codes = model.encode(x, ch).to(torch.int16)
                codes[lo:lo + len(x)] = to_host(batch_codes).numpy()
                progress.update(progress.done + len(x))
