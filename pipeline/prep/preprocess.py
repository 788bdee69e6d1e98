"""Preprocess: montage → band-pass + notch → 200 Hz → µV/100, streamed, with quality flags.

Per recording: <out>/<recording>.zarr with `signal` float32 [channel, sample] at 200 Hz, per-second
`peak` / `flat` / `nan` flags, `masked` channels and `bad_seconds` (amplitude or NaN), and the
parameters of every step in its attributes (provenance). <out>/recordings.parquet lists every
recording with its status. Memory is O(chunk × channels) whatever the recording's length.
A recording whose store exists with the same fingerprint (settings + content hash + channel plan)
is not processed again, so an interrupted run resumes where it stopped. While the stage runs, finished stores wait
in a progress folder beside <out> (`progress_dir`) and move into <out> when every recording is done: Snakemake
deletes a rule's output folder before it reruns the job (after a kill too), and the progress folder is not an
output, so a killed preprocess resumes recording by recording under Snakemake as well.

The mains rule (`mains_for`), the one place it lives: a recording's own line frequency (the manifest's `mains`:
BIDS PowerLineFrequency, or a dataset adapter's) wins over the dataset's configured `mains`; the notch, the
fingerprint and the provenance (`provenance.mains` = {hz, source}) use the frequency chosen. The workflow's
preprocess stage and `embed` (pipeline.prep.prepare) both run this code.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from pipeline.config import PreprocessConfig, to_dict
from pipeline.io.readers import open_recording
from pipeline.io.recording import RecordingError
from pipeline.montage.mapping import MontagePlan
from pipeline.parallel import map_items
from pipeline.prep.report import finish_stage
from pipeline.signal.filters import notch_harmonics
from pipeline.signal.quality import bad_seconds, channel_mask
from pipeline.signal.stream import PreprocessSpec, StreamingPreprocessor
from pipeline.store.fingerprint import settings_hash
from pipeline.store.manifest import reusable
from pipeline.store.tables import PREPROCESS_SCHEMA, read_rows, write_rows
from pipeline.store.zarr_store import create_signal, new_group, open_group, write_small

log = logging.getLogger(__name__)


def spec_for(cfg: PreprocessConfig) -> PreprocessSpec:
    notch = notch_harmonics(cfg.mains, cfg.sfreq) if cfg.mains else ()
    return PreprocessSpec(sfreq_out=cfg.sfreq, l_freq=cfg.l_freq, h_freq=cfg.h_freq, notch=notch,
                          scale=cfg.scale, chunk_seconds=cfg.chunk_s)


def plan_reader(recording, plan: MontagePlan):
    """read(start, stop) → [n_targets, n] µV, reading only the source channels the plan uses."""
    used = sorted({i for i in (*plan.anode, *plan.cathode) if i >= 0})
    pos = {src: k for k, src in enumerate(used)}
    anode = np.array([pos.get(i, -1) for i in plan.anode])
    cathode = np.array([pos.get(i, -1) for i in plan.cathode])
    picks = np.asarray(used, dtype=int)

    def read(start: int, stop: int) -> np.ndarray:
        src = recording.read(start, stop, picks=picks)
        out = np.zeros((len(anode), stop - start), dtype=np.float32)
        has = anode >= 0
        out[has] = src[anode[has]]
        sub = cathode >= 0  # derived bipolar channels: anode minus cathode
        out[sub] -= src[cathode[sub]]
        return out

    return read


def mains_for(row: dict, cfg: PreprocessConfig) -> tuple[float | None, str]:
    """(line frequency to notch, where it comes from: "recording" | "dataset") for one montage row."""
    own = row.get("mains")
    if own:
        return float(own), "recording"
    return cfg.mains, "dataset"


def recording_config(row: dict, cfg: PreprocessConfig) -> PreprocessConfig:
    """`cfg` with the mains rule applied to this recording."""
    mains, _ = mains_for(row, cfg)
    return cfg if mains == cfg.mains else dataclasses.replace(cfg, mains=mains)


def fingerprint_of(row: dict, cfg: PreprocessConfig) -> str:
    return settings_hash(to_dict(cfg), row["content_sha256"], row["plan"])


def progress_dir(out: str | Path) -> Path:
    """Where a running preprocess keeps its finished stores until the stage is done: beside `out`, not in it."""
    out = Path(out)
    return out.parent / f".{out.name}.progress"


def preprocess_recording(row: dict, *, out: str, cfg: PreprocessConfig, strict: bool = False,
                         progress: str | None = None) -> dict:
    """One montage row → <progress or out>/<recording>.zarr, or an up-to-date store in either reused; `cfg` is the
    dataset's."""
    rec = row["recording"]
    store = Path(out) / f"{rec}.zarr"
    result = {"recording": rec, "subject": row["subject"], "store": store.name, "status": "ok", "reason": ""}
    cfg = recording_config(row, cfg)
    fingerprint = fingerprint_of(row, cfg)
    staged = Path(progress) / store.name if progress else store
    for candidate in dict.fromkeys((store, staged)):
        if candidate.is_dir():
            try:
                old = open_group(candidate)
                if old.attrs.get("fingerprint") == fingerprint and reusable(candidate, "preprocessed store"):
                    log.info("%s: preprocessed store up to date, reused", rec)
                    if candidate != staged:  # a killed run's stale copy must not replace it when published
                        shutil.rmtree(staged, ignore_errors=True)
                    return {**result, **old.attrs["summary"]}
            except Exception as exc:  # an unreadable old store is simply rebuilt
                log.warning("%s: rebuilding unreadable store (%s)", candidate, exc)
    try:
        return {**result, **process(row, staged, cfg, fingerprint)}
    except (RecordingError, OSError, ValueError) as exc:
        if strict:
            raise
        log.warning("rejected %s: %s", rec, exc)
        return {**result, "status": "rejected", "reason": f"{row['path']}: {type(exc).__name__}: {exc}"}


def process(row: dict, store: Path, cfg: PreprocessConfig, fingerprint: str) -> dict:
    plan = MontagePlan.from_dict(json.loads(row["plan"]))
    recording = open_recording(row["path"])
    info = recording.info
    pre = StreamingPreprocessor(spec_for(cfg))
    n_ch = len(plan.targets)
    quality = pre.quality_accumulator(n_samples=info.n_samples, n_channels=n_ch, sfreq_in=info.sfreq, flat_uv=cfg.flat_uv)
    n_out = pre.output_length(n_samples=info.n_samples, sfreq_in=info.sfreq)
    stream = pre.describe(sfreq_in=info.sfreq, n_samples=info.n_samples)
    attrs = {
        "recording": row["recording"],
        "subject": row["subject"],
        "source_path": row["path"],
        "content_sha256": row["content_sha256"],
        "sfreq": cfg.sfreq,
        "targets": list(plan.targets),
        "channel_ids": list(plan.ids),
        "fingerprint": fingerprint,
        "provenance": {
            "reader": info.reader,
            "montage": plan.to_dict(),
            "preprocess": to_dict(cfg),
            "mains": {"hz": cfg.mains, "source": mains_for(row, cfg)[1]},
            "stream": stream,
        },
    }
    with new_group(store, attrs) as group:
        # Zarr chunks = the filter's output blocks, so every block write fills whole chunks.
        signal = create_signal(group, n_ch, max(n_out, 1), chunk_samples=int(stream["layout"]["block"]))
        for start, block in pre.run(plan_reader(recording, plan), n_samples=info.n_samples, n_channels=n_ch,
                                    sfreq_in=info.sfreq, quality=quality):
            signal[:, start:start + block.shape[1]] = block
        flags = quality.result()
        missing = np.asarray(plan.ids) < 0
        masked = channel_mask(flags, max_bad_fraction=cfg.max_bad_fraction) | missing
        bad = bad_seconds(flags, masked, reject_uv=cfg.reject_uv)
        for name, value in (("peak", flags.peak), ("flat", flags.flat), ("nan", flags.nan),
                            ("masked", masked), ("bad_seconds", bad)):
            write_small(group, name, np.asarray(value))
        summary = {
            "n_channels": n_ch,
            "n_samples": int(n_out),
            "sfreq": cfg.sfreq,
            "masked_channels": [t for t, m, miss in zip(plan.targets, masked, missing) if m and not miss],
            "bad_seconds": int(bad.sum()),
            "nan_seconds": int(np.asarray(flags.nan).any(axis=0).sum()),
        }
        if masked.all():
            summary.update(status="rejected", reason=f"{row['path']}: every channel is flat, NaN or missing")
        group.attrs["summary"] = summary
    return summary


def preprocess(montage: str | Path, out: str | Path, cfg: PreprocessConfig = PreprocessConfig(), *,
               n_workers: int = 1, scheduler: str | None = None, strict: bool = False,
               cluster_min_recordings: int = 1) -> list[dict]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress = progress_dir(out)
    rows = read_rows(montage)
    ok = [r for r in rows if r["status"] == "ok"]
    work = functools.partial(preprocess_recording, out=str(out), cfg=cfg, strict=strict, progress=str(progress))
    results = map_items(work, ok, scheduler=scheduler, n_workers=n_workers, cluster_min_items=cluster_min_recordings,
                        desc="preprocess")
    _publish_progress(progress, out, [r["store"] for r in results])
    by_rec = {r["recording"]: r for r in results}
    table = [by_rec.get(r["recording"]) or {"recording": r["recording"], "subject": r["subject"],
                                            "status": "rejected", "reason": r["reason"]} for r in rows]
    write_rows(table, PREPROCESS_SCHEMA, out / "recordings.parquet")
    finish_stage("preprocess", table, what=str(montage))
    return table


def _publish_progress(progress: Path, out: Path, stores: list[str]) -> None:
    """Move this run's finished stores from the progress folder into `out` (replacing older ones), then drop it."""
    for name in stores:
        staged, dest = progress / name, out / name
        if staged.is_dir():
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(staged, dest)
    shutil.rmtree(progress, ignore_errors=True)
