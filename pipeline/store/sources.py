"""The content fingerprint of a dataset's source files: what makes a corrected file rerun its ingest.

`source_fingerprint(root, cache=...)` is sha256 over (path relative to `root`, sha256 of the bytes) of every
file under `root` (`root` itself when it is a file), in path order. Symbolic links are followed (a folder of links
to the files is common); a loop of folder links is walked once. The workflow passes it to ingest as a param, so a
file whose bytes change, a file added or a file removed changes it (ingest and everything downstream rerun), and a
`touch` or a copy with its mtimes kept does not.

Hashing a terabyte at every DAG build is not affordable, so each file's sha256 is cached in `cache` (a JSON file,
one per dataset) keyed by (real path, size, mtime in ns); a file whose three are unchanged is not read again.
Consequence: **a content change that keeps a file's size and mtime is not seen** (what `touch -r` after an edit, or
some copy tools, produce); a file modified within the last `RECENT_S` seconds is hashed but not cached, so an edit
inside one timestamp tick of the hash is never missed (the "racily clean" case of git's index). A damaged or
foreign cache is ignored (everything is hashed again), and it is written by one rename, so concurrent writers
lose entries, never correctness.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from pipeline.store.atomic import write_text_atomic
from pipeline.store.fingerprint import sha256_file

log = logging.getLogger(__name__)

CACHE_VERSION = 1
RECENT_S = 2.0  # files modified this recently are hashed but not cached (one timestamp tick of coarse filesystems)
_LOUD_BYTES = 1 << 30  # hashing more than this says so on stderr (the first DAG build of a large corpus)


class SourceStat(NamedTuple):
    rel: str  # path relative to the dataset's root, posix
    path: str  # the path as walked
    key: str  # the real path (links resolved): the cache key with size and mtime
    size: int
    mtime_ns: int


def _entry(rel: str, path: str, key: str, st: os.stat_result) -> SourceStat:
    return SourceStat(rel, path, key, st.st_size, st.st_mtime_ns)


def source_files(root: str | Path) -> list[SourceStat]:
    """Every file under `root` (`root` itself when it is a file), sorted by relative path. Links are followed; each
    real folder is entered once. One stat per file and one realpath per folder: the cost of a DAG build."""
    root = os.fspath(root)
    if os.path.isfile(root):
        return [_entry(os.path.basename(root), root, os.path.realpath(root), os.stat(root))]
    found: list[SourceStat] = []
    seen: set[str] = set()
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_dir():
                    stack.append((entry.path, rel + "/"))
                elif entry.is_file():
                    key = os.path.realpath(entry.path) if entry.is_symlink() else f"{real}/{entry.name}"
                    found.append(_entry(rel, entry.path, key, entry.stat()))
    return sorted(found)


def _load(cache: Path) -> dict[str, list]:
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def file_digests(files: list[SourceStat], *, cache: str | Path, workers: int | None = None) -> list[str]:
    """sha256 of each file, read only where (real path, size, mtime_ns) is not in `cache`; the cache is rewritten
    to hold exactly these files when anything changed."""
    cache = Path(cache)
    known = _load(cache)
    started_ns = time.time_ns()
    digests = {}
    for f in files:
        entry = known.get(f.key)
        if isinstance(entry, list) and len(entry) == 3 and entry[0] == f.size and entry[1] == f.mtime_ns:
            digests[f.key] = entry[2]
    missing = {f.key: f for f in files if f.key not in digests}
    if missing:
        size = sum(f.size for f in missing.values())
        if size > _LOUD_BYTES:
            log.warning("hashing %d source files (%.1f GB) for the rerun check; cached in %s", len(missing),
                        size / 1e9, cache)
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            digests.update(zip(missing, pool.map(sha256_file, missing)))
    recent = started_ns - int(RECENT_S * 1e9)
    entries = {f.key: [f.size, f.mtime_ns, digests[f.key]] for f in files if f.mtime_ns < recent}
    if entries != known:
        write_text_atomic(cache, json.dumps({"version": CACHE_VERSION, "files": entries}))
    return [digests[f.key] for f in files]


def source_fingerprint(root: str | Path, *, cache: str | Path) -> str:
    """sha256 of (relative path, content sha256) of every file under `root`; "" when `root` does not exist
    (ingest's missing input says so)."""
    if not os.path.exists(root):
        return ""
    files = source_files(root)
    h = hashlib.sha256()
    for f, digest in zip(files, file_digests(files, cache=cache)):
        h.update(f"{f.rel}\t{digest}\n".encode())
    return h.hexdigest()
