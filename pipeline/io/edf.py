"""EDF / EDF+ / BDF recordings opened lazily and read in sample ranges as float32 µV (this module reads nothing else).

Reader choice, measured on the demo corpus (benchmarks/readers.py): edfio parses and validates the
header; samples are read as whole data records with plain file reads (pipeline.io.edf_records,
memory O(chunk), unlike edfio's memory map) and calibrated in float32 here — several times faster
than mne's `get_data`, which returns float64 volts. edfio is strict about header conformance, so a
header it refuses is retried with mne, which is more lenient; the manifest records which reader
opened each file. A file neither can parse is rejected.

Other formats have their own readers, found by suffix through `pipeline.io.registry` (see
`pipeline.io.readers.open_recording`).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from pipeline.io.edf_records import RecordLayout, edf_format, header_bytes, header_int
from pipeline.io.mne_reader import MneRecording
from pipeline.io.recording import RecordingError, RecordingInfo, check_range
from pipeline.io.registry import register_reader

# Physical-dimension strings seen in EEG headers → factor to µV. Empty/unknown: taken as µV
# (common in the wild for EEG channels) and reported as such in the manifest's reason column.
_UNIT_TO_UV = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "microv": 1.0, "mv": 1e3, "v": 1e6, "nv": 1e-3}


def _unit_factor(unit: str) -> float | None:
    return _UNIT_TO_UV.get(unit.strip().lower().replace(" ", ""))


class EdfioRecording:
    """edfio-backed reader: lazy memmap slices per signal, calibrated to µV in float32."""

    def __init__(self, path: Path):
        import edfio

        fmt = edf_format(path)
        notes = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if fmt.startswith("bdf"):
                # edfio reads BDF data eagerly; give it the header alone and read records ourselves.
                edf = edfio.read_bdf(io.BytesIO(header_bytes(path)))
            else:
                edf = edfio.read_edf(path, lazy_load_data=True)
        for w in caught:
            msg = str(w.message)
            # edfio quietly shortens an EDF whose records stop early; a truncated file is corrupt.
            if not fmt.startswith("bdf") and ("Incomplete data record" in msg or "but file contains" in msg):
                raise RecordingError(f"{path}: truncated file ({msg})")
        n_records = header_int(path, 236, 244)
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
        )

    def read(self, start: int, stop: int, picks: np.ndarray | None = None) -> np.ndarray:
        idx = list(range(len(self._positions))) if picks is None else [int(i) for i in picks]
        check_range(self.info, start, stop)
        digital = self._layout.read_digital([self._positions[i] for i in idx], start, stop)
        out = digital.astype(np.float32)
        out *= self._gain[idx]
        out += self._offset[idx]
        return out


@register_reader(".edf", ".bdf")
def open_edf(path: str | Path):
    """An EDF/EDF+/BDF file through edfio, else mne (more lenient); RecordingError naming the file and the
    problem. Files of unknown suffix are opened with this too (pipeline.io.readers)."""
    path = Path(path)
    if path.stat().st_size < 256:
        raise RecordingError(f"{path}: corrupt header (file is {path.stat().st_size} bytes, "
                             "shorter than a 256-byte EDF header)")
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
