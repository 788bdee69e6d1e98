"""Headless Chromium for tests that look at a page as a person would: the DOM after its scripts ran, a screenshot.

    dom = dump_dom(Path("report.html"), tmp)          # installs Debian's `chromium` with apt-get when missing
    screenshot(Path("report.html"), tmp / "shot.png", tmp)

Chromium is not on a fresh machine: `chromium()` installs the Debian package the way tests/slurm_cluster.py installs
slurm (root, apt-get, package registries reachable as in CI), under a file lock so that two pytest workers do not
both run apt-get. Anything that stops it raises BrowserUnavailable with the reason; the tests fail on it (a report
nobody looked at is not a passing check). Every run gets its own profile folder and no network: the pages are local
files and the flags turn off Chromium's own background traffic.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

PACKAGES = ("chromium",)
NAMES = ("chromium", "chromium-browser")
LOCK = Path(os.environ.get("BRAINRVQ_APT_LOCK", "/var/tmp/brainrvq-apt.lock"))
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")


class BrowserUnavailable(RuntimeError):
    """Headless Chromium cannot run here; the message says why and what to do."""


def _found() -> str | None:
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def chromium() -> str:
    """The Chromium executable, installed with apt-get when missing (root only)."""
    if path := _found():
        return path
    if os.geteuid() != 0:
        raise BrowserUnavailable("chromium is not installed and installing it needs root: "
                                 "`apt-get install chromium` (Debian), then rerun the tests")
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path := _found():  # another worker installed it while this one waited
            return path
        _install()
    if path := _found():
        return path
    raise BrowserUnavailable(f"no {' or '.join(NAMES)} on PATH after `apt-get install {' '.join(PACKAGES)}`")


def _install() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quick = ["-o", "Acquire::http::Timeout=30", "-o", "Acquire::https::Timeout=30", "-o", "Acquire::Retries=1"]
    try:
        # A failed update is not fatal by itself (lists from an earlier update may do); a failed install is.
        update = _run(["apt-get", *quick, "update"], env=env, timeout=240)
        inst = _run(["apt-get", *quick, "install", "-y", "--no-install-recommends", *PACKAGES], env=env, timeout=900)
    except FileNotFoundError:
        raise BrowserUnavailable("chromium is missing and apt-get is not found (not a Debian-like system); "
                                 "install Chromium and put it on PATH") from None
    except subprocess.TimeoutExpired as exc:
        raise BrowserUnavailable(f"apt-get timed out installing chromium: {exc}") from None
    if inst.returncode != 0:
        raise BrowserUnavailable(f"apt-get install {' '.join(PACKAGES)} failed (rc {inst.returncode}): "
                                 f"{_tail(inst.stdout + inst.stderr, 8)}\n"
                                 f"(apt-get update rc {update.returncode}: {_tail(update.stdout + update.stderr, 4)})")


def _browse(page: Path, profile: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Chromium on a local file with a fresh profile; `--virtual-time-budget` lets the page's scripts finish first."""
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args,
           page.resolve().as_uri()]
    try:
        proc = _run(cmd, env={**os.environ, "HOME": str(profile)}, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BrowserUnavailable(f"chromium did not finish {page} within {timeout:.0f} s: {exc}") from None
    if proc.returncode != 0:
        raise BrowserUnavailable(f"chromium failed on {page} (rc {proc.returncode}): {_tail(proc.stderr, 8)}")
    return proc


def dump_dom(page: Path, tmp: Path, *, size: tuple[int, int] = (1600, 1000), timeout: float = 120) -> str:
    """The page's DOM as HTML after its scripts ran (what a person's browser shows, as markup), laid out in a window
    of `size` (width, height) pixels."""
    return _browse(page, tmp / "chromium-dom", "--dump-dom", f"--window-size={size[0]},{size[1]}",
                   timeout=timeout).stdout


def screenshot(page: Path, png: Path, tmp: Path, *, size: tuple[int, int] = (1600, 1000),
               timeout: float = 120) -> Path:
    """A PNG of the page's first view at `size` (width, height) pixels."""
    _browse(page, tmp / "chromium-shot", f"--screenshot={png.resolve()}", f"--window-size={size[0]},{size[1]}",
            timeout=timeout)
    if not png.is_file():
        raise BrowserUnavailable(f"chromium wrote no screenshot of {page} to {png}")
    return png


def _run(cmd: list[str], *, env: dict | None = None, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _tail(text: str, n: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-n:])
