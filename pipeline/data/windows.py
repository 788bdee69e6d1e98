"""Batches of windows from patch shards, in a deterministic, resumable, chunk-friendly order.

Reading contract (measured, ../shared/STYLE.md): random single-window reads from Zarr are 20–50×
slower than chunk reads, so an epoch's order is built from chunks: the chunk order is shuffled,
then windows are shuffled inside groups of `buffer_chunks` consecutive chunks (a shuffle buffer),
then cut into batches. The order is a pure function of (index, seed, epoch, streams), so

- a run resumed at global batch b of epoch e sees exactly the batches it would have seen;
- with N processes, process r takes the r-th contiguous slice of every global batch — the same global batch as
  one process, which is what makes 1-process and N-process training comparable.

Streams (`streams`, train.loader_streams): the shuffled chunks are dealt round-robin to S streams, each with its own
shuffle buffer, and global batch i is the concatenation of every stream's i-th slice of batch_size / S windows. With
S a multiple of the process count, process r's contiguous slice is streams r·S/N … (r+1)·S/N: it reads only the
chunks it owns, each once (read amplification 1; with S = 1 and N processes every process decodes every chunk
of every batch, ≈ N×: benchmarks/loader.py). The global batches do not depend on N, so 1 process still trains on
what N do. S is a setting of its own, not the process count, for exactly that reason.

Stores are opened lazily inside each DataLoader worker (never in __init__), and each worker keeps
a small cache of decoded chunks, since consecutive batches come from the same few chunks.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from pipeline.data.dtypes import to_compute_dtypes
from pipeline.store.zarr_store import open_group, open_shard


@dataclass(frozen=True)
class WindowIndex:
    """All windows of some shard folders: one row per window, with its chunk."""

    # shard_path, row, chunk (global chunk id), recording, subject, split, start_s, label, dataset,
    # and codes_path (the shard's code store) when built with code folders
    table: pl.DataFrame

    @classmethod
    def from_shard_dirs(cls, dirs: Sequence[str | Path], *, splits: Sequence[str] | None = None,
                        chunk_windows: int | None = None,
                        codes_dirs: Sequence[str | Path] | None = None) -> "WindowIndex":
        """`codes_dirs[i]` holds the extract-codes stores of `dirs[i]` (same shard names and rows)."""
        if codes_dirs is not None and len(codes_dirs) != len(dirs):
            raise ValueError(f"{len(codes_dirs)} code folders for {len(dirs)} shard folders")
        frames = []
        for i, d in enumerate(dirs):
            d = Path(d)
            index = pl.read_parquet(d / "index.parquet").with_columns(
                shard_path=pl.lit(str(d) + "/") + pl.col("shard"), dataset=pl.lit(d.parent.name))
            if codes_dirs is not None:
                index = index.with_columns(codes_path=pl.lit(str(codes_dirs[i]) + "/") + pl.col("shard"))
            frames.append(index)
        table = pl.concat(frames, how="vertical") if frames else pl.DataFrame()
        if splits is not None:
            table = table.filter(pl.col("split").is_in(list(splits)))
        if table.is_empty():
            raise ValueError(f"no windows in {list(map(str, dirs))} for splits {splits}")
        if chunk_windows is None:
            chunk_windows = open_shard(table["shard_path"][0]).x.chunks[0]
        table = table.sort(["shard_path", "row"]).with_columns(
            chunk=pl.struct("shard_path", (pl.col("row") // chunk_windows).alias("c")).rank("dense") - 1)
        return cls(table)

    def __len__(self) -> int:
        return self.table.height


def epoch_batches(index: WindowIndex, *, batch_size: int, seed: int, epoch: int, buffer_chunks: int = 8,
                  drop_last: bool = True, streams: int = 1) -> list[np.ndarray]:
    """The epoch's global batches as arrays of row positions in `index.table` (streams: see the module docstring)."""
    if streams < 1 or batch_size % streams:
        raise ValueError(f"train.loader_streams={streams} must divide batch_size={batch_size}")
    rng = np.random.default_rng([seed, epoch])
    chunk = index.table["chunk"].to_numpy()
    n_chunks = int(chunk.max()) + 1
    order = rng.permutation(n_chunks)
    by_chunk = np.split(np.argsort(chunk, kind="stable"), np.cumsum(np.bincount(chunk, minlength=n_chunks))[:-1])

    def shuffled(chunks: np.ndarray, g: np.random.Generator) -> np.ndarray:
        rows = [g.permutation(np.concatenate([by_chunk[c] for c in chunks[i:i + buffer_chunks]]))
                for i in range(0, len(chunks), buffer_chunks)]
        return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)

    if streams == 1:
        flat = shuffled(order, rng)
        n = (len(flat) // batch_size) * batch_size if drop_last else len(flat)
        return [flat[i:i + batch_size] for i in range(0, n, batch_size)]
    per = batch_size // streams
    flows = [shuffled(order[s::streams], np.random.default_rng([seed, epoch, s])) for s in range(streams)]
    n = min(len(f) for f in flows) // per  # whole batches only (a stream that runs dry ends the epoch)
    return [np.concatenate([f[i * per:(i + 1) * per] for f in flows]) for i in range(n)]


class WindowBatches(Dataset):
    """Map-style dataset whose item i is global batch i of one epoch (use DataLoader(batch_size=None)).

    Returns a dict of tensors: x float32 [B, C, P, L], ch long [B, C], importance float32 [B, C, P, F],
    codes long [B, C, P, S, L] (field "codes", from the index's codes_path), window long [B] (row
    position in the index, for bookkeeping). With `rank`/`world_size`, only this process's
    contiguous slice of the global batch is returned. With `storage_dtypes`, x, ch and codes keep the shards'
    dtypes (float16 / int16: half the bytes to pin and copy) and `to_compute_dtypes` widens them on the device.

    `decoded` counts the chunks this dataset decoded (per worker process): the loader benchmark's read amplification.
    Size `cache_chunks` to hold the shuffle buffers of this process's streams (`cache_for`), so each is decoded once.
    """

    def __init__(self, index: WindowIndex, batches: list[np.ndarray], *, rank: int = 0, world_size: int = 1,
                 cache_chunks: int = 16, fields: Sequence[str] = ("x", "ch", "importance"),
                 storage_dtypes: bool = False):
        self.index = index
        self.batches = batches
        self.rank, self.world_size = rank, world_size
        self.fields = tuple(fields)
        self._shard_path = index.table["shard_path"].to_list()
        if "codes" in self.fields and "codes_path" not in index.table.columns:
            raise ValueError("field 'codes' needs a WindowIndex built with codes_dirs")
        self._codes_path = index.table["codes_path"].to_list() if "codes" in self.fields else None
        self._row = index.table["row"].to_numpy()
        self._chunk = index.table["chunk"].to_numpy()
        self._cache: OrderedDict = OrderedDict()
        self._cache_chunks = cache_chunks
        self._shards: dict = {}
        self.storage_dtypes = storage_dtypes
        self.decoded = 0

    def __len__(self) -> int:
        return len(self.batches)

    def _chunk_data(self, pos: int) -> tuple[int, dict[str, np.ndarray]]:
        """(first row of the chunk, decoded arrays of the whole chunk) holding index row `pos`."""
        key = int(self._chunk[pos])
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        path = self._shard_path[pos]
        shard = self._shards.get(path)
        if shard is None:
            shard = self._shards[path] = open_shard(path)
        cw = shard.x.chunks[0]
        lo = int(self._row[pos]) // cw * cw
        hi = min(lo + cw, len(shard))
        data = {name: np.asarray(getattr(shard, name)[lo:hi]) for name in self.fields if name != "codes"}
        if self._codes_path is not None:
            data["codes"] = np.asarray(self._codes(self._codes_path[pos])[lo:hi])
        self.decoded += 1
        self._cache[key] = (lo, data)
        if len(self._cache) > self._cache_chunks:
            self._cache.popitem(last=False)
        return lo, data

    def _codes(self, path: str):
        arr = self._shards.get(("codes", path))
        if arr is None:
            arr = self._shards[("codes", path)] = open_group(path)["codes"]
        return arr

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        # Contiguous slices: the ranks' rows gathered in rank order are the global batch in order,
        # so k-means init and dead-code restarts (which gather rows) see what one process sees.
        rows = np.array_split(self.batches[i], self.world_size)[self.rank]
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.fields}
        for pos in rows:
            lo, data = self._chunk_data(int(pos))
            for name in self.fields:
                parts[name].append(data[name][int(self._row[pos]) - lo])
        # as_tensor, not from_numpy (the same zero-copy view): torch function modes see it (pipeline.train.device)
        out = {name: torch.as_tensor(np.stack(v)) for name, v in parts.items()}
        if not self.storage_dtypes:
            out = to_compute_dtypes(out)
        out["window"] = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return out


def cache_for(*, buffer_chunks: int, streams: int, world_size: int) -> int:
    """Chunks a process's cache needs to decode each chunk of its streams once: two buffers per stream it reads
    (a buffer's windows are spread over its whole span, and the next buffer starts before the last one ends)."""
    return max(16, 2 * buffer_chunks * max(1, streams // max(1, world_size)))


def recording_hashes(index: WindowIndex) -> dict[str, str]:
    """content_sha256 → "recording (source path)" of every recording with windows in `index` (shard attributes):
    what the leakage guard compares between a pretraining corpus and a test split."""
    out = {}
    for path in index.table["shard_path"].unique(maintain_order=True).to_list():
        attrs = open_shard(path).attrs
        out[attrs["content_sha256"]] = f"{attrs['recording']} ({attrs['source_path']})"
    return out
