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


# --------------------------------------------------------------------------- guards that speak


def test_amplitude_drops_are_counted_per_split_and_class_and_warned(tmp_path: Path, caplog):
    src = tmp_path / "src"
    write_trials(src / "s01.npz", "s01", seed=1)
    x = write_trials(src / "s02.npz", "s02", seed=2)
    x[[0, 2, 4], 1, 100:110] += 3000.0  # three `left` test trials with a 3 mV deflection (an eye movement)
    np.savez(src / "s02.npz", X=x, y=np.array(["left", "right"] * 16), ch_names=np.array(["C3", "Cz", "C4", "Pz"]),
             sfreq=200.0, subject="s02")
    with caplog.at_level("WARNING", logger="pipeline"):
        samples = build(src, tmp_path / "mine")
    quality = json.loads((samples / "quality.json").read_text())
    assert quality["dropped_amplitude_nan"] == {"test": {"left": 3}}
    assert quality["windows"]["test"] == {"left": 13, "right": 16}
    assert "3 window(s) dropped by the amplitude/NaN rules (test/left 3 of 16)" in caplog.text
    assert "reject_uv" in caplog.text
    build(src, tmp_path / "mine")  # a rerun reuses the shards, and still reports what they lost
    assert json.loads((samples / "quality.json").read_text())["dropped_amplitude_nan"] == {"test": {"left": 3}}


def test_a_window_longer_than_its_trial_is_refused_for_epoched_sources(tmp_path: Path):
    from pipeline.errors import StageFailed

    src = tmp_path / "src"
    for s in ("s01", "s02"):
        write_trials(src / f"{s}.npz", s, trial_s=3.5)
    four = LabelConfig(mode="events", classes=("left", "right"), window_s=4.0)
    with pytest.raises(StageFailed, match=r"s01\.npz: 31 4 s window\(s\) run past the end of their trial \(trials of "
                                          r"3\.5 s.*`labels: \{window_s: \.\.\.\}`.*at most 3\.5 s"):
        build(src, tmp_path / "mine", labels=four, window_s=4.0)


def test_a_single_class_validation_split_is_refused_unless_allowed(tmp_path: Path, caplog):
    from pipeline.errors import StageFailed

    src = tmp_path / "src"
    by_class = ["left"] * 16 + ["right"] * 16  # trials sorted by class, as many toolkits write them
    write_trials(src / "s01.npz", "s01", labels=by_class)
    write_trials(src / "s02.npz", "s02", seed=2)
    with pytest.raises(StageFailed, match=r"the val split holds only class 'right' \(8 windows\).*shuffle the trials"
                                          r".*allow_single_class: true"):
        build(src, tmp_path / "mine")
    assert not (tmp_path / "mine" / "samples" / "index.parquet").exists()
    with caplog.at_level("WARNING", logger="pipeline"):
        build(src, tmp_path / "mine", splits=SplitConfig(test=("s02",), val_fraction=0.25, val_unit="time",
                                                          allow_single_class=True))
    assert (tmp_path / "mine" / "samples" / "index.parquet").is_file() and "only class 'right'" in caplog.text


def test_class_names_not_in_the_file_list_the_labels_found(tmp_path: Path):
    from pipeline.errors import StageFailed

    src = tmp_path / "src"
    for s in ("s01", "s02"):
        write_trials(src / f"{s}.npz", s, labels=[0, 1] * 16)
    with pytest.raises(StageFailed, match=r"class\(es\) \['left', 'right'\] not found .*labels found: '0' \(32\), "
                                          r"'1' \(32\).*map: \{<label in file>: <class>\}"):
        build(src, tmp_path / "mine")


def test_channels_outside_the_targets_say_how_to_map_them(tmp_path: Path, caplog):
    src = tmp_path / "src"
    write_trials(src / "band.npz", "s01", channels=("AF7", "AF8", "TP9", "TP10"))  # a consumer headband
    write_trials(src / "mixed.npz", "s02", channels=("AF7", "Cz", "X1", "C3"))
    out = tmp_path / "mine"
    ingest(src, out, dataset="mine", fmt="trials_npz", cfg=IngestConfig(min_duration_s=1))
    with caplog.at_level("WARNING", logger="pipeline"):
        rows = {r["recording"]: r for r in standardize(out / "manifest.parquet", out / "montage.parquet")}
    assert rows["band"]["status"] == "rejected"
    assert "add `montage: {channels: [AF7, AF8, TP9, TP10]}`" in rows["band"]["reason"]
    assert "no channel maps" not in rows["band"]["reason"]
    quality = json.loads((out / "montage_quality.json").read_text())
    mixed = quality["recordings"]["mixed"]
    assert mixed["dropped"] == {"AF7": "not-targeted", "X1": "unknown-name"}
    assert "Fp1" in mixed["padded"] and "Cz" not in mixed["padded"]
    assert "channels dropped: AF7 (not-targeted), X1 (unknown-name)" in caplog.text


# --------------------------------------------------------------------------- errors that say how to fix


def test_a_per_trial_subject_array_is_one_line_with_the_fix(tmp_path: Path):
    src = tmp_path / "src"
    write_trials(src / "all.npz", "s01", n=400)
    with np.load(src / "all.npz") as npz:
        fields = dict(npz)
    fields["subject"] = np.array([f"s{i % 7:02d}" for i in range(400)])  # one subject per trial
    np.savez(src / "all.npz", **fields)
    write_trials(src / "good.npz", "s08")
    rows = ingest(src, tmp_path / "out", dataset="mine", fmt="trials_npz", cfg=IngestConfig(min_duration_s=1))
    reason = {r["recording"]: r["reason"] for r in rows}["all"]
    assert "key 'subject': one subject per file, got an array of 400 values (7 distinct: s00, s01" in reason
    assert "save one file per subject" in reason and "\n" not in reason and len(reason) < 400


def test_finetune_cli_refuses_an_unknown_method_naming_the_valid_ones(tmp_path: Path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pipeline", "finetune", str(tmp_path / "samples"), "--out",
                           str(tmp_path / "ft"), "--method", "fulll", "--labels", '{"classes": ["a", "b"]}'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "--method: unknown fine-tuning method 'fulll' (did you mean 'full'?); valid: full, probe" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "ft").exists()


def test_the_schema_allows_exactly_the_config_methods(repo_root: Path):
    import re

    import yaml

    from pipeline.config import ABLATION_PREFIX, FINETUNE_METHODS, ConfigError, check_method

    schema = yaml.safe_load((repo_root / "workflow" / "schemas" / "config.schema.yaml").read_text())
    pattern = schema["properties"]["finetune"]["properties"]["methods"]["items"]["pattern"]
    for method in (*FINETUNE_METHODS, f"{ABLATION_PREFIX}no_mask", "fulll", "ablation:", "ablation:../x", "Full",
                   "tokenizer:ddrvq_time", "tokenizer:labram", "tokenizer:", "tokenizer:vq"):
        try:
            check_method(method, "m")
            ok = True
        except ConfigError:
            ok = False
        assert ok == bool(re.match(pattern, method)), method


# --------------------------------------------------------------------------- the guide's own example


def test_the_guides_trials_npz_example_runs(repo_root: Path, tmp_path: Path):
    """docs/own-data.md's trials_npz entry, as written there, through the schema, the config and ingest → patch."""
    import re

    import yaml

    from pipeline.config import check_schema, parse_config, stage_settings

    guide = (repo_root / "docs" / "own-data.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", guide, flags=re.S)]
    assert {f for b in blocks for f in (e["format"] for e in b["datasets"].values())} == {"trials_npz", "epochs_fif",
                                                                                           "bids"}
    base = yaml.safe_load((repo_root / "config" / "demo.yaml").read_text())
    for block in blocks:  # every example is a valid entry
        check_schema({**base, **block}, repo_root / "workflow" / "schemas" / "config.schema.yaml")
        parse_config({**base, **block}, base_dir=repo_root)
    entry = next(b for b in blocks if "my_mi" in b["datasets"])["datasets"]["my_mi"]
    src = tmp_path / "my_mi"
    for i, s in enumerate(("s01", "s02", "s03")):  # the files the guide describes: y holds 0/1, 2 s trials
        write_trials(src / f"{s}.npz", s, seed=i, labels=[0, 1] * 16)
    raw = {**base, "datasets": {"my_mi": {**entry, "path": str(src)}}}
    check_schema(raw, repo_root / "workflow" / "schemas" / "config.schema.yaml")
    ds = parse_config(raw, base_dir=repo_root).datasets["my_mi"]
    out = tmp_path / "results"
    ingest(ds.path, out, dataset="my_mi", fmt=ds.format, cfg=stage_settings(ds, "ingest"))
    standardize(out / "manifest.parquet", out / "montage.parquet", stage_settings(ds, "montage"))
    preprocess(out / "montage.parquet", out / "preprocessed", stage_settings(ds, "preprocess"))
    patch(out / "preprocessed", out / "samples", stage_settings(ds, "samples"))
    index = pl.read_parquet(out / "samples" / "index.parquet")
    counts = {(r["split"], r["label"]): r["len"] for r in index.group_by("split", "label").len().to_dicts()}
    assert counts == {(split, c): 16 for split in ("train", "val", "test") for c in ("left", "right")}
    assert json.loads((out / "montage_quality.json").read_text())["recordings"] == {}  # nothing dropped or padded


def test_many_dropped_channels_are_counted_by_reason_in_one_short_line():
    """A 64-channel cap read for the 19 standard sites drops 45 channels: the warning counts them by reason with a
    few names each (it listed all 45 on one line); the summary keeps every name."""
    from pipeline.prep.standardize import montage_quality

    names = [f"C{i}" for i in range(45)]
    plan = {"unmapped": [*names, "X1"], "unmapped_reason": ["not-targeted"] * 45 + ["unknown-name"]}
    rows = [{"status": "ok", "recording": "S001R02", "plan": json.dumps(plan), "missing_channels": []}]
    quality = montage_quality(rows)
    [warning] = quality["warnings"]
    assert "channels dropped: 45 not-targeted: C0, C1, C10, C11, C12, C13 …; 1 unknown-name: X1" in warning, warning
    assert len(warning) < 250 and len(quality["recordings"]["S001R02"]["dropped"]) == 46
