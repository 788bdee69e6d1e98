"""mne-backed reader: EDF/BDF headers edfio refuses, GDF and Neuroscan CNT; non-EEG channel names.

mne returns volts; the reader returns µV. GDF is registered by the adapter that knows its release's labels
(pipeline.io.adapters.bciciv2a); CNT (SEED-V's format) is registered here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.io.edf_records import edf_format
from pipeline.io.recording import RecordingError, RecordingInfo, check_range
from pipeline.io.registry import register_reader

# Channel types whose samples mne returns in volts (we return µV); others (stim, …) are passed through.
_VOLT_TYPES = ("eeg", "eog", "ecg", "emg", "seeg", "misc")
# Names of non-EEG channels that GDF/CNT readers type as EEG unless told otherwise (the BCIC-IV-2a
# 'EOG-left', Neuroscan 'HEO'/'VEO', …): read as that type, i.e. dropped, never as scalp EEG.
_NON_EEG_NAME = re.compile(
    r"^(?:(?P<kind>EOG|ECG|EKG|EMG|RESP|STI|STIM|TRIG|TRIGGER|STATUS|PHOTIC)\d*(?:[\s\-_:.]|$)"
    r"|(?P<neuroscan>[HV]EOG?[LRUD]?)$)",
    re.IGNORECASE,
)
MNE_FORMATS = ("edf", "bdf", "gdf", "cnt")


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
    """mne-backed reader. `eeg_only` (default: on for GDF/CNT) keeps EEG channels alone; the others — typed
    non-EEG by mne or named like one ('EOG-left', 'HEO', 'STATUS') — are listed in `info.dropped` as
    "name (type)"."""

    def __init__(self, path: Path, kind: str | None = None, *, eeg_only: bool | None = None):
        path = Path(path)
        suffix = path.suffix.lower().lstrip(".")
        kind = kind or (suffix if suffix in MNE_FORMATS else "edf")
        if kind not in MNE_FORMATS:
            raise ValueError(f"{path}: MneRecording reads {MNE_FORMATS}, not {kind!r}")
        fmt = edf_format(path) if kind in ("edf", "bdf") else kind
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
        check_range(self.info, start, stop)
        idx = np.arange(len(self._picks)) if picks is None else np.asarray(picks, dtype=int)
        if start == stop:
            return np.zeros((len(idx), 0), dtype=np.float32)
        data = self._raw.get_data(picks=self._picks[idx], start=start, stop=stop).astype(np.float32)
        return data * self._factor[idx]


@register_reader(".cnt")
def open_cnt(path: Path) -> MneRecording:
    return MneRecording(path, "cnt")
