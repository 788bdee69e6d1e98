"""The real Snakemake DAG, end to end through `patch`, on a tiny config of real demo EEG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import zarr
import pytest
import yaml

from pipeline.store.zarr_store import open_shard
from workflow_helpers import tiny_config as tiny


def _snakemake(repo: Path, workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args, "--configfile", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=repo)


@pytest.fixture(scope="module")
def tiny_config(repo_root: Path, demo_corpus: Path, tmp_path_factory) -> Path:
    """The demo config cut down (tests/workflow_helpers.py), with the scratch baseline added."""
    work = tmp_path_factory.mktemp("workflow")
    cfg = tiny(repo_root)
    cfg["results"] = str(work / "results")
    cfg["finetune"]["methods"] = ["full", "scratch", "logreg"]
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
    pre = results / "pretrain" / "brainrvq-demo"
    for name in ("model.safetensors", "metrics.json", "loss.png", "accuracy.png"):
        assert (pre / name).is_file(), name
    # downstream: face vs house samples, every method × seed, and the table with mean ± std over the seeds
    samples = pl.read_parquet(results / "demo_bids" / "samples" / "index.parquet")
    assert set(samples["label"]) == {"face", "house"} and set(samples["split"]) == {"train", "val", "test"}
    for method in ("full", "scratch", "logreg"):
        for seed in (0, 1):
            metrics = json.loads((results / "finetune" / "demo_bids" / method / f"seed-{seed}" / "metrics.json").read_text())
            assert metrics["test"]["balanced_accuracy"] > 0 and metrics["n_test"] == int((samples["split"] == "test").sum())
    table = (results / "tables" / "table.md").read_text()
    assert "demo_bids" in table and "±" in table and "scratch" in table
    bids = pl.read_parquet(results / "demo_bids" / "shards" / "index.parquet")
    # s02 is the test subject; s01 trains, its last 20 % of windows (by time) validate
    assert set(bids.select("subject", "split").unique().iter_rows()) == {("s01", "train"), ("s01", "val"),
                                                                         ("s02", "test")}
    # The Snakemake report bundles the tables and the plots.
    report = _snakemake(repo_root, work, tiny_config, "all", "--report", str(work / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    html = (work / "report.html").read_text(errors="replace")
    assert "table.md" in html and "accuracy.png" in html and "loss.png" in html
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
