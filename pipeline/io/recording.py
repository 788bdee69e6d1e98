"""What every reader returns: a `Recording` (lazy `read` of float32 µV) with its `RecordingInfo`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class RecordingError(ValueError):
    """A recording cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class RecordingInfo:
    path: str
    format: str  # edf | edf+c | edf+d | bdf | bdf+c | bdf+d | gdf | cnt | trials
    reader: str  # edfio | mne | npz | mne-epochs | mat
    channel_names: tuple[str, ...]  # the signals read(), all at `sfreq`
    sfreq: float
    n_samples: int
    dropped: tuple[str, ...]  # signals not read: "name (rate Hz)" (other rate) or "name (eog)" (not EEG)
    annotations: tuple[tuple[float, float, str], ...]  # (onset_s, duration_s, text): EDF+/GDF/CNT events, trials
    notes: tuple[str, ...] = ()  # handled oddities worth recording (unknown units, …)

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sfreq


class Recording(Protocol):
    info: RecordingInfo

    def read(self, start: int, stop: int, picks: np.ndarray | None = None) -> np.ndarray:
        """Samples [start, stop) of the picked channels, float32 µV, shape [n_picks, stop - start]."""
        ...


def check_range(info: RecordingInfo, start: int, stop: int) -> None:
    if start < 0 or stop > info.n_samples or start > stop:
        raise ValueError(f"{info.path}: samples [{start}, {stop}) outside [0, {info.n_samples})")
