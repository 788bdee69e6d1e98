"""patch: cut preprocessed recordings into windows of 1 s patches → Zarr v3 shards + index.parquet.

    python -m pipeline patch results/<dataset>/preprocessed --out results/<dataset>/shards

Layout: <out>/<recording>/part-NNN.zarr (arrays x, ch, importance; provenance in attributes) and
<out>/index.parquet (shard, row, recording, start_s, label, subject, split). Each recording's folder
is written under a temporary name and renamed when all its shards are complete; index.parquet is
written last, so a killed run leaves nothing a reader trusts, and a rerun skips the recordings
whose folder exists with the same fingerprint.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from pipeline.config import PatchConfig, PatchSettings, load_settings, to_dict
from pipeline.parallel import map_items
from pipeline.signal.importance import FEATURE_NAMES, patch_features
from pipeline.stages.common import StageFailed, finish_stage
from pipeline.store.atomic import atomic_path
from pipeline.store.fingerprint import settings_hash
from pipeline.store.tables import INDEX_SCHEMA, read_rows, table_from_rows, write_table
from pipeline.store.zarr_store import ShardLayout, create_shard, open_group

log = logging.getLogger(__name__)
FINGERPRINT_FILE = "fingerprint.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preprocessed", help="folder written by the preprocess stage")
    parser.add_argument("--out", required=True, help="shards folder to write")
    parser.add_argument("--settings", default=None, help="PatchSettings as JSON (or @file)")
    parser.add_argument("--workers", type=int, default=1, help="local dask workers (1 = in-process)")
    parser.add_argument("--scheduler", default=None, help="address of a running dask scheduler")


@dataclass(frozen=True)
class WindowPlan:
    starts: np.ndarray  # window start samples (int64), bad windows already removed
    n_rejected: int


def plan_windows(n_samples: int, bad_seconds: np.ndarray, cfg: PatchConfig, sfreq: float) -> WindowPlan:
    """Window starts over a recording; a window touching a rejected second is dropped."""
    win = int(round(cfg.window_s * sfreq))
    stride = int(round((cfg.stride_s or cfg.window_s) * sfreq))
    if win % cfg.patch_len:
        raise StageFailed(f"window_s={cfg.window_s} is not a whole number of {cfg.patch_len}-sample patches")
    starts = np.arange(0, max(n_samples - win + 1, 0), stride, dtype=np.int64)
    if len(starts) == 0:
        return WindowPlan(starts, 0)
    patch = cfg.patch_len
    first = starts // patch
    last = (starts + win - 1) // patch
    bad_cum = np.concatenate([[0], np.cumsum(bad_seconds.astype(np.int64))])
    n_bad = bad_cum[np.minimum(last + 1, len(bad_seconds))] - bad_cum[np.minimum(first, len(bad_seconds))]
    keep = n_bad == 0
    return WindowPlan(starts[keep], int((~keep).sum()))


def _fingerprint(store_attrs: dict, settings: PatchSettings) -> str:
    return settings_hash(store_attrs.get("fingerprint"), to_dict(settings.patch), to_dict(settings.splits))


def patch_recording(store: str, *, out: str, settings: PatchSettings) -> dict:
    """Shard one preprocessed recording; returns {"status", "reason", "rows": index rows}."""
    group = open_group(store)
    attrs = dict(group.attrs)
    rec = attrs["recording"]
    cfg = settings.patch
    dest = Path(out) / rec
    fingerprint = _fingerprint(attrs, settings)
    done = dest / FINGERPRINT_FILE
    if done.is_file() and json.loads(done.read_text())["fingerprint"] == fingerprint:
        log.info("%s: shards up to date, reused", rec)
        return {"recording": rec, "status": "ok", "reason": "reused", "rows": read_rows(dest / "windows.parquet")}

    signal = group["signal"]
    sfreq = float(attrs["sfreq"])
    n_ch, n_samples = signal.shape
    ids = np.asarray(attrs["channel_ids"], dtype=np.int16)
    masked = np.asarray(group["masked"][...], dtype=bool)
    ch_row = np.where(masked, -1, ids).astype(np.int16)  # masked and missing channels → padding id
    windows = plan_windows(n_samples, np.asarray(group["bad_seconds"][...], dtype=bool), cfg, sfreq)
    if len(windows.starts) == 0:
        return {"recording": rec, "status": "rejected", "rows": [],
                "reason": f"{attrs['source_path']}: no clean {cfg.window_s:g} s window "
                          f"({windows.n_rejected} rejected for amplitude/NaN, {n_samples / sfreq:.1f} s long)"}
    win = int(round(cfg.window_s * sfreq))
    n_patches = win // cfg.patch_len
    layout = ShardLayout(n_channels=n_ch, n_patches=n_patches, patch_len=cfg.patch_len, n_features=len(FEATURE_NAMES),
                         dtype=cfg.dtype, chunk_windows=cfg.chunk_windows, compressor=cfg.compressor)
    split = settings.splits.split_of(attrs["subject"])
    shard_attrs = {
        "recording": rec,
        "subject": attrs["subject"],
        "channels": attrs["targets"],
        "importance_features": list(FEATURE_NAMES),
        "patch": to_dict(cfg),
        "provenance": attrs["provenance"],  # every preprocessing step's parameters, carried along
        "source_path": attrs["source_path"],
        "content_sha256": attrs["content_sha256"],
    }
    rows = []
    with atomic_path(dest, directory=True) as tmp:
        for part, first in enumerate(range(0, len(windows.starts), cfg.windows_per_shard)):
            starts = windows.starts[first:first + cfg.windows_per_shard]
            name = f"part-{part:03d}.zarr"
            g = zarr.open_group(store=str(tmp / name), mode="w", zarr_format=3,
                                attributes={**shard_attrs, "start_samples": starts.tolist()})
            x_arr, ch_arr, imp_arr = create_shard(g, len(starts), layout)
            ch_arr[...] = np.broadcast_to(ch_row, (len(starts), n_ch))
            step = layout.chunk_windows
            for i in range(0, len(starts), step):
                block = starts[i:i + step]
                lo, hi = int(block[0]), int(block[-1]) + win
                span = np.asarray(signal[:, lo:hi], dtype=np.float32)
                x = np.stack([span[:, s - lo:s - lo + win] for s in block])  # [w, c, samples]
                x[:, ch_row < 0] = 0.0
                x = x.reshape(len(block), n_ch, n_patches, cfg.patch_len)
                x_arr[i:i + len(block)] = x.astype(cfg.dtype)
                imp_arr[i:i + len(block)] = patch_features(x)
            rows.extend({"shard": f"{rec}/{name}", "row": r, "recording": rec, "start_s": float(s) / sfreq,
                         "label": None, "subject": attrs["subject"], "split": split}
                        for r, s in enumerate(starts.tolist()))
        write_table(table_from_rows(rows, INDEX_SCHEMA), tmp / "windows.parquet")
        (tmp / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": fingerprint}))
    reason = f"{windows.n_rejected} window(s) rejected for amplitude/NaN" if windows.n_rejected else ""
    return {"recording": rec, "status": "ok", "reason": reason, "rows": rows}


def patch(preprocessed: str | Path, out: str | Path, settings: PatchSettings = PatchSettings(), *,
          n_workers: int = 1, scheduler: str | None = None) -> list[dict]:
    preprocessed, out = Path(preprocessed), Path(out)
    table = read_rows(preprocessed / "recordings.parquet")
    stores = [str(preprocessed / r["store"]) for r in table if r["status"] == "ok"]
    out.mkdir(parents=True, exist_ok=True)
    work = functools.partial(patch_recording, out=str(out), settings=settings)
    results = map_items(work, stores, scheduler=scheduler, n_workers=n_workers, desc="patch")
    rows = [row for res in results for row in res["rows"]]
    write_table(table_from_rows(rows, INDEX_SCHEMA), out / "index.parquet")
    summary = [{"recording": r["recording"], "status": r["status"], "reason": r["reason"]} for r in results]
    finish_stage("patch", summary, what=str(preprocessed))
    log.info("patch: %d windows in %d recordings", len(rows), sum(r["status"] == "ok" for r in results))
    return summary


def main(args: argparse.Namespace) -> None:
    settings = load_settings(PatchSettings, args.settings)
    patch(args.preprocessed, args.out, settings, n_workers=args.workers, scheduler=args.scheduler)
