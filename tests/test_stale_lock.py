"""pipeline.stale_lock: a killed Snakemake's lock is cleared only when nothing works in the directory any more."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.stale_lock import clear_stale_locks, live_snakemakes


def _locked(workdir: Path) -> list[Path]:
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    files = [locks / "0.input.lock", locks / "0.output.lock"]
    for f in files:
        f.write_text("results/x\n")
    return files


def _running(argv: list[str], cwd: Path) -> subprocess.Popen:
    proc = subprocess.Popen(argv, cwd=cwd)
    time.sleep(0.3)  # its cmdline is visible once the interpreter runs
    assert proc.poll() is None
    return proc


def test_a_dead_runs_lock_is_removed(tmp_path: Path):
    files = _locked(tmp_path)
    assert clear_stale_locks(tmp_path) == sorted(files)
    assert not any(f.exists() for f in files)
    assert clear_stale_locks(tmp_path) == []  # nothing locked: nothing to do


@pytest.mark.parametrize("kind", ["snakemake --directory", "snakemake in its cwd", "a pipeline job"])
def test_a_live_snakemake_or_job_keeps_the_lock(tmp_path: Path, kind: str):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    files = _locked(work)
    sleeper = tmp_path / "snakemake"  # a process whose argv is a Snakemake's: `python …/snakemake …`
    sleeper.write_text("import time\ntime.sleep(60)\n")
    argv, cwd = {
        "snakemake --directory": ([sys.executable, str(sleeper), "all", "--directory", str(work)], elsewhere),
        "snakemake in its cwd": ([sys.executable, str(sleeper), "all"], work),
        "a pipeline job": ([sys.executable, "-c", "import time; time.sleep(60)", "-m", "pipeline", "preprocess"], work),
    }[kind]
    proc = _running(argv, cwd)
    try:
        assert live_snakemakes(work) == [proc.pid]
        assert clear_stale_locks(work) == [] and all(f.exists() for f in files)
        assert live_snakemakes(elsewhere) == []
    finally:
        proc.kill()
        proc.wait()
    assert clear_stale_locks(work) == sorted(files)
