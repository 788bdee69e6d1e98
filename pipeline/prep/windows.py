"""Window planning: where the windows of one preprocessed recording start, and their labels.

Without labels (pretraining) windows tile the recording. With labels (downstream samples) they follow the
dataset's label source (`LabelConfig.mode`): `recording` tiles and labels every window with its recording's
label, `events` puts one window at each event (onset + offset_s), `intervals` tiles and labels a window by the
event interval it overlaps (else `background`), `spans` tiles and keeps the windows lying wholly inside a
labelled span (trials of SEED-V). A window touching a rejected second is dropped in every mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import LabelConfig, PatchConfig
from pipeline.errors import StageFailed


@dataclass(frozen=True)
class WindowPlan:
    starts: np.ndarray  # window start samples (int64), bad windows already removed
    n_rejected: int
    labels: list[str | None] | None = None  # class of each window (labelled samples only)
    rejected_labels: tuple[str | None, ...] = ()  # class of each window dropped by amplitude/NaN (labelled only)
    crossing: int = 0  # events mode: windows that run past the end of their event (a trial's boundary)


def window_samples(cfg: PatchConfig, sfreq: float) -> int:
    win = int(round(cfg.window_s * sfreq))
    if win % cfg.patch_len or win == 0:
        raise StageFailed(f"window_s={cfg.window_s} is not a whole number of {cfg.patch_len}-sample patches")
    return win


def clean_windows(starts: np.ndarray, win: int, bad_seconds: np.ndarray, patch: int) -> np.ndarray:
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
    win = window_samples(cfg, sfreq)
    stride = int(round((cfg.stride_s or cfg.window_s) * sfreq))
    starts = np.arange(0, max(n_samples - win + 1, 0), stride, dtype=np.int64)
    keep = clean_windows(starts, win, bad_seconds, cfg.patch_len)
    return WindowPlan(starts[keep], int((~keep).sum()))


def plan_labelled_windows(n_samples: int, bad_seconds: np.ndarray, cfg: PatchConfig, labels: LabelConfig,
                          sfreq: float, events: list[tuple[float, float, str]], recording_label: str) -> WindowPlan:
    """Labelled sample windows of one recording (the modes: this module's docstring)."""
    win = window_samples(cfg, sfreq)
    crossing = 0
    if labels.mode == "events":
        picked = [(int(round((o + labels.offset_s) * sfreq)), labels.class_of(t), o + d) for o, d, t in events]
        picked = [(s, c, end) for s, c, end in picked if c is not None and 0 <= s <= n_samples - win]
        # an event with a duration (a trial) should hold its window; a longer window spills into the next trial
        crossing = sum(1 for s, _, end in picked if end > s / sfreq and (s + win) / sfreq > end + 0.5 / sfreq)
        starts = np.array([s for s, _, _ in picked], dtype=np.int64)
        classes: list[str | None] = [c for _, c, _ in picked]
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
    keep = clean_windows(starts, win, bad_seconds, cfg.patch_len)
    return WindowPlan(starts[keep], int((~keep).sum()), [c for c, k in zip(classes, keep) if k],
                      tuple(c for c, k in zip(classes, keep) if not k), crossing)
