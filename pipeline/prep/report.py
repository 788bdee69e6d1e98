"""The data stages' summary: how many recordings came through, and failure when none did."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

from pipeline.errors import StageFailed
from pipeline.store.atomic import write_text_atomic

log = logging.getLogger("pipeline")


def finish_stage(stage: str, rows: Iterable[Mapping], *, what: str, quality: dict | None = None,
                 quality_path: Path | None = None) -> None:
    """Log how many recordings came through and the stage's quality warnings (`quality["warnings"]`, written with
    the rest of `quality` to `quality_path`); fail when none came through."""
    rows = list(rows)
    if quality is not None:
        for warning in quality.get("warnings", []):
            log.warning("%s %s: %s", stage, what, warning)
        if quality_path is not None:
            write_text_atomic(quality_path, json.dumps({"stage": stage, "input": what, **quality}, indent=2))
    counts = Counter(r.get("status") for r in rows)
    log.info("%s %s: %d ok, %d rejected", stage, what, counts.get("ok", 0), counts.get("rejected", 0))
    for r in rows:
        if r.get("status") == "rejected":
            log.info("  rejected %s: %s", r.get("recording"), r.get("reason"))
    if not counts.get("ok"):
        reasons = "; ".join(str(r.get("reason")) for r in rows[:5]) or "no recordings found"
        raise StageFailed(f"{stage} {what}: no usable recording ({reasons})")
