"""The real Snakemake DAG, end to end through `patch`, on a tiny config of real demo EEG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import zarr
import pytest
import yaml

from pipeline.store.zarr_store import open_shard


def _snakemake(repo: Path, workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args, "--configfile", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=repo)


@pytest.fixture(scope="module")
def tiny_config(repo_root: Path, demo_corpus: Path, tmp_path_factory) -> Path:
    """The demo config, cut down: the PhysioNet recording plus the BIDS pair at 10 s windows."""
    work = tmp_path_factory.mktemp("workflow")
    cfg = yaml.safe_load((repo_root / "config" / "demo.yaml").read_text())
    cfg["results"] = str(work / "results")
    cfg["cache"] = str(repo_root / cfg["cache"])  # reuse the fetched corpus
    for ds in cfg["datasets"].values():
        ds["path"] = str(repo_root / ds["path"])
    cfg["patch"]["window_s"] = 10
    cfg["dask"]["n_workers"] = 1
    cfg["tokenizer"]["train"].update(max_steps=6, eval_every=3, checkpoint_every=3, log_every=1)
    cfg["tokenizer"]["eval_windows"] = 8
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_dag_runs_end_to_end(repo_root: Path, tiny_config: Path):
    work = tiny_config.parent
    proc = _snakemake(repo_root, work, tiny_config, "all")
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = work / "results"
    for ds, n_channels in (("demo_bids", 19), ("demo_physionet", 19)):
        index = pl.read_parquet(results / ds / "shards" / "index.parquet")
        assert len(index) > 0
        shard = open_shard(results / ds / "shards" / index["shard"][0])
        assert shard.x.shape[1:] == (n_channels, 10, 200)
        for stage in ("ingest", "standardize", "preprocess", "patch"):
            assert (results / "logs" / ds / f"{stage}.log").is_file()
        assert (results / "benchmarks" / ds / "preprocess.tsv").is_file()
    tok = results / "tokenizer" / "ddrvq-demo"
    for name in ("model.safetensors", "metrics.json", "metrics.jsonl", "loss.png", "codebook_usage.png", "reconstructions.png"):
        assert (tok / name).is_file(), name
    codes = zarr.open_group(str(results / "codes" / "ddrvq-demo" / "demo_physionet" / "S001R02" / "part-000.zarr"), mode="r")
    assert codes["codes"].shape[1:] == (19, 10, 2, 3) and codes["codes"].dtype == np.int16
    bids = pl.read_parquet(results / "demo_bids" / "shards" / "index.parquet")
    assert dict(bids.select("subject", "split").unique().iter_rows()) == {"s01": "train", "s02": "test"}
    # Nothing left to do on a second look.
    dry = _snakemake(repo_root, work, tiny_config, "all", "--dry-run")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr


def test_schema_rejects_a_bad_config(repo_root: Path, tiny_config: Path, tmp_path: Path):
    cfg = yaml.safe_load(tiny_config.read_text())
    cfg["patch"]["dtype"] = "float64"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = _snakemake(repo_root, tmp_path, bad, "all", "--dry-run")
    assert proc.returncode != 0 and "float64" in proc.stdout + proc.stderr


def test_slurm_profile_dry_run(repo_root: Path, tiny_config: Path, tmp_path: Path):
    """The cluster profile parses and plans the same DAG without SLURM installed."""
    proc = _snakemake(repo_root, tmp_path, tiny_config, "all", "--dry-run", "--profile", str(repo_root / "profiles" / "slurm"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "patch" in proc.stdout


def _planned_jobs(proc: subprocess.CompletedProcess) -> set[str]:
    """Rule names in a dry run's 'Job stats' table."""
    text = proc.stdout + proc.stderr
    table = text.split("Job stats:", 1)[1].split("total", 1)[0] if "Job stats:" in text else ""
    return {line.split()[0] for line in table.splitlines()[2:] if line.strip() and not line.startswith("-")} - {"all"}


@pytest.mark.slow
@pytest.mark.parametrize("section, key, value, expected", [
    ("preprocess", "h_freq", 40.0, {"preprocess", "patch", "train_tokenizer", "extract_codes"}),
    ("tokenizer", "variant", "ddrvq_time", {"train_tokenizer", "extract_codes"}),
])
def test_a_config_change_reruns_only_what_depends_on_it(repo_root: Path, tiny_config: Path, section, key, value,
                                                        expected):
    work = tiny_config.parent
    if not (work / "results" / "demo_bids" / "shards" / "index.parquet").is_file():
        assert _snakemake(repo_root, work, tiny_config, "all").returncode == 0
    cfg = yaml.safe_load(tiny_config.read_text())
    cfg[section][key] = value
    changed = work / f"changed-{section}.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    proc = _snakemake(repo_root, work, changed, "all", "--dry-run")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert _planned_jobs(proc) == expected
