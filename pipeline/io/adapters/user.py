"""Users' own epoched data: mne Epochs files (`epochs_fif`) and trial arrays in `.npz` (`trials_npz`).

- `epochs_fif`: every `*-epo.fif` / `*_epo.fif` under the root. Labels are the event names — `events[:, 2]`
  mapped back through `event_id` by the reader (one annotation per epoch). Subject: the BIDS-style
  `sub-<label>` in the file name when there is one, else the file stem without its `-epo` suffix
  (`epochs_fif_files(root, subject_regex=...)` takes a regex whose first group is the subject).
- `trials_npz`: every `*.npz` under the root, each with X [trials, channels, samples] (µV, or `unit` 'V'/'mV'),
  y [trials], ch_names [channels], sfreq, subject. The subject is the file's own `subject` key; the reader
  checks every key and shape and rejects the file naming the key at fault (a file without a readable
  `subject` is listed under its stem so that its row can say so).
Neither has an official split.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.io.adapters.layout import check_root, no_recordings
from pipeline.io.registry import register_adapter
from pipeline.io.source import SourceFile, recording_id
from pipeline.io.trials import npz_subject

EPOCHS_LAYOUT = "<anything>-epo.fif (mne Epochs; subject from sub-<label> in the name or the file stem)"
NPZ_LAYOUT = "<anything>.npz with X [trials, channels, samples], y, ch_names, sfreq, subject"
_EPO_SUFFIX = re.compile(r"[-_]epo\.fif(\.gz)?$", re.IGNORECASE)
_BIDS_SUBJECT = r"sub-([A-Za-z0-9]+)"


def _files(root: Path, dataset: str, layout: str, keep) -> tuple[list[Path], Path]:
    root = Path(root)
    if root.is_file():
        return [root], root.parent
    base = check_root(root, dataset, layout)
    files = sorted(p for p in base.rglob("*") if p.is_file() and keep(p))
    if not files:
        raise no_recordings(base, dataset, layout)
    return files, base


def epochs_fif_files(root: Path, subject_regex: str | None = None) -> list[SourceFile]:
    """SourceFiles of the `*-epo.fif` files under root; subject = first group of `subject_regex` (searched in
    the path), else `sub-<label>` in the name, else the stem without `-epo`."""
    files, base = _files(root, "mne epochs", EPOCHS_LAYOUT, lambda p: _EPO_SUFFIX.search(p.name) is not None)
    pattern = re.compile(subject_regex) if subject_regex else None
    out = []
    for path in files:
        stem = _EPO_SUFFIX.sub("", path.name)
        m = (pattern.search(path.as_posix()) if pattern else None) or re.search(_BIDS_SUBJECT, path.name)
        subject = m.group(1) if m else stem
        out.append(SourceFile(path=path, recording=recording_id(path, base), subject=subject))
    return out


@register_adapter("epochs_fif")
def epochs_fif(root: Path) -> list[SourceFile]:
    """`*-epo.fif` files; labels from the epochs' event names (read by the reader)."""
    return epochs_fif_files(root)


@register_adapter("trials_npz")
def trials_npz(root: Path) -> list[SourceFile]:
    """`*.npz` trial files; subject from each file's `subject` key."""
    files, base = _files(root, "trials npz", NPZ_LAYOUT, lambda p: p.suffix.lower() == ".npz")
    return [SourceFile(path=p, recording=recording_id(p, base), subject=npz_subject(p) or p.stem) for p in files]
