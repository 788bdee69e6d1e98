"""A user's own trial files, end to end: run identity over inputs, guards and errors that say how to fix.

The files are written here (trials_npz, the users' format); their signals are synthetic where an exact
count or identity is the point.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from pipeline.config import (FinetuneSection, IngestConfig, LabelConfig, MontageConfig, PatchConfig, PatchSettings,
                             PreprocessConfig, SplitConfig)
from pipeline.prep.ingest import ingest
from pipeline.prep.preprocess import preprocess
from pipeline.prep.shards import patch
from pipeline.prep.standardize import standardize

LR = LabelConfig(mode="events", classes=("left", "right"), window_s=1.0)


def write_trials(path: Path, subject: str, *, n: int = 32, seed: int = 0, sfreq: float = 200.0, trial_s: float = 2.0,
                 channels=("C3", "Cz", "C4", "Pz"), labels=None, **extra) -> np.ndarray:
    """A trials .npz: alternating left/right (or `labels`), a 10 Hz rhythm on C3 for `left`, noise elsewhere (µV)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(trial_s * sfreq)) / sfreq
    y = np.array(labels if labels is not None else ["left", "right"] * (n // 2))
    x = rng.normal(0, 10, (len(y), len(channels), len(t))).astype(np.float32)
    x[y == "left", 0] += 20 * np.sin(2 * np.pi * 10 * t).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, X=x, y=y, ch_names=np.array(channels), sfreq=sfreq, subject=subject, **extra)
    return x


def build(source: Path, out: Path, *, labels: LabelConfig = LR, splits: SplitConfig | None = None,
          montage: MontageConfig = MontageConfig(), window_s: float = 1.0, reject_uv: float | None = None) -> Path:
    """ingest → standardize → preprocess → patch through the library; the samples folder."""
    ingest(source, out, dataset="mine", fmt="trials_npz", cfg=IngestConfig(min_duration_s=1))
    standardize(out / "manifest.parquet", out / "montage.parquet", montage)
    pre = PreprocessConfig(mains=50.0) if reject_uv is None else PreprocessConfig(mains=50.0, reject_uv=reject_uv)
    preprocess(out / "montage.parquet", out / "preprocessed", pre)
    settings = PatchSettings(patch=PatchConfig(window_s=window_s, chunk_windows=16),
                             splits=splits or SplitConfig(test=("s02",), val_fraction=0.25, val_unit="time"),
                             labels=labels)
    patch(out / "preprocessed", out / "samples", settings)
    return out / "samples"


def _tiny_pretrained(folder: Path) -> Path:
    from pipeline.models.backbone import BackboneConfig
    from pipeline.models.pretrain import PretrainConfig, PretrainModel
    from pipeline.montage import load_vocabulary
    from pipeline.store import model_file

    torch.manual_seed(0)
    cfg = PretrainConfig(backbone=BackboneConfig.demo(vocab_size=len(load_vocabulary()), embed_dim=16, depth=1,
                                                      heads=2), codebook_size=16)
    folder.mkdir(parents=True)
    model_file.publish(PretrainModel(cfg), folder, kind="pretrain", config=cfg.to_dict(),
                       extra={"tokenizer_fingerprint": "none"})
    (folder / "metrics.json").write_text(json.dumps({"corpus": []}))
    return folder


# --------------------------------------------------------------------------- run identity = settings + inputs


def test_a_changed_training_sample_retrains_instead_of_resuming(tmp_path: Path):
    """Issue 17: after a training file was corrected and the chain rerun into the same folders, fine-tuning
    resumed the old data's checkpoints and its metrics mixed both runs."""
    src = tmp_path / "src"
    write_trials(src / "s01.npz", "s01", seed=1)
    write_trials(src / "s02.npz", "s02", seed=2)
    samples = build(src, tmp_path / "mine")
    pretrained = _tiny_pretrained(tmp_path / "pretrained")
    section = FinetuneSection(epochs=2, batch_size=8, lr=1e-3)
    out = tmp_path / "ft"
    first = finetune_run(samples, out, section, pretrained)
    assert not list(tmp_path.glob("ft/checkpoints.stale-*"))

    x = write_trials(src / "s01.npz", "s01", seed=1)  # the same file, one training trial corrected
    x[3] *= 0.5
    np.savez(src / "s01.npz", X=x, y=np.array(["left", "right"] * 16), ch_names=np.array(["C3", "Cz", "C4", "Pz"]),
             sfreq=200.0, subject="s01")
    build(src, tmp_path / "mine")
    second = finetune_run(samples, out, section, pretrained)
    assert list(tmp_path.glob("ft/checkpoints.stale-*")), "the old data's checkpoints were resumed"
    records = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in records if r["kind"] == "heldout"]
    assert [r["epoch"] for r in held] == [1, 2]  # this run's epochs, once each
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[0] == 1
    assert second["n_train"] == first["n_train"]


def finetune_run(samples: Path, out: Path, section: FinetuneSection, pretrained: Path) -> dict:
    from pipeline.train.finetune import finetune

    return finetune(samples, out, section, LR, method="full", seed=0, pretrained=pretrained, dataset="mine")


def test_input_fingerprints_follow_content_not_paths(tmp_path: Path):
    from pipeline.train.identity import shards_fingerprint

    src = tmp_path / "src"
    write_trials(src / "s01.npz", "s01", seed=1)
    write_trials(src / "s02.npz", "s02", seed=2)
    samples = build(src, tmp_path / "mine")
    before = shards_fingerprint([samples])
    build(src, tmp_path / "mine")
    assert shards_fingerprint([samples]) == before  # a rerun on the same files: the same identity
    write_trials(src / "s02.npz", "s02", seed=3)
    build(src, tmp_path / "mine")
    assert shards_fingerprint([samples]) != before
