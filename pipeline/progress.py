"""Progress a person can watch in a long stage's log: done/total, rate and ETA, at a steady interval.

One line every `every_s` seconds (and at the first and the last update), e.g.
    pretrain: step 150/800 (19 %) · 2.1 steps/s · ETA 5m10s · loss 3.41 · 612 patches/s
The rate counts only what this process did since it started (a resumed run's ETA is not skewed by the steps it
resumed from).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


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
        return line
