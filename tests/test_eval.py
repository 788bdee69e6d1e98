"""Evaluation: metrics against hand-computed cases, the band-power baseline, and the tables stage."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import scipy.stats
import pytest

from pipeline.eval.baseline import C_GRID, band_power_features, fit_logreg_baseline
from pipeline.eval.metrics import PRIMARY, binary_metrics, multiclass_metrics, task_metrics
from pipeline.eval.tables import format_cell, load_paper_tables
from pipeline.stages import tables as tables_stage
from pipeline.stages.common import StageFailed

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "paper_tables.yaml"


# ------------------------------------------------------------------------------------------------ metrics

def test_binary_metrics_hand_computed():
    # y = 0 0 0 | 1 1 1 with P(1) = .1 .4 .6 | .35 .8 .9
    # threshold 0.5 → pred 0 0 1 | 0 1 1: specificity 2/3, sensitivity 2/3 → BAcc = 2/3.
    # AUROC = P(score of a positive > score of a negative): .35 beats {.1}; .8 and .9 beat all three → 7/9.
    # AP: ranked .9+ .8+ .6- .4- .35+ .1-; precision at each positive: 1/1, 2/2, 3/5 → (1 + 1 + .6)/3 = 13/15.
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.4, 0.6, 0.35, 0.8, 0.9])
    m = binary_metrics(y, p)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["auroc"] == pytest.approx(7 / 9)
    assert m["auc_pr"] == pytest.approx(13 / 15)
    # an [n, 2] probability matrix gives the same numbers; the dispatcher too
    assert binary_metrics(y, np.stack([1 - p, p], axis=1)) == pytest.approx(m)
    assert task_metrics("binary", y, p) == pytest.approx(m)


def test_multiclass_metrics_hand_computed():
    # true 0 0 0 0 1 1 1 2 2 2, pred 0 0 0 1 1 1 2 2 2 0 → confusion rows (true) [3 1 0], [0 2 1], [1 0 2].
    # BAcc = (3/4 + 2/3 + 2/3)/3 = 25/36. p_o = 7/10; marginals true (4,3,3), pred (4,3,3) → p_e = .34;
    # κ = (.7 − .34)/(1 − .34) = 6/11. F1 per class .75, 2/3, 2/3 weighted by support 4,3,3 → (3 + 2 + 2)/10 = .7.
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
    prob = np.full((10, 3), 0.1)
    prob[np.arange(10), pred] = 0.8
    m = multiclass_metrics(y, prob)
    assert m["balanced_accuracy"] == pytest.approx(25 / 36)
    assert m["cohen_kappa"] == pytest.approx(6 / 11)
    assert m["weighted_f1"] == pytest.approx(0.7)
    assert task_metrics("multiclass", y, prob) == pytest.approx(m)


def test_single_class_does_not_crash(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.eval.metrics"):
        m = binary_metrics(np.ones(4, int), np.array([0.2, 0.7, 0.9, 0.6]))
    assert m["balanced_accuracy"] == pytest.approx(3 / 4)
    assert math.isnan(m["auroc"]) and math.isnan(m["auc_pr"])
    assert "AUROC and AUC-PR are NaN" in caplog.text
    m = multiclass_metrics(np.zeros(3, int), np.eye(3)[[0, 0, 1]])
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics([0, 1], [0.2, float("nan")])
    with pytest.raises(ValueError, match="0 or 1"):
        binary_metrics([0, 2], [0.2, 0.3])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        multiclass_metrics([0, 3], np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="unknown task"):
        task_metrics("regression", [0, 1], [0.1, 0.9])


# ----------------------------------------------------------------------------------------------- baseline

def _sines(rng, n: int, n_ch: int, seconds: float, freq_by_class: dict[int, float], labels: np.ndarray,
           amp: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * 200)) / 200.0
    x = rng.standard_normal((n, n_ch, len(t)))
    for i, y in enumerate(labels):
        if freq_by_class.get(int(y)):
            x[i, 0] += amp * np.sin(2 * np.pi * freq_by_class[int(y)] * t + rng.uniform(0, 2 * np.pi))
    return x


@pytest.mark.parametrize("seconds", [1.0, 4.0])
def test_band_power_features_locate_a_sinusoid(seconds):
    rng = np.random.default_rng(0)
    x = _sines(rng, 2, 3, seconds, {0: 10.0}, np.array([0, 0]), amp=20.0)
    valid = np.array([[True, True, False], [True, True, True]])
    f = band_power_features(x, 200.0, valid)
    assert f.shape == (2, 15) and f.dtype == np.float32
    per_band = f.reshape(2, 3, 5)
    assert per_band[:, 0].argmax(axis=1).tolist() == [2, 2]  # alpha (8–13 Hz) on the channel with 10 Hz
    assert np.all(per_band[0, 2] == 0)  # the padding channel
    assert np.all(per_band[1, 2] != 0)


def test_baseline_separates_on_one_band():
    # Classes differ only in power at 6 Hz (theta) vs 20 Hz (beta) vs none on channel 0: exactly separable.
    rng = np.random.default_rng(1)
    freq = {0: 0.0, 1: 6.0, 2: 20.0}

    def split(n: int, task: str):
        y = np.arange(n) % (2 if task == "binary" else 3)
        return band_power_features(_sines(rng, n, 4, 4.0, freq, y)), y

    for task in ("binary", "multiclass"):
        (xtr, ytr), (xva, yva), (xte, yte) = split(120, task), split(60, task), split(60, task)
        res = fit_logreg_baseline(xtr, ytr, xva, yva, xte, yte, task=task, seed=0, dataset="synthetic")
        assert res["test"][PRIMARY] == 1.0
        assert res["method"] == "logreg-bandpower" and res["task"] == task and res["n_test"] == 60
        assert res["hyperparameters"]["C"] in C_GRID
        assert set(res["val_by_C"]) == {f"{c:g}" for c in C_GRID}
        if task == "binary":
            assert res["test"]["auroc"] == 1.0


def test_the_regularisation_is_chosen_on_the_configured_primary_metric():
    """finetune.primary_metric chooses C as it chooses the networks' epoch (the baselines used balanced accuracy
    whatever the config said, while the setting still reran them)."""
    rng = np.random.default_rng(2)

    def split(n: int):
        return band_power_features(rng.standard_normal((n, 4, 200))), rng.integers(0, 2, n)

    data = [*split(200), *split(100), *split(100)]
    for primary in ("auroc", "balanced_accuracy"):
        res = fit_logreg_baseline(*data, task="binary", seed=0, primary=primary)
        by_c = {float(c): val[primary] for c, val in res["val_by_C"].items()}
        best = max(by_c.values())
        assert res["hyperparameters"]["C"] == min(c for c, v in by_c.items() if v == best), (primary, by_c)
        assert res["primary_metric"] == primary


def test_baseline_on_noise_is_near_chance():
    rng = np.random.default_rng(2)

    def split(n: int):
        return band_power_features(rng.standard_normal((n, 4, 200))), rng.integers(0, 2, n)

    (xtr, ytr), (xva, yva), (xte, yte) = split(300), split(150), split(400)
    res = fit_logreg_baseline(xtr, ytr, xva, yva, xte, yte, task="binary", seed=0)
    assert abs(res["test"]["balanced_accuracy"] - 0.5) <= 0.15
    assert abs(res["test"]["auroc"] - 0.5) <= 0.15


# ------------------------------------------------------------------------------------------------- tables

# dataset → (task, {method: {metric: [seed0, seed1, seed2]}})
FAKE = {
    "tuab": ("binary", {
        "brainrvq": {"balanced_accuracy": [0.80, 0.82, 0.84], "auc_pr": [0.90, 0.90, 0.90],
                     "auroc": [0.88, 0.89, 0.93]},
        "scratch": {"balanced_accuracy": [0.70, 0.74, 0.72], "auc_pr": [0.80, 0.81, 0.82], "auroc": [0.75, 0.76, 0.77]},
    }),
    "tuev": ("multiclass", {
        "brainrvq": {"balanced_accuracy": [0.60, 0.62, 0.64], "cohen_kappa": [0.50, 0.55, 0.60],
                     "weighted_f1": [0.80, 0.81, 0.82]},
        "scratch": {"balanced_accuracy": [0.40, 0.40, 0.46], "cohen_kappa": [0.30, 0.33, 0.36],
                    "weighted_f1": [0.70, 0.70, 0.70]},
    }),
}


def _write_run(root: Path, dataset: str, method: str, seed: int, task: str, test: dict) -> Path:
    path = root / dataset / method / f"seed-{seed}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "dataset": dataset, "method": method, "seed": seed, "task": task,
        "classes": ["normal", "abnormal"] if task == "binary" else [f"c{i}" for i in range(6)],
        "primary_metric": "balanced_accuracy", "best_epoch": 3, "val": dict(test), "test": dict(test),
        "n_test": 100, "pretrained": "results/demo/pretrain/run0/model.safetensors" if method == "brainrvq" else None,
    }))
    return path


def _fake_tree(root: Path) -> None:
    for dataset, (task, methods) in FAKE.items():
        for method, metrics in methods.items():
            for seed in range(3):
                _write_run(root, dataset, method, seed, task, {k: v[seed] for k, v in metrics.items()})


def _run_stage(*argv: str) -> None:
    parser = argparse.ArgumentParser()
    tables_stage.add_arguments(parser)
    tables_stage.main(parser.parse_args(list(argv)))


def _summary(out: Path) -> dict[tuple[str, str, str], dict]:
    with open(out / "summary.csv") as fh:
        return {(r["dataset"], r["method"], r["metric"]): r for r in csv.DictReader(fh)}


def _section(md: str, title_start: str) -> str:
    return next(s for s in md.split("\n## ") if s.startswith(title_start))


def test_tables_stage(tmp_path):
    root, out = tmp_path / "results" / "run1" / "finetune", tmp_path / "tables"
    _fake_tree(root)
    _run_stage(str(root), "--out", str(out), "--paper", str(PAPER))
    assert sorted(p.name for p in out.iterdir()) == ["finetune_curves.png", "paired.csv", "results.csv", "results.md",
                                                     "results.png", "summary.csv", "table.md", "table.rst"]

    with open(out / "results.csv") as fh:
        long = list(csv.DictReader(fh))
    assert len(long) == 2 * 2 * 3 * 3  # datasets × methods × seeds × metrics
    assert set(long[0]) == {"dataset", "method", "seed", "metric", "value"}

    summary = _summary(out)
    for dataset, (_, methods) in FAKE.items():
        for method, metrics in methods.items():
            for metric, values in metrics.items():
                row = summary[(dataset, method, metric)]
                assert float(row["mean"]) == pytest.approx(np.mean(values), abs=1e-12)
                assert float(row["std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-12)
                assert int(row["n_seeds"]) == 3
    # hand-computed: .80 .82 .84 → mean .82, sample std .02 (a population std would be .0163)
    assert float(summary[("tuab", "brainrvq", "balanced_accuracy")]["std"]) == pytest.approx(0.02, abs=1e-12)
    assert float(summary[("tuab", "brainrvq", "auc_pr")]["std"]) == 0.0

    md = (out / "results.md").read_text()
    assert "run `run1`" in md and "ddof = 1" in md and "sha256" in md
    tuab, tuev = _section(md, "TUAB"), _section(md, "TUEV")
    assert "| Method | Seeds | Balanced Acc. | AUC-PR | AUROC | Source |" in tuab
    assert "| Method | Seeds | Balanced Acc. | Cohen's κ | Weighted F1 | Source |" in tuev
    assert "κ" not in tuab and "AUROC" not in tuev
    assert "| brainrvq | 3 | 0.8200 ± 0.0200 | 0.9000 ± 0.0000 | 0.9000 ± 0.0265 | this run |" in tuab
    assert ("| LaBraM-Base (published) | 5 | 0.8140 ± 0.0019 | 0.8965 ± 0.0016 | 0.9022 ± 0.0009 | "
            "LaBraM (ICLR 2024, arXiv:2405.18765), Table 1 |") in tuab
    assert "| CBraMod (published) | 5 | 0.6671 ± 0.0107 | 0.6772 ± 0.0096 | 0.8342 ± 0.0064 |" in tuev
    # this run's rows come before the published ones
    assert tuab.index("| scratch |") < tuab.index("(published)")

    table = (out / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| Method"))
    assert "TUAB (abnormal, 2-class): AUROC" in header and "TUEV (events, 6-class): Cohen's κ" in header
    assert "| CBraMod (published) |" in table

    # a seed that differs changes the std (and the mean), and nothing else
    _write_run(root, "tuab", "brainrvq", 2, "binary", {"balanced_accuracy": 0.90, "auc_pr": 0.90, "auroc": 0.93})
    _run_stage(str(root), "--out", str(out), "--paper", str(PAPER))
    changed = _summary(out)
    row = changed[("tuab", "brainrvq", "balanced_accuracy")]
    assert float(row["mean"]) == pytest.approx(np.mean([0.80, 0.82, 0.90]), abs=1e-12)
    assert float(row["std"]) == pytest.approx(np.std([0.80, 0.82, 0.90], ddof=1), abs=1e-12)
    assert float(row["std"]) != pytest.approx(0.02)
    assert changed[("tuev", "scratch", "cohen_kappa")] == summary[("tuev", "scratch", "cohen_kappa")]


def test_tables_single_seed_nan_and_filter(tmp_path):
    root, out = tmp_path / "finetune", tmp_path / "tables"
    _write_run(root, "chbmit", "brainrvq", 0, "binary", {"balanced_accuracy": 0.7, "auc_pr": 0.3, "auroc": 0.8})
    _write_run(root, "chbmit", "scratch", 0, "binary", {"balanced_accuracy": 0.6, "auc_pr": 0.2, "auroc": 0.7})
    _write_run(root, "chbmit", "scratch", 1, "binary", {"balanced_accuracy": 0.5, "auc_pr": float("nan"),
                                                        "auroc": float("nan")})
    _write_run(root, "tuab", "scratch", 0, "binary", {"balanced_accuracy": 0.7, "auc_pr": 0.8, "auroc": 0.8})
    _run_stage(str(root), "--out", str(out), "--datasets", "chbmit")  # no --paper: our rows only
    md = (out / "results.md").read_text()
    assert "| brainrvq | 1 | 0.7000 ± n/a | 0.3000 ± n/a | 0.8000 ± n/a | this run |" in md
    # the NaN AUROC of seed 1 is left out of the mean: one finite value → "± n/a"
    assert "| scratch | 2 | 0.5500 ± 0.0707 | 0.2000 ± n/a | 0.7000 ± n/a | this run |" in md
    assert "tuab" not in (out / "summary.csv").read_text() and "(published)" not in md
    assert format_cell(float("nan"), 0.1, 3) == "—"

    (tmp_path / "empty").mkdir()
    with pytest.raises(StageFailed, match="no metrics.json"):
        _run_stage(str(tmp_path / "empty"), "--out", str(out))
    with pytest.raises(StageFailed, match="not a folder"):
        _run_stage(str(tmp_path / "missing"), "--out", str(out))
    _write_run(root / "chbmit" / "again", "chbmit", "brainrvq", 0, "binary", {"balanced_accuracy": 0.1})
    with pytest.raises(StageFailed, match="both hold chbmit / brainrvq / seed 0"):
        _run_stage(str(root), "--out", str(out))


def test_baseline_result_is_a_table_row(tmp_path):
    rng = np.random.default_rng(3)
    splits = [(band_power_features(rng.standard_normal((n, 2, 200))), np.arange(n) % 2) for n in (40, 20, 20)]
    res = fit_logreg_baseline(*splits[0], *splits[1], *splits[2], task="binary", seed=0, dataset="tuab",
                              classes=["normal", "abnormal"])
    path = tmp_path / "finetune" / "tuab" / res["method"] / "seed-0" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(res))
    _run_stage(str(tmp_path / "finetune"), "--out", str(tmp_path / "tables"))
    assert "| logreg-bandpower | 1 |" in (tmp_path / "tables" / "results.md").read_text()


def test_paper_tables_yaml_is_complete():
    paper = load_paper_tables(PAPER)
    assert {"tuab", "tuev", "chbmit", "physionet_mi", "mental_arithmetic"} <= set(paper)
    for name, ds in paper.items():
        assert ds.task in ("binary", "multiclass")
        assert ds.rows, name
        for row in ds.rows:
            assert "Table" in row.source and "arXiv" in row.source
            assert set(row.values) == set(ds.metrics), (name, row.method)
            for mean, std in row.values.values():
                assert 0 < mean < 1 and (std is None or 0 <= std < 0.1)
    assert paper["tuab"].rows[0].values["balanced_accuracy"] == (0.8140, 0.0019)


def test_paired_differences_are_seed_paired_with_a_t_interval(tmp_path):
    """full − scratch and full − the best baseline (by validation), per dataset and metric, paired by seed."""
    root, out = tmp_path / "finetune", tmp_path / "tables"
    test = {"full": [0.8, 0.7, 0.9], "scratch": [0.6, 0.65, 0.7], "raw_logreg": [0.9, 0.9, 0.9],
            "eegnet": [0.6, 0.5, 0.7]}
    val = {"full": 0.8, "scratch": 0.6, "raw_logreg": 0.7, "eegnet": 0.75}  # eegnet is best on validation
    for method, values in test.items():
        for seed, v in enumerate(values):
            path = _write_run(root, "demo", method, seed, "binary", {"balanced_accuracy": v, "auroc": v})
            rec = json.loads(path.read_text())
            path.write_text(json.dumps({**rec, "val": {"balanced_accuracy": val[method], "auroc": val[method]}}))
    _run_stage(str(root), "--out", str(out))
    with open(out / "paired.csv") as fh:
        rows = {(r["comparison"], r["metric"]): r for r in csv.DictReader(fh)}
    scratch = rows[("full − scratch", "balanced_accuracy")]
    d = np.array([0.2, 0.05, 0.2])
    half = scipy.stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert float(scratch["mean"]) == pytest.approx(0.15) and int(scratch["n_seeds"]) == 3
    assert float(scratch["lo"]) == pytest.approx(0.15 - half) and float(scratch["hi"]) == pytest.approx(0.15 + half)
    best = rows[("full − best baseline", "balanced_accuracy")]
    assert best["against"] == "eegnet" and float(best["mean"]) == pytest.approx(0.2)
    assert float(best["lo"]) == pytest.approx(0.2) == float(best["hi"])  # constant differences: zero width
    md = (out / "results.md").read_text()
    assert "## Paired differences" in md and f"+0.1500 [{0.15 - half:+.4f}, {0.15 + half:+.4f}]" in md
