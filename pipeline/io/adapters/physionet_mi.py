"""PhysioNet EEG Motor Movement/Imagery Dataset (EEGMMIDB) v1.0.0, 4-class motor imagery.

Layout: `S001/S001R01.edf` … `S109/S109R14.edf`. Labels: the EDF+ annotations T0/T1/T2 inside each file,
read by run type as in the CBraMod/BrainRVQ setup: imagined left/right fist runs 4, 8, 12 → T1 = left_fist,
T2 = right_fist; imagined both-fists/both-feet runs 6, 10, 14 → T1 = both_fists, T2 = both_feet. T0 (rest)
is dropped; the baselines (runs 1, 2) and executed-movement runs (3, 5, 7, 9, 11, 13) are not returned.
Subject: `S001`. No official split.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.io.adapters.layout import check_root, edf_files, no_recordings
from pipeline.io.recording import RecordingError
from pipeline.io.registry import register_adapter
from pipeline.io.source import SourceFile, recording_id

LAYOUT = "S###/S###R##.edf (EDF+ with T0/T1/T2 annotations)"
_NAME = re.compile(r"(S\d{3})R(\d{2})", re.IGNORECASE)
LEFT_RIGHT = {"T1": "left_fist", "T2": "right_fist"}
FISTS_FEET = {"T1": "both_fists", "T2": "both_feet"}
RUNS: dict[int, tuple[str, dict[str, str]]] = {
    **{r: ("imagine_left_right", LEFT_RIGHT) for r in (4, 8, 12)},
    **{r: ("imagine_fists_feet", FISTS_FEET) for r in (6, 10, 14)},
}


def run_events(path: Path, classes: dict[str, str]) -> tuple[tuple[tuple[float, float, str], ...], tuple[str, ...]]:
    """Cue events of one imagery run from its EDF+ annotations, and notes on what was left out."""
    from pipeline.io.edf import open_edf

    try:
        annotations = open_edf(path).info.annotations
    except RecordingError as exc:  # ingest rejects the file with the reader's message
        return (), (f"annotations unreadable: {exc}",)
    events, unknown = [], set()
    for onset, duration, text in annotations:
        code = text.strip()
        if code in classes:
            events.append((float(onset), float(duration), classes[code]))
        elif code != "T0":
            unknown.add(code)
    notes = (f"annotations other than T0/T1/T2 ignored: {sorted(unknown)}",) if unknown else ()
    if not events:
        notes += (f"{path.name}: no T1/T2 annotations, so no motor-imagery events",)
    return tuple(sorted(events)), notes


@register_adapter("physionet_mi")
def physionet_mi(root: Path) -> list[SourceFile]:
    root = check_root(root, "PhysioNet-MI", LAYOUT)
    out, other_runs = [], 0
    for path in edf_files(root):
        m = _NAME.fullmatch(path.stem)
        if m is None:
            continue
        run = int(m.group(2))
        if run not in RUNS:
            other_runs += 1
            continue
        task, classes = RUNS[run]
        events, notes = run_events(path, classes)
        out.append(SourceFile(path=path, recording=recording_id(path, root), subject=m.group(1).upper(),
                              task=task, run=f"{run:02d}", events=events, sidecar_notes=notes))
    if not out:
        detail = f"{other_runs} file(s) of other runs, none of imagery runs 4, 6, 8, 10, 12, 14" if other_runs else ""
        raise no_recordings(root, "PhysioNet-MI", LAYOUT, detail)
    return out
