"""Shard writing: cut preprocessed recordings into windows of 1 s patches → Zarr v3 shards + index.parquet.

Layout: <out>/<recording>/part-NNN.zarr (arrays x, ch, importance; provenance in attributes) and
<out>/index.parquet (shard, row, recording, start_s, label, subject, split). Each recording's folder
is written under a temporary name and renamed when all its shards are complete; index.parquet is
written last, so a killed run leaves nothing a reader trusts, and a rerun skips the recordings
whose folder exists with the same fingerprint. Windows: pipeline.prep.windows; splits and labels from the
ingest tables: pipeline.prep.splits.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import zarr

from pipeline.config import PatchSettings, to_dict
from pipeline.errors import StageFailed
from pipeline.parallel import map_items
from pipeline.prep.quality import check_classes_found, check_split_classes, window_quality
from pipeline.prep.report import finish_stage
from pipeline.prep.splits import recording_meta, required_tables, window_splits
from pipeline.prep.windows import plan_labelled_windows, plan_windows
from pipeline.signal.importance import FEATURE_NAMES, patch_features
from pipeline.store.atomic import atomic_path
from pipeline.store.fingerprint import settings_hash
from pipeline.store.manifest import problem, reusable
from pipeline.store.tables import INDEX_SCHEMA, read_rows, table_from_rows, write_table
from pipeline.store.zarr_store import ShardLayout, create_shard, open_group

log = logging.getLogger(__name__)
FINGERPRINT_FILE = "fingerprint.json"


def _fingerprint(store_attrs: dict, settings: PatchSettings, meta: dict) -> str:
    # allow_single_class decides whether the stage refuses, not what a shard holds
    splits = {k: v for k, v in to_dict(settings.splits).items() if k != "allow_single_class"}
    return settings_hash(store_attrs.get("fingerprint"), to_dict(settings.patch), splits, to_dict(settings.labels),
                         meta)


def patch_recording(item: tuple[str, dict], *, out: str, settings: PatchSettings) -> dict:
    """Shard one preprocessed recording; item = (store, {"split", "label", "events"}) → {"status", "reason", "rows"}."""
    store, meta = item
    if (why := problem(store)) is not None:  # a missing chunk would read as zeros: refuse, never pad
        raise StageFailed(f"{store}: preprocessed store is incomplete ({why}); rerun preprocess, which rebuilds it")
    group = open_group(store)
    attrs = dict(group.attrs)
    rec = attrs["recording"]
    cfg = settings.patch
    dest = Path(out) / rec
    fingerprint = _fingerprint(attrs, settings, meta)
    done = dest / FINGERPRINT_FILE
    stamp = json.loads(done.read_text()) if done.is_file() else {}
    if stamp.get("fingerprint") == fingerprint and reusable(dest, "shards of"):
        log.info("%s: shards up to date, reused", rec)
        return {"recording": rec, "status": "ok", "reason": "reused", "rows": read_rows(dest / "windows.parquet"),
                "dropped": stamp.get("dropped", [])}  # for the quality section

    signal = group["signal"]
    sfreq = float(attrs["sfreq"])
    n_ch, n_samples = signal.shape
    ids = np.asarray(attrs["channel_ids"], dtype=np.int16)
    masked = np.asarray(group["masked"][...], dtype=bool)
    ch_row = np.where(masked, -1, ids).astype(np.int16)  # masked and missing channels → padding id
    bad_seconds = np.asarray(group["bad_seconds"][...], dtype=bool)
    labelled = settings.labels.mode != "none"
    if labelled:
        windows = plan_labelled_windows(n_samples, bad_seconds, cfg, settings.labels, sfreq,
                                        [tuple(e) for e in meta.get("events", [])], meta.get("label", ""))
    else:
        windows = plan_windows(n_samples, bad_seconds, cfg, sfreq)
    # (a continuous recording's event may be shorter than its window on purpose: a stimulus and the response)
    if windows.crossing and meta.get("epoched"):
        trial_s = min(d for _, d, _ in meta.get("events", [])) if meta.get("events") else 0.0
        raise StageFailed(
            f"{attrs['source_path']}: {windows.crossing} {cfg.window_s:g} s window(s) run past the end of their trial "
            f"(trials of {trial_s:g} s, windows from onset + {settings.labels.offset_s:g} s) into the next one; set "
            f"the dataset's `labels: {{window_s: ...}}` (and `patch: {{window_s: ...}}`) to at most "
            f"{trial_s - settings.labels.offset_s:g} s, a whole number of 1 s patches")
    if len(windows.starts) == 0:
        what = f"labelled ({settings.labels.mode}: {', '.join(settings.labels.classes)})" if labelled else "clean"
        return {"recording": rec, "status": "rejected", "rows": [],
                **_dropped(windows, meta.get("split") or settings.splits.split_of(attrs["subject"])),
                "reason": f"{attrs['source_path']}: no {what} {cfg.window_s:g} s window "
                          f"({windows.n_rejected} rejected for amplitude/NaN, {n_samples / sfreq:.1f} s long)"}
    win = int(round(cfg.window_s * sfreq))
    n_patches = win // cfg.patch_len
    layout = ShardLayout(n_channels=n_ch, n_patches=n_patches, patch_len=cfg.patch_len, n_features=len(FEATURE_NAMES),
                         dtype=cfg.dtype, chunk_windows=cfg.chunk_windows, compressor=cfg.compressor)
    split = meta.get("split") or settings.splits.split_of(attrs["subject"])
    splits = window_splits(split, len(windows.starts), settings.splits)
    shard_attrs = {
        "recording": rec,
        "subject": attrs["subject"],
        "channels": attrs["targets"],
        "importance_features": list(FEATURE_NAMES),
        "patch": to_dict(cfg),
        "provenance": attrs["provenance"],  # every preprocessing step's parameters, carried along
        "source_path": attrs["source_path"],
        "content_sha256": attrs["content_sha256"],
        "classes": list(settings.labels.classes),
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
                         "label": windows.labels[first + r] if windows.labels is not None else None,
                         "subject": attrs["subject"], "split": splits[first + r]}
                        for r, s in enumerate(starts.tolist()))
        write_table(table_from_rows(rows, INDEX_SCHEMA), tmp / "windows.parquet")
        (tmp / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": fingerprint, **_dropped(windows, split)}))
    reason = f"{windows.n_rejected} window(s) rejected for amplitude/NaN" if windows.n_rejected else ""
    return {"recording": rec, "status": "ok", "reason": reason, "rows": rows, **_dropped(windows, split)}


def _dropped(windows, split: str) -> dict:
    """What a recording lost, for the stage's quality section: the split and class of each window dropped by the
    amplitude/NaN rules (a training recording's drops count as "train" even where validation is its tail)."""
    labels = windows.rejected_labels or (None,) * windows.n_rejected
    return {"dropped": [[split, c] for c in labels]}


def patch(preprocessed: str | Path, out: str | Path, settings: PatchSettings = PatchSettings(), *,
          n_workers: int = 1, scheduler: str | None = None, ingested: str | Path | None = None,
          cluster_min_recordings: int = 1) -> list[dict]:
    preprocessed, out = Path(preprocessed), Path(out)
    table = read_rows(preprocessed / "recordings.parquet")
    ingested = Path(ingested) if ingested else preprocessed.parent
    labelled = settings.labels.mode != "none"
    missing = [t for t in required_tables(ingested, labelled) if not t.is_file()]
    if missing:
        raise StageFailed(f"patch {preprocessed}: missing ingest table(s) {', '.join(map(str, missing))} (splits"
                          f"{' and labels' if labelled else ''} come from them); run ingest into {ingested}, or pass "
                          "--ingested <the folder that holds them>")
    meta = recording_meta(ingested, settings.splits, labelled)
    if labelled:
        check_classes_found(meta, settings.labels, where=str(ingested))
    items = [(str(preprocessed / r["store"]), meta.get(r["recording"], {})) for r in table if r["status"] == "ok"]
    out.mkdir(parents=True, exist_ok=True)
    work = functools.partial(patch_recording, out=str(out), settings=settings)
    results = map_items(work, items, scheduler=scheduler, n_workers=n_workers, cluster_min_items=cluster_min_recordings,
                        desc="patch")
    rows = [row for res in results for row in res["rows"]]
    quality = window_quality(results, rows, labelled=labelled)
    summary = [{"recording": r["recording"], "status": r["status"], "reason": r["reason"]} for r in results]
    # index.parquet is what downstream trusts: a refused run must not leave the previous run's in place
    (out / "index.parquet").unlink(missing_ok=True)
    refusal = check_split_classes(quality, settings.splits, where=str(out)) if labelled else None
    finish_stage("patch", summary, what=str(preprocessed), quality=quality, quality_path=out / "quality.json")
    if refusal:
        raise StageFailed(refusal)
    write_table(table_from_rows(rows, INDEX_SCHEMA), out / "index.parquet")
    log.info("patch: %d windows in %d recordings", len(rows), sum(r["status"] == "ok" for r in results))
    return summary
