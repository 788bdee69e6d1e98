"""BCI Competition IV dataset 2a (Graz; also distributed as BNCI Horizon 2020 "001-2014"): 4-class motor imagery.

Layout (the competition's GDF release): `A01T.gdf` … `A09T.gdf` (training sessions) and `A01E.gdf` …
`A09E.gdf` (evaluation sessions), 22 EEG + 3 EOG channels at 250 Hz, anywhere under the root; the true labels
of the evaluation sessions are separate MATLAB files `A0xE.mat` (field `classlabel`, values 1..4, one per
trial in order), published after the competition, found next to the GDF, in the root, or in a
`true_labels/` folder (the labels of the training sessions, `A0xT.mat`, are used to cross-check when present).

Where the labels come from (dataset description, Brunner et al. 2008, "BCI Competition 2008 – Graz data
set A", Table 2 of event types):
- 768 = start of a trial, 769/770/771/772 = cue onset left hand / right hand / both feet / tongue (T sessions),
  783 = cue onset, class unknown (E sessions), 1023 = rejected trial (marked by an expert), 1072 = eye
  movements, 276/277 = idling eyes open/closed, 32766 = start of a new run. mne names each GDF event by its
  code string ('769', …).
- The cue appears 2 s after the trial start; motor imagery lasts until second 6. Events are therefore
  (cue onset, 4.0 s, class) — the 4 s window [cue, cue + 4 s) the reference code (CBraMod's
  preprocessing_bciciv2a.py, samples 2–6 s of each trial) takes.
- In an E session the k-th 783 cue gets `classlabel[k]` (1..4 = left, right, feet, tongue).
- Trials marked 1023 are kept (as the reference code does) and also reported as a ("rejected", onset, duration)
  event, so a labels configuration can exclude them.

Subject `A01`..`A09`, session `T`/`E`; official split: T → "train", E → "test". The 22 EEG channels are
labelled 'EEG-Fz', 'EEG-0' … 'EEG-16', 'EEG-C3', … in the GDF; `gdf_channel_rename` gives their 10-20 sites
(the dataset description's electrode montage, in file order); the 3 EOG channels are dropped by the reader.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.io.adapters.layout import release_files
from pipeline.io.mne_reader import MneRecording
from pipeline.io.recording import RecordingError
from pipeline.io.registry import register_adapter, register_reader
from pipeline.io.source import SourceFile, recording_id

LAYOUT = "A0xT.gdf / A0xE.gdf (x = 1..9) + A0xE.mat true labels (next to the GDF, in the root or true_labels/)"
CLASSES = ("left", "right", "feet", "tongue")  # classlabel 1..4 and cue codes 769..772, in this order
CUE_CODES = {"769": "left", "770": "right", "771": "feet", "772": "tongue"}
UNKNOWN_CUE = "783"
TRIAL_START = "768"
REJECTED = "1023"
CUE_DURATION_S = 4.0  # cue at 2 s after trial start, imagery until 6 s
SPLITS = {"T": "train", "E": "test"}

# The GDF labels of the 22 EEG channels, in file order, and the 10-20 site of each (dataset description,
# electrode montage figure; the same order as resources/channel_sets.yaml `bcic_iv_2a`).
GDF_LABELS = ("EEG-Fz", "EEG-0", "EEG-1", "EEG-2", "EEG-3", "EEG-4", "EEG-5", "EEG-C3", "EEG-6", "EEG-Cz", "EEG-7",
              "EEG-C4", "EEG-8", "EEG-9", "EEG-10", "EEG-11", "EEG-12", "EEG-13", "EEG-14", "EEG-Pz", "EEG-15",
              "EEG-16")
SITES = ("Fz", "FC3", "FC1", "FCz", "FC2", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "CP3", "CP1", "CPz",
         "CP2", "CP4", "P1", "Pz", "P2", "POz")
EOG_LABELS = ("EOG-left", "EOG-central", "EOG-right")

_NAME = re.compile(r"^(A0[1-9])([TE])\.gdf$", re.IGNORECASE)


def gdf_channel_rename(names: Sequence[str]) -> dict[str, str]:
    """{GDF label: site} when `names` holds all 22 BCIC-IV-2a EEG labels (any order, EOG aside), else {}."""
    if set(GDF_LABELS) <= set(names):
        return dict(zip(GDF_LABELS, SITES))
    return {}


@register_reader(".gdf")
def open_gdf(path: Path) -> MneRecording:
    """Any GDF through mne; the BCIC-IV-2a release labels most electrodes 'EEG-0'..'EEG-16', and where a
    file's labels are exactly those, they are renamed to the sites the dataset description gives."""
    rec = MneRecording(path, "gdf")
    rename = gdf_channel_rename(rec.info.channel_names)
    if rename:
        note = "BCIC-IV-2a channel labels renamed to their 10-20 sites (dataset description)"
        rec.info = dataclasses.replace(rec.info, channel_names=tuple(rename.get(n, n) for n in rec.info.channel_names),
                                       notes=(*rec.info.notes, note))
    return rec


def label_file(gdf: Path, root: Path) -> Path | None:
    """The true-label file `A0xS.mat` for `gdf`: next to it, in the root, or in a `true_labels/` folder."""
    name = gdf.with_suffix(".mat").name
    folders = [gdf.parent, root, root / "true_labels", gdf.parent / "true_labels", gdf.parent.parent / "true_labels"]
    for folder in folders:
        for candidate in (folder / name, folder / name.lower()):
            if candidate.is_file():
                return candidate
    return None


def read_classlabel(path: Path) -> list[str]:
    """`classlabel` (1..4) of a true-label `.mat` file as class names; RecordingError naming the file."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:
        raise RecordingError(f"{path}: unreadable true-label file ({type(exc).__name__}: {exc})") from None
    if "classlabel" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise RecordingError(f"{path}: no 'classlabel' field (has {keys})")
    values = np.asarray(mat["classlabel"]).ravel()
    if values.dtype.kind not in "iuf" or values.size == 0:
        raise RecordingError(f"{path}: 'classlabel' must hold numbers 1..4, got dtype {values.dtype} "
                             f"shape {values.shape}")
    bad = sorted({float(v) for v in values.tolist() if v not in (1, 2, 3, 4)})
    if bad:
        raise RecordingError(f"{path}: 'classlabel' values must be 1..4 (left, right, feet, tongue), found {bad}")
    return [CLASSES[int(v) - 1] for v in values.tolist()]


def gdf_events(gdf: Path) -> list[tuple[float, float, str]]:
    """The GDF event table as (onset_s, duration_s, code string), read with mne from the header alone."""
    import mne

    raw = mne.io.read_raw_gdf(gdf, preload=False, verbose="error")
    ann = raw.annotations
    return [(float(o), float(d), str(t)) for o, d, t in zip(ann.onset, ann.duration, ann.description)]


def session_events(gdf: Path, session: str, labels_path: Path | None) -> tuple[tuple[float, float, str], ...]:
    """Cue events (onset, 4.0, class) of one session, plus ("rejected", onset, duration) per 1023 marker."""
    try:
        table = gdf_events(gdf)
    except Exception:  # unreadable GDF: listed without events; the reader rejects it with the reason
        return ()
    rejected = [(o, d, "rejected") for o, d, code in table if code == REJECTED]
    if session == "T":
        cues = [(o, CUE_DURATION_S, CUE_CODES[code]) for o, _, code in table if code in CUE_CODES]
        if labels_path is not None:  # the published T labels must agree with the GDF's cue codes
            truth = read_classlabel(labels_path)
            if truth != [c[2] for c in cues]:
                raise RecordingError(f"{gdf} and {labels_path}: the GDF's {len(cues)} cue codes (769-772) disagree "
                                     f"with the {len(truth)} class labels of the label file")
    else:
        if labels_path is None:
            raise FileNotFoundError(
                f"{gdf}: true-label file {gdf.with_suffix('.mat').name} not found next to it, in the dataset root "
                f"or in true_labels/ (the evaluation-session labels are published separately as A0xE.mat)")
        truth = read_classlabel(labels_path)
        onsets = [o for o, _, code in table if code == UNKNOWN_CUE]
        if len(onsets) != len(truth):
            raise RecordingError(f"{gdf} has {len(onsets)} cues (783) but {labels_path} has {len(truth)} class "
                                 f"labels; they must match one to one")
        cues = [(o, CUE_DURATION_S, label) for o, label in zip(onsets, truth)]
    return tuple(sorted(cues + rejected))


@register_adapter("bciciv2a")
def bciciv2a(root: Path) -> list[SourceFile]:
    """One SourceFile per `A0x{T,E}.gdf`: subject A0x, session T/E, split train/test, cue events with classes."""
    files, base = release_files(root, "BCIC-IV-2a", LAYOUT, _NAME.match)
    out = []
    for gdf in files:
        m = _NAME.match(gdf.name)
        if m is None:
            raise ValueError(f"{gdf}: not a BCIC-IV-2a file name (expected A0xT.gdf or A0xE.gdf)")
        subject, session = m[1].upper(), m[2].upper()
        events = session_events(gdf, session, label_file(gdf, base))
        out.append(SourceFile(path=gdf, recording=recording_id(gdf, base), subject=subject, session=session,
                              task="motorimagery", split=SPLITS[session], events=events))
    return out
