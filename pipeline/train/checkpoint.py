"""Checkpoints that resume exactly and load without trusting pickle.

A checkpoint is a folder `step-NNNNNNN/` published atomically:
  model.safetensors   weights and buffers (codebooks, EMA statistics)
  optimizer.pt        optimizer + scheduler state: tensors and plain numbers only, loaded with
                      torch.load(weights_only=True)
  state.json          step, epoch, batch within the epoch, config, anything JSON-able
  rng.pt              every process's RNG states, in rank order: [{"cpu": uint8 tensor, "cuda": uint8 tensor}]
`latest()` returns the newest complete one; older ones beyond `keep` are removed. Only the main process writes
(the training loop gathers the other ranks' RNG states first); every process reads, onto the CPU first
(`map_location="cpu"`), so a checkpoint written on GPUs loads anywhere and `load_state_dict` places each
optimizer tensor beside its parameter (the step counters stay on the CPU, one scalar each).
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


def rng_state() -> dict[str, torch.Tensor]:
    """This process's generators: the CPU one, and the current CUDA device's when CUDA is in use."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(root: str | Path, *, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict, rng: list[dict[str, torch.Tensor]] | None = None,
                    keep: int = 2) -> Path:
    """Write step-NNNNNNN/ (call on the main process only); `rng`: every rank's rng_state(), in rank order."""
    root = Path(root)
    final = _step_dir(root, step)
    with atomic_path(final, directory=True) as tmp:
        save_file(state_tensors(model), str(tmp / "model.safetensors"), metadata={"step": str(step)})
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        torch.save(rng if rng is not None else [rng_state()], tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    for old in sorted(root.glob("step-*"))[:-keep]:
        if ".tmp-" not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: str | Path) -> Path | None:
    done = [p for p in Path(root).glob("step-*") if ".tmp-" not in p.name and (p / "state.json").is_file()]
    return max(done, default=None, key=lambda p: p.name)


def load_checkpoint(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, rank: int = 0) -> dict:
    """Restore weights, optimizer, scheduler and this rank's RNG; the state dict gains "rng_restored": False when
    the checkpoint has no RNG state for `rank` (it was written by fewer processes) — the caller seeds it."""
    path = Path(path)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    if optimizer is not None:
        opt = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
        optimizer.load_state_dict(opt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(opt["scheduler"])
    rng = torch.load(path / "rng.pt", weights_only=True, map_location="cpu")
    rng = [{"cpu": rng}] if isinstance(rng, torch.Tensor) else rng  # checkpoints of one process, before per-rank RNG
    if rank < len(rng):
        set_rng_state(rng[rank])
    state = json.loads((path / "state.json").read_text())
    return {**state, "rng_restored": rank < len(rng)}
