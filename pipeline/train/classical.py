"""Classical fine-tuning methods: the same samples, splits, seed, selection rule and metrics as the neural ones.

    logreg          log band powers (1–45 Hz, five bands) + logistic regression — the spectral floor
    raw_logreg      the window's samples block-averaged to `finetune.raw_sfreq` + logistic regression
    tangent_logreg  OAS covariance → pyriemann tangent space + logistic regression

Each chooses its regularisation C from `finetune.c_grid` on the validation split's primary metric, then reports
the test split at that C (pipeline.eval.baseline.fit_logreg_baseline).
"""

from __future__ import annotations

import numpy as np

from pipeline.config import SFREQ, FinetuneSection, LabelConfig

CLASSICAL = ("logreg", "raw_logreg", "tangent_logreg")
# the tables' row name (metrics.json "method"); logreg keeps the name its results have always had
LABELS = {"logreg": "logreg-bandpower", "raw_logreg": "raw_logreg", "tangent_logreg": "tangent_logreg"}


def window_arrays(split, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows of a split as x [n, C, P·T] float32 and valid [n, C] (channel slot holds a real channel)."""
    from pipeline.data.windows import WindowBatches

    rows = np.arange(len(split.index))
    data = WindowBatches(split.index, [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)],
                         fields=("x", "ch"))
    xs, valid = [], []
    for i in range(len(data)):
        b = data[i]
        x = b["x"].numpy()
        xs.append(x.reshape(*x.shape[:2], -1))
        valid.append(b["ch"].numpy() >= 0)
    return np.concatenate(xs), np.concatenate(valid)


def features(method: str, x: np.ndarray, valid: np.ndarray, section: FinetuneSection) -> np.ndarray:
    from pipeline.eval.baseline import band_power_features, raw_window_features

    if method == "logreg":
        return band_power_features(x, sfreq=SFREQ, valid=valid)
    if method == "raw_logreg":
        return raw_window_features(x, sfreq=SFREQ, target_sfreq=section.raw_sfreq, valid=valid)
    if method == "tangent_logreg":
        x = np.where(valid[:, :, None], x, 0.0).astype(np.float64)
        return np.nan_to_num(x)  # the pipeline estimates the covariances itself
    raise ValueError(f"not a classical method: {method!r} (known: {CLASSICAL})")


def run_classical(method: str, splits: dict, labels: LabelConfig, section: FinetuneSection, seed: int) -> dict:
    """Fit `method` on splits["train"], choose C on "val", score "test": a metrics.json-shaped dict."""
    from pipeline.eval.baseline import fit_logreg_baseline, tangent_space

    feats = {}
    for name in ("train", "val", "test"):
        x, valid = window_arrays(splits[name], section.batch_size)
        feats[name] = features(method, x, valid, section)
    if method == "tangent_logreg":  # the tangent space at the training windows' mean, fitted once for every C
        tangent = tangent_space(feats["train"])
        feats = {name: tangent.transform(f) for name, f in feats.items()}
    task = "binary" if len(labels.classes) == 2 else "multiclass"
    return fit_logreg_baseline(feats["train"], splits["train"].y, feats["val"], splits["val"].y, feats["test"],
                               splits["test"].y, task=task, seed=seed, cs=section.c_grid, classes=labels.classes,
                               method=LABELS[method], primary=section.primary_metric)
