"""Start a torch stage with what the job was granted: `accelerate launch`, one process per granted GPU.

    python -m pipeline.launch --rule pretrain --gpus 8 [--nodes 2] --mixed-precision bf16 -- -m pipeline pretrain ...

`--gpus` is what the rule asked for per node (its `resources.<rule>.gpu`), `--nodes` how many nodes. Inside
the job the launcher reads what was granted (CUDA_VISIBLE_DEVICES, else SLURM_GPUS_ON_NODE / SLURM_STEP_GPUS /
SLURM_JOB_GPUS; outside SLURM with neither, every GPU torch sees), checks it against the request and stops with
one line naming the rule and the node when they differ, when GPUs were asked for and none granted, or when GPUs
were granted and torch sees no CUDA device. BRAINRVQ_FAKE_GPUS=1 (test clusters whose GPUs are /dev/null) runs the
granted number of CPU processes over gloo instead. Without GPUs: `--cpu`, one process.

One node: a free port (bound to port 0 and released) for the process group, so that two jobs on one node never
meet on accelerate's default 29500. Several nodes (inside a SLURM allocation): `srun` starts one launcher per node
(`--nodes M --ntasks-per-node 1 --overlap`); each checks its own node's grant and runs `accelerate launch
--num_machines M --machine_rank $SLURM_NODEID` with static rendezvous on the job's first host (its NodeAddr), at a
port that was free there.

Every launcher logs one line, `launcher: rule=… node=… CUDA_VISIBLE_DEVICES=… SLURM_JOB_ID=… requested=… granted=…
cuda=… processes=… machines=… machine_rank=… main=host:port device=…`, then replaces itself with accelerate.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

FAKE_GPUS_ENV = "BRAINRVQ_FAKE_GPUS"  # "1": granted GPUs without a CUDA device run as CPU processes (tests)
# When the launcher that picks the port is not on the rendezvous host (SLURM runs a batch script and one-task
# steps on the first node, so this is a fallback), the port comes from the job id: distinct for concurrent jobs
# unless their ids differ by a multiple of the range, and outside the ephemeral range (32768+) that port 0 uses.
DERIVED_PORTS = (20000, 30000)


class LaunchError(RuntimeError):
    """The job's grant does not match its request; the message names the rule, the node and the fix."""


@dataclass(frozen=True)
class NodePlan:
    """What one node runs: `processes` accelerate processes, on CPU (gloo) or one per GPU."""
    requested: int
    granted: int
    cuda: int
    processes: int
    cpu: bool


def node_name(env: Mapping[str, str]) -> str:
    host = socket.gethostname()
    slurm = env.get("SLURMD_NODENAME")
    return host if not slurm or slurm == host else f"{host} (SLURM node {slurm})"


def granted_gpus(env: Mapping[str, str]) -> tuple[int | None, str]:
    """GPUs granted to this node and the variable that says so; (None, "") when nothing does."""
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        ids = [d.strip() for d in cvd.split(",") if d.strip()]
        # SLURM writes NoDevFiles for a gres without device files; a leading -1 hides every GPU from CUDA
        if ids == ["NoDevFiles"] or (ids and ids[0].startswith("-")):
            ids = []
        return len(ids), f"CUDA_VISIBLE_DEVICES={cvd or '(empty)'}"
    if env.get("SLURM_GPUS_ON_NODE"):
        return int(env["SLURM_GPUS_ON_NODE"]), f"SLURM_GPUS_ON_NODE={env['SLURM_GPUS_ON_NODE']}"
    for key in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if env.get(key):
            return len(env[key].split(",")), f"{key}={env[key]}"
    return None, ""


def plan_node(rule: str, requested: int, env: Mapping[str, str], cuda: int, node: str) -> NodePlan:
    """Check this node's grant against the request (`requested` GPUs per node); `cuda`: devices torch sees."""
    if requested < 0:
        raise LaunchError(f"rule {rule}: --gpus {requested} is negative")
    if requested == 0:
        return NodePlan(requested=0, granted=0, cuda=cuda, processes=1, cpu=True)
    granted, source = granted_gpus(env)
    if granted is None and "SLURM_JOB_ID" not in env:
        granted, source = cuda, f"torch.cuda.device_count()={cuda} (no CUDA_VISIBLE_DEVICES, not in a SLURM job)"
    if not granted:
        raise LaunchError(f"rule {rule}: asked for {requested} GPU(s) per node but node {node} was granted none "
                          f"({source or 'no CUDA_VISIBLE_DEVICES, no SLURM GPU grant'}); check that resources.{rule}"
                          f".gpu reached the scheduler (sbatch --gpus / --gres) and that the partition has GPUs")
    if granted != requested:
        raise LaunchError(f"rule {rule}: asked for {requested} GPU(s) per node but node {node} was granted {granted} "
                          f"({source}); set resources.{rule}.gpu to the GPUs per node the job gets"
                          + (" or CUDA_VISIBLE_DEVICES to the GPUs it may use" if "SLURM_JOB_ID" not in env else ""))
    if cuda == 0:
        if env.get(FAKE_GPUS_ENV) == "1":
            return NodePlan(requested=requested, granted=granted, cuda=0, processes=granted, cpu=True)
        raise LaunchError(f"rule {rule}: node {node} was granted {granted} GPU(s) ({source}) but torch sees no CUDA "
                          f"device (driver, or a CPU-only torch build?); {FAKE_GPUS_ENV}=1 runs {granted} CPU "
                          f"processes instead (test clusters with fake GPUs)")
    if cuda != granted:
        raise LaunchError(f"rule {rule}: node {node} was granted {granted} GPU(s) ({source}) but torch sees {cuda}")
    return NodePlan(requested=requested, granted=granted, cuda=cuda, processes=granted, cpu=False)


def accelerate_command(plan: NodePlan, *, machines: int, machine_rank: int, main_ip: str, port: int, mixed: str,
                       stage: Sequence[str], python: str = sys.executable) -> list[str]:
    """`accelerate launch` for this node: `plan.processes` here, `plan.processes × machines` in all."""
    total = plan.processes * machines
    cmd = [python, "-m", "accelerate.commands.launch"]
    if total > 1:
        # the torchrun launcher (also for CPU processes: it is the one that starts several and sets their ranks)
        cmd += ["--multi_gpu", "--num_processes", str(total), "--num_machines", str(machines),
                "--main_process_ip", main_ip, "--main_process_port", str(port)]
        if machines > 1:
            cmd += ["--machine_rank", str(machine_rank), "--rdzv_backend", "static"]
    else:
        cmd += (["--cpu"] if plan.cpu else []) + ["--num_processes", "1", "--num_machines", "1"]
    return [*cmd, "--mixed_precision", mixed, "--dynamo_backend", "no", *stage]


def srun_command(*, rule: str, gpus: int, nodes: int, mixed: str, rendezvous: str, stage: Sequence[str],
                 cpus: int | None, python: str = sys.executable) -> list[str]:
    """One launcher per node in a new step of this allocation. --overlap: the step that runs this launcher
    (Snakemake's jobstep `srun -n1`) already holds the first node's CPUs and GPUs, and the new step shares them."""
    cmd = ["srun", "--overlap", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
           "--kill-on-bad-exit=1"]
    if gpus:
        cmd.append(f"--gres=gpu:{gpus}")  # per node: each launcher's CUDA_VISIBLE_DEVICES is its own node's
    if cpus:
        cmd.append(f"--cpus-per-task={cpus}")  # one task per node gets the node's CPUs, not srun's default of 1
    return [*cmd, python, "-m", "pipeline.launch", "--rule", rule, "--gpus", str(gpus), "--nodes", str(nodes),
            "--mixed-precision", mixed, "--rendezvous", rendezvous, "--", *stage]


def step_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment for that srun: without the enclosing step's SLURM_*/SRUN_* variables (its node list,
    task and CPU counts describe one node, and srun would take them for the allocation), as the jobstep plugin
    does for its own srun; srun then asks slurmctld for the job's allocation."""
    keep = {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_CONF", "SLURM_CLUSTER_NAME"}
    return {k: v for k, v in env.items()
            if k in keep or not k.startswith(("SLURM_", "SRUN_", "SBATCH_", "SALLOC_"))}


def parse_job(scontrol_job: str) -> dict[str, str]:
    """`scontrol show job -o ID` as a dict (NodeList, NumNodes, NumCPUs, ...)."""
    return dict(f.split("=", 1) for f in scontrol_job.split() if "=" in f)


def cpus_per_node(job: Mapping[str, str]) -> int | None:
    """CPUs per node of a job whose nodes got the same share (one request per node: cpus_per_gpu × GPUs)."""
    try:
        return max(1, int(job["NumCPUs"]) // int(job["NumNodes"]))
    except (KeyError, ValueError):
        return None


def node_addr(scontrol_node: str) -> str:
    """NodeAddr from `scontrol show node -o NAME` (NodeName and NodeAddr differ on many clusters)."""
    match = re.search(r"\bNodeAddr=(\S+)", scontrol_node)
    if not match:
        raise LaunchError(f"no NodeAddr in scontrol's answer: {scontrol_node.strip()[:200]!r}")
    return match.group(1)


def derived_port(job_id: str) -> int:
    lo, hi = DERIVED_PORTS
    return lo + int(job_id) % (hi - lo)


def free_port() -> int:
    """A port nothing listens on now: the kernel's choice for port 0, released for the rendezvous to bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def launch_line(*, rule: str, node: str, env: Mapping[str, str], plan: NodePlan, machines: int, machine_rank: int,
                main: str) -> str:
    device = "cuda" if not plan.cpu else ("cpu-gloo" if plan.processes * machines > 1 else "cpu")
    return (f"launcher: rule={rule} node={node.split()[0]} slurm_node={env.get('SLURMD_NODENAME', 'unset')} "
            f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', 'unset') or '(empty)'} "
            f"SLURM_JOB_ID={env.get('SLURM_JOB_ID', 'unset')} requested={plan.requested} granted={plan.granted} "
            f"cuda={plan.cuda} processes={plan.processes} machines={machines} machine_rank={machine_rank} "
            f"main={main} device={device}")


# --- running inside the job ------------------------------------------------------------------------------------

def _scontrol(*args: str) -> str:
    try:
        out = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LaunchError(f"scontrol {' '.join(args)} failed: {exc}") from None
    if out.returncode != 0:
        raise LaunchError(f"scontrol {' '.join(args)} failed: {out.stderr.strip()[:300]}")
    return out.stdout


def job_layout(env: Mapping[str, str], nodes: int, rule: str) -> tuple[str, int | None]:
    """(host:port on the job's first node, CPUs per node) for a job that must span `nodes` nodes. Asked of
    slurmctld: inside a job step the SLURM_* variables describe the step (one node), not the job."""
    job_id = env.get("SLURM_JOB_ID")
    if not job_id:
        raise LaunchError(f"rule {rule}: --nodes {nodes} needs a SLURM allocation (SLURM_JOB_ID is unset); "
                          f"run through the slurm profile or set resources.{rule}.nodes to 1")
    job = parse_job(_scontrol("show", "job", "-o", job_id))
    hosts = _scontrol("show", "hostnames", job.get("NodeList", "")).split()
    if len(hosts) != nodes:
        raise LaunchError(f"rule {rule}: asked for {nodes} nodes but SLURM job {job_id} has {len(hosts)} "
                          f"({job.get('NodeList')}); set resources.{rule}.nodes")
    port = free_port() if env.get("SLURMD_NODENAME") == hosts[0] else derived_port(job_id)
    return f"{node_addr(_scontrol('show', 'node', '-o', hosts[0]))}:{port}", cpus_per_node(job)


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rule", required=True, help="the rule's name (for messages)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs the rule asked for, per node")
    parser.add_argument("--nodes", type=int, default=1, help="nodes the rule asked for")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16", "fp8"])
    parser.add_argument("--rendezvous", default=None, help=argparse.SUPPRESS)  # set for the per-node launchers
    parser.add_argument("stage", nargs=argparse.REMAINDER, help="-- then the stage's python arguments")
    args = parser.parse_args(argv)
    stage = args.stage[1:] if args.stage[:1] == ["--"] else args.stage
    if not stage:
        parser.error("no stage command after --")
    env = dict(os.environ)
    try:
        if args.nodes < 1:
            raise LaunchError(f"rule {args.rule}: --nodes {args.nodes} must be at least 1")
        if args.nodes > 1 and args.rendezvous is None:
            main, cpus = job_layout(env, args.nodes, args.rule)
            cmd = srun_command(rule=args.rule, gpus=args.gpus, nodes=args.nodes, mixed=args.mixed_precision,
                               rendezvous=main, stage=stage, cpus=cpus)
            print(f"launcher: rule={args.rule} nodes={args.nodes}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
            os.execvpe(cmd[0], cmd, step_env(env))
        node = node_name(env)
        plan = plan_node(args.rule, args.gpus, env, cuda_device_count(), node)
        if args.nodes > 1:
            main_ip, port = args.rendezvous.rsplit(":", 1)
            machine_rank = int(env["SLURM_NODEID"])
        else:
            main_ip, port, machine_rank = "127.0.0.1", free_port(), 0
    except LaunchError as exc:
        sys.exit(f"launch failed: {exc}")
    cmd = accelerate_command(plan, machines=args.nodes, machine_rank=machine_rank, main_ip=main_ip, port=int(port),
                             mixed=args.mixed_precision, stage=stage)
    if plan.cpu:
        env["ACCELERATE_USE_CPU"] = "true"  # the torchrun launcher has no --cpu; the processes read this
    print(launch_line(rule=args.rule, node=node, env=env, plan=plan, machines=args.nodes, machine_rank=machine_rank,
                      main=f"{main_ip}:{port}"), file=sys.stderr, flush=True)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
