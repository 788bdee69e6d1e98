"""Content fingerprints of a training stage's inputs: part of its run identity (the checkpoints' `state_extra`).

A checkpoint is resumed only when it was made from the same settings *and* the same inputs; a path names a
folder, not what is in it, so a corrected training file rebuilt into the same folder must not resume the run
that trained on the old one. The fingerprints are built from what the data stages already record:

- shards (pipeline.prep.shards): each recording folder's `fingerprint.json` hashes the preprocessed store's
  fingerprint (settings + the source's content sha256 + channel plan), the patch, split and label settings
  and the recording's split/label metadata; the shard folder's fingerprint hashes those of the recordings
  listed in its index.parquet;
- codes (pipeline.prep.codes): each code store's attributes name the tokenizer fingerprint and the
  fingerprint of the shard it encodes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import polars as pl

from pipeline.store.fingerprint import settings_hash


def shards_fingerprint(shard_dirs: Sequence[str | Path]) -> str:
    """Hash of every indexed recording's shard fingerprint, over all `shard_dirs` (in order)."""
    parts = []
    for d in map(Path, shard_dirs):
        recordings = sorted(pl.read_parquet(d / "index.parquet", columns=["recording"])["recording"].unique())
        parts.append([(rec, _recording_fingerprint(d / rec)) for rec in recordings])
    return settings_hash(parts)


def _recording_fingerprint(folder: Path) -> str:
    stamp = folder / "fingerprint.json"
    if not stamp.is_file():
        raise ValueError(f"{folder}: no fingerprint.json (written by an older patch); rerun patch")
    return json.loads(stamp.read_text())["fingerprint"]


def codes_fingerprint(codes_dirs: Sequence[str | Path]) -> str:
    """Hash of (tokenizer fingerprint, source shard fingerprint) of every code store under `codes_dirs`."""
    from pipeline.store.zarr_store import open_group

    parts = []
    for d in map(Path, codes_dirs):
        shards = sorted(pl.read_parquet(d / "index.parquet", columns=["shard"])["shard"].unique())
        stores = []
        for name in shards:
            attrs = dict(open_group(d / name).attrs)
            stores.append((name, attrs.get("tokenizer_fingerprint"), attrs.get("source_fingerprint")))
        parts.append(stores)
    return settings_hash(parts)
