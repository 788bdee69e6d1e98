"""EDF / EDF+ / BDF recordings opened lazily and read in sample ranges as float32 µV.

Reader choice, measured on the demo corpus (benchmarks/readers.py): edfio parses and validates the
header; samples are read as whole data records with plain file reads (pipeline.io.edf_records,
memory O(chunk), unlike edfio's memory map) and calibrated in float32 here — several times faster
than mne's `get_data`, which returns float64 volts. edfio is strict about header conformance, so a
header it refuses is retried with mne, which is more lenient; the manifest records which reader
opened each file. A file neither can parse is rejected.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.io.edf_records import RecordLayout

# Physical-dimension strings seen in EEG headers → factor to µV. Empty/unknown: taken as µV
# (common in the wild for EEG channels) and reported as such in the manifest's reason column.
_UNIT_TO_UV = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "microv": 1.0, "mv": 1e3, "v": 1e6, "nv": 1e-3}


class RecordingError(ValueError):
    """A recording cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class RecordingInfo:
    path: str
    format: str  # edf | edf+c | edf+d | bdf | bdf+c | bdf+d
    reader: str  # edfio | mne
    channel_names: tuple[str, ...]  # the signals read(), all at `sfreq`
    sfreq: float
    n_samples: int
    dropped: tuple[str, ...]  # signals excluded because their rate differs: "name (rate Hz)"
    annotations: tuple[tuple[float, float, str], ...]  # EDF+ (onset_s, duration_s, text)
    notes: tuple[str, ...] = ()  # handled oddities worth recording (unknown units, …)

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sfreq


class Recording(Protocol):
    info: RecordingInfo

    def read(self, start: int, stop: int, picks: np.ndarray | None = None) -> np.ndarray:
        """Samples [start, stop) of the picked channels, float32 µV, shape [n_picks, stop - start]."""
        ...


def _unit_factor(unit: str) -> float | None:
    return _UNIT_TO_UV.get(unit.strip().lower().replace(" ", ""))


def _edf_format(path: Path) -> str:
    head = _read_head(path)
    bdf = head[:1] == b"\xff"
    reserved = head[192:236].decode("ascii", "replace").strip().upper()
    kind = "bdf" if bdf else "edf"
    if reserved.startswith(("EDF+C", "BDF+C")):
        return kind + "+c"
    if reserved.startswith(("EDF+D", "BDF+D")):
        return kind + "+d"
    return kind


def _read_head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(256)


class EdfioRecording:
    """edfio-backed reader: lazy memmap slices per signal, calibrated to µV in float32."""

    def __init__(self, path: Path):
        import edfio

        fmt = _edf_format(path)
        notes = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if fmt.startswith("bdf"):
                # edfio reads BDF data eagerly; give it the header alone and read records ourselves.
                edf = edfio.read_bdf(io.BytesIO(_header_bytes(path)))
            else:
                edf = edfio.read_edf(path, lazy_load_data=True)
        for w in caught:
            msg = str(w.message)
            # edfio quietly shortens an EDF whose records stop early; a truncated file is corrupt.
            if not fmt.startswith("bdf") and ("Incomplete data record" in msg or "but file contains" in msg):
                raise RecordingError(f"{path}: truncated file ({msg})")
        n_records = _header_int(path, 236, 244)
        layout = RecordLayout.from_header(path, n_records)
        expected = layout.header_bytes + n_records * layout.record_bytes
        if n_records < 0 or path.stat().st_size < expected:
            raise RecordingError(f"{path}: truncated file (header promises {n_records} data records = {expected} "
                                 f"bytes, file has {path.stat().st_size})")
        if fmt.startswith("bdf") and len(layout.signal_positions) < len(layout.labels):
            notes.append("BDF+ annotation signal present but not read")
        signals = list(edf.signals)
        if not signals:
            raise RecordingError(f"{path}: no signal channels (only annotations)")
        rates = [float(s.sampling_frequency) for s in signals]
        # Keep the rate shared by most channels (ties → higher rate); list the others as dropped.
        counts: dict[float, int] = {}
        for r in rates:
            counts[r] = counts.get(r, 0) + 1
        sfreq = max(counts, key=lambda r: (counts[r], r))
        keep_idx = [i for i, r in enumerate(rates) if r == sfreq]
        keep = [signals[i] for i in keep_idx]
        dropped = tuple(f"{s.label} ({r:g} Hz)" for s, r in zip(signals, rates) if r != sfreq)
        gains, offsets = [], []
        for s in keep:
            factor = _unit_factor(s.physical_dimension)
            if factor is None:
                notes.append(f"unknown unit {s.physical_dimension!r} on {s.label}, read as µV")
                factor = 1.0
            drange = s.digital_max - s.digital_min
            if drange == 0:
                raise RecordingError(f"{path}: channel {s.label!r} has digital min == max ({s.digital_min})")
            gain = (s.physical_max - s.physical_min) / drange
            gains.append(gain * factor)
            offsets.append((s.physical_min - s.digital_min * gain) * factor)
        n_samples = int(round(n_records * keep[0].samples_per_data_record))
        file_pos = layout.signal_positions
        if len(file_pos) != len(signals):
            raise RecordingError(f"{path}: header lists {len(file_pos)} signals, edfio parsed {len(signals)}")
        self._layout = layout
        self._positions = [file_pos[i] for i in keep_idx]
        annotations = tuple(
            (float(a.onset), float(a.duration or 0.0), a.text) for a in edf.annotations if a.text.strip()
        )
        self._gain = np.asarray(gains, dtype=np.float32)[:, None]
        self._offset = np.asarray(offsets, dtype=np.float32)[:, None]
        self.info = RecordingInfo(
            path=str(path),
            format=fmt,
            reader="edfio",
            channel_names=tuple(s.label for s in keep),
            sfreq=sfreq,
            n_samples=n_samples,
            dropped=dropped,
            annotations=annotations,
            notes=tuple(notes),
        )

    def read(self, start: int, stop: int, picks: np.ndarray | None = None) -> np.ndarray:
        idx = list(range(len(self._positions))) if picks is None else [int(i) for i in picks]
        if start < 0 or stop > self.info.n_samples or start > stop:
            raise ValueError(f"{self.info.path}: samples [{start}, {stop}) outside [0, {self.info.n_samples})")
        digital = self._layout.read_digital([self._positions[i] for i in idx], start, stop)
        out = digital.astype(np.float32)
        out *= self._gain[idx]
        out += self._offset[idx]
        return out


class MneRecording:
    """mne-backed reader, for headers edfio refuses. mne returns volts; we return µV."""

    def __init__(self, path: Path):
        import mne

        fmt = _edf_format(path)
        read = mne.io.read_raw_bdf if fmt.startswith("bdf") else mne.io.read_raw_edf
        raw = read(path, preload=False, verbose="error")
        if not raw.ch_names:
            raise RecordingError(f"{path}: no signal channels")
        self._raw = raw
        self._factor = np.where(
            np.isin(raw.get_channel_types(), ["eeg", "eog", "ecg", "emg", "seeg", "misc"]), 1e6, 1.0
        ).astype(np.float32)[:, None]
        annotations = tuple(
            (float(o), float(d), str(t)) for o, d, t in zip(raw.annotations.onset, raw.annotations.duration, raw.annotations.description)
        )
        self.info = RecordingInfo(
            path=str(path),
            format=fmt,
            reader="mne",
            channel_names=tuple(raw.ch_names),
            sfreq=float(raw.info["sfreq"]),
            n_samples=int(raw.n_times),
            dropped=(),
            annotations=annotations,
        )

    def read(self, start: int, stop: int, picks: np.ndarray | None = None) -> np.ndarray:
        picks_ = None if picks is None else np.asarray(picks, dtype=int)
        data = self._raw.get_data(picks=picks_, start=start, stop=stop).astype(np.float32)
        factor = self._factor if picks_ is None else self._factor[picks_]
        return data * factor


def open_recording(path: str | Path) -> Recording:
    """Open an EDF/BDF file; raise RecordingError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    if path.stat().st_size < 256:
        raise RecordingError(f"{path}: corrupt header (file is {path.stat().st_size} bytes, shorter than a 256-byte EDF header)")
    try:
        return EdfioRecording(path)
    except RecordingError:
        raise
    except Exception as edfio_exc:  # edfio is strict: give mne a chance before rejecting
        try:
            return MneRecording(path)
        except Exception as mne_exc:
            raise RecordingError(
                f"{path}: corrupt header (edfio: {type(edfio_exc).__name__}: {edfio_exc}; "
                f"mne: {type(mne_exc).__name__}: {mne_exc})"
            ) from None


def _header_int(path: Path, lo: int, hi: int) -> int:
    return int(_read_head(path)[lo:hi].decode("ascii").strip())


def _header_bytes(path: Path) -> bytes:
    """The fixed header plus the signal headers: 256 × (number of signals + 1) bytes."""
    with path.open("rb") as fh:
        head = fh.read(256)
        return head + fh.read(256 * int(head[252:256].decode("ascii").strip()))


def data_offset(path: str | Path) -> int:
    """Byte offset of the first data record (the header's 'bytes in header' field)."""
    head = _read_head(Path(path))
    try:
        return int(head[184:192].decode("ascii").strip())
    except ValueError:
        return 0
