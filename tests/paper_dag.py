"""The paper config's whole DAG marked done over tiny stand-in files: the session fixture `paper_dag` (registered in
conftest.py), shared by tests/test_workflow.py (what a new seed, method or ablation plans) and tests/test_data_reruns.py
(what a changed file, a deleted output or a --forcerun plans). Tests using it carry
`@pytest.mark.xdist_group("paper_dag")`, so one worker builds it once."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from workflow_helpers import copy_workdir, nothing_to_do, output, planned_jobs, snakemake, tail, write_config

PAPER_VARIANTS = ("ddrvq_time", "ddrvq_freq", "labram")
PAPER_METHODS = ("full", "probe", "scratch", "ablation-random-mask", "ablation-flat-heads", "ablation-ours-time-bias",
                 "ablation-ours-pos-std", "ablation-ours", *(f"tokenizer-{v}" for v in PAPER_VARIANTS), "logreg",
                 "raw_logreg", "tangent_logreg", "eegnet", "shallow_fbcsp", "labram_scratch", "cbramod_scratch")


@dataclass(frozen=True)
class PaperDag:
    workdir: Path
    configs: tuple[Path, ...]  # config/config.yaml, then the test's paths (relative to the workdir: copies work)
    downstream: tuple[str, ...]
    planned: tuple[dict[str, Any], ...]  # every job of the first dry run (nothing existed yet)
    all_input: tuple[str, ...]  # what rule `all` asked for in that dry run

    def run(self, *args: str, changes: dict | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess:
        configs = self.configs if changes is None else (*self.configs, write_config(tmp / "change.yaml", changes))
        proc = snakemake(self.workdir, configs, *args, timeout=600)
        assert proc.returncode == 0, tail(proc)
        return proc

    def dry_run(self, tmp: Path, changes: dict) -> list[dict]:
        return planned_jobs(self.run("all", "-n", changes=changes, tmp=tmp))

    def copy(self, dst: Path) -> "PaperDag":
        """An equally finished copy (outputs, stand-in data and Snakemake's metadata, mtimes kept) to change."""
        return PaperDag(copy_workdir(self.workdir, dst), self.configs, self.downstream, self.planned, self.all_input)


def rule_all_input(proc: subprocess.CompletedProcess) -> list[str]:
    """The `input:` of the dry run's `all` job."""
    lines = output(proc).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() in ("rule all:", "localrule all:"))
    line = next(line for line in lines[start + 1:] if line.strip().startswith("input: "))
    return [f.strip() for f in line.strip().removeprefix("input: ").split(",")]


@pytest.fixture(scope="session")
def paper_dag(repo_root: Path, tmp_path_factory) -> PaperDag:
    """config/config.yaml with every dataset's path at a tiny file this fixture writes (data/<name>/recording.edf,
    relative to the workdir), its whole DAG marked done by `snakemake --touch` (outputs created empty, Snakemake's
    metadata recorded as after real runs; nothing trains)."""
    from pipeline.config import merge_dataset_files

    work = tmp_path_factory.mktemp("paper")
    raw = merge_dataset_files(yaml.safe_load((repo_root / "config" / "config.yaml").read_text()), base_dir=repo_root)
    paths = {}
    for name in raw["datasets"]:
        folder = work / "data" / name
        folder.mkdir(parents=True)
        (folder / "recording.edf").write_bytes(b"0")
        paths[name] = {"path": f"data/{name}"}
    configs = (repo_root / "config" / "config.yaml", write_config(work / "paths.yaml", {"datasets": paths}))

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = snakemake(work, configs, "all", *args, timeout=600)
        assert proc.returncode == 0, tail(proc)
        return proc

    first = run("-n")
    jobs = planned_jobs(first)
    # the main run plus the tokenizer, mask, head and our-additions ablations, each pretrained and fine-tuned
    assert {j["wildcards"]["tok"] for j in jobs if j["rule"] == "train_tokenizer"} == {
        "ddrvq-base", *(f"ddrvq-base-{v}" for v in PAPER_VARIANTS)}
    assert {j["wildcards"]["run"] for j in jobs if j["rule"] == "pretrain"} == {
        "brainrvq-base", "random-mask", "flat-heads", "ours-time-bias", "ours-pos-std", "ours",
        *(f"tokenizer-{v}" for v in PAPER_VARIANTS)}
    assert sum(j["rule"] == "finetune" for j in jobs) == 8 * len(PAPER_METHODS) * 5  # datasets × methods × seeds
    directories = {"preprocess", "patch", "samples", "extract_codes"}  # directory() outputs
    for job in jobs:
        for out in job["output"]:
            (work / out).parent.mkdir(parents=True, exist_ok=True)
            (work / out).mkdir() if job["rule"] in directories else (work / out).write_bytes(b"")
    run("--touch", "--forceall")
    assert nothing_to_do(run("-n"))
    return PaperDag(work, configs,
                    downstream=tuple(n for n, d in raw["datasets"].items() if d.get("labels", {}).get("mode")),
                    planned=tuple(jobs), all_input=tuple(rule_all_input(first)))
