"""Progress a person can watch in a long stage's log: done/total, rate and ETA, at a steady interval.

One line every `every_s` seconds (and at the first and the last update), e.g.
    pretrain: step 150/800 (19 %) · 2.1 steps/s · ETA 5m10s · loss 3.41 · 612 patches/s
The rate counts only what this process did since it started (a resumed run's ETA is not skewed by the steps it
resumed from).

The line goes to the stage's log (its logger) and, when the stage's stderr is a file but the process has a terminal
(a rule run by Snakemake in a terminal: its shell sends the stage's output to the rule log), to that terminal too,
so the console shows the training, not only the rule header. Jobs on SLURM nodes have no terminal: their rule logs
hold the lines.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from typing import TextIO

log = logging.getLogger(__name__)


@functools.cache
def terminal() -> TextIO | None:
    """The process's terminal when its stderr is not that terminal already (None: no terminal, or stderr is it);
    opened once per process, whatever the number of Progress lines or instances."""
    try:
        if os.isatty(sys.stderr.fileno()):
            return None
    except (AttributeError, OSError, ValueError):  # a replaced stderr without a descriptor (pytest's capture)
        pass
    try:
        return open("/dev/tty", "w", buffering=1)  # no controlling terminal: ENXIO
    except OSError:
        return None


def duration(seconds: float) -> str:
    """12s, 5m10s, 3h04m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(self, label: str, total: int, *, unit: str = "step", start: int = 0, every_s: float = 30.0,
                 enabled: bool = True, logger: logging.Logger | None = None) -> None:
        self.label, self.total, self.unit, self.every_s, self.enabled = label, total, unit, every_s, enabled
        self.start = self.done = start
        self.log = logger or log
        self.t0 = time.monotonic()
        self.last: float | None = None
        self.console_ok = True  # False once the terminal went away

    def update(self, done: int, detail: str = "") -> str | None:
        """Record `done` (absolute); the line logged, when this update logs one."""
        self.done = done
        now = time.monotonic()
        due = self.last is None or now - self.last >= self.every_s or done >= self.total
        if not (self.enabled and due):
            return None
        self.last = now
        rate = (done - self.start) / max(now - self.t0, 1e-9)
        eta = duration((self.total - done) / rate) if rate > 0 else "?"
        pct = 100.0 * done / max(self.total, 1)
        line = (f"{self.label}: {self.unit} {done}/{self.total} ({pct:.0f} %) · {rate:.3g} {self.unit}s/s · ETA {eta}"
                + (f" · {detail}" if detail else ""))
        self.log.info("%s", line)
        console = terminal() if self.console_ok else None
        if console is not None:
            try:
                console.write(line + "\n")
            except OSError:  # the terminal went away (a closed ssh session): the log still has every line
                self.console_ok = False
        return line
