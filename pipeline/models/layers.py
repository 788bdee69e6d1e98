"""Transformer pieces shared by the tokenizer encoders and decoders and the pretraining backbone.

Pre-LN blocks, fused QKV, attention through ``torch.nn.functional.scaled_dot_product_attention``.
Tokens of one window are laid out channel-major: token ``c·P + p`` is channel c, patch p.

What every layer of one forward attends with is built once per forward (`attention_inputs` → `Attend`),
so that SDPA can pick a fused kernel on CUDA. What blocks the fused kernels (PyTorch's
aten/src/ATen/native/transformers/cuda/sdp_utils.cpp and sdp_utils_cpp.h, read for this):
  * flash attention refuses any ``attn_mask`` (``check_for_attn_mask``) and needs fp16/bf16; it pads the head
    dimension to a multiple of 8 itself (attention.cpp: ``pad_last_dim<8, false>`` with the original scale);
  * memory-efficient attention takes an additive float bias but needs the head dimension divisible by
    ``minimum_gemm_alignment`` = 8 in bf16/fp16 on sm80+ (4 in fp32), and aligned storage offsets of q/k/v;
    its bias is padded (copied) to a last-dimension stride that is a multiple of 16 unless it already is;
  * cuDNN attention (preferred on sm90/sm100 with cuDNN > 9.15) also needs the head dimension % 8 == 0.
At the paper's shapes the head dimension is 200 / 10 = 20, so with the time-distance bias (a float bias: flash
is out) nothing fused could run in bf16, and the tokenizer's boolean key mask ruled out flash even when no
channel was padded. Here:
  * the head dimension is padded to a multiple of 8 on CUDA (20 → 24) with zeros in q, k and v, and SDPA gets
    the scale of the real head dimension (1/√20): q·k and the outputs are unchanged, the padded output
    columns are zero and are dropped;
  * padding channels are masked without any mask tensor: one padded column holds 1 in every query and
    −MASKED_KEY at padding keys (0 elsewhere), which adds −MASKED_KEY·scale (≈ −3,600) to their logits, so
    their softmax weight is exactly 0 in fp32. A window with no valid channel shifts every key alike and
    attends uniformly (as before: its outputs are discarded). No data-dependent branch, so no host sync;
  * the time bias is [1, H, N, N] (broadcast over the batch: never [B, H, N, N], padding or not), built once
    per forward in the compute dtype (the autocast dtype under autocast), with an aligned last-dim stride.
So pretraining (time bias) can run memory-efficient or cuDNN attention in bf16 and the tokenizer (no bias) flash
attention. On the CPU the head is padded to a multiple of 16 (20 → 32): the CPU flash kernel, forward + backward at
[16, 10, 570, d] on one thread, took 0.34 s at d = 20 and 32 but 0.38 s at 21 and 0.41 s at 24.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

__all__ = ["Attend", "Attention", "FeedForward", "Block", "Transformer", "PositionEmbedding", "attention_inputs",
           "compute_dtype", "time_distance", "init_weights_"]

# Key column of padding tokens: × the softmax scale (1/√d ≥ 1/16 for d ≤ 256) ≥ 1024 below every real logit, so
# exp() is exactly 0 in fp32; a power of two, exact in bf16 and fp16 (whose maximum is 65504).
MASKED_KEY = 2.0 ** 14


@dataclass
class Attend:
    """What every layer of one forward attends with (see the module docstring); build with attention_inputs."""

    extra: Tensor  # [3, B, 1, N, pad] columns appended to q | k | v: (1, 0…) | (−MASKED_KEY at padding, 0…) | 0
    bias: Tensor | None  # [1, H, N, N] additive time bias in the compute dtype, or None


def compute_dtype(t: Tensor) -> torch.dtype:
    """The dtype activations computed from t have: the autocast dtype under autocast, else t's."""
    device = t.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else t.dtype


def head_alignment(device: torch.device) -> int:
    """Head-dimension multiple: 8 on CUDA (what the fused bf16/fp16 kernels need), 16 on the CPU (its vector width
    in fp32: see the module docstring)."""
    return 8 if device.type == "cuda" else 16


def attention_inputs(valid: Tensor, patches: int, *, dim: int, heads: int, dtype: torch.dtype,
                     slopes: Tensor | None = None, align: int | None = None) -> Attend:
    """valid bool [B, C] (False = padding channel), tokens channel-major [B, C·P] → Attend for every layer.

    slopes [H]: the time-distance bias −slope_h·|patch_i − patch_j| (ALiBi over the patch index); None = no bias.
    align: head-dimension multiple (default: head_alignment(valid.device)); the padding has at least one column.
    """
    b, c = valid.shape
    n, head_dim = c * patches, dim // heads
    align = head_alignment(valid.device) if align is None else align
    pad = -(-(head_dim + 1) // align) * align - head_dim
    keys = repeat(valid, "b c -> b (c p)", p=patches)  # [B, N]
    extra = torch.zeros(3, b, 1, n, pad, dtype=dtype, device=valid.device)
    extra[0, ..., 0] = 1.0
    extra[1, :, 0, :, 0] = torch.where(keys, 0.0, -MASKED_KEY).to(dtype)
    bias = None
    if slopes is not None:
        distance = time_distance(channels=c, patches=patches, device=valid.device)
        # last-dim stride a multiple of 16 elements: memory-efficient attention would copy the bias otherwise
        stride = -(-n // 16) * 16 if valid.device.type == "cuda" else n
        bias = torch.empty(1, heads, n, stride, dtype=dtype, device=valid.device)[..., :n]
        bias[0] = -slopes.float()[:, None, None] * distance  # computed in fp32, stored in the compute dtype
    return Attend(extra, bias)


def time_distance(*, channels: int, patches: int, device: torch.device | None = None) -> Tensor:
    """|patch_i − patch_j| over channel-major tokens → float [N, N]."""
    p = torch.arange(patches, device=device).repeat(channels)
    return (p[:, None] - p[None, :]).abs().float()


class Attention(nn.Module):
    def __init__(self, *, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attend: Attend) -> Tensor:
        # x [B, N, D] → [B, N, D]; q, k, v padded to the head width of attend.extra (see the module docstring)
        qkv = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        d = qkv.shape[-1]
        extra = attend.extra.to(qkv.dtype).expand(-1, -1, self.heads, -1, -1)
        q, k, v = torch.cat([qkv, extra], dim=-1).unbind(0)  # each [B, H, N, d + pad], contiguous rows
        bias = None if attend.bias is None else attend.bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=d ** -0.5)[..., :d]
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

    def forward(self, x: Tensor, attend: Attend) -> Tensor:
        x = x + self.attn(self.norm1(x), attend)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """``depth`` pre-LN blocks and a final LayerNorm. x [B, N, D], valid bool [B, C] (N = C·P) → [B, N, D].

    slopes [H]: time-distance bias slopes (None = none). The attention inputs are built once per call.
    """

    def __init__(self, *, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim=dim, heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.dim, self.heads = dim, heads

    def forward(self, x: Tensor, valid: Tensor, patches: int, *, slopes: Tensor | None = None) -> Tensor:
        attend = attention_inputs(valid, patches, dim=self.dim, heads=self.heads, dtype=compute_dtype(x),
                                  slopes=slopes)
        for block in self.blocks:
            x = block(x, attend)
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
