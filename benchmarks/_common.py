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
    """The demo EEG as shards under `root` (pipeline.prep.demo_corpus.demo_shards), fetched first if needed."""
    from pipeline.prep.demo_corpus import demo_shards as build

    return build(demo_corpus(), root, window_s=window_s, chunk_windows=chunk_windows, bids_test=bids_test)


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
