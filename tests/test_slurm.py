"""The workflow on a real two-node SLURM through `--profile profiles/slurm`.

The cluster (tests/slurm_cluster.py, recipe in ../shared/SLURM.md) is Debian's slurm-wlm, two slurmd on
this machine with two fake GPUs each, and no accounting (sacct answers "accounting storage is
disabled"). First the data stages, the tokenizer and the codes: every job goes through sbatch; the
tokenizer asks for two GPUs and pipeline/launch.py starts exactly two processes, one per granted GPU
(CUDA_VISIBLE_DEVICES inside the job) — as CPU processes over gloo, because the GPUs are /dev/null and
the test sets BRAINRVQ_FAKE_GPUS=1. Then pretraining with `nodes: 2`: one launcher per node through
srun, rendezvous on the first node, one process per node; it ends where a one-process run at the same
global batch ends. Needs root and apt; skips with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.launch import FAKE_GPUS_ENV
from slurm_cluster import SlurmUnavailable, start_cluster

# timeout: overrides a suite-wide --timeout; apt and snakemake have their own limits inside
# one pytest-xdist worker owns the cluster (one slurm.conf, one slurmctld on this machine)
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("slurm")]

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
    evaluation needs; PhysioNet alone has one subject), 10-s windows, 4 tokenizer steps on 2 GPUs,
    4 pretraining steps of a small backbone on 2 nodes × 1 GPU."""
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
    cfg["pretrain"]["model"] = {"backbone": {"embed_dim": 32, "depth": 2, "heads": 4}}
    cfg["pretrain"]["eval_windows"] = 8
    cfg["pretrain"]["train"].update(batch_size=8, max_steps=4, warmup_steps=2, checkpoint_every=2, eval_every=100,
                                    log_every=1)
    # The tokenizer asks for the node's two (fake) GPUs: gpu=2 → sbatch --gpus=2 --nodes=1 --cpus-per-gpu=1;
    # pretraining for one GPU on each of two nodes: gres=gpu:1 → sbatch --nodes=2 --gres=gpu:1. mem_mb
    # (per node) stays under each node's RealMemory.
    cfg["resources"] = {"train_tokenizer": {"gpu": 2, "threads": 2, "mem_mb": 4000, "runtime": 30},
                        "pretrain": {"gpu": 1, "nodes": 2, "threads": 1, "cpus_per_gpu": 1, "mem_mb": 3000,
                                     "runtime": 30}}
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _job(cluster, jobid: str) -> dict[str, str]:
    """`scontrol show job` as a dict: slurmctld keeps finished jobs for MinJobAge=600 s (no sacct here)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", jobid], env={**os.environ, **cluster.env},
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def _sbatch(cluster, args: list[str], env: dict, timeout: float = 240) -> tuple[str, dict[str, str]]:
    """Submit a batch job and wait for it (scontrol every 0.5 s: `sbatch --wait` polls at up to 30 s);
    its id and `scontrol show job` once it ended."""
    jobid = subprocess.run(["sbatch", "--parsable", *args], env=env, capture_output=True, text=True, timeout=30,
                           check=True).stdout.strip().split(";")[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(cluster, jobid)
        if job["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return jobid, job
        time.sleep(0.5)
    raise AssertionError(f"job {jobid} still {job['JobState']} after {timeout:.0f} s")


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


def _snakemake(repo_root: Path, cluster, config: Path, targets: list[str]) -> tuple[int, str, float]:
    work = config.parent
    venv_bin = str(Path(sys.executable).parent)
    # FAKE_GPUS_ENV reaches the jobs through sbatch --export=ALL: granted fake GPUs run as CPU processes
    env = {**os.environ, **cluster.env, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}", FAKE_GPUS_ENV: "1"}
    env.pop("SLURM_JOB_ID", None)  # pytest itself may run inside a SLURM job elsewhere
    cmd = [sys.executable, "-m", "snakemake", *targets, "--snakefile", str(repo_root / "Snakefile"),
           "--profile", str(repo_root / "profiles" / "slurm"), "--directory", str(work),
           # where the tiny cluster differs from a real one: jobs of seconds, no retries, and the logs of
           # successful jobs kept so that the test can read them
           "--slurm-logdir", str(work / "slurm_logs"), "--slurm-keep-successful-logs",
           "--slurm-init-seconds-before-status-checks", "2", "--jobs", "2", "--retries", "0",
           "--latency-wait", "5",
           "--configfile", str(config)]
    t0 = time.monotonic()
    rc, text = _run_snakemake(cmd, repo_root, env)
    return rc, text, time.monotonic() - t0


def _submitted(cluster, text: str, logdir: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """SLURM job → `scontrol show job`, and → rule name, for every job snakemake submitted."""
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+?)\)", text))
    jobs, rule_of = {}, {}
    for jobid, log in submitted.items():
        assert Path(log).is_file() and Path(log).is_relative_to(logdir), log
        jobs[jobid] = _job(cluster, jobid)
        assert jobs[jobid]["JobState"] == "COMPLETED" and jobs[jobid]["Partition"] == cluster.partition, jobs[jobid]
        rule_of[jobid] = re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", jobs[jobid]["Comment"]).group(1)
    return jobs, rule_of


@pytest.fixture(scope="module")
def codes_on_slurm(repo_root: Path, cluster, slurm_config: Path):
    """snakemake on SLURM up to the tokenizer and the codes (not `all`: fine-tuning and the tables add a dozen
    jobs of ~15 s scheduling overhead each without testing anything new about SLURM)."""
    results = slurm_config.parent / "results"
    targets = [str(results / "tokenizer" / "ddrvq-demo" / "metrics.json"),
               str(results / "codes" / "ddrvq-demo" / "demo_bids")]
    rc, text, elapsed = _snakemake(repo_root, cluster, slurm_config, targets)
    (slurm_config.parent / "snakemake.out").write_text(text)
    assert rc == 0, f"snakemake failed after {elapsed:.0f} s:\n{text[-6000:]}\n{cluster.logs(20)}"
    print(f"\nsnakemake on SLURM, data to codes: {elapsed:.0f} s")
    return text


def _launcher_lines(stage_log: str) -> list[dict[str, str]]:
    """The per-node `launcher: k=v ...` lines of pipeline/launch.py."""
    return [dict(kv.split("=", 1) for kv in line.split("launcher: ", 1)[1].split())
            for line in stage_log.splitlines() if "launcher: rule=" in line and " node=" in line]


def test_workflow_runs_on_slurm_with_a_gpu_request(cluster, slurm_config: Path, codes_on_slurm: str):
    text, work = codes_on_slurm, slurm_config.parent
    logdir, results = work / "slurm_logs", work / "results"
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
    jobs, rule_of = _submitted(cluster, text, logdir)
    assert len(jobs) == len(planned), text[-4000:]
    assert sorted(rule_of.values()) == planned
    for rule in planned:
        assert list((logdir / f"rule_{rule}").rglob("*.log")), f"no SLURM log for {rule}"

    # The GPU request reached SLURM: only train_tokenizer's job asked for GPUs (sbatch --gpus=2 on one
    # node), and inside it the launcher found the two GPUs SLURM granted in CUDA_VISIBLE_DEVICES, no CUDA
    # device, and (fake GPUs allowed) started exactly two CPU processes over gloo: ranks 0 and 1 of 2.
    gpu_job = next(j for j, r in rule_of.items() if r == "train_tokenizer")
    assert jobs[gpu_job].get("TresPerJob") == "gres:gpu:2" and jobs[gpu_job]["NumNodes"] == "1", jobs[gpu_job]
    assert jobs[gpu_job].get("CpusPerTres") == "gres:gpu:1", jobs[gpu_job]  # --cpus-per-gpu=1
    assert all("gpu" not in jobs[j].get("TresPerJob", "") for j in rule_of if j != gpu_job)
    stage_log = (results / "logs" / "train_tokenizer" / "ddrvq-demo.log").read_text()
    [launch] = _launcher_lines(stage_log)
    print(f"train_tokenizer: {launch}")
    assert launch["rule"] == "train_tokenizer" and launch["SLURM_JOB_ID"] == gpu_job
    assert re.fullmatch(r"\d+,\d+", launch["CUDA_VISIBLE_DEVICES"]), launch  # both fake GPUs of its node
    assert (launch["requested"], launch["granted"], launch["cuda"], launch["processes"], launch["machines"]) == \
        ("2", "2", "0", "2", "1"), launch
    assert launch["device"] == "cpu-gloo" and int(launch["main"].rsplit(":", 1)[1]) != 29500
    # the stage's own line, once per process: what each of them saw
    seen = re.findall(r"launch: CUDA_VISIBLE_DEVICES=(\S+) SLURM_JOB_ID=(\S+) processes=(\S+) rank=(\S+) "
                      r"cuda=(\S+)", stage_log)
    assert sorted(seen) == [(launch["CUDA_VISIBLE_DEVICES"], gpu_job, "2", r, "False") for r in "01"], seen
    assert "step 4: held-out" in stage_log
    # the other torch rule (extract_codes, no GPUs) went through the launcher too: one CPU process
    [codes_launch] = _launcher_lines((results / "logs" / "demo_bids" / "extract_codes" / "ddrvq-demo.log").read_text())
    assert (codes_launch["processes"], codes_launch["device"]) == ("1", "cpu"), codes_launch


def test_pretraining_on_two_nodes_matches_one_process(cluster, slurm_config: Path, codes_on_slurm: str,
                                                      repo_root: Path):
    from safetensors.torch import load_file

    from pipeline.config import parse_config, to_dict

    work, results = slurm_config.parent, slurm_config.parent / "results"
    run = results / "pretrain" / "brainrvq-demo"
    rc, text, elapsed = _snakemake(repo_root, cluster, slurm_config, [str(run / "metrics.json")])
    (work / "snakemake-pretrain.out").write_text(text)
    assert rc == 0, f"snakemake failed after {elapsed:.0f} s:\n{text[-6000:]}\n{cluster.logs(20)}"
    print(f"\nsnakemake on SLURM, pretraining on 2 nodes: {elapsed:.0f} s")
    assert _planned_rules(text) == ["pretrain"], text[-3000:]  # the data to codes were done already
    jobs, rule_of = _submitted(cluster, text, work / "slurm_logs")
    [(jobid, job)] = jobs.items()
    assert job["NumNodes"] == "2" and job["NodeList"] == "brainrvq[1-2]" and job.get("TresPerNode") == "gres:gpu:1", job

    # One launcher per node: machine ranks 0 and 1 on the two nodes, rendezvous on the first one's address.
    stage_log = (results / "logs" / "pretrain" / "brainrvq-demo.log").read_text()
    assert "srun --overlap --nodes=2 --ntasks=2 --ntasks-per-node=1" in stage_log, stage_log[-3000:]
    launches = sorted(_launcher_lines(stage_log), key=lambda x: x["machine_rank"])
    assert [(x["slurm_node"], x["machine_rank"], x["machines"], x["processes"], x["device"]) for x in launches] == \
        [("brainrvq1", "0", "2", "1", "cpu-gloo"), ("brainrvq2", "1", "2", "1", "cpu-gloo")], launches
    assert launches[0]["main"] == launches[1]["main"] and launches[0]["main"].startswith("127.0.0.1:"), launches
    assert all(x["SLURM_JOB_ID"] == jobid and x["granted"] == "1" for x in launches), launches
    assert stage_log.count("WORLD_SIZE=2,") == 2, stage_log[-3000:]  # each process's own line: 2 in a world of 2

    # The same stage, one process, outside SLURM, at the same global batch: same losses and weights.
    settings = json.dumps(to_dict(parse_config(yaml.safe_load(slurm_config.read_text())).pretrain), sort_keys=True)
    one = subprocess.run([sys.executable, "-m", "pipeline", "pretrain", "--shards", str(results / "demo_bids" / "shards"),
                          "--codes", str(results / "codes" / "ddrvq-demo" / "demo_bids"),
                          "--tokenizer", str(results / "tokenizer" / "ddrvq-demo"), "--out", str(work / "one"),
                          "--settings", settings], capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WORLD_SIZE"))})
    assert one.returncode == 0, one.stderr[-3000:]

    def losses(folder: Path) -> list[float]:
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        return [r["losses"]["loss"] for r in rows if r["kind"] == "train"]

    assert len(losses(run)) == 4
    np.testing.assert_allclose(losses(run), losses(work / "one"), rtol=1e-4)
    a, b = load_file(str(work / "one" / "model.safetensors")), load_file(str(run / "model.safetensors"))
    flat_a = torch.cat([a[k].float().flatten() for k in sorted(a)])
    flat_b = torch.cat([b[k].float().flatten() for k in sorted(a)])
    assert float((flat_a - flat_b).norm() / flat_a.norm()) < 1e-4


def test_gpu_jobs_without_usable_gpus_fail_naming_rule_and_node(cluster, tmp_path: Path):
    """Without the fake-GPU opt-in: a job that asked the launcher for a GPU but was granted none, and one that
    was granted a GPU that CUDA cannot see (/dev/null), both fail at once with one line naming rule and node."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CUDA_VISIBLE"))}
    env.pop(FAKE_GPUS_ENV, None)
    env = {**env, **cluster.env}
    launch = f"{sys.executable} -m pipeline.launch --rule pretrain --gpus 1 -- -c pass"
    cases = {"none": [], "invisible": ["--gpus=1"]}
    jobids = {name: subprocess.run(["sbatch", "--parsable", "--nodes=1", "--mem=500", *extra,
                                    "-o", str(tmp_path / f"{name}.out"), "--wrap", launch], env=env,
                                   capture_output=True, text=True, timeout=30, check=True).stdout.strip()
              for name, extra in cases.items()}
    node = r"node \S+ \(SLURM node brainrvq[12]\)"
    expect = {"none": rf"rule pretrain: asked for 1 GPU\(s\) per node but {node} was granted none",
              "invisible": rf"rule pretrain: {node} was granted 1 GPU\(s\) \(CUDA_VISIBLE_DEVICES=\d\) but torch sees "
                           rf"no CUDA device"}
    for name, jobid in jobids.items():
        deadline = time.monotonic() + 180
        while _job(cluster, jobid)["JobState"] in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            assert time.monotonic() < deadline, f"job {jobid} ({name}) did not end"
            time.sleep(0.5)
        assert _job(cluster, jobid)["JobState"] == "FAILED", (name, _job(cluster, jobid))
        lines = (tmp_path / f"{name}.out").read_text().strip().splitlines()
        assert len(lines) == 1 and re.match(rf"launch failed: {expect[name]}", lines[0]), (name, lines)


def test_plain_sbatch_on_two_nodes_runs_one_process_per_node(cluster, tmp_path: Path):
    """docs/scaling.md's stage-without-Snakemake command: the launcher in a 2-node batch script starts one
    launcher per node through srun, and their processes form one gloo group (an all-reduce of ranks + 1)."""
    script = tmp_path / "allreduce.py"
    script.write_text("import torch, torch.distributed as dist\n"
                      "dist.init_process_group('gloo')\n"
                      "t = torch.tensor([dist.get_rank() + 1.0])\n"
                      "dist.all_reduce(t)\n"
                      "print(f'rank {dist.get_rank()} of {dist.get_world_size()}: sum {t.item():.0f}', flush=True)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CUDA_VISIBLE"))}
    env = {**env, **cluster.env, FAKE_GPUS_ENV: "1"}
    launch = f"{sys.executable} -m pipeline.launch --rule demo --gpus 1 --nodes 2 -- {script}"
    _, job = _sbatch(cluster, ["--nodes=2", "--gres=gpu:1", "--cpus-per-gpu=1", "--mem=1000",
                               "-o", str(tmp_path / "job.out"), "--wrap", launch], env)
    log = (tmp_path / "job.out").read_text()
    assert job["JobState"] == "COMPLETED" and job["NodeList"] == "brainrvq[1-2]", (job, log[-3000:])
    assert sorted(re.findall(r"rank \d of \d: sum \d+", log)) == ["rank 0 of 2: sum 3", "rank 1 of 2: sum 3"], log
    ranks = {x["slurm_node"]: x["machine_rank"] for x in _launcher_lines(log)}
    assert ranks == {"brainrvq1": "0", "brainrvq2": "1"}, log
