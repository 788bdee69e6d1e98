"""The real Snakemake DAG, end to end, on the tiny config of real demo EEG (.test/config.yaml); config errors and the
SLURM profile through Snakemake's own command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import zarr
import pytest

from pipeline.store.zarr_store import open_shard
from paper_dag import PAPER_METHODS, PaperDag
from workflow_helpers import (TEST_CONFIG, TEST_RESULTS, Finished, changed, make_workdir, output, rule_counts,
                              snakemake, tail, tiny_config, write_config)


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_dag")  # the worker that holds the finished DAG (test_operations.py)
def test_dag_runs_end_to_end(finished: Finished, tmp_path: Path):
    work = finished.workdir
    results = work / TEST_RESULTS
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
    # Every torch stage ran under the device check (no host/device mismatch, or it would have failed) and really
    # worked on the device: a stage that never placed its model would report 0 device ops.
    logs = results / "logs"
    torch_logs = [logs / "train_tokenizer" / "ddrvq-demo.log", logs / "pretrain" / "brainrvq-demo.log",
                  *(logs / ds / "extract_codes" / "ddrvq-demo.log" for ds in ("demo_bids", "demo_physionet")),
                  *(logs / "demo_bids" / "finetune" / f"{m}-seed-{s}.log" for m in ("full", "scratch") for s in (0, 1))]
    for log in torch_logs:
        ops = re.findall(r"device check: (\d+) device ops", log.read_text())
        assert ops and all(int(n) > 0 for n in ops), (log, log.read_text()[-2000:])
    bids = pl.read_parquet(results / "demo_bids" / "shards" / "index.parquet")
    # s02 is the test subject; s01 trains, its last 20 % of windows (by time) validate
    assert set(bids.select("subject", "split").unique().iter_rows()) == {("s01", "train"), ("s01", "val"),
                                                                         ("s02", "test")}
    # The Snakemake report: tests/test_report.py opens it in a browser.
    # Nothing left to do on a second look.
    dry = snakemake(work, finished.config, "all", "--dry-run")
    assert dry.returncode == 0 and "Nothing to be done" in output(dry)


# ---------------------------------------------------------------------------------------------
# config errors: before any work, in seconds, the answer on the first line


def _first_line(proc: subprocess.CompletedProcess) -> str:
    return next(line for line in output(proc).splitlines() if line.strip())


def _dry_run_with(tmp_path: Path, changes: dict) -> tuple[subprocess.CompletedProcess, float]:
    bad = write_config(tmp_path / "bad.yaml", changed(tiny_config(), changes))
    start = time.monotonic()
    proc = snakemake(make_workdir(tmp_path / "work"), bad, "all", "-n", timeout=120)
    return proc, time.monotonic() - start


def test_schema_rejects_a_bad_config(tmp_path: Path):
    proc, _ = _dry_run_with(tmp_path, {"patch.dtype": "float64"})
    assert proc.returncode != 0
    assert _first_line(proc).startswith("config error: ") and "patch.dtype" in _first_line(proc)
    assert "float64" in _first_line(proc)


@pytest.mark.parametrize("key, where, nearest", [
    ("tokenizer.model.codebok_size", "tokenizer.model", "codebook_size"),
    ("tokenizer.model.dead_code_treshold", "tokenizer.model", "dead_code_threshold"),
    ("pretrain.model.backbone.dpeth", "pretrain.model.backbone", "depth"),
    ("pretrain.model.hierarchicl", "pretrain.model", "hierarchical"),
    ("pretrain.ablations.flat.model.symetric", "pretrain.ablations.flat.model", "symmetric"),
    ("tokenzier", "the config's top level", "tokenizer"),
])
def test_a_typo_in_a_config_key_fails_the_dry_run_naming_it_first(tmp_path: Path, key, where, nearest):
    """A misspelt key stops `snakemake -n` at once: its name, its section and the nearest valid name on the first
    line of output (no schema dump, no traceback from inside a job after ingest → patch ran)."""
    proc, seconds = _dry_run_with(tmp_path, {key: 1})
    first = _first_line(proc)
    typo = key.rsplit(".", 1)[-1]
    assert proc.returncode != 0
    assert first == f"config error: {where}: unknown key {typo!r} (did you mean {nearest!r}?)", output(proc)[:3000]
    assert len(output(proc).splitlines()) <= 3, output(proc)  # the message and the allowed names, nothing else
    assert seconds < 30  # parsing only: no DAG, no job


def test_values_the_code_cannot_honour_are_refused_before_any_work(tmp_path: Path):
    proc, _ = _dry_run_with(tmp_path, {"preprocess.sfreq": 250})
    assert proc.returncode != 0
    assert _first_line(proc).startswith("config error: preprocess.sfreq: 250 Hz is not supported — only 200")
    proc, _ = _dry_run_with(tmp_path, {"tokenizer.model.patch_size": 100})
    assert _first_line(proc) == "config error: tokenizer.model: 'patch_size' is not a setting — it comes from patch.patch_len"


def test_a_failed_job_shows_its_own_error_on_the_console(tmp_path: Path, physionet_edf: Path):
    """A job that fails prints its stage's one-line error on the console (the Snakefile's onerror quotes the rule's
    log), not only Snakemake's "check log file(s) for error details". Here: a dataset whose only EDF is truncated."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "cut.edf").write_bytes(physionet_edf.read_bytes()[:3000])
    cfg = tiny_config()
    cfg["datasets"] = {"broken": {"format": "edf", "path": str(raw), "mains": 50, "role": "pretrain"}}
    config = write_config(tmp_path / "broken.yaml", cfg)
    proc = snakemake(make_workdir(tmp_path / "work"), config, f"{TEST_RESULTS}/broken/manifest.parquet", timeout=120)
    assert proc.returncode != 0
    console = output(proc)
    assert "failed: ingest (dataset=broken)" in console, console[-3000:]
    assert re.search(r"^    error: ingest .*cut\.edf: corrupt header", console, re.M), console[-3000:]
    assert f"(log: {TEST_RESULTS}/logs/broken/ingest.log)" in console


# ---------------------------------------------------------------------------------------------
# the SLURM profile


def test_slurm_profile_dry_run(repo_root: Path, tmp_path: Path):
    """The cluster profile parses and plans the same DAG without SLURM installed."""
    work = make_workdir(tmp_path)
    proc = snakemake(work, TEST_CONFIG, "all", "--dry-run", "--profile", str(repo_root / "profiles" / "slurm"))
    assert proc.returncode == 0, tail(proc)
    assert "patch" in proc.stdout


def test_the_users_slurm_command_resolves_the_profile_in_the_repository_root(repo_root: Path, tmp_path: Path):
    """`snakemake --profile slurm all`, typed in the repository root, finds the project's profile (./slurm links to
    profiles/slurm, and Snakemake looks for a profile name in the current folder first). Dry run on the tiny config
    in a workdir of its own; the profile's settings are in effect (its slurm-logdir, its executor)."""
    assert (repo_root / "slurm").is_symlink() and (repo_root / "slurm").resolve() == (repo_root / "profiles" / "slurm")
    work = make_workdir(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "all",
           "--dry-run", "--directory", str(work), "--configfile", str(TEST_CONFIG)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert proc.returncode == 0, tail(proc)
    assert "no profile.yaml (or config.yaml) found" not in output(proc)
    assert "Using profile slurm" in output(proc), output(proc)[:2000]
    assert "rule patch:" in proc.stdout


# ---------------------------------------------------------------------------------------------
# the paper config's DAG: what one more seed, method or ablation plans (dry runs over tiny stand-in files)


@pytest.mark.slow
@pytest.mark.xdist_group("paper_dag")  # one worker builds the session's paper DAG (tests/paper_dag.py)
def test_paper_config_one_more_seed_plans_one_job_per_dataset_and_method(paper_dag: PaperDag, tmp_path: Path):
    jobs = paper_dag.dry_run(tmp_path, {"finetune": {"seeds": [0, 1, 2, 3, 4, 5]}})
    assert rule_counts(jobs) == {"finetune": 8 * len(PAPER_METHODS), "tables": 1}
    finetune = [j for j in jobs if j["rule"] == "finetune"]
    assert {j["wildcards"]["seed"] for j in finetune} == {"5"}
    assert {(j["wildcards"]["dataset"], j["wildcards"]["method"]) for j in finetune} == {
        (d, m) for d in paper_dag.downstream for m in PAPER_METHODS}


@pytest.mark.slow
@pytest.mark.xdist_group("paper_dag")
def test_paper_config_changing_one_tokenizer_variant_reruns_only_its_chain(paper_dag: PaperDag, tmp_path: Path):
    variants = ["ddrvq_time", "ddrvq_freq", "neurorvq"]  # labram replaced
    methods = [m.replace("-", ":", 1) if m.startswith(("ablation-", "tokenizer-")) else m for m in PAPER_METHODS]
    methods = [m.replace("tokenizer:labram", "tokenizer:neurorvq") for m in methods]
    jobs = paper_dag.dry_run(tmp_path, {"tokenizer": {"variants": variants}, "finetune": {"methods": methods}})
    counts = rule_counts(jobs)
    assert counts.pop("finetune") == 8 * 5 and counts.pop("tables") == 1
    assert counts == {"train_tokenizer": 1, "extract_codes": counts["extract_codes"], "pretrain": 1}
    assert {j["wildcards"].get("tok") for j in jobs if j["rule"] in ("train_tokenizer", "extract_codes")} == {
        "ddrvq-base-neurorvq"}
    assert {j["wildcards"]["run"] for j in jobs if j["rule"] == "pretrain"} == {"tokenizer-neurorvq"}
    assert {j["wildcards"]["method"] for j in jobs if j["rule"] == "finetune"} == {"tokenizer-neurorvq"}


@pytest.mark.slow
@pytest.mark.xdist_group("paper_dag")
def test_paper_config_one_more_ablation_plans_its_pretraining_and_its_fine_tuning(paper_dag: PaperDag, tmp_path: Path):
    methods = ["full", "probe", "scratch", "logreg", "ablation:random-mask", "ablation:flat-heads", "ablation:no-sym"]
    jobs = paper_dag.dry_run(tmp_path, {"pretrain": {"ablations": {"no-sym": {"model": {"symmetric": False}}}},
                                        "finetune": {"methods": methods}})
    assert rule_counts(jobs) == {"pretrain": 1, "finetune": 8 * 5, "tables": 1}  # not the 100k-step main run
    assert {j["wildcards"].get("run") for j in jobs if j["rule"] == "pretrain"} == {"no-sym"}
    assert {j["wildcards"]["method"] for j in jobs if j["rule"] == "finetune"} == {"ablation-no-sym"}
    # a probe's learning rate reruns the probes only; renaming nothing reruns nothing
    probe = paper_dag.dry_run(tmp_path, {"finetune": {"probe_lr": 0.01}})
    assert rule_counts(probe) == {"finetune": 8 * 5, "tables": 1}
    assert {j["wildcards"]["method"] for j in probe if j["rule"] == "finetune"} == {"probe"}
    assert paper_dag.dry_run(tmp_path, {"finetune": {"seeds": [4, 3, 2, 1, 0]}, "tokenizer": {"pretrained": None}}) == []
