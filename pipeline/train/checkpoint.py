"""Checkpoints that resume exactly and load without trusting pickle.

A checkpoint is a folder `step-NNNNNNN/` published atomically:
  model.safetensors   weights and buffers (codebooks, EMA statistics)
  optimizer.pt        optimizer + scheduler state: tensors and plain numbers only, loaded with
                      torch.load(weights_only=True)
  state.json          step, epoch, batch within the epoch, config, anything JSON-able
  rng.pt              torch's CPU RNG state (a uint8 tensor)
`latest()` returns the newest complete one; older ones beyond `keep` are removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.store.atomic import atomic_path


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights and buffers as contiguous CPU tensors, as safetensors wants them."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:07d}"


def save_checkpoint(root: str | Path, *, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict, keep: int = 2) -> Path:
    root = Path(root)
    final = _step_dir(root, step)
    with atomic_path(final, directory=True) as tmp:
        save_file(state_tensors(model), str(tmp / "model.safetensors"), metadata={"step": str(step)})
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        torch.save(torch.get_rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    for old in sorted(root.glob("step-*"))[:-keep]:
        if ".tmp-" not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: str | Path) -> Path | None:
    done = [p for p in Path(root).glob("step-*") if ".tmp-" not in p.name and (p / "state.json").is_file()]
    return max(done, default=None, key=lambda p: p.name)


def load_checkpoint(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None) -> dict:
    path = Path(path)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    if optimizer is not None:
        opt = torch.load(path / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(opt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(opt["scheduler"])
    torch.set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return json.loads((path / "state.json").read_text())
