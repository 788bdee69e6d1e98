"""Labelled downstream windows, fine-tuning, the leakage guard and layer-wise lr decay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from pipeline.config import FinetuneSection, LabelConfig, PatchConfig, PatchSettings, SplitConfig
from pipeline.data.windows import WindowIndex
from pipeline.models.backbone import Backbone, BackboneConfig
from pipeline.models.classifier import Classifier, layer_decay_groups
from pipeline.prep.shards import patch
from pipeline.prep.windows import plan_labelled_windows
from pipeline.train.finetune import LeakageError, check_leakage, finetune

FACE_HOUSE = LabelConfig(mode="events", classes=("face", "house"), window_s=1.0,
                         map={"face-upright": "face", "face-inverted": "face", "house-upright": "house",
                              "house-inverted": "house"})


def test_event_windows_start_at_onset_plus_offset_and_skip_bad_seconds():
    cfg = PatchConfig(window_s=2.0)
    labels = LabelConfig(mode="events", classes=("a", "b"), offset_s=-0.5, map={"A": "a"})
    bad = np.zeros(20, dtype=bool)
    bad[10] = True  # second 10 is rejected
    events = [(1.0, 0.0, "A"), (3.25, 0.0, "b"), (9.7, 0.0, "b"), (5.0, 0.0, "other"), (19.0, 0.0, "a"), (0.2, 0, "a")]
    plan = plan_labelled_windows(20 * 200, bad, cfg, labels, 200.0, events, "")
    # 1.0-0.5 → 100; 3.25-0.5 → 550; 9.7-0.5 → 1840 touches second 10 → dropped; "other" is no class;
    # 19.0-0.5 → 3700 runs past the end; 0.2-0.5 < 0 → outside the recording
    assert plan.starts.tolist() == [100, 550]
    assert plan.labels == ["a", "b"]
    assert plan.n_rejected == 1


def test_recording_and_interval_labels_tile_the_recording():
    cfg = PatchConfig(window_s=2.0)
    bad = np.zeros(10, dtype=bool)
    rec = plan_labelled_windows(10 * 200, bad, cfg, LabelConfig(mode="recording", classes=("normal", "abnormal")),
                                200.0, [], "abnormal")
    assert rec.starts.tolist() == [0, 400, 800, 1200, 1600] and set(rec.labels) == {"abnormal"}
    unlabelled = plan_labelled_windows(10 * 200, bad, cfg, LabelConfig(mode="recording", classes=("x", "y")),
                                       200.0, [], "")
    assert len(unlabelled.starts) == 0
    intervals = LabelConfig(mode="intervals", classes=("background", "seizure"), background="background")
    plan = plan_labelled_windows(10 * 200, bad, cfg, intervals, 200.0, [(3.0, 2.5, "seizure")], "")
    # windows [0,2) [2,4) [4,6) [6,8) [8,10): the seizure 3.0–5.5 s overlaps the 2nd and 3rd
    assert plan.labels == ["background", "seizure", "seizure", "background", "background"]
    dropped = plan_labelled_windows(10 * 200, bad, cfg, LabelConfig(mode="intervals", classes=("seizure", "x")),
                                    200.0, [(3.0, 2.5, "seizure")], "")
    assert dropped.starts.tolist() == [400, 800]  # no background class: unlabelled windows are dropped


def test_layer_wise_lr_decay_and_probe_freezing():
    backbone = Backbone(BackboneConfig.demo(vocab_size=8, max_patches=4, depth=3, embed_dim=16, heads=2))
    model = Classifier(backbone, 2)
    groups = layer_decay_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    by_name = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_name[id(named["head.weight"])]["lr"] == 1.0
    assert by_name[id(named["backbone.encoder.blocks.2.attn.qkv.weight"])]["lr"] == 0.5
    assert by_name[id(named["backbone.encoder.blocks.0.attn.qkv.weight"])]["lr"] == 0.125
    assert by_name[id(named["backbone.mask_token"])]["lr"] == 0.0625
    assert by_name[id(named["backbone.mask_token"])]["weight_decay"] == 0.0
    probe = Classifier(Backbone(backbone.config), 2)
    groups = layer_decay_groups(probe, lr=1.0, weight_decay=0.0, layer_decay=1.0, probe=True)
    trained = {id(p) for g in groups for p in g["params"]}
    assert trained == {id(p) for n, p in probe.named_parameters() if not n.startswith("backbone.")}
    assert not any(p.requires_grad for p in probe.backbone.parameters())


# --------------------------------------------------------------------------- on the real demo task


@pytest.fixture(scope="module")
def face_house(demo_shards, tmp_path_factory) -> Path:
    """Face vs house, 1 s windows at stimulus onset: s01 train (last 20 % validation), s02 test."""
    ingested = demo_shards[0].parent
    out = tmp_path_factory.mktemp("samples") / "samples"
    settings = PatchSettings(patch=PatchConfig(window_s=1.0, chunk_windows=64, windows_per_shard=1024),
                             splits=SplitConfig(test=("s02",), val_fraction=0.2, val_unit="time"), labels=FACE_HOUSE)
    patch(ingested / "preprocessed", out, settings)
    return out


def test_face_house_samples_follow_the_bids_events(face_house: Path, bids_root: Path):
    index = pl.read_parquet(face_house / "index.parquet")
    counts = {(r["subject"], r["split"]): r["len"] for r in index.group_by("subject", "split").len().to_dicts()}
    assert set(counts) == {("s01", "train"), ("s01", "val"), ("s02", "test")}
    assert abs(counts[("s01", "val")] / (counts[("s01", "train")] + counts[("s01", "val")]) - 0.2) < 0.01
    # validation is the end of the recording: every val window starts after every train window
    s01 = index.filter(pl.col("subject") == "s01")
    assert s01.filter(pl.col("split") == "val")["start_s"].min() > s01.filter(pl.col("split") == "train")["start_s"].max()
    events = pl.read_csv(next(bids_root.glob("sub-s02/eeg/*_events.tsv")), separator="\t", encoding="utf8-lossy")
    stimuli = events.filter(pl.col("trial_type").is_in(list(FACE_HOUSE.map)))
    test = index.filter(pl.col("split") == "test").sort("start_s")
    assert len(test) <= len(stimuli) and len(test) > 0.95 * len(stimuli)  # a few dropped for amplitude
    onsets = np.sort(stimuli["onset"].to_numpy())
    nearest = np.abs(onsets[:, None] - test["start_s"].to_numpy()[None]).min(0)
    assert nearest.max() <= 0.5 / 200 + 1e-9  # each window starts at its stimulus (to the 200 Hz sample)


def test_leakage_guard_stops_on_a_planted_overlap(face_house: Path):
    test_index = WindowIndex.from_shard_dirs([face_house], splits=["test"])
    clean = {"corpus": [{"content_sha256": "0" * 64, "recording": "other"}]}
    check_leakage(clean, test_index, where="demo")
    from pipeline.store.zarr_store import open_shard

    planted_hash = open_shard(test_index.table["shard_path"][0]).attrs["content_sha256"]
    planted = {"corpus": [*clean["corpus"], {"content_sha256": planted_hash, "recording": "sub-s02 in pretraining"}]}
    with pytest.raises(LeakageError, match="sub-s02_task-faceO_eeg.*sub-s02 in pretraining"):
        check_leakage(planted, test_index, where="demo")
    with pytest.raises(LeakageError, match="does not list its corpus"):
        check_leakage({}, test_index, where="demo")


def _tiny_pretrained(folder: Path, **backbone) -> Path:
    from pipeline.models.pretrain import PretrainConfig, PretrainModel
    from pipeline.montage import load_vocabulary
    from pipeline.store import model_file

    torch.manual_seed(0)
    cfg = PretrainConfig(backbone=BackboneConfig.demo(vocab_size=len(load_vocabulary()), embed_dim=32, depth=2,
                                                      heads=4, **backbone), codebook_size=16)
    folder.mkdir(parents=True)
    model_file.publish(PretrainModel(cfg), folder, kind="pretrain", config=cfg.to_dict(),
                       extra={"tokenizer_fingerprint": "none"})
    (folder / "metrics.json").write_text(json.dumps({"corpus": []}))
    return folder


@pytest.mark.slow
def test_seeds_give_different_runs_and_the_best_epoch_is_chosen_on_validation(face_house: Path, tmp_path: Path):
    pretrained = _tiny_pretrained(tmp_path / "pretrained")
    section = FinetuneSection(epochs=2, batch_size=64, lr=2e-3)
    results = [finetune(face_house, tmp_path / f"seed-{s}", section, FACE_HOUSE, method="full", seed=s,
                        pretrained=pretrained, dataset="demo_bids") for s in (0, 1)]
    assert results[0]["test"] != results[1]["test"]
    for r, s in zip(results, (0, 1)):
        records = [json.loads(x) for x in (tmp_path / f"seed-{s}" / "metrics.jsonl").read_text().splitlines()]
        held = [x for x in records if x["kind"] == "heldout"]
        assert [x["epoch"] for x in held] == [1, 2]
        best = max(held, key=lambda x: (x["val"]["balanced_accuracy"], -x["epoch"]))
        assert r["best_epoch"] == best["epoch"] and r["test"] == best["test"]
        assert set(r["test"]) == {"balanced_accuracy", "auroc", "auc_pr"}
        assert (tmp_path / f"seed-{s}" / "curves.png").is_file()
        predictions = pl.read_parquet(tmp_path / f"seed-{s}" / "test_predictions.parquet")
        assert len(predictions) == r["n_test"] and predictions["p_house"].is_between(0, 1).all()
    floor = finetune(face_house, tmp_path / "logreg", section, FACE_HOUSE, method="logreg", seed=0, pretrained=None)
    assert 0.3 < floor["test"]["balanced_accuracy"] < 0.8


@pytest.mark.slow
def test_scratch_retrains_when_the_architecture_changes(face_house: Path, tmp_path: Path):
    """`scratch` takes only the architecture from the pretrained folder: a rerun with another architecture must
    not resume the old run's checkpoints."""
    section = FinetuneSection(epochs=1, batch_size=64, lr=2e-3)
    out = tmp_path / "scratch"
    first = finetune(face_house, out, section, FACE_HOUSE, method="scratch", seed=0,
                     pretrained=_tiny_pretrained(tmp_path / "a"), dataset="demo_bids")
    finetune(face_house, out, section, FACE_HOUSE, method="scratch", seed=0,
             pretrained=_tiny_pretrained(tmp_path / "b", time_bias_max_slope=0.0), dataset="demo_bids")
    assert list(tmp_path.glob("scratch/checkpoints.stale-*")), "the old architecture's checkpoints were resumed"
    assert first["n_train"] > 0


@pytest.mark.slow
def test_baselines_run_on_the_same_samples_splits_and_selection(face_house: Path, tmp_path: Path):
    """The classical and braindecode baselines are fine-tuning methods: same windows, splits, seed and
    selection rule (C or epoch on validation), same metrics; none needs a pretrained model."""
    from pipeline.config import BASELINE_METHODS

    section = FinetuneSection(epochs=1, batch_size=64, deep_lr=2e-3)
    results = {m: finetune(face_house, tmp_path / m, section, FACE_HOUSE, method=m, seed=0, pretrained=None,
                           dataset="demo_bids") for m in ("raw_logreg", "tangent_logreg", "eegnet", "shallow_fbcsp")}
    n = {(r["n_train"], r["n_val"], r["n_test"]) for r in results.values()}
    assert len(n) == 1, n  # the same windows for every method
    for m in ("raw_logreg", "tangent_logreg"):
        r = results[m]
        assert r["method"] == m and r["dataset"] == "demo_bids" and r["classes"] == ["face", "house"]
        chosen = r["hyperparameters"]["C"]
        assert chosen in section.c_grid
        assert r["val"] == max(r["val_by_C"].values(), key=lambda v: v["balanced_accuracy"])
    for m in ("eegnet", "shallow_fbcsp"):
        r = results[m]
        assert r["method"] == m and r["pretrained"] is None and r["epochs"] == 1 and r["best_epoch"] == 1
        assert set(r["test"]) == {"balanced_accuracy", "auroc", "auc_pr"}
    assert set(BASELINE_METHODS) >= set(results)
    print({m: round(r["test"]["balanced_accuracy"], 3) for m, r in results.items()})


@pytest.mark.parametrize("method", ["eegnet", pytest.param("labram_scratch", marks=pytest.mark.slow)])
def test_deep_baselines_read_windows_and_ignore_padding_channels(method: str):
    """braindecode models behind the (x, ch) call of the fine-tuning code: [B, C, P, T] windows in, one logit row
    per window out, and a padding slot (ch = −1) cannot leak into the prediction."""
    from pipeline.train.deep_baselines import build_window_model

    torch.manual_seed(0)
    net, identity = build_window_model(method, n_chans=4, n_times=400, n_outputs=3)
    net.eval()
    x, ch = torch.randn(2, 4, 2, 200), torch.tensor([[0, 1, 2, -1], [0, 1, 2, -1]])
    noisy = x.clone()
    noisy[:, 3] = 1e3 * torch.randn(2, 2, 200)
    with torch.no_grad():
        out = net(x, ch)
        assert out.shape == (2, 3) and torch.equal(out, net(noisy, ch))
        assert not torch.equal(out, net(noisy, torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])))
    assert identity["architecture"].startswith("braindecode.models.") and identity["n_times"] == 400
