"""The tables' data-quality footnotes: one line per downstream dataset from the quality sections its stages wrote.

Inputs are the stages' own summaries (`pipeline.prep.report.finish_stage`): standardize's `montage_quality.json`
(per recording: source channels dropped with their reason, targets padded) and the samples' patch
`quality.json` (windows kept and dropped by the amplitude/NaN rules per split and class). Each file names its
stage (`"stage"`), so the caller only says which dataset a file belongs to:

    notes = dataset_notes({"TUAB": [Path(".../TUAB/montage_quality.json"), Path(".../TUAB/samples/quality.json")]})
    notes["TUAB"]  # "1 target channel(s) padded (zero + masked) in 3 recording(s): T1; 117 of 40 960 windows
                   #  dropped by the amplitude/NaN rules (train 71 of 36 864: normal 40, abnormal 31; test 46 …)"

A missing or unreadable file becomes a note that says so (a table without its footnote would look clean).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

SPLIT_ORDER = ("train", "val", "test")


def parse_quality_args(items: Sequence[str] | None) -> dict[str, list[Path]]:
    """`DATASET=PATH` words (the tables stage's --quality) → {dataset: [paths]} in the order given."""
    out: dict[str, list[Path]] = {}
    for item in items or ():
        dataset, sep, path = item.partition("=")
        if not sep or not dataset or not path:
            raise ValueError(f"--quality {item!r}: expected DATASET=PATH (a stage's quality JSON)")
        out.setdefault(dataset, []).append(Path(path))
    return out


def _count(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def _splits(mapping: Mapping[str, object]) -> list[str]:
    return sorted(mapping, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))


def window_note(quality: dict) -> list[str]:
    """The patch stage's section → "N of M windows dropped by the amplitude/NaN rules (split n of m: class k, …)",
    or that none were; plus a line per validation/test split left with a single class."""
    kept, dropped = quality.get("windows", {}), quality.get("dropped_amplitude_nan", {})
    total_dropped = sum(n for classes in dropped.values() for n in classes.values())
    total = total_dropped + sum(n for classes in kept.values() for n in classes.values())
    notes = []
    if total_dropped:
        parts = []
        for split in _splits(dropped):
            lost = dropped[split]
            n = sum(lost.values())
            of = n + sum(kept.get(split, {}).values())
            classes = "" if set(lost) == {"all"} else ": " + ", ".join(
                f"{c} {k}" for c, k in sorted(lost.items(), key=lambda kv: (-kv[1], kv[0])))
            parts.append(f"{split} {_count(n)} of {_count(of)}{classes}")
        notes.append(f"{_count(total_dropped)} of {_count(total)} windows dropped by the amplitude/NaN rules "
                     f"({'; '.join(parts)})")
    else:
        notes.append(f"no window dropped by the amplitude/NaN rules ({_count(total)} kept)")
    for split in ("val", "test"):
        present = [c for c, n in kept.get(split, {}).items() if n]
        if len(present) == 1 and present != ["all"]:
            notes.append(f"the {split} split holds one class ({present[0]}): its AUROC/AUC-PR are undefined")
    return notes


def _channels(counter: Counter, reasons: dict[str, str] | None = None, limit: int = 6) -> str:
    """The most frequent channel names first (with their reason when given), the rest counted."""
    names = [name + (f" ({reasons[name]})" if reasons else "")
             for name, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]
    return ", ".join(names[:limit]) + (f", … {len(names) - limit} more" if len(names) > limit else "")


def montage_note(quality: dict) -> list[str]:
    """Standardize's section → "K target channel(s) padded (zero + masked) in R recording(s): T1, T2, …" and the same
    for source channels dropped (each with its reason), or that none were."""
    recordings = quality.get("recordings", {})
    padded = Counter(ch for rec in recordings.values() for ch in rec.get("padded", []))
    dropped = Counter(ch for rec in recordings.values() for ch in rec.get("dropped", {}))
    why: dict[str, Counter] = {}
    for rec in recordings.values():
        for ch, reason in rec.get("dropped", {}).items():
            why.setdefault(ch, Counter())[reason] += 1
    notes = []
    if padded:
        n_rec = sum(bool(rec.get("padded")) for rec in recordings.values())
        notes.append(f"{len(padded)} target channel(s) padded (zero + masked) in {n_rec} recording(s): "
                     f"{_channels(padded)}")
    if dropped:
        n_rec = sum(bool(rec.get("dropped")) for rec in recordings.values())
        reasons = {ch: c.most_common(1)[0][0] for ch, c in why.items()}
        notes.append(f"{len(dropped)} source channel(s) dropped in {n_rec} recording(s): {_channels(dropped, reasons)}")
    if not notes:
        notes.append("no channel dropped or padded")
    return notes


_NOTES = {"patch": window_note, "standardize": montage_note}


def file_notes(path: Path) -> list[str]:
    """The notes of one stage summary; a missing or unreadable file is itself a note."""
    try:
        quality = json.loads(path.read_text())
    except FileNotFoundError:
        return [f"no quality summary at {path} (written by the data stages since they report quality; "
                "rerun the dataset's standardize and samples jobs with `--forcerun`)"]
    except (OSError, json.JSONDecodeError) as exc:
        return [f"quality summary {path} unreadable ({exc})"]
    stage = quality.get("stage") if isinstance(quality, dict) else None
    if stage not in _NOTES:
        return [f"quality summary {path}: unknown stage {stage!r} (expected one of {sorted(_NOTES)})"]
    return _NOTES[stage](quality)


def dataset_notes(files: Mapping[str, Sequence[Path]]) -> dict[str, str]:
    """{dataset: "note; note; …"} over each dataset's stage summaries, standardize's before the windows'."""
    out = {}
    for dataset, paths in files.items():
        notes: list[str] = []
        for path in paths:
            notes += file_notes(Path(path))
        out[dataset] = "; ".join(notes)
    return out
