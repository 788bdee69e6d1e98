"""TUH EEG Events Corpus (TUEV) v2.0.x.

Layout: `edf/{train,eval}/<subject>/<subject>_<NNNNNNNN>.edf`, each with a sibling `.rec` file of CSV lines
`channel_index,start_s,stop_s,code` (codes 1..6 = spsw, gped, pled, eyem, artf, bckg). The same event marked
on several channels is one event: events are the distinct (start, stop, code) triples, sorted by onset.
Split: the `train`/`eval` folder (eval → "test"). Subject: the file name's first token (= its folder in
v2.0.x). A missing `.rec` leaves the recording listed without events and says so in `sidecar_notes`.
"""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.io.adapters.layout import check_root, edf_files, last_folder_in, no_recordings
from pipeline.io.registry import register_adapter
from pipeline.io.source import SourceFile, recording_id

LAYOUT = "edf/{train,eval}/<subject>/<subject>_NNNNNNNN.edf + .rec (channel,start_s,stop_s,code)"
SPLITS = {"train": "train", "eval": "test"}
CODES = {1: "spsw", 2: "gped", 3: "pled", 4: "eyem", 5: "artf", 6: "bckg"}


def read_rec(path: Path) -> tuple[tuple[float, float, str], ...]:
    """Distinct (onset_s, duration_s, class) events of a TUEV `.rec` file; ValueError naming the file and line."""
    seen: set[tuple[float, float, int]] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4:
            raise ValueError(f"{path}: line {lineno}: expected 4 comma-separated fields "
                             f"(channel,start_s,stop_s,code), got {line.strip()!r}")
        try:
            int(fields[0])
            start, stop, code_f = float(fields[1]), float(fields[2]), float(fields[3])
        except ValueError:
            raise ValueError(f"{path}: line {lineno}: non-numeric field in {line.strip()!r}") from None
        if not code_f.is_integer() or int(code_f) not in CODES:
            raise ValueError(f"{path}: line {lineno}: unknown event code {fields[3]!r} (TUEV codes are 1..6)")
        if not (math.isfinite(start) and math.isfinite(stop)) or start < 0 or stop <= start:
            raise ValueError(f"{path}: line {lineno}: bad interval start={fields[1]} stop={fields[2]}")
        seen.add((start, stop, int(code_f)))
    return tuple((start, stop - start, CODES[code]) for start, stop, code in sorted(seen))


@register_adapter("tuev")
def tuev(root: Path) -> list[SourceFile]:
    root = check_root(root, "TUEV", LAYOUT)
    out = []
    for path in edf_files(root):
        found = last_folder_in(path.absolute(), SPLITS)
        if found is None:
            raise ValueError(f"{path}: not under a train/ or eval/ folder; expected the release layout {LAYOUT} "
                             "(point `path` at the release's edf/ folder)")
        rec = path.with_suffix(".rec")
        notes: tuple[str, ...] = ()
        events: tuple[tuple[float, float, str], ...] = ()
        if rec.is_file():
            events = read_rec(rec)
        else:
            notes = (f"{rec}: missing, so no events (TUEV labels come from the .rec file)",)
        out.append(SourceFile(path=path, recording=recording_id(path, root), subject=path.stem.split("_")[0],
                              events=events, sidecar_notes=notes, split=SPLITS[found[1]]))
    if not out:
        raise no_recordings(root, "TUEV", LAYOUT)
    return out
