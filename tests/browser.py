"""Headless Chromium for tests that look at a page as a person would: the DOM after its scripts ran, a screenshot.

    dom = dump_dom(Path("report.html"), tmp)          # installs Debian's `chromium` with apt-get when missing
    screenshot(Path("report.html"), tmp / "shot.png", tmp)

Chromium is not on a fresh machine: `chromium()` installs the Debian package with tests/system_packages.py, as
tests/slurm_cluster.py installs slurm (root, apt-get, package registries reachable as in CI; one apt-get at a time). Anything that stops it raises BrowserUnavailable with the reason; the tests fail on it (a report
nobody looked at is not a passing check). Every run gets its own profile folder and no network: the pages are local
files and the flags turn off Chromium's own background traffic.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from system_packages import CHROMIUM as PACKAGES, install

NAMES = ("chromium", "chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")


class BrowserUnavailable(RuntimeError):
    """Headless Chromium cannot run here; the message says why and what to do."""


def _found() -> str | None:
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def chromium() -> str:
    """The Chromium executable, installed with apt-get when missing (root only; tests/system_packages.py)."""
    if path := _found():
        return path
    install(PACKAGES, BrowserUnavailable)
    if path := _found():
        return path
    raise BrowserUnavailable(f"no {' or '.join(NAMES)} on PATH after `apt-get install {' '.join(PACKAGES)}`")


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
