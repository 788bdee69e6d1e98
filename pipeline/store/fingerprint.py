"""Content hashes: of whole files, of an EDF's signal data alone, and of settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def file_hashes(path: str | Path, data_offset: int) -> tuple[str, str]:
    """(sha256 of the file, sha256 of its bytes from `data_offset` on) in one pass.

    The second hash covers the samples only, so a copy of a recording with a rewritten header
    (re-anonymized, renamed) still hashes the same: that is what duplicate detection and the
    leakage guard compare.
    """
    whole, content = hashlib.sha256(), hashlib.sha256()
    seen = 0
    with Path(path).open("rb") as fh:
        while block := fh.read(_BLOCK):
            whole.update(block)
            if seen + len(block) > data_offset:
                content.update(block[max(0, data_offset - seen):])
            seen += len(block)
    return whole.hexdigest(), content.hexdigest()


def settings_hash(*parts: Any) -> str:
    """Stable short hash of JSON-able settings (key order does not matter)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
