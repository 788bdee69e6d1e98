"""Zarr v3 stores of the data contracts: preprocessed signals and patch shards.

Both are written under a temporary name and renamed into place when complete (pipeline.store.atomic),
so a store at its final path is whole. Measured on this machine class (see ../shared/STYLE.md):
filtered EEG compresses only 1.1–1.2× and zstd cuts write speed 6–8×, so signals default to lz4
(or none); codes, which compress far better, use zstd.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from pipeline.store.atomic import atomic_path

Compressor = Literal["none", "lz4", "zstd"]


def compressors(name: Compressor) -> list | None:
    if name == "none":
        return None
    return [BloscCodec(cname=name, clevel=5 if name == "lz4" else 3, shuffle="shuffle")]


@contextlib.contextmanager
def new_group(path: str | Path, attrs: dict[str, Any]) -> Iterator[zarr.Group]:
    """A fresh Zarr v3 group at a temporary path, renamed to `path` when the block succeeds."""
    with atomic_path(path, directory=True) as tmp:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3, attributes=attrs)
        yield group


def open_group(path: str | Path) -> zarr.Group:
    path = Path(path)
    if ".tmp-" in path.name:
        raise ValueError(f"{path}: a temporary store left by an interrupted writer; it is not trusted")
    return zarr.open_group(store=str(path), mode="r", zarr_format=3)


# ---------------------------------------------------------------------------------------------
# shards: x [window, channel, patch, patch_len], ch [window, channel], importance [w, c, p, feature]


@dataclass(frozen=True)
class ShardLayout:
    n_channels: int
    n_patches: int
    patch_len: int = 200
    n_features: int = 5
    dtype: str = "float16"
    chunk_windows: int = 8
    compressor: Compressor = "lz4"


def create_shard(group: zarr.Group, n_windows: int, layout: ShardLayout) -> tuple[zarr.Array, zarr.Array, zarr.Array]:
    """Create the shard arrays; chunks span whole windows so a batch of windows reads whole chunks."""
    cw = max(1, min(layout.chunk_windows, n_windows))
    c, p = layout.n_channels, layout.n_patches
    x = group.create_array("x", shape=(n_windows, c, p, layout.patch_len), chunks=(cw, c, p, layout.patch_len),
                           dtype=layout.dtype, compressors=compressors(layout.compressor),
                           dimension_names=("window", "channel", "patch", "sample"))
    ch = group.create_array("ch", shape=(n_windows, c), chunks=(cw, c), dtype="int16",
                            compressors=compressors("zstd"), dimension_names=("window", "channel"), fill_value=-1)
    imp = group.create_array("importance", shape=(n_windows, c, p, layout.n_features), chunks=(cw, c, p, layout.n_features),
                             dtype="float32", compressors=compressors("zstd"),
                             dimension_names=("window", "channel", "patch", "feature"))
    return x, ch, imp


@dataclass(frozen=True)
class Shard:
    x: zarr.Array
    ch: zarr.Array
    importance: zarr.Array
    attrs: dict[str, Any]

    def __len__(self) -> int:
        return self.x.shape[0]


def open_shard(path: str | Path) -> Shard:
    g = open_group(path)
    return Shard(x=g["x"], ch=g["ch"], importance=g["importance"], attrs=dict(g.attrs))


# ---------------------------------------------------------------------------------------------
# preprocessed recordings: signal [channel, sample] at 200 Hz plus per-second quality flags


def create_signal(group: zarr.Group, n_channels: int, n_samples: int, *, chunk_samples: int,
                  compressor: Compressor = "lz4") -> zarr.Array:
    return group.create_array("signal", shape=(n_channels, n_samples), chunks=(n_channels, chunk_samples),
                              dtype="float32", compressors=compressors(compressor),
                              dimension_names=("channel", "sample"))


def write_small(group: zarr.Group, name: str, value: np.ndarray) -> None:
    """A small whole array (flags, peaks): one chunk, zstd."""
    arr = group.create_array(name, shape=value.shape, chunks=value.shape or (1,), dtype=value.dtype,
                             compressors=compressors("zstd"))
    arr[...] = value
