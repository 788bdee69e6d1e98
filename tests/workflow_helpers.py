"""Driving the real Snakemake workflow from tests: runs, dry runs, their job lists and summaries, tiny configs.

The tiny DAG's config is a file, .test/config.yaml, with every path relative (results, the demo cache): a workdir
made by `make_workdir` (the cache linked in) and finished once per session (`finish_workdir`, the `finished`
fixture of conftest.py) and copied with `copy_workdir` (results, raw data and `.snakemake` metadata, mtimes
preserved) is a second, equally finished checkout: Snakemake sees nothing to do there either.
"""

from __future__ import annotations

import collections
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]


def snakemake_cmd(workdir: Path, config: Path | tuple[Path, ...], *args: str, cores: int = 2) -> list[str]:
    # --configfile takes several values (later files update earlier ones): it goes last so that targets are not
    # read as config files.
    configs = config if isinstance(config, tuple) else (config,)
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--cores", str(cores), *args, "--configfile", *map(str, configs)]


def snakemake(workdir: Path, config: Path | tuple[Path, ...], *args: str, timeout: float = 600,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, config, *args), capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=None if env is None else {**os.environ, **env})


def snakemake_popen(workdir: Path, config: Path, *args: str, log: Path) -> subprocess.Popen:
    """Snakemake in its own session (process group = its pid): os.killpg reaches it and every job it started."""
    out = log.open("w")
    return subprocess.Popen(snakemake_cmd(workdir, config, *args), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                            start_new_session=True)


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def tail(proc: subprocess.CompletedProcess, n: int = 4000) -> str:
    return output(proc)[-n:]


# ---------------------------------------------------------------------------------------------
# what a dry run plans


_JOB_HEAD = re.compile(r"^(?:local)?rule (\w+):\s*$")


def planned_jobs(proc: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    """The jobs of a dry run (`-n`), in order: {"rule", "output": [...], "wildcards": {...}, "reason"}."""
    jobs: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in output(proc).splitlines():
        head = _JOB_HEAD.match(line)
        if head:
            current = {"rule": head.group(1), "output": [], "wildcards": {}, "reason": ""}
            jobs.append(current)
            continue
        if not line.startswith("    "):
            current = None
        if current is None:
            continue
        key, _, value = line.strip().partition(": ")
        if key == "output":
            current["output"] = [v.strip() for v in value.split(",")]
        elif key == "wildcards":
            current["wildcards"] = dict(kv.strip().split("=", 1) for kv in value.split(","))
        elif key == "reason":
            current["reason"] = value
    return [j for j in jobs if j["rule"] != "all"]


def planned_rules(proc: subprocess.CompletedProcess) -> set[str]:
    return {j["rule"] for j in planned_jobs(proc)}


def rule_counts(jobs: list[dict[str, Any]]) -> dict[str, int]:
    """Planned jobs per rule (of planned_jobs' list)."""
    return dict(collections.Counter(j["rule"] for j in jobs))


def nothing_to_do(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == 0 and "Nothing to be done" in output(proc) and not planned_jobs(proc)


def summary(workdir: Path, config: Path, *targets: str) -> dict[str, dict[str, str]]:
    """`--summary`: output file → {rule, status, plan} (plan: "update pending" or "no update")."""
    proc = snakemake(workdir, config, *targets, "--summary")
    assert proc.returncode == 0, tail(proc)
    lines = [line.split("\t") for line in proc.stdout.splitlines() if line.count("\t") >= 5]
    header, rows = lines[0], lines[1:]
    assert header[:1] == ["output_file"], header
    col = {name: i for i, name in enumerate(header)}
    return {r[0]: {"rule": r[col["rule"]], "status": r[col["status"]], "plan": r[col["plan"]]} for r in rows}


# ---------------------------------------------------------------------------------------------
# configs and workdirs


TEST_CONFIG = ROOT / ".test" / "config.yaml"  # the tiny DAG, as CI runs it and a person can (`make test-dag`)
TEST_RESULTS = "results/test"  # its `results:`, relative to the workdir


def tiny_config() -> dict[str, Any]:
    """.test/config.yaml as a mapping (for variants: `changed`)."""
    return yaml.safe_load(TEST_CONFIG.read_text())


def make_workdir(path: Path) -> Path:
    """A working directory for .test/config.yaml: its relative paths resolve here, the demo cache through a link to
    the repository's (fetched once, shared)."""
    (path / "resources").mkdir(parents=True, exist_ok=True)
    link = path / "resources" / "cache"
    if not link.exists():
        link.symlink_to((ROOT / "resources" / "cache").resolve(), target_is_directory=True)
    return path


def changed(cfg: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `cfg` with dotted keys set: {"tokenizer.train.lr": 0.001}."""
    cfg = copy.deepcopy(cfg)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = cfg
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def copy_workdir(src: Path, dst: Path) -> Path:
    """A second checkout of a finished workdir: results, raw data and Snakemake's metadata, mtimes kept."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("locks", "shadow", "log"))
    return dst


@dataclass(frozen=True)
class Finished:
    """A workdir where `snakemake all` completed on `cfg` (written at `config`). Shared by every test of a session:
    tests dry-run it, or change copies of it (`copy`)."""

    workdir: Path
    config: Path
    cfg: dict[str, Any]
    base: Path  # room for copies and other configs

    def config_with(self, name: str, changes: dict[str, Any]) -> Path:
        return write_config(self.base / "configs" / f"{name}.yaml", changed(self.cfg, changes))

    def copy(self, name: str) -> Path:
        return copy_workdir(self.workdir, self.base / name)


def finish_workdir(base: Path) -> Finished:
    """Run the tiny DAG (.test/config.yaml) to the end in <base>/main, every torch stage under the device check
    (pipeline.train.device: a separate device played on the CPU, so a forgotten move fails here as on a GPU)."""
    work = make_workdir(base / "main")
    proc = snakemake(work, TEST_CONFIG, "all", timeout=1800, env={"PIPELINE_DEVICE_CHECK": "1"})
    assert proc.returncode == 0, tail(proc)
    assert nothing_to_do(snakemake(work, TEST_CONFIG, "all", "-n"))
    return Finished(work, TEST_CONFIG, tiny_config(), base)


# ---------------------------------------------------------------------------------------------
# processes


def wait_for(condition: Callable[[], Any], *, timeout: float, proc: subprocess.Popen | None = None,
             poll: float = 0.05) -> Any:
    """Poll until `condition()` is truthy (returned); fail on timeout or when `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited (rc {proc.returncode}) before the condition held")
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout} s")


def group_processes(pgid: int) -> dict[int, list[str]]:
    """pid → argv of the live processes in process group `pgid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
        if argv and argv[0]:  # zombies have no command line
            found[int(entry.name)] = [a for a in argv if a]
    return found


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started by snakemake_popen and everything in its process group (no cleanup runs)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
