"""EDF / EDF+ / BDF recordings opened lazily and read in sample ranges as float32 µV.

Reader choice, measured on the demo corpus (benchmarks/readers.py): edfio parses and validates the
header; samples are read as whole data records with plain file reads (pipeline.io.edf_records,
memory O(chunk), unlike edfio's memory map) and calibrated in float32 here — several times faster
than mne's `get_data`, which returns float64 volts. edfio is strict about header conformance, so a
header it refuses is retried with mne, which is more lenient; the manifest records which reader
opened each file. A file neither can parse is rejected.

Other formats are dispatched on the suffix by `open_recording`: GDF (`.gdf`) and Neuroscan CNT (`.cnt`)
through mne (`MneRecording`, EEG channels only: EOG/ECG/stim channels are listed in `dropped`), and epoched
sources — mne `*-epo.fif`, `.npz` trial arrays, SHU-MI `.mat` — as `pipeline.io.trials.TrialsRecording`
(trials concatenated along time, one annotation per trial).
"""

from __future__ import annotations

import dataclasses
import io
import re
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


# Channel types whose samples mne returns in volts (we return µV); others (stim, …) are passed through.
_VOLT_TYPES = ("eeg", "eog", "ecg", "emg", "seeg", "misc")
# Names of non-EEG channels that GDF/CNT readers type as EEG unless told otherwise (the BCIC-IV-2a
# 'EOG-left', Neuroscan 'HEO'/'VEO', …): read as that type, i.e. dropped, never as scalp EEG.
_NON_EEG_NAME = re.compile(
    r"^(?:(?P<kind>EOG|ECG|EKG|EMG|RESP|STI|STIM|TRIG|TRIGGER|STATUS|PHOTIC)\d*(?:[\s\-_:.]|$)"
    r"|(?P<neuroscan>[HV]EOG?[LRUD]?)$)",
    re.IGNORECASE,
)
_MNE_FORMATS = ("edf", "bdf", "gdf", "cnt")


def non_eeg_kind(name: str) -> str | None:
    """'eog', 'ecg', 'emg', 'stim', … when the channel name marks a non-EEG signal, else None."""
    m = _NON_EEG_NAME.match(name.strip())
    if m is None:
        return None
    if m["neuroscan"]:
        return "eog"
    kind = m["kind"].lower()
    return {"ekg": "ecg", "sti": "stim", "trig": "stim", "trigger": "stim", "status": "stim"}.get(kind, kind)


def _cnt_data_format(path: Path) -> str:
    """mne's `data_format` for a Neuroscan CNT: 'auto' below 2 GB; above, mne cannot infer it from the
    (overflowed) event-table offset, so the sample width is the one that fits the header's sample count."""
    size = path.stat().st_size
    if size < 2e9:
        return "auto"
    with path.open("rb") as fh:
        fh.seek(370)
        n_channels = int(np.frombuffer(fh.read(2), "<u2")[0])
        fh.seek(864)
        n_samples = int(np.frombuffer(fh.read(4), "<u4")[0])
    data_start = 900 + 75 * n_channels
    return "int32" if data_start + 4 * n_channels * n_samples <= size else "int16"


def _read_mne_raw(path: Path, kind: str):
    import mne

    if kind == "gdf":
        return mne.io.read_raw_gdf(path, preload=False, verbose="error")
    if kind == "cnt":
        return mne.io.read_raw_cnt(path, preload=False, data_format=_cnt_data_format(path), verbose="error")
    read = mne.io.read_raw_bdf if kind.startswith("bdf") else mne.io.read_raw_edf
    return read(path, preload=False, verbose="error")


class MneRecording:
    """mne-backed reader: EDF/BDF headers edfio refuses, GDF and Neuroscan CNT. mne returns volts; we return µV.

    `eeg_only` (default: on for GDF/CNT) keeps EEG channels alone; the others — typed non-EEG by mne or
    named like one ('EOG-left', 'HEO', 'STATUS') — are listed in `info.dropped` as "name (type)".
    """

    def __init__(self, path: Path, kind: str | None = None, *, eeg_only: bool | None = None):
        path = Path(path)
        kind = kind or _suffix_kind(path) or "edf"
        if kind not in _MNE_FORMATS:
            raise ValueError(f"{path}: MneRecording reads {_MNE_FORMATS}, not {kind!r}")
        fmt = _edf_format(path) if kind in ("edf", "bdf") else kind
        raw = _read_mne_raw(path, fmt)
        if not raw.ch_names:
            raise RecordingError(f"{path}: no signal channels")
        eeg_only = kind in ("gdf", "cnt") if eeg_only is None else eeg_only
        types = raw.get_channel_types()
        keep, dropped = [], []
        for i, (name, ch_type) in enumerate(zip(raw.ch_names, types)):
            by_name = non_eeg_kind(name)
            if eeg_only and (ch_type != "eeg" or by_name is not None):
                dropped.append(f"{name} ({by_name or ch_type})")
            else:
                keep.append(i)
        if not keep:
            raise RecordingError(f"{path}: no EEG channels (all of {raw.ch_names} are non-EEG)")
        self._raw = raw
        self._picks = np.asarray(keep, dtype=int)
        factor = np.where(np.isin(np.asarray(types)[self._picks], _VOLT_TYPES), 1e6, 1.0)
        notes = []
        if kind == "gdf":
            # mne scales µV/mV-coded GDF channels to volts and passes any other unit code through as is:
            # those values are taken as µV (as EdfioRecording does for unknown units) and reported.
            gains = np.asarray(raw._raw_extras[0].get("units", np.full(len(raw.ch_names), 1e-6)))[self._picks]
            unknown = [raw.ch_names[i] for i, g in zip(keep, gains) if g == 1.0]
            factor = np.where(gains == 1.0, 1.0, factor)
            if unknown:
                notes.append(f"GDF unit code not µV/mV on {', '.join(unknown)}: read as µV")
        self._factor = factor.astype(np.float32)[:, None]
        ann = raw.annotations
        annotations = tuple((float(o), float(d), str(t)) for o, d, t in zip(ann.onset, ann.duration, ann.description))
        self.info = RecordingInfo(
            path=str(path),
            format=fmt,
            reader="mne",
            channel_names=tuple(raw.ch_names[i] for i in keep),
            sfreq=float(raw.info["sfreq"]),
            n_samples=int(raw.n_times),
            dropped=tuple(dropped),
            annotations=annotations,
            notes=tuple(notes),
        )

    def read(self, start: int, stop: int, picks: np.ndarray | None = None) -> np.ndarray:
        if start < 0 or stop > self.info.n_samples or start > stop:
            raise ValueError(f"{self.info.path}: samples [{start}, {stop}) outside [0, {self.info.n_samples})")
        idx = np.arange(len(self._picks)) if picks is None else np.asarray(picks, dtype=int)
        if start == stop:
            return np.zeros((len(idx), 0), dtype=np.float32)
        data = self._raw.get_data(picks=self._picks[idx], start=start, stop=stop).astype(np.float32)
        return data * self._factor[idx]


def _suffix_kind(path: Path) -> str | None:
    """The reader a file's name asks for: edf | bdf | gdf | cnt | epochs | npz | mat, or None (unknown)."""
    name = path.name.lower()
    if name.endswith(("-epo.fif", "_epo.fif", "-epo.fif.gz", "_epo.fif.gz")):
        return "epochs"
    return {".edf": "edf", ".bdf": "bdf", ".gdf": "gdf", ".cnt": "cnt", ".npz": "npz", ".mat": "mat"}.get(
        path.suffix.lower())


def _open_gdf(path: Path) -> MneRecording:
    # The BCIC-IV-2a release labels most electrodes 'EEG-0'..'EEG-16'; its documentation gives their sites.
    from pipeline.io.adapters.bciciv2a import gdf_channel_rename

    rec = MneRecording(path, "gdf")
    rename = gdf_channel_rename(rec.info.channel_names)
    if rename:
        note = "BCIC-IV-2a channel labels renamed to their 10-20 sites (dataset description)"
        rec.info = dataclasses.replace(rec.info, channel_names=tuple(rename.get(n, n) for n in rec.info.channel_names),
                                       notes=(*rec.info.notes, note))
    return rec


def _open_other(path: Path, kind: str) -> Recording:
    """GDF, CNT and the epoched formats; any reader failure becomes a RecordingError naming the file."""
    from pipeline.io import trials

    try:
        if kind == "gdf":
            return _open_gdf(path)
        if kind == "cnt":
            return MneRecording(path, "cnt")
        if kind == "epochs":
            return trials.read_epochs_fif(path)
        if kind == "npz":
            return trials.read_trials_npz(path)
        from pipeline.io.adapters.shu_mi import read_shu_mat

        return read_shu_mat(path)
    except RecordingError:
        raise
    except Exception as exc:
        raise RecordingError(f"{path}: cannot read as {kind} ({type(exc).__name__}: {exc})") from None


def open_recording(path: str | Path) -> Recording:
    """Open a recording by its suffix (EDF/BDF, GDF, CNT, epochs, npz, SHU-MI mat); raise RecordingError
    naming the file and the problem. Unknown suffixes are tried as EDF/BDF."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    kind = _suffix_kind(path)
    if kind not in (None, "edf", "bdf"):
        return _open_other(path, kind)
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


def _header_int(path: Path, lo: int, hi: int) -> int:
    return int(_read_head(path)[lo:hi].decode("ascii").strip())


def _header_bytes(path: Path) -> bytes:
    """The fixed header plus the signal headers: 256 × (number of signals + 1) bytes."""
    with path.open("rb") as fh:
        head = fh.read(256)
        return head + fh.read(256 * int(head[252:256].decode("ascii").strip()))


def data_offset(path: str | Path) -> int:
    """Byte offset of the first data record (the header's 'bytes in header' field) of an EDF/BDF file.

    Any other format gives 0, so its content hash covers the whole file: its header is not EDF's, and
    bytes 184:192 of a GDF/CNT could parse as a number by accident.
    """
    path = Path(path)
    if _suffix_kind(path) not in (None, "edf", "bdf"):
        return 0
    head = _read_head(path)
    try:
        return int(head[184:192].decode("ascii").strip())
    except ValueError:
        return 0
