"""Publish outputs atomically: write under a temporary sibling name, then rename into place.

Contract: a path without the `.tmp-` infix is complete. A temporary's name carries its writer
(`<name>.tmp-<host>-<pid>-<random>`), unique per writer. A killed writer leaves only `*.tmp-*` siblings, which no
reader trusts; the next writer of the same path removes the ones whose writer is gone — on this host, a pid that no
longer runs; from another host (a shared filesystem), one untouched for `FOREIGN_STALE_S` — and never a live
writer's. A published folder carries a manifest of its files (pipeline.store.manifest) written before the rename.
Replacing a folder swaps it with the new one in one step (Linux renameat2 RENAME_EXCHANGE), so the path never goes
missing; where the filesystem cannot swap, two renames leave it missing for an instant, which readers of this
project never see (each stage's outputs are replaced only by that stage's own rerun).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Iterator

FOREIGN_STALE_S = 24 * 3600  # a temporary of another host untouched this long is a dead writer's
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32] or "host"
_TMP = re.compile(r"\.tmp-(?:(?P<host>[A-Za-z0-9_]+)-)?(?P<pid>\d+)-[0-9a-f]{8}$")


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _abandoned(tmp: Path) -> bool:
    """Whether temporary `tmp`'s writer is gone (a name without a writer is never touched)."""
    m = _TMP.search(tmp.name)
    if m is None:
        return False
    host, pid = m.group("host"), int(m.group("pid"))
    if host is None or host == _HOST:  # no host: written before names carried one, on a single machine
        return pid != os.getpid() and not _alive(pid)
    try:
        return time.time() - tmp.lstat().st_mtime > FOREIGN_STALE_S
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def remove_stale(path: Path) -> None:
    """Remove temporaries of `path` that a killed writer left behind (not a live writer's)."""
    for stale in path.parent.glob(f"{path.name}.tmp-*"):
        if stale.name[len(path.name):].startswith(".tmp-") and _abandoned(stale):
            _remove(stale)


_RENAME_EXCHANGE = 2
_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2); False where the system or filesystem cannot."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.renameat2  # noqa: B018 (glibc >= 2.28)
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    at_fdcwd = -100
    rc = _libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _replace(tmp: Path, path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        # os.replace cannot put a folder over a non-empty folder: swap them, then delete the old one (now at tmp).
        if _exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = _tmp_sibling(path)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes `path` (a folder: with its manifest), on error it is
    removed."""
    from pipeline.store.manifest import seal

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = _tmp_sibling(path)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if directory:
            seal(tmp)
        _replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
