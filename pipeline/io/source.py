"""A recording found on disk (`SourceFile`) and its id: the leaf every finder and adapter imports.

Recording ids name a recording's stores (`preprocessed/<id>.zarr`, `shards/<id>/`), so they must be unique
within a dataset. `recording_id` maps a path to a filesystem-safe id; two paths can map to one id
(`rec.edf` + `rec.bdf`, `a/b.edf` + `a__b.edf`), so every finder passes its list through `unique_ids`,
which gives each member of a colliding group a suffix from a hash of its own relative path.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class SourceFile:
    path: Path
    recording: str  # unique, filesystem-safe id within the dataset (unique_ids makes it so)
    subject: str
    session: str = ""
    task: str = ""
    run: str = ""
    bad_channels: tuple[str, ...] = ()
    events: tuple[tuple[float, float, str], ...] = ()  # from BIDS events.tsv
    mains: float | None = None  # the recording's own line frequency (BIDS PowerLineFrequency, or an adapter's)
    sidecar_notes: tuple[str, ...] = field(default=())
    # Set by dataset adapters (pipeline.io.adapters) from the release's own layout/label files:
    split: str = ""  # official split: "train" | "test" ("" = none; SplitConfig decides)
    label: str = ""  # recording-level label (TUAB normal/abnormal, EEGMAT rest/task); "" = none


def _relative(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else Path(path.name)


def recording_id(path: Path, root: Path) -> str:
    """The path below `root` without its suffix, unsafe characters (`/` included) replaced by `__`."""
    return _UNSAFE.sub("__", _relative(Path(path), Path(root)).with_suffix("").as_posix())


def unique_ids(files: list[SourceFile]) -> list[SourceFile]:
    """`files` with every id unique: each member of a group sharing an id gets `-<8 hex>` of the sha256 of
    its path (stable: the same file gets the same id on every run). Raises ValueError naming both paths if
    ids still collide."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(files):
        groups[f.recording].append(i)
    out = list(files)
    for rec, members in groups.items():
        if len(members) < 2:
            continue
        log.warning("recording id %r is shared by %s; each gets a suffix from its path", rec,
                    ", ".join(str(files[i].path) for i in members))
        for i in members:
            digest = hashlib.sha256(files[i].path.as_posix().encode()).hexdigest()[:8]
            out[i] = replace(files[i], recording=f"{rec}-{digest}")
    seen: dict[str, Path] = {}
    for f in out:
        if f.recording in seen:
            raise ValueError(f"{seen[f.recording]} and {f.path}: both map to recording id {f.recording!r}; "
                             "rename one of the files")
        seen[f.recording] = f.path
    return out
