"""Small EDF files written inside tests, with edfio: good ones in any layout, and broken ones."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import edfio
import numpy as np


def write_edf(path: Path, data: np.ndarray, names: Sequence[str], sfreq: float, *,
              annotations: Sequence[tuple[float, float | None, str]] = (), unit: str = "uV") -> Path:
    """data [channel, sample] in `unit`; returns path."""
    signals = [
        edfio.EdfSignal(np.asarray(row, dtype=float), sampling_frequency=sfreq, label=name, physical_dimension=unit)
        for row, name in zip(data, names)
    ]
    edf = edfio.Edf(signals, annotations=[edfio.EdfAnnotation(o, d, t) for o, d, t in annotations])
    path.parent.mkdir(parents=True, exist_ok=True)
    edf.write(path)
    return path


def eeg_like(n_channels: int, n_samples: int, sfreq: float, seed: int = 0) -> np.ndarray:
    """Alpha-ish oscillation plus noise, tens of µV: for files whose values do not matter."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sfreq
    return 20 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6, (n_channels, 1))) + 5 * rng.standard_normal((n_channels, n_samples))


def truncate(src: Path, dst: Path, keep_fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep_fraction)])
    return dst


def corrupt_header(src: Path, dst: Path) -> Path:
    """Overwrite the 'number of signals' field with letters: no reader can parse the header."""
    data = bytearray(src.read_bytes())
    data[252:256] = b"abcd"
    dst.write_bytes(bytes(data))
    return dst


def reheader_copy(src: Path, dst: Path) -> Path:
    """Same samples, different patient field: a duplicate that a file hash alone would miss."""
    data = bytearray(src.read_bytes())
    data[8:88] = b"X renamed-copy".ljust(80)
    dst.write_bytes(bytes(data))
    return dst
