"""Transformer pieces shared by the tokenizer encoders and decoders.

Pre-LN blocks, fused QKV, attention through
``torch.nn.functional.scaled_dot_product_attention`` with a boolean key mask
(True = attend) so that padding channels are never looked at. Tokens of one
window are laid out channel-major: token ``c·P + p`` is channel c, patch p.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

__all__ = ["Attention", "FeedForward", "Block", "Transformer", "PositionEmbedding", "key_mask", "time_distance_bias",
           "init_weights_"]


class Attention(nn.Module):
    def __init__(self, *, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # x [B, N, D]; mask bool [B, 1, 1, N] (True = key is attended) or an additive float bias broadcastable
        # to [B, H, N, N] (−inf = never attended)
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, N, d]
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class FeedForward(nn.Sequential):
    def __init__(self, *, dim: int, mlp_ratio: float = 4.0) -> None:
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)); x + mlp(LN(x))."""

    def __init__(self, *, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim=dim, heads=heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim=dim, mlp_ratio=mlp_ratio)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """``depth`` pre-LN blocks and a final LayerNorm. [B, N, D] → [B, N, D]."""

    def __init__(self, *, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim=dim, heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    @torch.no_grad()
    def rescale_residual_branches_(self) -> None:
        """Scale each block's output projections by 1/sqrt(2·layer) (BEiT/LaBraM init)."""
        for layer, block in enumerate(self.blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer))
            block.mlp[2].weight.div_(math.sqrt(2.0 * layer))


class PositionEmbedding(nn.Module):
    """Channel embedding (global channel vocabulary) + temporal embedding (patch index).

    ``ch`` id −1 (padding) maps to row 0, a fixed zero vector; real ids are shifted by one.
    """

    def __init__(self, *, dim: int, vocab_size: int, max_patches: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.max_patches = max_patches
        self.channel = nn.Embedding(vocab_size + 1, dim, padding_idx=0)
        self.time = nn.Embedding(max_patches, dim)

    def forward(self, ch: Tensor, patches: int) -> Tensor:
        # ch long [B, C] → [B, C·P, D]
        chan = self.channel(ch.clamp_min(-1) + 1)  # [B, C, D]
        time = self.time.weight[:patches]  # [P, D]
        pos = chan.unsqueeze(2) + time  # [B, C, P, D]
        return rearrange(pos, "b c p d -> b (c p) d")


def key_mask(valid: Tensor, patches: int) -> Tensor:
    """valid bool [B, C] → attention key mask bool [B, 1, 1, C·P].

    A window without any valid channel attends to everything (its outputs are
    discarded) so SDPA never sees an all-False row (which would give NaN).
    """
    mask = repeat(valid, "b c -> b 1 1 (c p)", p=patches)
    empty = ~valid.any(dim=1)  # [B]
    return mask | empty[:, None, None, None]


def time_distance_bias(slopes: Tensor, channels: int, patches: int, valid: Tensor) -> Tensor:
    """Additive attention bias −slope_h · |patch_i − patch_j| per head (ALiBi over the patch index), with keys
    of padding channels at −inf as key_mask leaves them. slopes [H], valid bool [B, C] → [B or 1, H, C·P, C·P]."""
    p = torch.arange(patches, device=slopes.device).repeat(channels)  # channel-major token order
    distance = (p[:, None] - p[None, :]).abs().to(slopes.dtype)
    bias = (-slopes[:, None, None] * distance).unsqueeze(0)  # [1, H, N, N]
    keys = key_mask(valid, patches)
    if bool(keys.all()):
        return bias  # broadcast over the batch: no [B, H, N, N] copy when every channel is real
    return bias.masked_fill(~keys, float("-inf"))


def init_weights_(module: nn.Module) -> None:
    """trunc-normal(0.02) Linear/Embedding weights, zero biases, unit norms (BEiT/LaBraM).

    Convolutions keep PyTorch's default init (as in LaBraM's temporal conv).
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
