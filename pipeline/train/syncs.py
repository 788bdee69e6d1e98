"""Counting host syncs on a CPU: the operations that make the host wait for a GPU, caught as torch functions.

On CUDA the host queues kernels ahead of the device until it needs a value: `.item()`, `bool(t)` (an `if` on a
tensor), `int`/`float`/`__index__`, `.tolist()`, `.numpy()`, `.cpu()` / `.to("cpu")` (device-to-host copies),
and the ops whose output *shape* depends on the data (`nonzero`, boolean-mask indexing, `masked_select`,
`unique`, `bincount`, `repeat_interleave` without `output_size`). Each of them stalls the queue until the GPU
has caught up. A CPU cannot show the stall, but a torch function mode sees every such call, so a CPU test can
assert that a training step makes none (tests/test_syncs.py). Same pattern as pipeline.train.device.DeviceCheck.
"""

from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

_T = torch.Tensor
_ALWAYS = {_T.item, _T.__bool__, _T.__int__, _T.__float__, _T.__index__, _T.tolist, _T.numpy, _T.cpu,
           _T.nonzero, torch.nonzero, torch.argwhere, _T.argwhere, torch.masked_select, _T.masked_select,
           torch.unique, _T.unique, torch.unique_consecutive, torch.bincount, _T.bincount}
_INDEXING = {_T.__getitem__, _T.__setitem__, _T.index_put_, torch.index_put}


def _to_host(args: tuple, kwargs: dict) -> bool:
    # a non_blocking copy does not wait (and is how to_device moves batches: on a CPU test the "device" is the CPU)
    if kwargs.get("non_blocking"):
        return False
    # only an explicit "cpu": `.to(t.device)` follows t (device to device on a GPU; on a CPU test it could not be
    # told from a host copy)
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    return isinstance(target, str) and torch.device(target).type == "cpu"


def _bool_index(args: tuple) -> bool:
    leaves, _ = tree_flatten(args[1:2])
    return any(isinstance(a, torch.Tensor) and a.dtype == torch.bool and a.dim() > 0 for a in leaves)


class HostSyncCounter(TorchFunctionMode):
    """`syncs`: (op name, the caller's source line) of every host sync seen while the mode was active."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        sync = (func in _ALWAYS
                or (func in (_T.to, _T.copy_) and _to_host(args, kwargs))
                or (func in _INDEXING and _bool_index(args))
                or (func in (torch.repeat_interleave, _T.repeat_interleave)
                    and isinstance(args[1] if len(args) > 1 else kwargs.get("repeats"), torch.Tensor)
                    and kwargs.get("output_size") is None))
        if sync:
            frame = next((f for f in reversed(traceback.extract_stack()[:-1])
                          if "/torch/" not in f.filename and not f.filename.endswith("syncs.py")), None)
            where = f"{frame.filename}:{frame.lineno} {frame.line}" if frame else "?"
            self.syncs.append((getattr(func, "__qualname__", str(func)), where))
        return func(*args, **kwargs)
