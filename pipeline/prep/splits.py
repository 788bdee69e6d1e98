"""Splits and labels per recording, from the ingest tables: the official split where the release has one, else
the configured subject split, validation drawn by subject (hashed order) or by time (the last fraction of a
training recording's windows)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.config import SplitConfig
from pipeline.store.tables import read_rows


def recording_meta(ingested: Path, splits: SplitConfig, labelled: bool) -> dict[str, dict]:
    """Per recording: its split (official, configured, or validation drawn by subject) and, for labelled
    samples, its label and events — from the ingest tables (present: `required_tables` checks first)."""
    manifest = read_rows(ingested / "manifest.parquet")
    meta = {r["recording"]: {"split": splits.split_of(r["subject"], r.get("official_split") or ""),
                             "subject": r["subject"]} for r in manifest}
    for r in manifest:
        if r.get("format") == "trials":  # epoched: a window must stay inside its trial
            meta[r["recording"]]["epoched"] = True
    if splits.val_fraction > 0 and splits.val_unit == "subject":
        train_subjects = sorted({m["subject"] for m in meta.values() if m["split"] == "train"},
                                key=lambda s: hashlib.sha256(s.encode()).hexdigest())
        val = set(train_subjects[:int(round(splits.val_fraction * len(train_subjects)))])
        for m in meta.values():
            if m["subject"] in val:
                m["split"] = "val"
    if labelled:
        events = read_rows(ingested / "events.parquet")
        for r in manifest:
            meta[r["recording"]]["label"] = r.get("label") or ""
            meta[r["recording"]]["events"] = []
        for e in events:
            if e["recording"] in meta:
                meta[e["recording"]]["events"].append([e["onset_s"], e["duration_s"], e["label"]])
    return {rec: {k: v for k, v in m.items() if k != "subject"} for rec, m in meta.items()}


def window_splits(split: str, n_windows: int, splits: SplitConfig) -> list[str]:
    """The split of each of a recording's windows: `split`, except validation = the last fraction of a training
    recording's windows when validation is drawn by time (too few subjects to hold one out)."""
    out = [split] * n_windows
    if split == "train" and splits.val_unit == "time" and splits.val_fraction > 0:
        n_val = int(round(splits.val_fraction * n_windows))
        out[n_windows - n_val:] = ["val"] * n_val
    return out


def required_tables(ingested: Path, labelled: bool) -> list[Path]:
    """The ingest tables a patch run reads: manifest.parquet (official splits, subjects), and events.parquet for
    labelled samples. Without them the official split and the events would vanish silently."""
    return [ingested / "manifest.parquet", *([ingested / "events.parquet"] if labelled else [])]
