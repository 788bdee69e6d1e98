"""Shared by the benchmarks: where results go, the demo corpus, CPU time and peak RSS of a child."""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"


def demo_corpus() -> Path:
    from pipeline.config import load_config
    from pipeline.prep.demo_corpus import fetch_demo

    cfg = load_config(ROOT / "config" / "demo.yaml")
    stamp = ROOT / cfg.cache / "demo" / "fetched.json"
    if not stamp.is_file():
        fetch_demo(cfg.demo_corpus, ROOT / cfg.cache)
    return stamp.parent


def demo_shards(root: Path, *, window_s: float, chunk_windows: int, bids_test: tuple[str, ...] = ()) -> list[Path]:
    """Shards of the demo EEG (BIDS s01/s02 by position, PhysioNet S001R02), built once under `root` by the
    data-plane library (recordings shorter than one window are rejected)."""
    from pipeline.config import IngestConfig, MontageConfig, PatchConfig, PatchSettings, PreprocessConfig, SplitConfig
    from pipeline.prep.ingest import ingest
    from pipeline.prep.preprocess import preprocess
    from pipeline.prep.shards import patch
    from pipeline.prep.standardize import standardize

    corpus = demo_corpus()
    out = []
    for name, source, montage, splits in (
        ("bids", corpus / "pylossless", MontageConfig(positions="biosemi128"), SplitConfig(test=bids_test)),
        ("physionet", corpus / "physionet", MontageConfig(), SplitConfig()),
    ):
        d = root / name
        if not (d / "shards" / "index.parquet").is_file():
            ingest(source, d, cfg=IngestConfig(min_duration_s=window_s, subject_regex=r"(S\d{3})R\d{2}"))
            standardize(d / "manifest.parquet", d / "montage.parquet", montage)
            preprocess(d / "montage.parquet", d / "preprocessed", PreprocessConfig(mains=60.0))
            patch(d / "preprocessed", d / "shards",
                  PatchSettings(patch=PatchConfig(window_s=window_s, chunk_windows=chunk_windows), splits=splits))
        out.append(d / "shards")
    return out


def run_measured(code: str, *args: str) -> dict:
    """Run `python -c code args…` in a fresh process: its CPU seconds, wall seconds, peak RSS, stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return {
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "wall_s": wall,
        # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: run the big one last or alone.
        "peak_rss_mib": after.ru_maxrss / 1024,
        "stdout": proc.stdout,
    }


def machine() -> dict:
    import os

    return {"python": sys.version.split()[0], "machine": platform.machine(), "cpus": os.cpu_count()}


def write_result(name: str, result: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **result}, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path
