"""The device check (pipeline.train.device): a separate device played on the CPU, so that a forgotten move fails
here as it would on CUDA. (Quantizers under autocast: tests/test_rvq_autocast.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.train.device import DeviceMismatch, device_check, place, tagged, to_device, to_host


def test_host_batches_on_a_placed_model_fail_and_moved_ones_run():
    with device_check(True) as check:
        model = torch.nn.Linear(4, 3)
        host = torch.as_tensor(np.ones((2, 4), np.float32))  # what a loader yields
        assert tagged(host) == "host" and tagged(model.weight) == "host"
        model(host)  # an unplaced model on host data: correct, if slow
        assert check.ops == 0
        place(model, "cpu")
        with pytest.raises(DeviceMismatch, match="host and device"):
            model(host)
        out = model(to_device(host, "cpu"))
        assert tagged(out) == "device" and check.ops > 0
        with pytest.raises(DeviceMismatch, match="numpy"):
            out.detach().numpy()
        assert to_host(out).numpy().shape == (2, 3)
        # `.to(x.device)` follows x (device here): no false alarm; 0-dim host scalars mix like on CUDA
        weight = torch.ones(3)
        (out * weight.to(out.device) * torch.tensor(2.0)).sum().backward()
        torch.optim.AdamW(model.parameters()).step()
        with pytest.raises(DeviceMismatch):
            out * weight


def test_off_by_default(monkeypatch):
    monkeypatch.delenv("PIPELINE_DEVICE_CHECK", raising=False)
    with device_check() as check:
        assert check is None
        assert tagged(to_device(torch.ones(2), "cpu")) is None
