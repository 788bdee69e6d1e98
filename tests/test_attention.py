"""Attention built for the fused kernels (pipeline/models/layers.py) computes what the plain masked attention did:
same outputs and gradients, in fp32 on the CPU, with the CUDA layout (head dim padded to a multiple of 8, padding
keys masked through a padded column) and the CPU one, with and without the time bias, with padding channels and a
window that has none valid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from pipeline.models import layers
from pipeline.models.layers import Transformer, attention_inputs, time_distance


def reference(model: Transformer, x: torch.Tensor, valid: torch.Tensor, patches: int,
              slopes: torch.Tensor | None) -> torch.Tensor:
    """The attention before the change: unpadded heads, SDPA's default scale, a boolean key mask (a window
    without valid channels attends everywhere) or the float time bias with −inf at padding keys."""
    keys = repeat(valid, "b c -> b 1 1 (c p)", p=patches) | ~valid.any(1)[:, None, None, None]
    mask = keys
    if slopes is not None:
        bias = -slopes[:, None, None] * time_distance(channels=valid.shape[1], patches=patches)
        mask = bias.unsqueeze(0).masked_fill(~keys, float("-inf"))
    for block in model.blocks:
        h = block.norm1(x)
        q, k, v = rearrange(block.attn.qkv(h), "b n (three h d) -> three b h n d", three=3, h=block.attn.heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + block.attn.proj(rearrange(out, "b h n d -> b n (h d)"))
        x = x + block.mlp(block.norm2(x))
    return model.norm(x)


@pytest.mark.parametrize("align", [1, 8, 16])
@pytest.mark.parametrize("time_bias", [False, True])
def test_fused_layout_agrees_with_the_plain_masked_attention(monkeypatch, align: int, time_bias: bool):
    monkeypatch.setattr(layers, "head_alignment", lambda device: align)  # align 8: the CUDA layout, on the CPU
    torch.manual_seed(0)
    dim, heads, channels, patches = 40, 2, 3, 4  # head dim 20, as at the paper's size
    model = Transformer(dim=dim, depth=2, heads=heads)
    valid = torch.tensor([[True, True, True], [True, False, True], [False, False, False]])
    x = torch.randn(3, channels * patches, dim)
    slopes = torch.tensor([2.0, 0.5]) if time_bias else None
    x_new, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    new = model(x_new, valid, patches, slopes=slopes)
    ref = reference(model, x_ref, valid, patches, slopes)
    # the window without valid channels: its outputs are discarded; with every key shifted by the same −MASKED_KEY
    # it attends uniformly as before, to fp32 rounding of logits near −3,600
    torch.testing.assert_close(new[:2], ref[:2], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(new[2], ref[2], atol=1e-3, rtol=1e-3)
    weight = torch.randn_like(ref)
    weight[2] = 0
    grads_new = torch.autograd.grad((new * weight).sum(), [x_new, *model.parameters()])
    grads_ref = torch.autograd.grad((ref * weight).sum(), [x_ref, *model.parameters()])
    for a, b in zip(grads_new, grads_ref):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4)


def test_attention_inputs_shapes_dtype_and_values():
    """The time bias stays [1, H, N, N] with padding (never per window), is built in the compute dtype, and the
    padded columns hold what the module docstring says."""
    slopes = torch.tensor([2.0, 0.5])
    valid = torch.tensor([[True, False], [True, True]])
    a = attention_inputs(valid, 3, dim=40, heads=2, dtype=torch.bfloat16, slopes=slopes, align=8)
    assert a.bias.shape == (1, 2, 6, 6) and a.bias.dtype == torch.bfloat16
    # token 0 = (channel 0, patch 0); token 4 = (channel 1, patch 1): one patch apart
    assert float(a.bias[0, 0, 0, 4]) == -2.0 and float(a.bias[0, 1, 0, 4]) == -0.5
    assert float(a.bias[0, 0, 1, 4]) == 0.0  # same patch on the other channel
    assert a.extra.shape == (3, 2, 1, 6, 4)  # head dim 20 → 24
    assert (a.extra[0, ..., 0] == 1).all() and (a.extra[0, ..., 1:] == 0).all() and (a.extra[2] == 0).all()
    assert (a.extra[1, 0, 0, 3:, 0] == -layers.MASKED_KEY).all() and (a.extra[1, 0, 0, :3, 0] == 0).all()
    assert (a.extra[1, 1] == 0).all()
    # one column is enough without alignment; the CPU default pads 20 → 32
    assert attention_inputs(valid, 3, dim=40, heads=2, dtype=torch.float32, align=1).extra.shape[-1] == 1
    assert attention_inputs(valid, 3, dim=40, heads=2, dtype=torch.float32).extra.shape[-1] == 12
    with torch.autocast("cpu", torch.bfloat16):
        model = Transformer(dim=40, depth=1, heads=2)
        out = model(torch.randn(2, 6, 40), valid, 3, slopes=slopes)
    assert torch.isfinite(out).all()


def test_compiled_blocks_trace_as_one_graph_and_agree():
    """train.compile: every block compiles without a graph break (fullgraph) and computes what it computed eagerly.
    aot_eager traces forward and backward as inductor would, without generating code (seconds on a CPU)."""
    from pipeline.train.loop import compile_blocks

    torch.manual_seed(0)
    model = Transformer(dim=40, depth=2, heads=2)
    valid = torch.tensor([[True, False, True], [True, True, True]])
    x = torch.randn(2, 12, 40)
    slopes = torch.tensor([2.0, 0.5])
    eager = model(x, valid, 4, slopes=slopes)
    grads = torch.autograd.grad(eager.sum(), list(model.parameters()))
    assert compile_blocks(model, backend="aot_eager") == 2
    compiled = model(x, valid, 4, slopes=slopes)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(compiled.sum(), list(model.parameters())), grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
