"""Epoched sources as recordings: trials [n_trials, C, T] concatenated along time into one signal.

The pipeline's stages read continuous recordings; an epoched source (mne `*-epo.fif`, a `.npz` of trial
arrays, the SHU-MI `.mat` files) becomes one by laying its trials end to end. Trial i then covers samples
[i·T, (i+1)·T), and `info.annotations` holds one (onset = i·T/sfreq, duration = T/sfreq, label) per trial,
so event-locked windowing finds every trial where it starts. Trials are small per file and held in memory.

Filters run over the concatenated signal, so each trial boundary is a step the filter sees; trials
are usually cut with margins for this reason, and windows are taken from the trial itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.io.mne_reader import non_eeg_kind
from pipeline.io.recording import RecordingError, RecordingInfo, check_range
from pipeline.io.registry import register_reader

# Unit strings accepted in a trials `.npz` (key `unit`, default µV) → factor to µV.
NPZ_UNITS = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "mv": 1e3, "v": 1e6}
NPZ_KEYS = ("X", "y", "ch_names", "sfreq", "subject")


class TrialsRecording:
    """A Recording over trials held in memory: float32 µV, trials laid end to end."""

    def __init__(self, path: str | Path, trials: np.ndarray, labels: Sequence[str], channel_names: Sequence[str],
                 sfreq: float, *, reader: str, dropped: Sequence[str] = (), notes: Sequence[str] = ()):
        trials = np.asarray(trials)
        if trials.ndim != 3:
            raise RecordingError(f"{path}: trials must be [n_trials, channels, samples], got shape {trials.shape}")
        n_trials, n_channels, n_times = trials.shape
        if n_trials == 0 or n_times == 0:
            raise RecordingError(f"{path}: no samples (trials array has shape {trials.shape})")
        if len(labels) != n_trials:
            raise RecordingError(f"{path}: {len(labels)} labels for {n_trials} trials")
        if len(channel_names) != n_channels:
            raise RecordingError(f"{path}: {len(channel_names)} channel names for {n_channels} channels")
        if not np.isfinite(sfreq) or sfreq <= 0:
            raise RecordingError(f"{path}: sampling rate must be a positive number, got {sfreq!r}")
        # [n, C, T] → [C, n·T]: trial i occupies columns [i·T, (i+1)·T).
        self._data = np.ascontiguousarray(trials.transpose(1, 0, 2).reshape(n_channels, n_trials * n_times),
                                          dtype=np.float32)
        step = n_times / float(sfreq)
        self.info = RecordingInfo(
            path=str(path),
            format="trials",
            reader=reader,
            channel_names=tuple(str(c) for c in channel_names),
            sfreq=float(sfreq),
            n_samples=n_trials * n_times,
            dropped=tuple(dropped),
            annotations=tuple((i * step, step, str(label)) for i, label in enumerate(labels)),
            notes=tuple(notes),
        )
        self.n_trials, self.trial_samples = n_trials, n_times

    def read(self, start: int, stop: int, picks: np.ndarray | None = None) -> np.ndarray:
        check_range(self.info, start, stop)
        rows = self._data if picks is None else self._data[np.asarray(picks, dtype=int)]
        return rows[:, start:stop].copy()


def label_strings(values: np.ndarray, path: str | Path, key: str) -> list[str]:
    """Trial labels as strings: integers (also integer-valued floats) as '3', strings as they are."""
    values = np.asarray(values)
    if values.dtype.kind in "US":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]
    if values.dtype.kind in "iub":
        return [str(int(v)) for v in values.tolist()]
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise RecordingError(f"{path}: key {key!r}: labels must be integers or strings, got non-integer floats")
        return [str(int(v)) for v in values.tolist()]
    raise RecordingError(f"{path}: key {key!r}: labels must be integers or strings, got dtype {values.dtype}")


@register_reader(".npz")
def read_trials_npz(path: str | Path) -> TrialsRecording:
    """A `.npz` with X [trials, channels, samples] (µV unless `unit` says 'V'/'mV'), y [trials] (int or str),
    ch_names [channels] (str), sfreq (scalar), subject (str scalar). Every key and shape is checked; errors
    name the file and the key."""
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise RecordingError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    with npz:
        missing = [k for k in NPZ_KEYS if k not in npz.files]
        if missing:
            raise RecordingError(f"{path}: missing key(s) {missing}; a trials .npz needs {list(NPZ_KEYS)} "
                                 f"(has {sorted(npz.files)})")

        def get(key: str) -> np.ndarray:
            try:
                return npz[key]
            except ValueError as exc:  # object arrays need pickle, which is refused
                raise RecordingError(f"{path}: key {key!r}: cannot load without pickle ({exc}); save it as a "
                                     f"numeric or str array") from None

        x = get("X")
        if x.ndim != 3:
            raise RecordingError(f"{path}: key 'X': expected [trials, channels, samples], got shape {x.shape}")
        if x.dtype.kind not in "iuf":
            raise RecordingError(f"{path}: key 'X': expected numbers, got dtype {x.dtype}")
        y = get("y")
        if y.ndim != 1 or len(y) != x.shape[0]:
            raise RecordingError(f"{path}: key 'y': expected shape ({x.shape[0]},) (one label per trial of 'X'), "
                                 f"got {y.shape}")
        ch = get("ch_names")
        if ch.ndim != 1 or ch.dtype.kind not in "US" or len(ch) != x.shape[1]:
            raise RecordingError(f"{path}: key 'ch_names': expected {x.shape[1]} strings (one per channel of 'X'), "
                                 f"got dtype {ch.dtype} shape {ch.shape}")
        sfreq = get("sfreq")
        if sfreq.size != 1 or sfreq.dtype.kind not in "iuf" or not np.isfinite(sfreq).all() or float(sfreq) <= 0:
            raise RecordingError(f"{path}: key 'sfreq': expected one positive number, got {sfreq!r}")
        subject = get("subject")
        if subject.size > 1:  # a per-trial array: summarised, never printed whole (it can be thousands long)
            found = sorted({str(v) for v in subject.reshape(-1).tolist()})
            raise RecordingError(f"{path}: key 'subject': one subject per file, got an array of {subject.size} values "
                                 f"({len(found)} distinct: {', '.join(found[:5])}{' …' if len(found) > 5 else ''}); "
                                 "save one file per subject, each with subject=<its id>")
        if subject.size != 1 or subject.dtype.kind not in "USiu" or not str(subject.reshape(()).item()).strip():
            raise RecordingError(f"{path}: key 'subject': expected one non-empty string, got {subject!r}")
        factor = 1.0
        if "unit" in npz.files:
            unit = str(get("unit").reshape(()).item())
            if unit.strip().lower() not in NPZ_UNITS:
                raise RecordingError(f"{path}: key 'unit': {unit!r} is not one of uV, mV, V")
            factor = NPZ_UNITS[unit.strip().lower()]
        labels = label_strings(y, path, "y")
        names = [str(c) for c in ch.tolist()]
        data = x.astype(np.float32) * np.float32(factor)
    return TrialsRecording(path, data, labels, names, float(sfreq.reshape(())), reader="npz")


def npz_subject(path: str | Path) -> str | None:
    """The `subject` of a trials `.npz`, or None when it is missing or unreadable (the reader says why)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            value = npz["subject"]
            return str(value.reshape(()).item()).strip() or None
    except Exception:
        return None


@register_reader("-epo.fif", "_epo.fif", "-epo.fif.gz", "_epo.fif.gz")
def read_epochs_fif(path: str | Path) -> TrialsRecording:
    """mne Epochs (`*-epo.fif`): EEG channels in µV; labels = event names, `events[:, 2]` mapped back
    through `event_id`. Non-EEG channels (EOG, stim, …) are listed in `dropped`."""
    import mne

    path = Path(path)
    epochs = mne.read_epochs(path, preload=True, verbose="error")
    if len(epochs) == 0:
        raise RecordingError(f"{path}: no epochs (all dropped or none saved)")
    names_by_code: dict[int, str] = {}
    for name, code in epochs.event_id.items():
        if int(code) in names_by_code:
            raise RecordingError(f"{path}: event_id maps code {code} to both {names_by_code[int(code)]!r} and {name!r}")
        names_by_code[int(code)] = name
    codes = epochs.events[:, 2].tolist()
    unknown = sorted({c for c in codes if c not in names_by_code})
    if unknown:
        raise RecordingError(f"{path}: event codes {unknown} are not in event_id {dict(epochs.event_id)}")
    types = epochs.get_channel_types()
    keep = [i for i, (n, t) in enumerate(zip(epochs.ch_names, types)) if t == "eeg" and non_eeg_kind(n) is None]
    dropped = [f"{n} ({non_eeg_kind(n) or t})" for i, (n, t) in enumerate(zip(epochs.ch_names, types)) if i not in keep]
    if not keep:
        raise RecordingError(f"{path}: no EEG channels (types: {sorted(set(types))})")
    data = epochs.get_data(picks=keep) * 1e6  # volts → µV
    return TrialsRecording(path, data, [names_by_code[c] for c in codes], [epochs.ch_names[i] for i in keep],
                           float(epochs.info["sfreq"]), reader="mne-epochs", dropped=dropped)
