"""A real two-node SLURM cluster on this machine, for tests (recipe: ../shared/SLURM.md).

    cluster = start_cluster(tmp)      # apt-get install when missing, munged, slurmctld, one slurmd per node
    subprocess.run([...sbatch...], env={**os.environ, **cluster.env})
    cluster.stop()                    # kills exactly the daemons start_cluster started

Debian's slurm-wlm (22.05) with munge, started by hand (no systemd). Two nodes, brainrvq1 and brainrvq2,
are two slurmd on this host (`slurmd -N NAME`, each with its own Port, spool, pid and log file; Debian's
build accepts several), both at NodeAddr 127.0.0.1, so that a job can span two nodes without any
address outside this machine. Each node offers all CPUs and two fake GPUs (gres on /dev/null and
/dev/zero): a job that asks for one gets CUDA_VISIBLE_DEVICES set, which is all the resource plumbing
needs to show. Everything the cluster writes (config, state, spool, logs,
pid files) lives under a fixed STATE folder, so a second run finds and stops what a killed first run
left behind. Written outside it, as the recipe needs: the installed packages, /etc/munge/munge.key
when it is missing, /run/munge (munged's socket), and /etc/slurm/slurm.conf + gres.conf. The config
must sit at SLURM's default path: snakemake-executor-plugin-slurm-jobstep drops every SLURM_* variable
but the job's identity (SLURM_CONF included) before its `srun` inside the job. An existing
/etc/slurm/slurm.conf that this module did not write is never overwritten (SlurmUnavailable instead).

Any reason the cluster cannot come up (not root, apt unreachable, a daemon that dies) raises
SlurmUnavailable with that reason; tests turn it into pytest.skip(reason).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from system_packages import SLURM as PACKAGES, install

STATE = Path(os.environ.get("BRAINRVQ_SLURM_STATE", "/var/tmp/brainrvq-slurm"))
PARTITION = "brainrvq"
NODES = ("brainrvq1", "brainrvq2")
N_GPUS = 2  # per node
FAKE_GPU_FILES = ("/dev/null", "/dev/zero")
MUNGE_KEY = Path("/etc/munge/munge.key")
SLURM_ETC = Path("/etc/slurm")
MARKER_PREFIX = "# Written by tests/slurm_cluster.py"  # also in files of earlier versions of this module
MARKER = f"{MARKER_PREFIX}: a test cluster, not for production."
MUNGE_RUN = Path("/run/munge")
MUNGE_LOG = Path("/var/log/munge/munged.log")
# daemon → the executable name /proc/<pid>/comm must show before we signal a pid from a pid file;
# slurmd-<node> is the slurmd of that node
DAEMONS = {"slurmd": "slurmd", "slurmctld": "slurmctld", "munged": "munged"}


def _exe(name: str) -> str:
    return DAEMONS[name.split("-", 1)[0]]


class SlurmUnavailable(RuntimeError):
    """The test cluster cannot be started here; the message says why."""


@dataclass
class Cluster:
    state: Path
    conf: Path
    partition: str
    nodes: tuple[str, ...]
    gpus: int  # per node
    started: list[str] = field(default_factory=list)  # daemons this process started (stop order: reverse)
    logs_to: Path | None = None  # where stop() copies the daemons' logs (e.g. the test's tmp folder)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients (sbatch, squeue, the plugin); the config is at the default path anyway."""
        return {"SLURM_CONF": str(self.conf)}

    def sinfo(self) -> str:
        return _run(["sinfo", "-h", "-N", "-o", "%N %P %t %G"], env={**os.environ, **self.env}, timeout=15).stdout

    @property
    def node(self) -> str:
        return self.nodes[0]

    def logs(self, tail: int = 40) -> str:
        return _daemon_logs(self.state, tail)

    def cancel_all(self, timeout: float = 30) -> None:
        """scancel every job still queued or running on this (private) cluster and wait until they are gone,
        so that no job step outlives slurmd."""
        live = "PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED,REQUEUED,RESIZING,STOPPED"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                out = _run(["squeue", "-h", "-o", "%i", f"--states={live}"], env={**os.environ, **self.env}, timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                return
            ids = out.stdout.split()
            if out.returncode != 0 or not ids:
                return
            _run(["scancel", *ids], env={**os.environ, **self.env}, timeout=15)
            time.sleep(1)

    def stop(self) -> None:
        """Cancel leftover jobs, then stop the daemons start_cluster started, newest first, by their pid
        files; nothing else."""
        if "slurmctld" in self.started:
            self.cancel_all()
        if self.logs_to is not None:
            dest = Path(self.logs_to) / "slurm-daemon-logs"
            dest.mkdir(parents=True, exist_ok=True)
            for log in [*(self.state / "log").glob("*.log"), *(self.state / "log").glob("*.out"), MUNGE_LOG]:
                if log.is_file():
                    shutil.copy2(log, dest / log.name)
        for name in reversed(self.started):
            _stop_from_pidfile(self.state / "run" / f"{name}.pid", name)
            proc = self.procs.pop(name, None)
            if proc is not None:  # our child: reap it (a pid file that went stale still ends here)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.started.clear()


def start_cluster(tmp: Path | None = None, *, state: Path = STATE, install: bool = True) -> Cluster:
    """Start munged (unless one answers already), slurmctld and one slurmd per node; wait until all are idle.

    `tmp`: where stop() leaves a copy of the daemons' logs (optional). Raises SlurmUnavailable.
    """
    if os.geteuid() != 0:
        raise SlurmUnavailable("needs root: installs slurm with apt-get and starts its daemons")
    state = Path(state)
    stop_stale(state)
    if install:
        _install()
    for tool in ("sbatch", "squeue", "sinfo", "slurmctld", "slurmd", "munged", "mungekey"):
        if shutil.which(tool) is None:
            raise SlurmUnavailable(f"{tool} not found after installing {' '.join(PACKAGES)}")
    try:
        pwd.getpwnam("slurm"), pwd.getpwnam("munge")
    except KeyError as exc:
        raise SlurmUnavailable(f"user missing after the install: {exc}") from None

    host = socket.gethostname().split(".")[0]
    conf = _write_config(state, host)
    cluster = Cluster(state=state, conf=conf, partition=PARTITION, nodes=NODES, gpus=N_GPUS, logs_to=tmp)
    try:
        munged = _start_munged(state)
        if munged is not None:
            cluster.started.append("munged")
            cluster.procs["munged"] = munged
        env = {**os.environ, **cluster.env}
        # -D: in the foreground, as children of this process (reaped by stop(); no daemonizing fork
        # whose zombie lingers); -c: a clean start, without jobs or state of an earlier run.
        cluster.procs["slurmctld"] = _start_daemon(state, "slurmctld", ["slurmctld", "-D", "-c", "-f", str(conf)], env)
        cluster.started.append("slurmctld")
        for node in NODES:
            (state / "spool" / node).mkdir(parents=True, exist_ok=True)
            name = f"slurmd-{node}"
            cluster.procs[name] = _start_daemon(state, name, ["slurmd", "-D", "-c", "-N", node, "-f", str(conf)], env)
            cluster.started.append(name)
        _wait_idle(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def stop_stale(state: Path = STATE) -> list[str]:
    """Stop daemons a previous run started and left running (found by this module's pid files)."""
    stopped = []
    slurmds = sorted(p.stem for p in (Path(state) / "run").glob("slurmd*.pid"))
    for name in (*slurmds, "slurmctld", "munged"):
        if _stop_from_pidfile(Path(state) / "run" / f"{name}.pid", name):
            stopped.append(name)
    return stopped


# --- install -------------------------------------------------------------------------------------

def _install() -> None:
    if all(shutil.which(t) for t in ("sbatch", "slurmctld", "slurmd", "munged")):
        return
    install(PACKAGES, SlurmUnavailable)


# --- configuration -------------------------------------------------------------------------------

def _mem_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise SlurmUnavailable("cannot read MemTotal from /proc/meminfo")


def _write_config(state: Path, host: str) -> Path:
    slurm = pwd.getpwnam("slurm")
    etc, run, log = SLURM_ETC, state / "run", state / "log"
    ctld, spool = state / "ctld", state / "spool"
    conf = etc / "slurm.conf"
    for mine in (conf, etc / "gres.conf"):
        if mine.exists() and MARKER_PREFIX not in mine.read_text(errors="replace"):
            raise SlurmUnavailable(f"{mine} exists and was not written by tests/slurm_cluster.py; not touching it")
    for d in (etc, run, log, ctld, spool):
        d.mkdir(parents=True, exist_ok=True)
    for d in (run, log, ctld, spool):
        os.chown(d, slurm.pw_uid, slurm.pw_gid)
    for stale in [*log.glob("*.log"), *log.glob("*.out")]:
        stale.unlink(missing_ok=True)  # the error report should show this run's lines only
    cpus = os.cpu_count() or 1
    mem = max(1024, (_mem_mib() - 2048) // len(NODES))  # leave 2 GiB to the system, share the rest
    nodes = "\n".join(f"NodeName={n} NodeAddr=127.0.0.1 NodeHostname={host} Port={6818 + i} CPUs={cpus} "
                      f"RealMemory={mem} Gres=gpu:{N_GPUS} State=UNKNOWN" for i, n in enumerate(NODES, 1))
    conf.write_text(f"""\
{MARKER}
ClusterName=brainrvq-test
SlurmctldHost={host}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={ctld}
SlurmdSpoolDir={spool}/%n
SlurmctldPidFile={run}/slurmctld.pid
SlurmdPidFile={run}/slurmd-%n.pid
SlurmctldLogFile={log}/slurmctld.log
SlurmdLogFile={log}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue for 10 minutes: without accounting (no sacct) that is how
# Snakemake's slurm plugin learns that a job completed.
MinJobAge=600
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
GresTypes=gpu
{nodes}
PartitionName={PARTITION} Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
""")
    # gres.conf is read from slurm.conf's folder: two fake GPUs per node, no autodetection (no NVML here).
    (etc / "gres.conf").write_text(f"{MARKER}\nAutoDetect=off\n" + "".join(
        f"NodeName={n} Name=gpu File={f}\n" for n in NODES for f in FAKE_GPU_FILES))
    return conf


# --- daemons -------------------------------------------------------------------------------------

def _munge_works() -> bool:
    try:
        cred = _run(["munge", "-n"], timeout=10)
        return cred.returncode == 0 and _run(["unmunge"], input=cred.stdout, timeout=10).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def _start_munged(state: Path) -> subprocess.Popen | None:
    """Start munged as user munge unless one already answers; its process when this call started it."""
    if _munge_works():
        return None
    munge = pwd.getpwnam("munge")
    MUNGE_RUN.mkdir(parents=True, exist_ok=True)
    os.chown(MUNGE_RUN, munge.pw_uid, munge.pw_gid)
    MUNGE_RUN.chmod(0o755)
    if not MUNGE_KEY.is_file():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        made = _run(["mungekey", "-c", "-f", "-k", str(MUNGE_KEY)], timeout=30)
        if made.returncode != 0:
            raise SlurmUnavailable(f"mungekey failed: {_tail(made.stdout + made.stderr)}")
    os.chown(MUNGE_KEY, munge.pw_uid, munge.pw_gid)
    MUNGE_KEY.chmod(0o400)
    for d in ("/var/lib/munge", "/var/log/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
        os.chown(d, munge.pw_uid, munge.pw_gid)
    pid_file = MUNGE_RUN / "munged.pid"
    pid_file.unlink(missing_ok=True)
    # munged's log stays at its default, /var/log/munge/munged.log: munged refuses a log file in a
    # folder that is not owned by munge or root all the way up.
    proc = _spawn(state, "munged", ["munged", "-F", f"--pid-file={pid_file}"], dict(os.environ),
                  user=munge.pw_uid, group=munge.pw_gid, extra_groups=[])
    pid = _wait_pidfile(pid_file, "munged", state, proc)
    (state / "run" / "munged.pid").write_text(f"{pid}\n")  # our own record, for stop() and stop_stale()
    deadline = time.monotonic() + 15
    while not _munge_works():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SlurmUnavailable(f"munged (pid {pid}) does not answer `munge -n | unmunge`\n{_daemon_logs(state)}")
        time.sleep(0.2)
    return proc


def _spawn(state: Path, name: str, cmd: list[str], env: dict, **kw) -> subprocess.Popen:
    out = state / "log" / f"{name}.out"  # the daemon's own stdout/stderr (startup errors land here)
    with open(out, "wb") as fh:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, **kw)


def _start_daemon(state: Path, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
    pid_file = state / "run" / f"{name}.pid"
    pid_file.unlink(missing_ok=True)
    proc = _spawn(state, name, cmd, env)
    _wait_pidfile(pid_file, name, state, proc)
    return proc


def _wait_pidfile(pid_file: Path, name: str, state: Path, proc: subprocess.Popen, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _read_pid(pid_file)
        if pid is not None and _is_daemon(pid, name):
            return pid
        if proc.poll() is not None:
            raise SlurmUnavailable(f"{name} exited with {proc.returncode} while starting\n{_daemon_logs(state)}")
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise SlurmUnavailable(f"{name} did not come up (no live pid in {pid_file} after {timeout:.0f} s)\n"
                           f"{_daemon_logs(state)}")


def _wait_idle(cluster: Cluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for name in cluster.started:
            if name != "munged" and not _is_daemon(_read_pid(cluster.state / "run" / f"{name}.pid"), name):
                raise SlurmUnavailable(f"{name} died while the node registered\n{cluster.logs()}")
        try:
            last = cluster.sinfo()
        except subprocess.TimeoutExpired:
            last = "sinfo timed out"
        idle = {line.split()[0] for line in last.splitlines() if line.split()[2:3] == ["idle"]}
        if idle >= set(cluster.nodes):
            return
        time.sleep(0.5)
    raise SlurmUnavailable(f"nodes {', '.join(cluster.nodes)} not all idle after {timeout:.0f} s; sinfo says "
                           f"{last.strip()!r}\n"
                           f"{cluster.logs()}")


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _is_daemon(pid: int | None, name: str) -> bool:
    """True when `pid` is alive and is the daemon `name` (a pid file may outlive its process)."""
    if pid is None:
        return False
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return False  # a zombie: exited, waiting to be reaped
    except (OSError, IndexError):
        return False
    return comm == _exe(name) or Path(cmdline).name == _exe(name)


def _stop_from_pidfile(pid_file: Path, name: str, timeout: float = 15) -> bool:
    """SIGTERM the daemon in `pid_file` (if it still is that daemon), SIGKILL after `timeout`."""
    pid = _read_pid(pid_file)
    stopped = False
    if _is_daemon(pid, name):
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _is_daemon(pid, name) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _is_daemon(pid, name):
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.2)
        except ProcessLookupError:
            pass
        stopped = True
    pid_file.unlink(missing_ok=True)
    return stopped


# --- helpers -------------------------------------------------------------------------------------

def _run(cmd: list[str], *, env: dict | None = None, timeout: float, input: str | None = None):
    return subprocess.run(cmd, env=env, input=input, capture_output=True, text=True, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def _tail(text: str, n: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _daemon_logs(state: Path, tail: int = 40) -> str:
    parts = []
    logs = sorted((Path(state) / "log").glob("*.log")) + sorted((Path(state) / "log").glob("*.out"))
    for log in [*logs, MUNGE_LOG]:
        if not log.is_file():
            continue
        parts.append(f"--- {log} (last {tail} lines) ---\n{_tail(log.read_text(errors='replace'), tail)}")
    return "\n".join(parts) or f"(no daemon logs under {state}/log)"
