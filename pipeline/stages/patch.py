"""patch: cut preprocessed recordings into windows of 1 s patches → Zarr v3 shards + index.parquet.

    python -m pipeline patch results/<dataset>/preprocessed --out results/<dataset>/shards
    python -m pipeline patch results/<dataset>/preprocessed --out results/<dataset>/samples --settings JSON

Without labels (pretraining) windows tile each recording. With `labels` in the settings (downstream samples)
they follow the dataset's label source, read from the ingest tables beside `preprocessed/`
(manifest.parquet: recording label and official split; events.parquet: time-locked labels):
`recording` tiles and labels every window with its recording's label, `events` puts one window at each
event (onset + offset_s), `intervals` tiles and labels a window by the event interval it overlaps (else
`background`), `spans` tiles and keeps the windows lying wholly inside a labelled span (trials of SEED-V).

Layout: <out>/<recording>/part-NNN.zarr (arrays x, ch, importance; provenance in attributes) and
<out>/index.parquet (shard, row, recording, start_s, label, subject, split). Each recording's folder
is written under a temporary name and renamed when all its shards are complete; index.parquet is
written last, so a killed run leaves nothing a reader trusts, and a rerun skips the recordings
whose folder exists with the same fingerprint.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from pipeline.config import LabelConfig, PatchConfig, PatchSettings, SplitConfig, load_settings, to_dict
from pipeline.parallel import map_items
from pipeline.signal.importance import FEATURE_NAMES, patch_features
from pipeline.stages.common import StageFailed, finish_stage
from pipeline.store.atomic import atomic_path
from pipeline.store.fingerprint import settings_hash
from pipeline.store.manifest import problem, reusable
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
    parser.add_argument("--ingested", default=None,
                        help="folder with manifest.parquet/events.parquet (default: the preprocessed folder's parent)")


@dataclass(frozen=True)
class WindowPlan:
    starts: np.ndarray  # window start samples (int64), bad windows already removed
    n_rejected: int
    labels: list[str | None] | None = None  # class of each window (labelled samples only)


def _window_samples(cfg: PatchConfig, sfreq: float) -> int:
    win = int(round(cfg.window_s * sfreq))
    if win % cfg.patch_len or win == 0:
        raise StageFailed(f"window_s={cfg.window_s} is not a whole number of {cfg.patch_len}-sample patches")
    return win


def _clean(starts: np.ndarray, win: int, bad_seconds: np.ndarray, patch: int) -> np.ndarray:
    """Which windows touch no rejected second (seconds = patches of `patch` samples)."""
    if len(starts) == 0:
        return np.zeros(0, dtype=bool)
    first = starts // patch
    last = (starts + win - 1) // patch
    bad_cum = np.concatenate([[0], np.cumsum(bad_seconds.astype(np.int64))])
    n_bad = bad_cum[np.minimum(last + 1, len(bad_seconds))] - bad_cum[np.minimum(first, len(bad_seconds))]
    return n_bad == 0


def plan_windows(n_samples: int, bad_seconds: np.ndarray, cfg: PatchConfig, sfreq: float) -> WindowPlan:
    """Window starts over a recording; a window touching a rejected second is dropped."""
    win = _window_samples(cfg, sfreq)
    stride = int(round((cfg.stride_s or cfg.window_s) * sfreq))
    starts = np.arange(0, max(n_samples - win + 1, 0), stride, dtype=np.int64)
    keep = _clean(starts, win, bad_seconds, cfg.patch_len)
    return WindowPlan(starts[keep], int((~keep).sum()))


def plan_labelled_windows(n_samples: int, bad_seconds: np.ndarray, cfg: PatchConfig, labels: LabelConfig,
                          sfreq: float, events: list[tuple[float, float, str]], recording_label: str) -> WindowPlan:
    """Labelled sample windows of one recording (see the module docstring for the modes)."""
    win = _window_samples(cfg, sfreq)
    if labels.mode == "events":
        picked = [(int(round((o + labels.offset_s) * sfreq)), labels.class_of(t)) for o, _, t in events]
        picked = [(s, c) for s, c in picked if c is not None and 0 <= s <= n_samples - win]
        starts = np.array([s for s, _ in picked], dtype=np.int64)
        classes: list[str | None] = [c for _, c in picked]
    else:
        tiled = plan_windows(n_samples, np.zeros_like(bad_seconds), cfg, sfreq).starts
        if labels.mode == "recording":
            cls = labels.class_of(recording_label)
            classes = [cls] * len(tiled)
        else:
            spans = [(o, o + d, labels.class_of(t)) for o, d, t in events]
            spans = [(a, b, c) for a, b, c in spans if c is not None]
            t0, t1 = tiled / sfreq, (tiled + win) / sfreq
            if labels.mode == "intervals":  # the first labelled interval a window overlaps, else background
                classes = [next((c for a, b, c in spans if a < e and b > s), labels.background) for s, e in zip(t0, t1)]
            else:  # spans: windows lying wholly inside a labelled span (SEED-V trials); the rest are dropped
                classes = [next((c for a, b, c in spans if a <= s and e <= b + 1e-9), None) for s, e in zip(t0, t1)]
        keep_cls = np.array([c is not None for c in classes], dtype=bool)
        starts, classes = tiled[keep_cls], [c for c in classes if c is not None]
    keep = _clean(starts, win, bad_seconds, cfg.patch_len)
    return WindowPlan(starts[keep], int((~keep).sum()), [c for c, k in zip(classes, keep) if k])


def _fingerprint(store_attrs: dict, settings: PatchSettings, meta: dict) -> str:
    return settings_hash(store_attrs.get("fingerprint"), to_dict(settings.patch), to_dict(settings.splits),
                         to_dict(settings.labels), meta)


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
    if done.is_file() and json.loads(done.read_text())["fingerprint"] == fingerprint and reusable(dest, "shards of"):
        log.info("%s: shards up to date, reused", rec)
        return {"recording": rec, "status": "ok", "reason": "reused", "rows": read_rows(dest / "windows.parquet")}

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
    if len(windows.starts) == 0:
        what = f"labelled ({settings.labels.mode}: {', '.join(settings.labels.classes)})" if labelled else "clean"
        return {"recording": rec, "status": "rejected", "rows": [],
                "reason": f"{attrs['source_path']}: no {what} {cfg.window_s:g} s window "
                          f"({windows.n_rejected} rejected for amplitude/NaN, {n_samples / sfreq:.1f} s long)"}
    win = int(round(cfg.window_s * sfreq))
    n_patches = win // cfg.patch_len
    layout = ShardLayout(n_channels=n_ch, n_patches=n_patches, patch_len=cfg.patch_len, n_features=len(FEATURE_NAMES),
                         dtype=cfg.dtype, chunk_windows=cfg.chunk_windows, compressor=cfg.compressor)
    split = meta.get("split") or settings.splits.split_of(attrs["subject"])
    splits = [split] * len(windows.starts)
    if split == "train" and settings.splits.val_unit == "time" and settings.splits.val_fraction > 0:
        # validation = the last fraction of the recording's windows (too few subjects to hold one out)
        n_val = int(round(settings.splits.val_fraction * len(splits)))
        splits[len(splits) - n_val:] = ["val"] * n_val
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
        (tmp / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": fingerprint}))
    reason = f"{windows.n_rejected} window(s) rejected for amplitude/NaN" if windows.n_rejected else ""
    return {"recording": rec, "status": "ok", "reason": reason, "rows": rows}


def recording_meta(ingested: Path, splits: SplitConfig, labelled: bool) -> dict[str, dict]:
    """Per recording: its split (official, configured, or validation drawn by subject) and, for labelled
    samples, its label and events — from the ingest tables."""
    manifest = read_rows(ingested / "manifest.parquet") if (ingested / "manifest.parquet").is_file() else []
    meta = {r["recording"]: {"split": splits.split_of(r["subject"], r.get("official_split") or ""),
                             "subject": r["subject"]} for r in manifest}
    if splits.val_fraction > 0 and splits.val_unit == "subject":
        train_subjects = sorted({m["subject"] for m in meta.values() if m["split"] == "train"},
                                key=lambda s: hashlib.sha256(s.encode()).hexdigest())
        val = set(train_subjects[:int(round(splits.val_fraction * len(train_subjects)))])
        for m in meta.values():
            if m["subject"] in val:
                m["split"] = "val"
    if labelled:
        events = read_rows(ingested / "events.parquet") if (ingested / "events.parquet").is_file() else []
        for r in manifest:
            meta[r["recording"]]["label"] = r.get("label") or ""
            meta[r["recording"]]["events"] = []
        for e in events:
            if e["recording"] in meta:
                meta[e["recording"]]["events"].append([e["onset_s"], e["duration_s"], e["label"]])
    return {rec: {k: v for k, v in m.items() if k != "subject"} for rec, m in meta.items()}


def patch(preprocessed: str | Path, out: str | Path, settings: PatchSettings = PatchSettings(), *,
          n_workers: int = 1, scheduler: str | None = None, ingested: str | Path | None = None) -> list[dict]:
    preprocessed, out = Path(preprocessed), Path(out)
    table = read_rows(preprocessed / "recordings.parquet")
    meta = recording_meta(Path(ingested) if ingested else preprocessed.parent, settings.splits,
                          settings.labels.mode != "none")
    items = [(str(preprocessed / r["store"]), meta.get(r["recording"], {})) for r in table if r["status"] == "ok"]
    out.mkdir(parents=True, exist_ok=True)
    work = functools.partial(patch_recording, out=str(out), settings=settings)
    results = map_items(work, items, scheduler=scheduler, n_workers=n_workers, desc="patch")
    rows = [row for res in results for row in res["rows"]]
    write_table(table_from_rows(rows, INDEX_SCHEMA), out / "index.parquet")
    summary = [{"recording": r["recording"], "status": r["status"], "reason": r["reason"]} for r in results]
    finish_stage("patch", summary, what=str(preprocessed))
    log.info("patch: %d windows in %d recordings", len(rows), sum(r["status"] == "ok" for r in results))
    return summary


def main(args: argparse.Namespace) -> None:
    settings = load_settings(PatchSettings, args.settings)
    patch(args.preprocessed, args.out, settings, n_workers=args.workers, scheduler=args.scheduler,
          ingested=args.ingested)
