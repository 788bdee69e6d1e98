"""Downstream classification metrics, as the papers report them (scikit-learn underneath).

Binary: balanced accuracy at threshold 0.5, AUROC, AUC-PR (average precision).
Multi-class: balanced accuracy, Cohen's κ and weighted F1, all on the arg-max prediction.
Degenerate inputs (one class in `y_true`) do not raise: the metrics that need both classes are NaN and a
warning is logged, so one bad fold never takes a whole table down.
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

log = logging.getLogger(__name__)

Task = Literal["binary", "multiclass"]

PRIMARY = "balanced_accuracy"
BINARY_METRICS = ("balanced_accuracy", "auc_pr", "auroc")
MULTICLASS_METRICS = ("balanced_accuracy", "cohen_kappa", "weighted_f1")
TASK_METRICS: dict[str, tuple[str, ...]] = {"binary": BINARY_METRICS, "multiclass": MULTICLASS_METRICS}
# Column headers of the papers' tables.
METRIC_LABELS = {
    "balanced_accuracy": "Balanced Acc.",
    "auc_pr": "AUC-PR",
    "auroc": "AUROC",
    "cohen_kappa": "Cohen's κ",
    "weighted_f1": "Weighted F1",
}


def _labels(y_true: np.ndarray) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array of class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError("y_true must hold integer class indices")
        y = y.astype(np.int64)
    return y


def _finite_scores(scores: np.ndarray, n: int, what: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[0] != n:
        raise ValueError(f"{what} has {s.shape[0]} rows but y_true has {n}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{what} contains NaN or inf; check the model's outputs")
    return s


def binary_metrics(y_true: np.ndarray, prob_pos: np.ndarray, *, threshold: float = 0.5) -> dict[str, float]:
    """Balanced accuracy (prediction = prob_pos ≥ threshold), AUROC and AUC-PR for labels in {0, 1}.

    `prob_pos` is P(class 1) per sample, shape [n] (an [n, 2] probability matrix is accepted too).
    """
    y = _labels(y_true)
    if np.any((y != 0) & (y != 1)):
        raise ValueError(f"binary labels must be 0 or 1, got {sorted(set(y.tolist()))}")
    p = np.asarray(prob_pos)
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    if p.ndim != 1:
        raise ValueError(f"prob_pos must have shape [n] or [n, 2], got {p.shape}")
    p = _finite_scores(p, len(y), "prob_pos")
    pred = (p >= threshold).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        out = {"balanced_accuracy": float(balanced_accuracy_score(y, pred))}
    if len(np.unique(y)) < 2:
        log.warning("binary metrics: only class %d is present in y_true (%d samples); AUROC and AUC-PR are NaN",
                    int(y[0]), len(y))
        out.update(auroc=float("nan"), auc_pr=float("nan"))
    else:
        out.update(auroc=float(roc_auc_score(y, p)), auc_pr=float(average_precision_score(y, p)))
    return out


def multiclass_metrics(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Balanced accuracy, Cohen's κ and weighted F1 of argmax(prob) against labels in [0, k)."""
    y = _labels(y_true)
    p = np.asarray(prob)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"prob must have shape [n, k] with k ≥ 2, got {p.shape}")
    p = _finite_scores(p, len(y), "prob")
    k = p.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must lie in [0, {k}) for a {k}-column prob, got {y.min()}..{y.max()}")
    pred = p.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # κ's 0/0 when both raters use one class
        out = {
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "cohen_kappa": float(cohen_kappa_score(y, pred, labels=np.arange(k))),
            "weighted_f1": float(f1_score(y, pred, labels=np.arange(k), average="weighted", zero_division=0)),
        }
    if len(np.unique(y)) < 2:
        log.warning("multiclass metrics: only class %d is present in y_true (%d samples); balanced accuracy "
                    "covers that class alone and κ may be NaN", int(y[0]), len(y))
    return out


def task_metrics(task: Task | str, y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Dispatch on the task: `scores` is P(positive) [n] for binary, class probabilities [n, k] otherwise."""
    if task == "binary":
        return binary_metrics(y_true, scores)
    if task == "multiclass":
        return multiclass_metrics(y_true, scores)
    raise ValueError(f"unknown task {task!r}; expected 'binary' or 'multiclass'")
