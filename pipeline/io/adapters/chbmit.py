"""CHB-MIT Scalp EEG Database v1.0.0.

Layout: `chbNN/chbNN_MM.edf` (also `chb17a_03.edf`-style names) with one `chbNN/chbNN-summary.txt` per subject
folder. Labels: seizure intervals from the summary's blocks

    File Name: chb01_03.edf
    Number of Seizures in File: 1
    Seizure Start Time: 2996 seconds        (or `Seizure 1 Start Time: …`, as in chb24)
    Seizure End Time: 3036 seconds

as ("seizure") events (onset, duration). Subject: the folder name (chb21 is chb01 recorded later; kept apart).
No official split. A file missing from its summary gets no events and a note in `sidecar_notes`.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.io.adapters.layout import check_root, no_recordings
from pipeline.io.registry import register_adapter
from pipeline.io.source import SourceFile, recording_id

LAYOUT = "chbNN/chbNN_MM.edf with chbNN/chbNN-summary.txt"
_SUBJECT_DIR = re.compile(r"chb\d{2}", re.IGNORECASE)
_FILE = re.compile(r"^File\s+Name\s*:\s*(\S+)\s*$", re.IGNORECASE)
_COUNT = re.compile(r"^Number\s+of\s+Seizures\s+in\s+File\s*:\s*(\d+)\s*$", re.IGNORECASE)
_TIME = re.compile(r"^Seizure(?:\s*\d+)?\s+(Start|End)\s+Time\s*:\s*(\d+(?:\.\d*)?)\s*(?:seconds|secs?|s)?\s*$",
                   re.IGNORECASE)

Seizures = dict[str, tuple[tuple[float, float, str], ...]]


def read_summary(path: Path) -> Seizures:
    """File name → seizure events (onset_s, duration_s, "seizure"); ValueError naming the file and line."""
    out: Seizures = {}
    current: str | None = None
    expected: int | None = None
    events: list[tuple[float, float, str]] = []
    start: float | None = None

    def close(lineno: int) -> None:
        if current is None:
            return
        if start is not None:
            raise ValueError(f"{path}: line {lineno}: {current}: seizure start {start:g} s has no end time")
        if expected is not None and expected != len(events):
            raise ValueError(f"{path}: {current}: 'Number of Seizures in File: {expected}' but "
                             f"{len(events)} start/end pair(s) listed")
        out[current] = tuple(events)

    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if m := _FILE.match(line):
            close(lineno)
            current, expected, events, start = m.group(1), None, [], None
            if current in out:
                raise ValueError(f"{path}: line {lineno}: {current} is listed twice")
        elif m := _COUNT.match(line):
            if current is None:
                raise ValueError(f"{path}: line {lineno}: seizure count before any 'File Name:' line")
            expected = int(m.group(1))
        elif line.lower().startswith("seizure"):
            m = _TIME.match(line)
            if m is None:
                raise ValueError(f"{path}: line {lineno}: cannot read seizure time from {line!r} "
                                 "(expected e.g. 'Seizure Start Time: 2996 seconds')")
            if current is None:
                raise ValueError(f"{path}: line {lineno}: seizure time before any 'File Name:' line")
            value = float(m.group(2))
            if m.group(1).lower() == "start":
                if start is not None:
                    raise ValueError(f"{path}: line {lineno}: {current}: two start times without an end time")
                start = value
            else:
                if start is None:
                    raise ValueError(f"{path}: line {lineno}: {current}: end time without a start time")
                if value <= start:
                    raise ValueError(f"{path}: line {lineno}: {current}: seizure ends ({value:g} s) "
                                     f"before it starts ({start:g} s)")
                events.append((start, value - start, "seizure"))
                start = None
    close(len(lines))
    return out


def _subject_dirs(root: Path) -> list[Path]:
    if _SUBJECT_DIR.fullmatch(root.name):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and _SUBJECT_DIR.fullmatch(p.name))


@register_adapter("chbmit")
def chbmit(root: Path) -> list[SourceFile]:
    root = check_root(root, "CHB-MIT", LAYOUT)
    base = root.parent if _SUBJECT_DIR.fullmatch(root.name) else root  # recording ids keep the subject folder
    out = []
    for folder in _subject_dirs(root):
        edfs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".edf" and p.is_file())
        if not edfs:
            continue
        summary = folder / f"{folder.name}-summary.txt"
        if not summary.is_file():
            raise FileNotFoundError(f"{summary}: missing; CHB-MIT seizure labels come from each subject's "
                                    f"summary file (expected layout {LAYOUT})")
        seizures = read_summary(summary)
        for path in edfs:
            notes: tuple[str, ...] = ()
            if path.name not in seizures:
                notes = (f"{path.name} is not listed in {summary.name}: no seizure labels",)
            out.append(SourceFile(path=path, recording=recording_id(path, base), subject=folder.name,
                                  events=seizures.get(path.name, ()), sidecar_notes=notes))
    if not out:
        raise no_recordings(root, "CHB-MIT", LAYOUT, "no chbNN/ folder with .edf files")
    return out
