"""SHU-MI (Shanghai University motor imagery; Ma et al. 2022, Scientific Data, figshare): left/right hand MI,
25 subjects × 5 sessions, 32 channels at 250 Hz, 4 s trials.

Layout: `sub-001_ses-01_task_motorimagery_eeg.mat` (anywhere under the root), each with
- `data`: [trials, 32, 1000] — the trials of one session, 4 s at 250 Hz (values taken as µV),
- `labels`: [1, trials] (a MATLAB row vector) — 1 = left hand, 2 = right hand.
Field names and orientation as read by the reference code of the paper's setup (CBraMod
`preprocessing/preprocessing_shu.py`: `data['data']` → (bz, ch_num, points), `data['labels'][0]`, label − 1).

Channels, in the order of the `data` rows: the 32 electrodes listed by public SHU-MI loaders (`CH_NAMES` in
several preprocessing scripts for this release), old 10-20 names (T3/T4/T5/T6; A1/A2 are ear references).
The `.mat` files carry no channel names, so this list is an assumption to verify against the release's
channel description.

Subject `001`…, session `01`…, from the file name; no official split (the reference code takes the sorted
files 0-74 / 75-99 / 100-124, i.e. subjects 1-15 train, 16-20 validation, 21-25 test: see
config/datasets/shu_mi.yaml). Labels come from the reader: one annotation per trial ("left"/"right").
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.io.adapters.layout import release_files
from pipeline.io.recording import RecordingError
from pipeline.io.registry import register_adapter, register_reader
from pipeline.io.source import SourceFile, recording_id
from pipeline.io.trials import TrialsRecording

LAYOUT = "sub-XXX_ses-XX_task_motorimagery_eeg.mat (data [trials, 32, 1000], labels [1, trials])"
SFREQ = 250.0
LABELS = {1: "left", 2: "right"}
CHANNELS = ("Fp1", "Fp2", "Fz", "F3", "F4", "F7", "F8", "FC1", "FC2", "FC5", "FC6", "Cz", "C3", "C4", "T3", "T4",
            "A1", "A2", "CP1", "CP2", "CP5", "CP6", "Pz", "P3", "P4", "T5", "T6", "PO3", "PO4", "Oz", "O1", "O2")

_NAME = re.compile(r"^sub-([A-Za-z0-9]+)_ses-([A-Za-z0-9]+)_task_motorimagery_eeg\.mat$", re.IGNORECASE)


def _load_mat(path: Path) -> dict[str, np.ndarray]:
    """`data` and `labels` of a MATLAB file, v5 (scipy) or v7.3 (HDF5, h5py: dimensions come reversed)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["data", "labels"])
        return {k: np.asarray(v) for k, v in mat.items() if not k.startswith("__")}
    except NotImplementedError:  # MATLAB v7.3
        import h5py

        with h5py.File(path, "r") as h5:
            return {k: np.asarray(h5[k]).T for k in ("data", "labels") if k in h5}


@register_reader(".mat")
def read_shu_mat(path: str | Path) -> TrialsRecording:
    """A SHU-MI session file as a TrialsRecording (labels 'left'/'right'); RecordingError naming file and field."""
    path = Path(path)
    try:
        mat = _load_mat(path)
    except Exception as exc:
        raise RecordingError(f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc})") from None
    for key in ("data", "labels"):
        if key not in mat:
            raise RecordingError(f"{path}: no '{key}' field; a SHU-MI file holds data [trials, 32, samples] and "
                                 f"labels [trials] (has {sorted(mat)})")
    data, labels = mat["data"], np.asarray(mat["labels"]).ravel()
    if data.ndim != 3 or data.shape[1] != len(CHANNELS):
        raise RecordingError(f"{path}: 'data' must be [trials, {len(CHANNELS)}, samples], got shape {data.shape}")
    if data.dtype.kind not in "iuf":
        raise RecordingError(f"{path}: 'data' must be numeric, got dtype {data.dtype}")
    if labels.size != data.shape[0]:
        raise RecordingError(f"{path}: 'labels' has {labels.size} values for {data.shape[0]} trials in 'data'")
    bad = sorted({float(v) for v in labels.tolist() if v not in LABELS})
    if bad:
        raise RecordingError(f"{path}: 'labels' values must be 1 (left) or 2 (right), found {bad}")
    return TrialsRecording(path, data.astype(np.float32), [LABELS[int(v)] for v in labels.tolist()], CHANNELS,
                           SFREQ, reader="mat")


@register_adapter("shu_mi")
def shu_mi(root: Path) -> list[SourceFile]:
    """One SourceFile per `sub-XXX_ses-XX_task_motorimagery_eeg.mat`: subject XXX, session XX."""
    files, base = release_files(root, "SHU-MI", LAYOUT, _NAME.match)
    out = []
    for mat in files:
        m = _NAME.match(mat.name)
        if m is None:
            raise ValueError(f"{mat}: not a SHU-MI file name (expected {LAYOUT.split(' ')[0]})")
        out.append(SourceFile(path=mat, recording=recording_id(mat, base), subject=m[1], session=m[2],
                              task="motorimagery"))
    return out
