"""Per-patch convolutional front ends: one 200-sample patch → one token vector.

All patches of a batch are processed at once as a [B·C·P, 1, T] Conv1d batch.
GroupNorm is applied *per patch* (over that patch's channel groups and time),
so a patch's embedding depends on that patch only — padding channels or other
windows cannot change it. (LaBraM/BrainRVQ run a Conv2d over the whole
[channels × patches] map, whose GroupNorm statistics mix all patches of a
window; we deliberately do not.)
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = ["TemporalConv", "MultiScaleTemporalConv", "NEURORVQ_KERNELS"]

# NeuroRVQ's four scales: (first conv kernel, second conv kernel); first kernels
# 21/15/9/5 samples at 200 Hz target >10 / >13 / >20 / >40 Hz content.
NEURORVQ_KERNELS: tuple[tuple[int, int], ...] = ((21, 9), (15, 7), (9, 5), (5, 3))


def _conv_norm_gelu(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv1d(cin, cout, kernel_size=kernel, stride=stride, padding=kernel // 2),
        nn.GroupNorm(4, cout),
        nn.GELU(),
    ]


def _out_len(length: int, kernel: int, stride: int) -> int:
    return (length + 2 * (kernel // 2) - kernel) // stride + 1


class TemporalConv(nn.Module):
    """LaBraM / BrainRVQ front end: Conv(k15, s8) → GN → GELU, then 2 × [Conv(k3) → GN → GELU].

    [N, T] → [N, embed_dim]. With 8 channels and T = 200 the flattened feature is
    8 × 25 = 200 = the paper's embed_dim, so no projection is added; otherwise a
    Linear maps it to ``embed_dim``.
    """

    def __init__(self, *, patch_size: int, embed_dim: int, channels: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            *_conv_norm_gelu(1, channels, 15, stride=8),
            *_conv_norm_gelu(channels, channels, 3),
            *_conv_norm_gelu(channels, channels, 3),
        )
        flat = channels * _out_len(patch_size, 15, 8)
        self.proj = nn.Identity() if flat == embed_dim else nn.Linear(flat, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        # x [N, T] → [N, E]
        h = self.net(x.unsqueeze(1))  # [N, c, T/8]
        return self.proj(rearrange(h, "n c t -> n (t c)"))


class _ScaleBranch(nn.Module):
    def __init__(self, *, k1: int, k2: int, channels: int, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            *_conv_norm_gelu(1, channels, k1),
            nn.AvgPool1d(2),
            *_conv_norm_gelu(channels, channels, k2),
            nn.AvgPool1d(4),
        )
        flat = channels * (patch_size // 2 // 4)
        self.proj = nn.Identity() if flat == embed_dim else nn.Linear(flat, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.net(x.unsqueeze(1))  # [N, c, T/8]
        return self.proj(rearrange(h, "n c t -> n (t c)"))


class MultiScaleTemporalConv(nn.Module):
    """NeuroRVQ front end: four parallel branches (kernels 21/15/9/5 then 9/7/5/3,
    GN → GELU → AvgPool 2 then 4). [N, T] → [branches, N, E]."""

    def __init__(self, *, patch_size: int, embed_dim: int, channels: int = 8) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            _ScaleBranch(k1=k1, k2=k2, channels=channels, patch_size=patch_size, embed_dim=embed_dim)
            for k1, k2 in NEURORVQ_KERNELS
        )

    def forward(self, x: Tensor) -> Tensor:
        # x [N, T] → [S, N, E]
        return torch.stack([branch(x) for branch in self.branches])
