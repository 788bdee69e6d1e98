"""Clear the lock a killed Snakemake left in a working directory, when no Snakemake runs there any more.

    python -m pipeline.stale_lock [WORKDIR]      (the Makefile's demo target runs it first)

A `kill -9` of Snakemake (a closed laptop, an OOM kill) leaves `.snakemake/locks/*`, and the next run stops with
"Directory cannot be locked" until the user runs `snakemake --unlock`. The lock files name no process, so removing
them blindly could let two runs write one workdir. Here they are removed only when no live process is a Snakemake
working in that directory (its working directory, or its `--directory`, is WORKDIR) and no pipeline job of a killed
run is still writing there: then the lock is stale by definition. A live one leaves the lock in place and says which process holds it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

LOCKS = Path(".snakemake") / "locks"


def _workdir_of(proc: psutil.Process) -> Path | None:
    """The workdir of a Snakemake process (its --directory, else its cwd) or of a pipeline job (`-m pipeline...`,
    which Snakemake starts in its workdir: a killed Snakemake's jobs may still be writing); None for the rest."""
    try:
        argv = proc.cmdline()
        job = any(a == "-m" and b.split(".")[0] == "pipeline" for a, b in zip(argv, argv[1:]))
        if not job and not any(Path(a).name == "snakemake" for a in argv[:3]):
            return None
        for flag in ("--directory", "-d"):
            if flag in argv[:-1]:
                return (Path(proc.cwd()) / argv[argv.index(flag) + 1]).resolve()
        return Path(proc.cwd()).resolve()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def live_snakemakes(workdir: str | Path) -> list[int]:
    """pids of the Snakemake processes and pipeline jobs working in `workdir` (this process and its parents
    excluded)."""
    workdir = Path(workdir).resolve()
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    return [p.pid for p in psutil.process_iter() if p.pid not in mine and _workdir_of(p) == workdir]


def clear_stale_locks(workdir: str | Path = ".") -> list[Path]:
    """Remove `workdir`'s Snakemake lock files when no Snakemake works there; the files removed."""
    locks = sorted((Path(workdir) / LOCKS).glob("*.lock"))
    if not locks:
        return []
    holders = live_snakemakes(workdir)
    if holders:
        log.info("%s: locked by running Snakemake process(es) %s; lock kept", workdir, holders)
        return []
    for lock in locks:
        lock.unlink(missing_ok=True)
    log.warning("%s: removed the lock of a Snakemake run that is no longer alive (%d file(s))", workdir, len(locks))
    return locks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stale_lock", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", nargs="?", default=".")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    clear_stale_locks(args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
