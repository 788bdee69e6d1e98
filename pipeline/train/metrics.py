"""Training metrics as JSON lines (appended, so a resumed run continues the same file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pipeline.store.jsonl import read_records, rewrite


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class MetricsLog:
    def __init__(self, path: str | Path, *, resume_from_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from_step is not None and self.path.is_file():
            # Drop records written after the checkpoint we resume from: they will be redone.
            # (atomically: a kill here leaves the old file or the new one, whole)
            rewrite(self.path, [r for r in read_records(self.path) if r.get("step", 0) <= resume_from_step])
        elif resume_from_step is None and self.path.exists():
            self.path.unlink()

    def write(self, record: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(_plain(record)) + "\n")

    def read(self) -> list[dict]:
        return read_records(self.path)
