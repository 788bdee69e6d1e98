"""The data stages' summary: how many recordings came through, and failure when none did."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Iterable, Mapping

from pipeline.errors import StageFailed

log = logging.getLogger("pipeline")


def finish_stage(stage: str, rows: Iterable[Mapping], *, what: str) -> None:
    """Log how many recordings came through; fail when none did."""
    rows = list(rows)
    counts = Counter(r.get("status") for r in rows)
    log.info("%s %s: %d ok, %d rejected", stage, what, counts.get("ok", 0), counts.get("rejected", 0))
    for r in rows:
        if r.get("status") == "rejected":
            log.info("  rejected %s: %s", r.get("recording"), r.get("reason"))
    if not counts.get("ok"):
        reasons = "; ".join(str(r.get("reason")) for r in rows[:5]) or "no recordings found"
        raise StageFailed(f"{stage} {what}: no usable recording ({reasons})")
