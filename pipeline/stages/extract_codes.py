"""extract-codes: run a trained tokenizer over every window of a dataset's shards → code stores.

    python -m pipeline extract-codes results/<ds>/shards --tokenizer results/tokenizer/<name> \\
        --out results/codes/<name>/<ds>

Per shard: <out>/<shard path>.zarr with `codes` int16 [window, channel, patch, domain, level]
(−1 at padding channels), keyed by the tokenizer's fingerprint (hash of its config and weights),
plus <out>/index.parquet (the shards' index) and <out>/fingerprint.json. Codes whose store already
carries the same fingerprint are reused, not recomputed; the tokenizer runs in eval mode, so codes
do not depend on the batch size.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", help="a dataset's shard folder")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder (model.safetensors)")
    parser.add_argument("--out", required=True, help="code folder for this dataset")
    parser.add_argument("--batch-windows", type=int, default=16)


def load_trained_tokenizer(folder: str | Path):
    """(model in eval mode, fingerprint) from <folder>/model.safetensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from pipeline.models.tokenizer import load_tokenizer

    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained tokenizer (run train-tokenizer first)")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    model = load_tokenizer({"config": json.loads(meta["config"]), "model": load_file(str(path))})
    return model.eval(), meta["fingerprint"]


def extract_codes(shards: str | Path, tokenizer: str | Path, out: str | Path, *, batch_windows: int = 16) -> dict:
    import polars as pl
    import torch
    import zarr

    from pipeline.store.atomic import atomic_path, write_text_atomic
    from pipeline.store.tables import write_table
    from pipeline.store.zarr_store import compressors, open_group, open_shard

    shards, out = Path(shards), Path(out)
    model, fingerprint = load_trained_tokenizer(tokenizer)
    index = pl.read_parquet(shards / "index.parquet")
    stats = {"fingerprint": fingerprint, "domains": list(model.config.domains), "levels": model.config.levels,
             "codebook_size": model.config.codebook_size, "reused": 0, "computed": 0, "windows": index.height}
    for shard_name in index["shard"].unique(maintain_order=True).to_list():
        dest = out / shard_name
        if dest.is_dir() and open_group(dest).attrs.get("tokenizer_fingerprint") == fingerprint:
            stats["reused"] += 1
            continue
        shard = open_shard(shards / shard_name)
        n, c, p = shard.x.shape[:3]
        with atomic_path(dest, directory=True) as tmp:
            g = zarr.open_group(store=str(tmp), mode="w", zarr_format=3, attributes={
                "tokenizer_fingerprint": fingerprint, "domains": list(model.config.domains),
                "levels": model.config.levels, "codebook_size": model.config.codebook_size,
                "source_shard": str(shards / shard_name)})
            codes = g.create_array("codes", shape=(n, c, p, *model.config.code_shape),
                                   chunks=(min(n, shard.x.chunks[0]), c, p, *model.config.code_shape),
                                   dtype="int16", compressors=compressors("zstd"),
                                   dimension_names=("window", "channel", "patch", "domain", "level"))
            with torch.inference_mode():
                for lo in range(0, n, batch_windows):
                    x = torch.from_numpy(np.asarray(shard.x[lo:lo + batch_windows], dtype=np.float32))
                    ch = torch.from_numpy(np.asarray(shard.ch[lo:lo + batch_windows], dtype=np.int64))
                    codes[lo:lo + len(x)] = model.encode(x, ch).numpy().astype(np.int16)
        stats["computed"] += 1
    write_table(index.to_arrow(), out / "index.parquet")
    write_text_atomic(out / "fingerprint.json", json.dumps(stats, indent=2))
    log.info("extract-codes %s: %d shard(s) computed, %d reused (fingerprint %s)", shards, stats["computed"],
             stats["reused"], fingerprint)
    return stats


def main(args: argparse.Namespace) -> None:
    extract_codes(args.shards, args.tokenizer, args.out, batch_windows=args.batch_windows)
