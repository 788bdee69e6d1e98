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

from pipeline.store.atomic import write_text_atomic
from pipeline.store.fingerprint import sha256_file

log = logging.getLogger(__name__)

CACHE_VERSION = 1
RECENT_S = 2.0  # files modified this recently are hashed but not cached (one timestamp tick of coarse filesystems)
_LOUD_BYTES = 1 << 30  # hashing more than this says so on stderr (the first DAG build of a large corpus)


def source_files(root: str | Path) -> list[tuple[str, Path]]:
    """(path relative to `root` in posix form, absolute path) of every file under `root`, sorted; `root` itself when
    it is a file. Links are followed; each real folder is entered once."""
    root = Path(root)
    if root.is_file():
        return [(root.name, root.absolute())]
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        for name in names:
            path = Path(folder) / name
            if path.is_file():
                found.append((path.relative_to(root).as_posix(), path.absolute()))
    return sorted(found)


def _load(cache: Path) -> dict[str, list]:
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def file_digests(files: list[Path], *, cache: str | Path, workers: int | None = None) -> list[str]:
    """sha256 of each file, read only where (real path, size, mtime_ns) is not in `cache`; the cache is rewritten
    to hold exactly these files when anything changed."""
    cache = Path(cache)
    known = _load(cache)
    started_ns = time.time_ns()
    keys, stats, digests = [], [], {}
    for path in files:
        st = path.stat()
        key = os.path.realpath(path)
        keys.append(key)
        stats.append((st.st_size, st.st_mtime_ns))
        entry = known.get(key)
        if isinstance(entry, list) and len(entry) == 3 and tuple(entry[:2]) == (st.st_size, st.st_mtime_ns):
            digests[key] = entry[2]
    missing = sorted({k for k in keys if k not in digests})
    if missing:
        todo = set(missing)
        size = sum(s for k, (s, _) in dict(zip(keys, stats)).items() if k in todo)
        if size > _LOUD_BYTES:
            log.warning("hashing %d source files (%.1f GB) for the rerun check; cached in %s", len(missing),
                        size / 1e9, cache)
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            digests.update(zip(missing, pool.map(sha256_file, missing)))
    recent = started_ns - int(RECENT_S * 1e9)
    entries = {k: [s, m, digests[k]] for k, (s, m) in zip(keys, stats) if m < recent}
    if entries != known:
        write_text_atomic(cache, json.dumps({"version": CACHE_VERSION, "files": entries}))
    return [digests[k] for k in keys]


def source_fingerprint(root: str | Path, *, cache: str | Path) -> str:
    """sha256 of (relative path, content sha256) of every file under `root`; "" when `root` does not exist
    (ingest's missing input says so)."""
    root = Path(root)
    if not root.exists():
        return ""
    files = source_files(root)
    digests = file_digests([p for _, p in files], cache=cache)
    h = hashlib.sha256()
    for (rel, _), digest in zip(files, digests):
        h.update(f"{rel}\t{digest}\n".encode())
    return h.hexdigest()
