"""The embedded demo corpus: real EEG shipped inside pinned PyPI wheels, fetched and extracted into the cache.

Each wheel is downloaded with `pip download --no-deps` (never installed: one of them pins an old numpy), its sha256
checked, and only the configured EEG members extracted into <cache>/demo/. A wheel already in <cache>/wheels with the
right hash is not downloaded again; a file of the pinned version with another hash is deleted (never trusted, never
left for the next run). `fetch_demo` writes <cache>/demo/fetched.json last, listing every extracted file with its
sha256.

Archives are data from elsewhere: every member is written only where its resolved path lies inside <cache>/demo/
(a member `pkg/../../../x` or a `to:` of `../x` is refused, naming it), and an absolute `to:` is refused before
anything is read.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Mapping

from pipeline.config import WheelSource
from pipeline.errors import StageFailed
from pipeline.store.atomic import atomic_path, write_text_atomic
from pipeline.store.fingerprint import sha256_file as _sha256


def _verified(wheels: Path, src: WheelSource) -> tuple[Path | None, dict[str, str]]:
    """(the cached wheel of `src` with the pinned hash or None, {deleted file: its sha256}): files of the pinned
    version with another hash are deleted — a wheel whose hash is wrong is never used, and never kept."""
    name, _, version = src.requirement.partition("==")
    prefix = f"{name.replace('-', '_').lower()}-{version.lower()}-" if version else f"{name.replace('-', '_').lower()}-"
    found, deleted = None, {}
    for cand in sorted(wheels.glob("*.whl")):
        if not cand.name.lower().startswith(prefix):
            continue
        digest = _sha256(cand)
        if digest == src.sha256:
            found = found or cand
        else:
            cand.unlink()
            deleted[cand.name] = digest
    return found, deleted


def fetch_wheel(src: WheelSource, wheels: Path) -> Path:
    """The wheel file for `src`, downloaded when missing; StageFailed on a hash mismatch (the file deleted)."""
    cached, _ = _verified(wheels, src) if wheels.is_dir() else (None, {})
    if cached is not None:
        return cached
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--dest", str(wheels), src.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StageFailed(f"pip download {src.requirement} failed (is PyPI reachable?):\n{proc.stderr[-2000:]}")
    found, deleted = _verified(wheels, src)
    if found is not None:
        return found
    raise StageFailed(
        f"{src.requirement}: downloaded wheel(s) have sha256 {deleted or 'none found'}, expected {src.sha256}; "
        "the index serves a different file than the one pinned in the config (deleted from the cache)"
    )


def _confined(dest: Path, rel: Path, what: str) -> Path:
    """dest / rel when it resolves inside dest (symlinks and `..` followed); StageFailed naming `what` otherwise."""
    root = dest.resolve()
    final = (root / rel).resolve()
    if rel.is_absolute() or not final.is_relative_to(root) or final == root:
        raise StageFailed(f"{what}: resolves to {final}, outside the cache folder {root}; refused (nothing extracted "
                          "outside it) — fix the archive or the config's `to:`")
    return final


def extract_members(wheel: Path, src: WheelSource, dest: Path) -> dict[str, str]:
    """Extract the configured members (file or folder prefix) → {relative path: sha256}, each confined to `dest`."""
    out: dict[str, str] = {}
    for _, target in src.members:
        if Path(target).is_absolute():
            raise StageFailed(f"demo_corpus {src.requirement}: `to: {target}` is an absolute path; `to:` is relative "
                              f"to the cache folder {dest}")
        _confined(dest, Path(target), f"demo_corpus {src.requirement}: `to: {target}`")
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        for member, target in src.members:
            matched = [n for n in names if (n == member or n.startswith(member.rstrip("/") + "/")) and not n.endswith("/")]
            if not matched:
                raise StageFailed(f"{wheel.name}: has no member {member!r}")
            for name in matched:
                if any(fnmatch.fnmatch(name, pat) for pat in src.exclude):
                    continue
                rel = Path(target) / Path(name).relative_to(member) if name != member else Path(target)
                final = _confined(dest, rel, f"{wheel.name}: member {name!r}")
                rel = final.relative_to(dest.resolve())
                with atomic_path(final) as tmp, zf.open(name) as fh_in, tmp.open("wb") as fh_out:
                    shutil.copyfileobj(fh_in, fh_out)
                out[rel.as_posix()] = _sha256(final)
    return out


def fetch_demo(sources: Mapping[str, WheelSource], cache: Path) -> Path:
    dest = cache / "demo"
    listing: dict[str, dict[str, str]] = {}
    for key, src in sources.items():
        wheel = fetch_wheel(src, cache / "wheels")
        listing[key] = {"wheel": wheel.name, "sha256": src.sha256, "files": extract_members(wheel, src, dest)}
    stamp = dest / "fetched.json"
    write_text_atomic(stamp, json.dumps(listing, indent=2, sort_keys=True))
    return stamp


def demo_shards(corpus: Path, root: Path, *, window_s: float, chunk_windows: int, min_duration_s: float | None = None,
                bids_test: tuple[str, ...] = ()) -> list[Path]:
    """Shards of the extracted demo EEG (BIDS s01/s02 by position, PhysioNet S001R02) under `root`/<bids|physionet>,
    through the data-plane library; a dataset whose index exists is not rebuilt. Recordings shorter than
    `min_duration_s` (default: one window) are rejected. Used by the tests' fixtures and the benchmarks."""
    from pipeline.config import IngestConfig, MontageConfig, PatchConfig, PatchSettings, PreprocessConfig, SplitConfig
    from pipeline.prep.ingest import ingest
    from pipeline.prep.preprocess import preprocess
    from pipeline.prep.shards import patch
    from pipeline.prep.standardize import standardize

    out = []
    for name, source, montage, splits in (
        ("bids", corpus / "pylossless", MontageConfig(positions="biosemi128"), SplitConfig(test=bids_test)),
        ("physionet", corpus / "physionet", MontageConfig(), SplitConfig()),
    ):
        d = root / name
        if not (d / "shards" / "index.parquet").is_file():
            ingest(source, d, cfg=IngestConfig(min_duration_s=window_s if min_duration_s is None else min_duration_s,
                                               subject_regex=r"(S\d{3})R\d{2}"))
            standardize(d / "manifest.parquet", d / "montage.parquet", montage)
            preprocess(d / "montage.parquet", d / "preprocessed", PreprocessConfig(mains=60.0))
            patch(d / "preprocessed", d / "shards",
                  PatchSettings(patch=PatchConfig(window_s=window_s, chunk_windows=chunk_windows), splits=splits))
        out.append(d / "shards")
    return out
