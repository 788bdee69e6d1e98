"""Classical baselines: features of the preprocessed window → standardized logistic regression, C on validation.

- band powers (`band_power_features`): log power in five 1–45 Hz bands per channel — a spectral floor; it discards
  slow potential shifts below 1 Hz, which some tasks are about.
- the raw window (`raw_window_features`): every channel's samples block-averaged down to a low rate, so the
  regression sees the waveform itself (the slow shifts included);
- Riemannian tangent space (`tangent_space`): a shrunk spatial covariance per window, mapped by pyriemann
  to the tangent space at the training set's Riemannian mean (the BCI field's standard), then the regression.

`fit_logreg_baseline` returns a dict shaped like a fine-tuning run's metrics.json, so the tables stage reads them
all the same way.
"""

from __future__ import annotations

import logging
import warnings
from typing import Sequence

import numpy as np
from scipy.signal import periodogram, welch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.eval.metrics import PRIMARY, task_metrics

log = logging.getLogger(__name__)

# name, [low, high) in Hz
BANDS: tuple[tuple[str, float, float], ...] = (
    ("delta", 1.0, 4.0),
    ("theta", 4.0, 8.0),
    ("alpha", 8.0, 13.0),
    ("beta", 13.0, 30.0),
    ("gamma", 30.0, 45.0),
)
C_GRID: tuple[float, ...] = (1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0)
_EPS = 1e-12


def _psd(x: np.ndarray, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided PSD along the last axis: one Hann-windowed rFFT for windows ≤ 1 s, Welch (1 s, 50 %) otherwise."""
    nperseg = int(round(sfreq))
    if x.shape[-1] <= nperseg:
        return periodogram(x, fs=sfreq, window="hann", detrend="constant", axis=-1)
    return welch(x, fs=sfreq, nperseg=nperseg, noverlap=nperseg // 2, axis=-1, detrend="constant")


def band_power_features(x: np.ndarray, sfreq: float = 200.0, valid: np.ndarray | None = None,
                        *, bands: Sequence[tuple[str, float, float]] = BANDS) -> np.ndarray:
    """log10 band powers: x [n, C, T] → [n, C·len(bands)], channel-major (c0's bands, then c1's, …).

    `valid` [n, C] (bool) marks real channels; padding channels (False) get 0 features. Channel slots must mean
    the same electrode in every window (the shards' fixed per-dataset channel order does that).
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must be [n, channels, samples], got shape {x.shape}")
    n, c, _ = x.shape
    nyquist = sfreq / 2.0
    if any(hi > nyquist for _, _, hi in bands):
        raise ValueError(f"a band reaches above Nyquist ({nyquist:g} Hz) at sfreq={sfreq:g}")
    freqs, psd = _psd(x.astype(np.float64), sfreq)
    df = freqs[1] - freqs[0] if len(freqs) > 1 else sfreq
    feats = np.empty((n, c, len(bands)), dtype=np.float64)
    for i, (name, lo, hi) in enumerate(bands):
        sel = (freqs >= lo) & (freqs < hi)
        if not sel.any():
            raise ValueError(f"band {name} [{lo:g}, {hi:g}) Hz has no frequency bin at resolution {df:g} Hz")
        feats[:, :, i] = np.log10(psd[:, :, sel].sum(axis=-1) * df + _EPS)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != (n, c):
            raise ValueError(f"valid must be [n, channels] = {(n, c)}, got {valid.shape}")
        feats[~valid] = 0.0
    bad = ~np.isfinite(feats)
    if bad.any():
        log.warning("band_power_features: %d non-finite features (NaN/inf in the signal) set to 0", int(bad.sum()))
        feats[bad] = 0.0
    return feats.reshape(n, c * len(bands)).astype(np.float32)


def raw_window_features(x: np.ndarray, sfreq: float = 200.0, target_sfreq: float = 20.0,
                        valid: np.ndarray | None = None) -> np.ndarray:
    """The window's samples, block-averaged to `target_sfreq`: x [n, C, T] → [n, C·T'] channel-major.

    A block mean is a boxcar low-pass before the decimation, so nothing above ≈ target_sfreq/2 aliases in much;
    the slow components (below 1 Hz, which band powers drop) pass untouched. Padding channels get 0."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"x must be [n, channels, samples], got shape {x.shape}")
    factor = int(round(sfreq / target_sfreq))
    if factor < 1 or abs(sfreq / factor - target_sfreq) > 1e-6:
        raise ValueError(f"raw_sfreq {target_sfreq:g} Hz must divide the sampling rate {sfreq:g} Hz")
    n, c, t = x.shape
    t = (t // factor) * factor
    feats = x[:, :, :t].reshape(n, c, t // factor, factor).mean(axis=-1)
    if valid is not None:
        feats[~np.asarray(valid, dtype=bool)] = 0.0
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0).reshape(n, -1)


def tangent_space(x_train: np.ndarray):
    """Covariances (OAS shrinkage: padding or flat channels stay positive definite) → TangentSpace at the training
    windows' Riemannian mean, fitted on x_train [n, C, T]; its `transform` gives [n, C·(C+1)/2] features for the
    standardized logistic regression (unsupervised, so fitting it once serves every C)."""
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace

    return make_pipeline(Covariances(estimator="oas"), TangentSpace(metric="riemann")).fit(x_train)


def logreg_pipeline(c: float, seed: int):
    return make_pipeline(StandardScaler(),
                         LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed))


def _scores(model, x: np.ndarray, task: str, n_classes: int) -> np.ndarray:
    """Class probabilities in label order: P(1) [n] for binary, [n, n_classes] otherwise."""
    proba = model.predict_proba(x)
    full = np.zeros((len(x), n_classes), dtype=np.float64)
    full[:, model.classes_.astype(int)] = proba  # a class absent from training keeps probability 0
    return full[:, 1] if task == "binary" else full


def _score_value(metrics: dict[str, float], primary: str = PRIMARY) -> float:
    v = metrics.get(primary, float("nan"))
    return v if np.isfinite(v) else -np.inf


def fit_logreg_baseline(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                        x_test: np.ndarray, y_test: np.ndarray, *, task: str, seed: int = 0,
                        cs: Sequence[float] = C_GRID, classes: Sequence[str] | None = None,
                        dataset: str | None = None, method: str = "logreg-bandpower", make_model=logreg_pipeline,
                        primary: str = PRIMARY) -> dict:
    """`make_model(C, seed)` (default StandardScaler + LogisticRegression(class_weight="balanced")) for every C of
    `cs`; C chosen on validation by `primary` (the fine-tuning section's primary_metric, as for the networks).

    Labels are integer class indices. Ties in the validation metric keep the smaller C (more regularized).
    Returns a metrics.json-shaped dict (test metrics of the selected C, validation metrics of every C tried).
    """
    if task not in ("binary", "multiclass"):
        raise ValueError(f"unknown task {task!r}; expected 'binary' or 'multiclass'")
    y_train, y_val, y_test = (np.asarray(y, dtype=np.int64) for y in (y_train, y_val, y_test))
    if len(np.unique(y_train)) < 2:
        raise ValueError("the training split holds a single class; logistic regression needs at least two")
    n_classes = len(classes) if classes is not None else int(max(y_train.max(), y_val.max(), y_test.max())) + 1
    if task == "binary" and n_classes != 2:
        raise ValueError(f"binary task with {n_classes} classes")

    best = None
    val_by_c: dict[str, dict[str, float]] = {}
    for c in cs:
        model = make_model(c, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x_train, y_train)
        val = task_metrics(task, y_val, _scores(model, x_val, task, n_classes))
        val_by_c[f"{c:g}"] = val
        if best is None or _score_value(val, primary) > _score_value(best[1], primary):
            best = (c, val, model)
    assert best is not None, "cs must not be empty"
    c, val, model = best
    test = task_metrics(task, y_test, _scores(model, x_test, task, n_classes))
    log.info("%s %s seed %d: C=%g, val %s=%.4f, test %s=%.4f", dataset or "?", method, seed, c,
             primary, val[primary], primary, test[primary])
    return {
        "dataset": dataset,
        "method": method,
        "seed": int(seed),
        "task": task,
        "classes": list(classes) if classes is not None else [str(i) for i in range(n_classes)],
        "primary_metric": primary,
        "best_epoch": None,
        "hyperparameters": {"C": float(c), "C_grid": [float(v) for v in cs]},
        "val": val,
        "val_by_C": val_by_c,
        "test": test,
        "n_train": int(len(y_train)),
        "n_val": int(len(y_val)),
        "n_test": int(len(y_test)),
        "pretrained": None,
    }
