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


def sha256_file(path: str | Path) -> str:
    return file_hashes(path, 0)[0]


def settings_hash(*parts: Any) -> str:
    """Stable short hash of JSON-able settings (key order does not matter)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_fingerprint(config: Any, tensors: dict) -> str:
    """Hash of a model's config and every weight/buffer byte: the identity of a trained tokenizer."""
    import torch  # here, not at module level: the data-plane stages never import torch

    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
