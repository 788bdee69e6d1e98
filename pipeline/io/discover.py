"""Find EEG recordings under a path: a single file, a folder of EDF/BDF files, or a BIDS tree.

Every list returned has unique recording ids (pipeline.io.source.unique_ids). For BIDS the recording's
sidecars are read too: `*_channels.tsv` (bad channels by `status`),
`*_events.tsv` (labelled events) and `*_eeg.json` (power-line frequency).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from pipeline.io.source import SourceFile, recording_id, unique_ids

EEG_SUFFIXES = (".edf", ".bdf")
_BIDS_ENTITY = re.compile(r"(sub|ses|task|run|acq)-([A-Za-z0-9]+)")


def is_bids_root(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_description.json").is_file() or any(path.glob("sub-*/**/eeg")))


def read_tsv(path: Path) -> list[dict[str, str]]:
    # BIDS files written on Windows often start with a BOM; utf-8-sig strips it.
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _bids_sidecar(eeg_file: Path, suffix: str) -> Path | None:
    # BIDS names sidecars by the same entities; channels/events drop the `_eeg` suffix.
    base = eeg_file.name.rsplit("_eeg", 1)[0]
    candidate = eeg_file.with_name(f"{base}_{suffix}")
    return candidate if candidate.is_file() else None


def _bids_events(path: Path | None) -> tuple[tuple[float, float, str], ...]:
    if path is None:
        return ()
    events = []
    for row in read_tsv(path):
        label = row.get("trial_type") or row.get("value") or ""
        if label in ("", "n/a"):
            continue
        duration = row.get("duration", "0")
        events.append((float(row["onset"]), 0.0 if duration in ("", "n/a") else float(duration), label))
    return tuple(events)


def _bids_file(eeg_file: Path, root: Path, honour_status: bool) -> SourceFile:
    entities = dict(_BIDS_ENTITY.findall(eeg_file.name))
    bad: tuple[str, ...] = ()
    channels_tsv = _bids_sidecar(eeg_file, "channels.tsv")
    if honour_status and channels_tsv is not None:
        bad = tuple(r["name"] for r in read_tsv(channels_tsv) if r.get("status", "good").strip().lower() == "bad")
    mains = None
    sidecar = _bids_sidecar(eeg_file, "eeg.json")
    if sidecar is not None:
        value = json.loads(sidecar.read_text(encoding="utf-8-sig")).get("PowerLineFrequency")
        mains = float(value) if isinstance(value, (int, float)) else None
    return SourceFile(
        path=eeg_file,
        recording=eeg_file.stem,  # BIDS file names are unique by their entities
        subject=entities.get("sub", ""),
        session=entities.get("ses", ""),
        task=entities.get("task", ""),
        run=entities.get("run", ""),
        bad_channels=bad,
        events=_bids_events(_bids_sidecar(eeg_file, "events.tsv")),
        mains=mains,
    )


def discover(path: str | Path, *, fmt: str = "auto", subject_regex: str | None = None,
             honour_bids_status: bool = True) -> list[SourceFile]:
    """All recordings under `path`, sorted by path. Raises FileNotFoundError naming `path`."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder (check the dataset's `path` in the config)")
    import pipeline.io.adapters  # noqa: F401  (adapters register on import)
    from pipeline.io.registry import ADAPTERS

    if fmt in ADAPTERS:
        return unique_ids(sorted(ADAPTERS[fmt](root), key=lambda s: str(s.path)))
    if root.is_file():
        files, base = [root], root.parent
    else:
        base = root
        if fmt == "bids" or (fmt == "auto" and is_bids_root(root)):
            found = sorted(p for p in root.glob("sub-*/**/eeg/*_eeg.*") if p.suffix.lower() in EEG_SUFFIXES)
            return unique_ids([_bids_file(p, root, honour_bids_status) for p in found])
        suffixes = {"edf": (".edf",), "bdf": (".bdf",)}.get(fmt, EEG_SUFFIXES)
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    pattern = re.compile(subject_regex) if subject_regex else None
    out = []
    for p in files:
        subject = p.stem
        if pattern is not None and (m := pattern.search(p.as_posix())):
            subject = m.group(1)
        out.append(SourceFile(path=p, recording=recording_id(p, base), subject=subject))
    return unique_ids(out)
