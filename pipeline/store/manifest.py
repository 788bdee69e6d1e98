"""Completeness of published folders: a manifest of every file, written last, checked before reuse.

A rename makes a folder appear whole on the machine that wrote it, but a copy (a partial rsync, a copy that was
interrupted, a cleaned-up scratch space) can drop files, and a Zarr array reads a missing chunk as its fill value:
a signal store with chunks missing reads as zeros, silently. So every folder published by
`pipeline.store.atomic.atomic_path(directory=True)` carries `.manifest.json` (relative path → size of every file
in it, written just before the rename), and a stage reuses a folder only when `problem(folder)` is None.
Sizes, not hashes: the check costs one `stat` per file, so it runs on every reuse; it catches missing and
truncated files (what partial copies leave), not bit flips inside a file of the right size.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = ".manifest.json"


def _files(folder: Path) -> dict[str, int]:
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if rel != MANIFEST:
                out[rel] = path.stat().st_size
    return out


def seal(folder: str | Path) -> None:
    """Write `folder`'s manifest (call it when the folder is complete, before publishing it)."""
    folder = Path(folder)
    (folder / MANIFEST).write_text(json.dumps({"files": dict(sorted(_files(folder).items()))}))


def problem(folder: str | Path) -> str | None:
    """None when `folder` holds every file of its manifest at its size; otherwise what is wrong, in words."""
    folder = Path(folder)
    try:
        listed = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (an unfinished or partial copy, or written before manifests existed)"
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable {MANIFEST} ({exc})"
    missing, wrong = [], []
    for rel, size in listed.items():
        try:
            if (folder / rel).stat().st_size != size:
                wrong.append(rel)
        except FileNotFoundError:
            missing.append(rel)
    if missing or wrong:
        first = (missing or wrong)[0]
        return (f"{len(missing)} of {len(listed)} file(s) missing and {len(wrong)} of another size than written "
                f"(e.g. {first}) — a partial copy")
    return None


def reusable(folder: str | Path, what: str) -> bool:
    """True when `folder` is complete; otherwise a warning naming it and why, and False (the caller rebuilds it)."""
    why = problem(folder)
    if why is not None:
        log.warning("%s %s is incomplete, rebuilding it: %s", what, folder, why)
    return why is None
