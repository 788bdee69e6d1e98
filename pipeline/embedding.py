"""Embeddings of your own recordings: prepare() (the workflow's data plane, in one process), then the pretrained
backbone over every clean window (eval mode, nothing masked), mean-pooled over the valid tokens (channels that
exist and are not masked, all patches) → one parquet row per window.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StageFailed
from pipeline.prep.prepare import PrepareSettings, prepare
from pipeline.store.atomic import atomic_path

log = logging.getLogger(__name__)


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_backbone(model: str | Path):
    """(backbone in eval mode, fingerprint, safetensors metadata) of a pretrained model, checked on load
    (pipeline.store.model_file): a file of the wrong kind, altered or truncated is one line naming it."""
    from pipeline.train.pretrain import load_pretrained_folder

    try:
        pretrained, meta = load_pretrained_folder(model)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise StageFailed(f"--model {model}: {exc}") from None
    return pretrained.backbone.eval(), meta["fingerprint"], meta  # the fingerprint: verified on load


def embed_windows(backbone, shards: Path, *, batch_windows: int = 16, device: str = "auto") -> tuple[pa.Table, Any]:
    """(index of the windows: recording, subject, start_s, n_channels_valid; embeddings float32 [N, D])."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from pipeline.data.windows import WindowBatches, WindowIndex
    from pipeline.models.classifier import pool_valid
    from pipeline.store.zarr_store import open_shard
    from pipeline.train.device import place, to_device, to_host

    index = WindowIndex.from_shard_dirs([shards])
    table = index.table.sort(["recording", "start_s"], maintain_order=True)
    index = WindowIndex(table)
    n = len(index)
    n_patches, patch_len = open_shard(table["shard_path"][0]).x.shape[2:]
    cfg = backbone.config
    if n_patches > cfg.max_patches:
        raise StageFailed(f"a window has {n_patches} patches but the model takes at most {cfg.max_patches}; "
                          f"use a shorter --window-s (≤ {cfg.max_patches * patch_len / 200:g} s at 200 Hz)")
    if patch_len != cfg.patch_size:
        raise StageFailed(f"patches of {patch_len} samples, but the model was trained on {cfg.patch_size}")
    dev = _device(device)
    backbone = place(backbone, dev)
    batches = [np.arange(i, min(i + batch_windows, n)) for i in range(0, n, batch_windows)]
    data = WindowBatches(index, batches, fields=("x", "ch"))
    out = np.zeros((n, cfg.embed_dim), dtype=np.float32)
    n_valid = np.zeros(n, dtype=np.int32)
    with torch.inference_mode(), tqdm(total=n, desc="embed", unit="window", disable=None) as bar:
        for i in range(len(data)):
            batch = data[i]
            x, ch = to_device((batch["x"], batch["ch"]), dev)
            pooled = pool_valid(backbone(x, ch), ch)
            rows = batch["window"].numpy()
            out[rows] = to_host(pooled.float()).numpy()
            n_valid[rows] = (batch["ch"] >= 0).sum(1).numpy()
            bar.update(len(rows))
    meta = pa.table({"recording": pa.array(table["recording"].to_list(), pa.string()),
                     "subject": pa.array(table["subject"].to_list(), pa.string()),
                     "start_s": pa.array(table["start_s"].to_list(), pa.float64()),
                     "n_channels_valid": pa.array(n_valid, pa.int32())})
    return meta, out


def embedding_table(index: pa.Table, embeddings: Any, *, paths: dict[str, str], window_s: float,
                    metadata: dict[str, Any]) -> pa.Table:
    n, dim = embeddings.shape
    flat = pa.array(embeddings.reshape(-1), type=pa.float32())
    return pa.table({
        "recording": index["recording"],
        "source_path": pa.array([paths.get(r, "") for r in index["recording"].to_pylist()], pa.string()),
        "subject": index["subject"],
        "start_s": index["start_s"],
        "window_s": pa.array([float(window_s)] * n, pa.float64()),
        "n_channels_valid": index["n_channels_valid"],
        "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
    }).replace_schema_metadata({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})


def report_rejections(rejected: list[dict], notes: list[dict]) -> None:
    for r in rejected:
        log.warning("rejected %s at %s: %s", r["recording"], r["stage"], r["reason"])
    for r in notes:
        log.info("%s: %s", r["recording"], r["note"])


def embed(source: str | Path, model: str | Path, out: str | Path, *, settings: PrepareSettings | None = None,
          fmt: str = "auto", batch_windows: int = 16, device: str = "auto",
          keep_work: str | Path | None = None) -> pa.Table:
    """Embed every clean window of the recordings in `source` with the pretrained `model` → `out` (parquet).

    Returns the written table (its schema metadata: model_fingerprint, settings, rejected). Raises
    StageFailed when no window could be embedded."""
    settings = settings or PrepareSettings()
    weights = Path(model) / "model.safetensors" if Path(model).is_dir() else Path(model)
    if not weights.is_file():  # fail fast, before the data work (and without importing torch)
        raise StageFailed(f"--model {model}: no pretrained model at {weights} (run pretrain first)")
    backbone, fingerprint, meta = load_backbone(weights)  # checked before the data work: a bad file fails first
    with tempfile.TemporaryDirectory(prefix="embed-") if keep_work is None else KeptFolder(keep_work) as work:
        log.info("embed: work folder %s", work)
        data = prepare(source, work, settings, fmt=fmt)
        report_rejections(data.rejected, data.notes)
        index, vectors = embed_windows(backbone, data.shards, batch_windows=batch_windows, device=device)
    if len(vectors) == 0:
        raise StageFailed(f"{source}: no window was embedded")
    paths = {r["recording"]: r["path"] for r in data.manifest}
    metadata = {
        "model_fingerprint": fingerprint,
        "model": str(model),
        "tokenizer_fingerprint": meta.get("tokenizer_fingerprint", ""),
        "model_config": meta.get("config", "{}"),
        "embedding_dim": str(vectors.shape[1]),
        "pooling": "mean over valid tokens (channels with ch >= 0, all patches); eval mode, no mask",
        "settings": {**settings.to_dict(), "format": fmt, "mains_by_recording": data.mains},
        "source": str(source),
        "rejected": data.rejected,
    }
    table = embedding_table(index, vectors, paths=paths, window_s=settings.patch.window_s, metadata=metadata)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    log.info("embed: %d windows of %d recording(s) → %s (%d-d, model %s)", table.num_rows,
             len(set(table["recording"].to_pylist())), out, vectors.shape[1], fingerprint)
    return table


class KeptFolder:
    """Context manager yielding a kept work folder (created if needed) as a str, like TemporaryDirectory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        return str(self.path)

    def __exit__(self, *exc: object) -> None:
        return None
