"""Debian packages some tests need and a fresh machine lacks (SLURM's daemons, Chromium), installed with apt-get.

    install(("chromium",), BrowserUnavailable)   # returns when installed; raises the caller's error with the reason
    start_prefetch(log)                           # the test session's first step: every package, in the background

One apt-get at a time: every install holds one file lock (dpkg's own lock makes a second apt-get fail at once, so
two pytest workers installing SLURM and Chromium side by side would break one of them). The prefetch starts the
whole list in a background process when the session starts, so the downloads overlap the first tests instead of
stalling the worker that first needs them; a fixture that gets there first installs its own packages, and the
prefetch then finds them installed.

Run as a script (`python tests/system_packages.py`), it installs every package in PACKAGES.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

LOCK = Path(os.environ.get("BRAINRVQ_APT_LOCK", "/var/tmp/brainrvq-apt.lock"))
SLURM = ("slurmctld", "slurmd", "slurm-client", "munge")  # tests/slurm_cluster.py: a two-node cluster
CHROMIUM = ("chromium",)  # tests/browser.py: the report in a browser
PACKAGES = SLURM + CHROMIUM
QUICK = ("-o", "Acquire::http::Timeout=30", "-o", "Acquire::https::Timeout=30", "-o", "Acquire::Retries=1",
         "-o", "DPkg::Lock::Timeout=300")  # an apt-get started outside these tests: wait for it, don't fail


def missing(packages: Sequence[str]) -> list[str]:
    """The packages dpkg does not list as installed."""
    if shutil.which("dpkg-query") is None:
        return list(packages)
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    installed = {line.split()[0] for line in out.stdout.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def install(packages: Sequence[str], error: type[Exception] = RuntimeError) -> None:
    """Install what is missing of `packages` (root only), under the one lock; raise `error` with the reason."""
    if not missing(packages):
        return
    if os.geteuid() != 0:
        raise error(f"{' '.join(missing(packages))} not installed, and installing needs root: "
                    f"`apt-get install {' '.join(missing(packages))}` (Debian), then rerun the tests")
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        todo = missing(packages)  # the prefetch or another worker may have installed them while this one waited
        if not todo:
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            # A failed update is not fatal by itself (lists from an earlier update may do); a failed install is.
            update = _run(["apt-get", *QUICK, "update"], env=env, timeout=240)
            inst = _run(["apt-get", *QUICK, "install", "-y", "--no-install-recommends", *todo], env=env, timeout=900)
        except FileNotFoundError:
            raise error(f"{' '.join(todo)} missing and apt-get is not found (not a Debian-like system)") from None
        except subprocess.TimeoutExpired as exc:
            raise error(f"apt-get timed out installing {' '.join(todo)}: {exc}") from None
    if inst.returncode != 0:
        raise error(f"apt-get install {' '.join(todo)} failed (rc {inst.returncode}): "
                    f"{_tail(inst.stdout + inst.stderr, 8)}\n"
                    f"(apt-get update rc {update.returncode}: {_tail(update.stdout + update.stderr, 4)})")


def start_prefetch(log: Path) -> subprocess.Popen | None:
    """Install every missing package of PACKAGES in a background process (root with apt-get only; else None).
    Its output goes to `log`; a failure there is seen again, with its reason, by the fixture that needs the package."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None or not missing(PACKAGES):
        return None
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, __file__], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _run(cmd: list[str], *, env: dict | None = None, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _tail(text: str, n: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


if __name__ == "__main__":
    try:
        install(PACKAGES)
    except RuntimeError as exc:
        sys.exit(f"prefetch: {exc}")
    print(f"prefetch: {' '.join(PACKAGES)} installed")
