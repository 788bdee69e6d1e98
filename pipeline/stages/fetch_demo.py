"""fetch-demo: the embedded demo corpus — real EEG shipped inside pinned PyPI wheels.

    python -m pipeline fetch-demo --config config/demo.yaml
    python -m pipeline fetch-demo --settings JSON --cache resources/cache

Downloads each wheel with `pip download --no-deps` (never installs it: one of them pins an old
numpy), checks its sha256, and extracts only the EEG members into <cache>/demo/. A wheel already in
<cache>/wheels with the right hash is not downloaded again. Writes <cache>/demo/fetched.json last,
listing every extracted file with its sha256; that file is the stage's output.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Mapping

from pipeline.config import WheelSource, from_mapping, load_config
from pipeline.stages.common import StageFailed
from pipeline.store.atomic import atomic_path, write_text_atomic
from pipeline.store.fingerprint import sha256_file as _sha256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="pipeline config YAML holding `demo_corpus`")
    parser.add_argument("--settings", default=None, help="the `demo_corpus` mapping as JSON (instead of --config)")
    parser.add_argument("--cache", default=None, help="cache folder (default: the config's `cache`)")


def fetch_wheel(src: WheelSource, wheels: Path) -> Path:
    """The wheel file for `src`, downloaded when missing; StageFailed on a hash mismatch."""
    name = src.requirement.split("==")[0].replace("-", "_").lower()
    for cand in wheels.glob("*.whl"):
        if cand.name.lower().startswith(name + "-") and _sha256(cand) == src.sha256:
            return cand
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--dest", str(wheels), src.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StageFailed(f"pip download {src.requirement} failed (is PyPI reachable?):\n{proc.stderr[-2000:]}")
    digests = {p.name: _sha256(p) for p in wheels.glob("*.whl") if p.name.lower().startswith(name + "-")}
    for fname, digest in digests.items():
        if digest == src.sha256:
            return wheels / fname
    raise StageFailed(
        f"{src.requirement}: downloaded wheel(s) have sha256 {digests}, expected {src.sha256}; "
        "the index serves a different file than the one pinned in the config"
    )


def extract_members(wheel: Path, src: WheelSource, dest: Path) -> dict[str, str]:
    """Extract the configured members (file or folder prefix) → {relative path: sha256}."""
    out: dict[str, str] = {}
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
                final = dest / rel
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


def main(args: argparse.Namespace) -> None:
    if args.settings:
        raw = json.loads(args.settings)
        sources = {k: from_mapping(WheelSource, v, f"demo_corpus.{k}") for k, v in raw.items()}
        cache = Path(args.cache or "resources/cache")
    elif args.config:
        cfg = load_config(args.config)
        sources, cache = cfg.demo_corpus, Path(args.cache or cfg.cache)
    else:
        raise StageFailed("fetch-demo needs --config or --settings")
    if not sources:
        raise StageFailed("no demo_corpus wheels configured")
    stamp = fetch_demo(sources, cache)
    print(stamp)
