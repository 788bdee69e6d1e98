"""Moving data between the host and the accelerator, through one place that a CPU-only test can check.

Every torch stage moves batches with `to_device`, models with `place` and results back with `to_host` (before
any `.numpy()`). On a GPU these are plain `.to(device, non_blocking=True)` / `.cpu()`.

On a CPU there is no second device, so a stage that forgets a move works here and crashes on the first CUDA
evaluation. `PIPELINE_DEVICE_CHECK=1` (the workflow test sets it) turns on `DeviceCheck`, a torch function mode
that plays a separate device on the CPU:
  * tensors made from host data (a factory call without `device=`: torch.from_numpy, torch.tensor, a loader's
    batch) are *host* tensors; `to_device` outputs, placed parameters and buffers, and whatever is computed from
    them are *device* tensors; `to_host` / `.cpu()` outputs are host tensors again;
  * an op that mixes non-scalar host and device tensors raises (CUDA: "Expected all tensors to be on the same
    device"), and so does `.numpy()` of a device tensor (CUDA: "can't convert cuda tensor to numpy");
  * it counts the ops that ran on the device, so a stage that never placed its model (everything silently on the
    host: correct, but the GPU idle) shows `device ops: 0` in its log.
Factory calls with an explicit `device=` (`torch.zeros(n, device=x.device)`) follow their arguments'
placement by construction and are left untagged; so are tensors made before the check started.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, TypeVar

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

log = logging.getLogger(__name__)

ENV = "PIPELINE_DEVICE_CHECK"
_TAG = "_pipeline_place"  # attribute on tensors under the check: "host" or "device"
T = TypeVar("T")


class DeviceMismatch(RuntimeError):
    """Host and device tensors met in one op, or a device tensor went to numpy (what CUDA would refuse)."""


def _tag(t: torch.Tensor) -> str | None:
    # Parameters are made on the host (nn.Module's factories take device=None) until `place` moves them.
    return getattr(t, _TAG, "host" if isinstance(t, torch.nn.Parameter) else None)


def _set(t: torch.Tensor, place: str) -> None:
    try:
        setattr(t, _TAG, place)
    except (AttributeError, RuntimeError):  # e.g. tensors without a Python dict
        pass


_TO_HOST = {torch.Tensor.cpu}
_MOVES = {torch.Tensor.to, torch.Tensor.cuda}
_NUMPY = {torch.Tensor.numpy, torch.Tensor.__array__}
# Copies between devices are legal on CUDA (dst.copy_(src), dst[idx] = src)
_CROSS_OK = {torch.Tensor.copy_, torch.Tensor.__setitem__}


class DeviceCheck(TorchFunctionMode):
    """See the module docstring. `ops` counts device ops; `mismatches` stays 0 (the first one raises)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves, _ = tree_flatten((args, kwargs))
        tensors = [a for a in leaves if isinstance(a, torch.Tensor)]
        if func in _NUMPY and tensors and _tag(tensors[0]) == "device":
            raise DeviceMismatch("can't convert a device tensor to numpy: move it with to_host() first")
        places = {_tag(t) for t in tensors if t.dim() > 0} - {None}  # 0-dim CPU scalars mix with CUDA tensors
        if len(places) > 1 and func not in _CROSS_OK:
            name = getattr(func, "__qualname__", getattr(func, "__name__", str(func)))
            raise DeviceMismatch(f"{name}: host and device tensors in one op (a batch or result was not moved "
                                 "with to_device/to_host)")
        out = func(*args, **kwargs)
        inputs = {id(t) for t in tensors}
        if func in _MOVES and _moves_device(args[1:], kwargs):
            # `.to(x.device)` follows x, whichever side x is on: unknown here, so untagged (never a false alarm).
            # On the CPU the move returns its input; a view gives the result an identity of its own.
            if isinstance(out, torch.Tensor):
                out = out.view_as(out) if id(out) in inputs else out
                _set(out, None)
            return out
        if func in _TO_HOST:
            place = "host"
        elif not tensors:
            place = "host" if kwargs.get("device") is None else None
        else:
            place = "device" if "device" in places else ("host" if "host" in places else None)
        if place == "device":
            self.ops += 1
        if place is not None:
            def mark(x):
                if isinstance(x, torch.Tensor) and (id(x) not in inputs or func in _TO_HOST):
                    _set(x, place)
                return x

            tree_map(mark, out)
        return out


def _moves_device(args: tuple, kwargs: dict) -> bool:
    return "device" in kwargs or any(isinstance(a, (torch.device, str, int, torch.Tensor)) for a in args)


_active: list[DeviceCheck] = []


def checking() -> bool:
    return bool(_active)


@contextlib.contextmanager
def device_check(enabled: bool | None = None) -> Iterator[DeviceCheck | None]:
    """Run the block under DeviceCheck when enabled (default: the PIPELINE_DEVICE_CHECK environment variable)."""
    enabled = os.environ.get(ENV, "") not in ("", "0") if enabled is None else enabled
    if not enabled:
        yield None
        return
    mode = DeviceCheck()
    _active.append(mode)
    try:
        with mode:
            yield mode
    finally:
        _active.remove(mode)
        log.info("device check: %d device ops, no host/device mismatch", mode.ops)


def to_device(batch: T, device: torch.device | str) -> T:
    """A tensor, or a dict/list of them, on `device` (non-blocking from pinned memory)."""
    def move(t):
        if not isinstance(t, torch.Tensor):
            return t
        moved = t.to(device, non_blocking=True)
        if _active:  # under the check the move returned an object of its own: the host tensor keeps its tag
            _set(moved, "device")
        return moved

    return tree_map(move, batch)


def to_host(batch: T) -> T:
    """Detached CPU tensor(s), ready for `.numpy()`."""
    return tree_map(lambda t: t.detach().cpu() if isinstance(t, torch.Tensor) else t, batch)


def place(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """The model on `device` (its parameters and buffers marked as device tensors under the check)."""
    model = model.to(device)
    if _active:
        for t in [*model.parameters(), *model.buffers()]:
            _set(t, "device")
    return model


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); CPU for a model with neither."""
    for t in [*model.parameters(), *model.buffers()]:
        return t.device
    return torch.device("cpu")


def tagged(t: torch.Tensor) -> Any:
    """The check's placement of `t` ("host", "device" or None): for tests."""
    return _tag(t)
