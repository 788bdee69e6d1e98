"""pipeline/launch.py without SLURM: the grant checks and the commands it builds, as pure functions of an env dict."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from pipeline.launch import (FAKE_GPUS_ENV, LaunchError, NodePlan, accelerate_command, cpus_per_node, derived_port,
                             free_port, granted_gpus, launch_line, node_addr, parse_job, plan_node, srun_command,
                             step_env)

JOB = {"SLURM_JOB_ID": "42"}
STAGE = ["-m", "pipeline", "pretrain", "--out", "x"]


@pytest.mark.parametrize("env, expect", [
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, 2),
    ({"CUDA_VISIBLE_DEVICES": "3"}, 1),
    ({"CUDA_VISIBLE_DEVICES": ""}, 0),
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, 0),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, 0),
    ({"SLURM_GPUS_ON_NODE": "4"}, 4),
    ({"SLURM_JOB_GPUS": "0,1,2"}, 3),
    ({}, None),
])
def test_granted_gpus_reads_what_the_job_sees(env, expect):
    assert granted_gpus(env)[0] == expect


def test_no_gpus_asked_runs_one_cpu_process_whatever_is_visible():
    plan = plan_node("pretrain", 0, {**JOB, "CUDA_VISIBLE_DEVICES": "0,1"}, 2, "n1")
    assert (plan.processes, plan.cpu) == (1, True)


def test_the_process_count_is_the_grant_not_the_config():
    plan = plan_node("pretrain", 4, {**JOB, "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 4, "n1")
    assert (plan.processes, plan.cpu, plan.granted) == (4, False, 4)


@pytest.mark.parametrize("env, cuda, match", [
    (JOB, 0, r"rule pretrain: asked for 2 GPU\(s\) per node but node n1 was granted none"),
    ({**JOB, "CUDA_VISIBLE_DEVICES": ""}, 0, "granted none"),
    ({**JOB, "CUDA_VISIBLE_DEVICES": "0"}, 1, r"node n1 was granted 1 \(CUDA_VISIBLE_DEVICES=0\)"),
    ({**JOB, "CUDA_VISIBLE_DEVICES": "0,1,2"}, 3, "was granted 3"),
    ({**JOB, "CUDA_VISIBLE_DEVICES": "0,1"}, 0, "torch sees no CUDA device"),
    ({**JOB, "CUDA_VISIBLE_DEVICES": "0,1"}, 1, "torch sees 1"),
    ({}, 0, r"granted none \(torch.cuda.device_count\(\)=0"),  # no SLURM, no GPU: not a silent CPU run
    ({}, 8, "or CUDA_VISIBLE_DEVICES to the GPUs it may use"),  # a workstation's 8 GPUs for a 2-GPU rule
])
def test_grant_mismatches_fail_naming_rule_and_node(env, cuda, match):
    with pytest.raises(LaunchError, match=match):
        plan_node("pretrain", 2, env, cuda, "n1")


def test_fake_gpus_opt_in_runs_the_granted_number_of_cpu_processes():
    env = {**JOB, "CUDA_VISIBLE_DEVICES": "0,1", FAKE_GPUS_ENV: "1"}
    plan = plan_node("train_tokenizer", 2, env, 0, "n1")
    assert (plan.processes, plan.cpu) == (2, True)
    with pytest.raises(LaunchError, match="granted none"):  # the opt-in does not excuse a missing grant
        plan_node("train_tokenizer", 2, {**JOB, FAKE_GPUS_ENV: "1"}, 0, "n1")


def test_workstation_without_slurm_uses_the_visible_gpus():
    assert plan_node("finetune", 2, {}, 2, "ws").processes == 2


def _opt(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_accelerate_command_one_node():
    cpu = accelerate_command(NodePlan(0, 0, 0, 1, True), machines=1, machine_rank=0, main_ip="127.0.0.1", port=5,
                             mixed="no", stage=STAGE, python="py")
    assert cpu == ["py", "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", *STAGE]
    one = accelerate_command(NodePlan(1, 1, 1, 1, False), machines=1, machine_rank=0, main_ip="127.0.0.1", port=5,
                             mixed="bf16", stage=STAGE, python="py")
    assert "--cpu" not in one and "--multi_gpu" not in one and _opt(one, "--num_processes") == "1"
    eight = accelerate_command(NodePlan(8, 8, 8, 8, False), machines=1, machine_rank=0, main_ip="127.0.0.1",
                               port=41000, mixed="bf16", stage=STAGE, python="py")
    assert "--multi_gpu" in eight and _opt(eight, "--num_processes") == "8" and _opt(eight, "--num_machines") == "1"
    assert _opt(eight, "--main_process_port") == "41000" and "--machine_rank" not in eight
    assert eight[-len(STAGE):] == STAGE


def test_accelerate_command_two_nodes():
    cmd = accelerate_command(NodePlan(8, 8, 8, 8, False), machines=2, machine_rank=1, main_ip="10.0.0.5",
                             port=41000, mixed="bf16", stage=STAGE, python="py")
    assert _opt(cmd, "--num_processes") == "16" and _opt(cmd, "--num_machines") == "2"
    assert _opt(cmd, "--machine_rank") == "1" and _opt(cmd, "--main_process_ip") == "10.0.0.5"
    assert _opt(cmd, "--main_process_port") == "41000" and _opt(cmd, "--rdzv_backend") == "static"
    # one CPU process per node still goes through the torchrun launcher (it sets the ranks)
    cpu = accelerate_command(NodePlan(1, 1, 0, 1, True), machines=2, machine_rank=0, main_ip="h", port=1, mixed="no",
                             stage=STAGE, python="py")
    assert "--multi_gpu" in cpu and "--cpu" not in cpu and _opt(cpu, "--num_processes") == "2"


def test_srun_command_starts_one_launcher_per_node():
    cmd = srun_command(rule="pretrain", gpus=8, nodes=2, mixed="bf16", rendezvous="10.0.0.5:41000", stage=STAGE,
                       cpus=64, python="py")
    assert cmd[:6] == ["srun", "--overlap", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert "--gres=gpu:8" in cmd and "--cpus-per-task=64" in cmd
    inner = cmd[cmd.index("py"):]
    assert inner[:3] == ["py", "-m", "pipeline.launch"] and _opt(inner, "--rendezvous") == "10.0.0.5:41000"
    assert _opt(inner, "--nodes") == "2" and _opt(inner, "--gpus") == "8" and inner[-len(STAGE) - 1:] == ["--", *STAGE]
    cpu = srun_command(rule="pretrain", gpus=0, nodes=2, mixed="no", rendezvous="h:1", stage=STAGE, cpus=None,
                       python="py")
    assert not any(a.startswith(("--gres", "--cpus-per-task")) for a in cpu[:cpu.index("py")])


def test_the_srun_inside_a_step_sees_the_job_not_the_step():
    env = step_env({"SLURM_JOB_ID": "5", "SLURM_CONF": "/etc/slurm/slurm.conf", "SLURM_NNODES": "1",
                    "SLURM_JOB_NODELIST": "n1", "SLURM_NTASKS": "1", "SRUN_CPUS_PER_TASK": "2", "PATH": "/bin"})
    assert env == {"SLURM_JOB_ID": "5", "SLURM_CONF": "/etc/slurm/slurm.conf", "PATH": "/bin"}


def test_small_parsers():
    job = parse_job("JobId=5 JobName=x NodeList=n[1-2] NumNodes=2 NumCPUs=32 NumTasks=2 CPUs/Task=1")
    assert job["NodeList"] == "n[1-2]" and cpus_per_node(job) == 16 and cpus_per_node({}) is None
    assert node_addr("NodeName=gpu01 Arch=x86_64 NodeAddr=10.1.2.3 NodeHostName=gpu01") == "10.1.2.3"
    with pytest.raises(LaunchError, match="NodeAddr"):
        node_addr("Node gpu01 not found")
    assert derived_port("123") == derived_port("123") != derived_port("124")
    assert 20000 <= derived_port("999999") < 30000
    assert 0 < free_port() < 65536


def test_launch_line_is_parseable():
    line = launch_line(rule="train_tokenizer", node="vm (SLURM node b1)",
                       env={"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_ID": "7", "SLURMD_NODENAME": "b1"},
                       plan=NodePlan(2, 2, 0, 2, True), machines=1, machine_rank=0, main="127.0.0.1:5")
    fields = dict(kv.split("=", 1) for kv in line.removeprefix("launcher: ").split())
    assert fields == {"rule": "train_tokenizer", "node": "vm", "slurm_node": "b1", "CUDA_VISIBLE_DEVICES": "0,1",
                      "SLURM_JOB_ID": "7", "requested": "2", "granted": "2", "cuda": "0", "processes": "2",
                      "machines": "1", "machine_rank": "0", "main": "127.0.0.1:5", "device": "cpu-gloo"}


def _launch(args, env):
    return subprocess.run([sys.executable, "-m", "pipeline.launch", *args], capture_output=True, text=True,
                          timeout=120, env={**{k: v for k, v in os.environ.items()
                                               if not k.startswith(("SLURM_", "CUDA_VISIBLE"))}, **env})


def test_a_gpu_job_that_sees_none_fails_in_one_line():
    out = _launch(["--rule", "pretrain", "--gpus", "2", "--", "-c", "pass"], {"SLURM_JOB_ID": "9"})
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("launch failed: rule pretrain: asked for 2 GPU(s)"), out.stderr


def test_several_nodes_need_a_slurm_allocation():
    out = _launch(["--rule", "pretrain", "--nodes", "2", "--", "-c", "pass"], {})
    assert out.returncode != 0 and "needs a SLURM allocation" in out.stderr, out.stderr


def test_cpu_launch_runs_the_stage_once(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import os\nprint('ran', os.environ.get('WORLD_SIZE', '1'), os.environ['ACCELERATE_USE_CPU'])\n")
    out = _launch(["--rule", "t", "--", str(script)], {})
    assert out.returncode == 0, out.stderr
    assert "launcher: rule=t " in out.stderr and "processes=1 machines=1" in out.stderr
    assert out.stdout.split() == ["ran", "1", "True"]


class _Resources(dict):
    __getattr__ = dict.__getitem__


def _planned_resources(text: str) -> dict[str, list[dict]]:
    """rule → the `resources:` of each of its jobs in a dry run's output."""
    out: dict[str, list[dict]] = {}
    for block in re.split(r"\n(?=rule \w+:)", text):
        head = re.match(r"rule (\w+):", block)
        found = re.search(r"^\s+resources: (.*)$", block, re.M)
        if head and found:
            fields = dict(kv.split("=", 1) for kv in found.group(1).split(", "))
            out.setdefault(head.group(1), []).append({k: int(v) if v.isdigit() else v for k, v in fields.items()})
    return out


def test_torch_rules_become_the_right_sbatch_flags(repo_root, demo_corpus, tmp_path):
    """The config's resources → the rules' resources (a dry run of the real workflow) → the installed SLURM
    plugin's sbatch call: one node with --gpus and --cpus-per-gpu, two nodes with per-node --gres, never
    --ntasks-per-gpu, the rule's partition; logreg fine-tuning without GPUs."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from workflow_helpers import make_workdir, snakemake, tiny_config

    make_workdir(tmp_path)  # .test/config.yaml's relative paths resolve in the workdir
    cfg = tiny_config()
    cfg["resources"] = {"train_tokenizer": {"gpu": 2, "threads": 4, "slurm_partition": "gpu"},
                        "pretrain": {"gpu": 8, "nodes": 2, "threads": 16, "cpus_per_gpu": 4},
                        "finetune": {"gpu": 1, "threads": 2}}
    config = tmp_path / "res.yaml"
    config.write_text(yaml.safe_dump(cfg))
    dry = snakemake(tmp_path, config, "all", "--dry-run", "--profile", str(repo_root / "profiles" / "slurm"))
    assert dry.returncode == 0, dry.stderr[-3000:]
    planned = _planned_resources(dry.stdout)

    def sbatch(rule: str, threads: int, pick=lambda r: True) -> str:
        res = next(r for r in planned[rule] if pick(r))
        job = type("Job", (), {"resources": _Resources(res), "threads": threads})()
        # as the plugin's run_job builds it: the submit command, then the GPU/gres flags
        return get_submit_command(job, {"run_uuid": "u", "slurm_logfile": "l", "comment_str": "c", "account": "",
                                        "partition": "", "workdir": ""}) + set_gres_string(job)

    tok = sbatch("train_tokenizer", 4)
    assert {"--nodes=1", "--gpus=2", "--cpus-per-gpu=2"} <= set(tok.split()), tok
    assert planned["train_tokenizer"][0]["slurm_partition"] == "gpu"
    pre = sbatch("pretrain", 16)
    assert {"--nodes=2", "--gres=gpu:8", "--cpus-per-gpu=4"} <= set(pre.split()) and "--gpus" not in pre, pre
    full = sbatch("finetune", 2, lambda r: r["gpu"] == 1)
    logreg = sbatch("finetune", 2, lambda r: r["gpu"] == 0)
    assert "--gpus=1" in full.split() and "gpu" not in logreg and "--ntasks=1" in logreg.split(), (full, logreg)
    assert all("ntasks-per-gpu" not in c for c in (tok, pre, full, logreg))
    assert all(r["gpu"] == 0 and r["nodes"] == 1 for r in planned["extract_codes"])
