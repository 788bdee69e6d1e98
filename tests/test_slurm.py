"""The workflow, data stages to tokenizer codes, on a real one-node SLURM through `--profile profiles/slurm`.

The cluster (tests/slurm_cluster.py, recipe in ../shared/SLURM.md) is Debian's slurm-wlm with two
fake GPUs and no accounting (sacct answers "accounting storage is disabled"). Every job goes through
sbatch; the tokenizer asks for one GPU and must get it (CUDA_VISIBLE_DEVICES inside the job), and
still trains on the CPU because no CUDA device exists. Needs root and apt; skips with the reason
otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import SlurmUnavailable, start_cluster

# timeout: overrides a suite-wide --timeout; apt and snakemake have their own limits inside
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(900)]

SNAKEMAKE_TIMEOUT_S = 480


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        c = start_cluster(tmp_path_factory.mktemp("slurm_daemons"))
    except SlurmUnavailable as exc:
        pytest.skip(f"no SLURM cluster: {exc}")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def slurm_config(repo_root: Path, demo_corpus: Path, tmp_path_factory) -> Path:
    """The demo cut down to the BIDS pair (s01 trains, s02 is the held-out subject the tokenizer's
    evaluation needs; PhysioNet alone has one subject), 10-s windows, 4 tokenizer steps on 1 GPU."""
    work = tmp_path_factory.mktemp("slurm_workflow")
    cfg = yaml.safe_load((repo_root / "config" / "demo.yaml").read_text())
    cfg["results"] = str(work / "results")
    cfg["cache"] = str(repo_root / cfg["cache"])  # reuse the fetched corpus: fetch_demo_corpus stays done
    cfg["datasets"] = {"demo_bids": cfg["datasets"]["demo_bids"]}
    cfg["datasets"]["demo_bids"]["path"] = str(repo_root / cfg["datasets"]["demo_bids"]["path"])
    cfg["patch"]["window_s"] = 10
    cfg["dask"]["n_workers"] = 1
    cfg["tokenizer"]["train"].update(max_steps=4, eval_every=2, checkpoint_every=2, log_every=1)
    cfg["tokenizer"]["eval_windows"] = 8
    # The GPU rule asks SLURM for a (fake) GPU: gpu=1 → sbatch --gpus=1, and accelerate launch
    # --num_processes 1 without --cpu. mem_mb stays under the node's RealMemory.
    cfg["resources"] = {"train_tokenizer": {"gpu": 1, "threads": 2, "mem_mb": 4000, "runtime": 30}}
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _job(cluster, jobid: str) -> dict[str, str]:
    """`scontrol show job` as a dict: slurmctld keeps finished jobs for MinJobAge=600 s (no sacct here)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", jobid], env={**os.environ, **cluster.env},
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def _planned_rules(text: str) -> list[str]:
    """Rule names in snakemake's 'Job stats' table (one per job), without the local `all`."""
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    rules = []
    for line in table.splitlines()[3:]:
        if line.strip():
            name, count = line.split()
            rules += [name] * int(count)
    return sorted(r for r in rules if r != "all")


def _run_snakemake(cmd: list[str], cwd: Path, env: dict) -> tuple[int, str]:
    """Run snakemake; past the time limit send SIGINT first, so that it scancels its jobs."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=SNAKEMAKE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return -1, f"timed out after {SNAKEMAKE_TIMEOUT_S} s\n{out}"
    return proc.returncode, out


def test_workflow_runs_on_slurm_with_a_gpu_request(repo_root: Path, cluster, slurm_config: Path):
    work = slurm_config.parent
    logdir = work / "slurm_logs"
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, **cluster.env, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}
    env.pop("SLURM_JOB_ID", None)  # pytest itself may run inside a SLURM job elsewhere
    results = work / "results"
    # The targets: every data stage, the GPU rule and the codes (not `all`: pretraining, fine-tuning
    # and the tables add a dozen jobs of ~15 s scheduling overhead each without testing anything new
    # about SLURM).
    targets = [str(results / "tokenizer" / "ddrvq-demo" / "metrics.json"),
               str(results / "codes" / "ddrvq-demo" / "demo_bids")]
    cmd = [sys.executable, "-m", "snakemake", *targets, "--snakefile", str(repo_root / "Snakefile"),
           "--profile", str(repo_root / "profiles" / "slurm"), "--directory", str(work),
           # where the tiny cluster differs from a real one: jobs of seconds, one node, no retries,
           # and the logs of successful jobs kept so that the test can read them
           "--slurm-logdir", str(logdir), "--slurm-keep-successful-logs",
           "--slurm-init-seconds-before-status-checks", "2", "--jobs", "2", "--retries", "0",
           "--latency-wait", "5",
           "--configfile", str(slurm_config)]
    t0 = time.monotonic()
    rc, text = _run_snakemake(cmd, repo_root, env)
    elapsed = time.monotonic() - t0
    (work / "snakemake.out").write_text(text)
    assert rc == 0, f"snakemake failed after {elapsed:.0f} s:\n{text[-6000:]}\n{cluster.logs(20)}"
    print(f"\nsnakemake on SLURM: {elapsed:.0f} s")

    # Outputs of the data stages, of the GPU rule and of the codes.
    assert (results / "demo_bids" / "shards" / "index.parquet").is_file()
    tok = results / "tokenizer" / "ddrvq-demo"
    for name in ("model.safetensors", "metrics.json", "loss.png"):
        assert (tok / name).is_file(), name
    assert any((results / "codes" / "ddrvq-demo" / "demo_bids").rglob("*.zarr"))

    # Every job went through sbatch: the plugin reports a SLURM job id and a log
    # file for each, the log exists in slurm-logdir, and slurmctld knows the job, completed, under
    # the rule's name (asked with scontrol: there is no accounting for sacct).
    planned = _planned_rules(text)
    assert {"ingest", "standardize", "preprocess", "patch", "train_tokenizer", "extract_codes"} <= set(planned)
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+?)\)", text))
    assert len(submitted) == len(planned), text[-4000:]
    jobs, rule_of = {}, {}
    for jobid, log in submitted.items():
        assert Path(log).is_file() and Path(log).is_relative_to(logdir), log
        jobs[jobid] = _job(cluster, jobid)
        assert jobs[jobid]["JobState"] == "COMPLETED" and jobs[jobid]["Partition"] == cluster.partition, jobs[jobid]
        rule_of[jobid] = re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", jobs[jobid]["Comment"]).group(1)
    assert sorted(rule_of.values()) == planned
    for rule in planned:
        assert list((logdir / f"rule_{rule}").rglob("*.log")), f"no SLURM log for {rule}"

    # The GPU request reached SLURM: only train_tokenizer's job asked for a GPU (sbatch --gpus=1),
    # and inside it the stage saw the GPU SLURM granted in CUDA_VISIBLE_DEVICES, one process, and
    # no CUDA device, so accelerate (no --cpu) still trained on the CPU.
    gpu_job = next(j for j, r in rule_of.items() if r == "train_tokenizer")
    assert jobs[gpu_job].get("TresPerJob") == "gres:gpu:1", jobs[gpu_job]
    assert all("gpu" not in jobs[j].get("TresPerJob", "") for j in rule_of if j != gpu_job)
    stage_log = (results / "logs" / "train_tokenizer.log").read_text()
    launch = re.search(r"launch: CUDA_VISIBLE_DEVICES=(\S+) SLURM_JOB_ID=(\S+) processes=(\S+) rank=\S+ cuda=(\S+)",
                       stage_log)
    assert launch, stage_log[-3000:]
    cvd, slurm_job, processes, cuda = launch.groups()
    print(f"train_tokenizer: SLURM job {slurm_job}, CUDA_VISIBLE_DEVICES={cvd}, processes={processes}, cuda={cuda}")
    assert re.fullmatch(r"\d+", cvd), cvd  # one of the node's two fake GPUs
    assert slurm_job == gpu_job
    assert processes == "1" and cuda == "False"
    assert "step 4: held-out" in stage_log
