"""TUH Abnormal EEG Corpus (TUAB) v3.0.x.

Layout: `edf/{train,eval}/{normal,abnormal}/01_tcp_ar/<subject>_s<NNN>_t<NNN>.edf`. Older copies drop the
montage level or nest deeper (v2: `…/01_tcp_ar/<grp>/<subject>/<session>/<subject>_s<NNN>_t<NNN>.edf`);
both are read. Labels: the `normal`/`abnormal` folder, for the whole recording. Split: the `train`/`eval`
folder (eval → "test"). Subject: the file name's first token (`aaaaamyj_s001_t000` → `aaaaamyj`).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.io.adapters.layout import check_root, edf_files, no_recordings
from pipeline.io.registry import register_adapter
from pipeline.io.source import SourceFile, recording_id

LAYOUT = "edf/{train,eval}/{normal,abnormal}/01_tcp_ar/<subject>_sNNN_tNNN.edf"
SPLITS = {"train": "train", "eval": "test"}
LABELS = ("normal", "abnormal")


def split_and_label(path: Path) -> tuple[str, str] | None:
    """(split, label) from the last `<train|eval>/<normal|abnormal>` folder pair in `path`, or None."""
    parts = path.parts[:-1]
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] in LABELS and parts[i - 1] in SPLITS:
            return SPLITS[parts[i - 1]], parts[i]
    return None


@register_adapter("tuab")
def tuab(root: Path) -> list[SourceFile]:
    root = check_root(root, "TUAB", LAYOUT)
    out = []
    for path in edf_files(root):
        found = split_and_label(path.absolute())
        if found is None:
            raise ValueError(
                f"{path}: not under a {{train,eval}}/{{normal,abnormal}} folder, so it has no TUAB label; "
                f"expected the release layout {LAYOUT} (point `path` at the release's edf/ folder)"
            )
        split, label = found
        session = path.stem.split("_")[1] if path.stem.count("_") >= 2 else ""
        out.append(SourceFile(path=path, recording=recording_id(path, root), subject=path.stem.split("_")[0],
                              session=session, split=split, label=label))
    if not out:
        raise no_recordings(root, "TUAB", LAYOUT)
    return out
