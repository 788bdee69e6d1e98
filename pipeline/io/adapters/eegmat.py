"""PhysioNet EEG During Mental Arithmetic Tasks (EEGMAT) v1.0.0.

Layout: `SubjectNN_1.edf` and `SubjectNN_2.edf` in one folder (with `subject-info.csv`). Labels, for the
whole recording, from the file-name suffix: `_1` = "rest" (the 3 min before the task), `_2` = "task" (the
first minute of serial subtraction). Subject: `SubjectNN`. No official split.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.io.adapters.layout import check_root, edf_files, no_recordings
from pipeline.io.registry import register_adapter
from pipeline.io.source import SourceFile, recording_id

LAYOUT = "SubjectNN_1.edf (rest) and SubjectNN_2.edf (task)"
_NAME = re.compile(r"(Subject\d+)_([12])", re.IGNORECASE)
LABELS = {"1": "rest", "2": "task"}


@register_adapter("mental_arithmetic")
def eegmat(root: Path) -> list[SourceFile]:
    root = check_root(root, "EEGMAT", LAYOUT)
    out = []
    for path in edf_files(root):
        m = _NAME.fullmatch(path.stem)
        if m is None:
            continue
        subject = "Subject" + m.group(1)[len("Subject"):]
        out.append(SourceFile(path=path, recording=recording_id(path, root), subject=subject,
                              run=m.group(2), label=LABELS[m.group(2)]))
    if not out:
        raise no_recordings(root, "EEGMAT", LAYOUT)
    return out
