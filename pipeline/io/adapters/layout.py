"""Release-layout helpers the adapters share: root checks, file lists, "no recordings" errors."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def check_root(root: Path, dataset: str, layout: str) -> Path:
    """`root` as a Path; FileNotFoundError/NotADirectoryError naming it and the expected layout."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder; expected the {dataset} release layout {layout}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder; expected the {dataset} release layout {layout}")
    return root


def no_recordings(root: Path, dataset: str, layout: str, detail: str = "") -> ValueError:
    extra = f" ({detail})" if detail else ""
    return ValueError(f"{root}: no {dataset} recordings found{extra}; expected the release layout {layout}")


def edf_files(root: Path) -> list[Path]:
    """Every *.edf under root (any case), sorted."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() == ".edf" and p.is_file())


def last_folder_in(path: Path, names: Iterable[str]) -> tuple[int, str] | None:
    """(index, name) of the last folder of `path` whose name is in `names`, or None."""
    wanted = set(names)
    parts = path.parts[:-1]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in wanted:
            return i, parts[i]
    return None


def release_files(root: Path, dataset: str, layout: str, matches) -> tuple[list[Path], Path]:
    """(files whose name `matches`, base folder) of a release root — or of a single file given as the root;
    errors name the root and the expected layout."""
    root = Path(root)
    if root.is_file():
        files, base = [root], root.parent
    else:
        base = check_root(root, dataset, layout)
        files = sorted(p for p in base.rglob("*") if p.is_file() and matches(p.name))
    if not files:
        raise no_recordings(base, dataset, layout)
    return files, base
