"""The foundation model's encoder: patches of EEG → one contextual vector per (channel, patch) token.

Temporal conv patch embedding (the tokenizer's front end), spatial embedding over the global channel
vocabulary plus temporal embedding of the patch index, a learned mask token that replaces the
embedding of masked patches, and a pre-LN transformer. Pretraining puts code heads on top
(pipeline.models.pretrain); fine-tuning mean-pools the valid tokens (pipeline.models.classifier).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from .frontends import TemporalConv
from .layers import PositionEmbedding, Transformer, init_weights_

__all__ = ["BackboneConfig", "Backbone"]


@dataclass(frozen=True)
class BackboneConfig:
    vocab_size: int = 512  # global channel vocabulary (ids in [0, vocab_size), −1 = padding)
    patch_size: int = 200
    max_patches: int = 64
    embed_dim: int = 200
    depth: int = 12
    heads: int = 10
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    conv_channels: int = 8
    # Spatial/temporal embeddings start at this std (LaBraM: 0.02). At 0.02 they are ~10× smaller than the patch
    # embeddings, and attention takes hundreds of steps to learn which neighbours to read: on a copy-the-neighbour
    # task 0.3 reached 83 % token accuracy in 300 steps where 0.02 stayed at 13 %.
    pos_init_std: float = 0.3
    # Attention bias −slope_h·|Δpatch| (ALiBi over time), head h's slope time_bias_max_slope · 2^(−8h/heads); 0 = off.
    # A masked patch's code is best read from the other channels at the same second (volume conduction), but with
    # position embeddings alone attention starts out uniform over all C·P tokens, and the demo's masked level-0 time
    # accuracy stayed below the most common code's frequency for all 800 steps (0.095 vs 0.103; 0.220 with the
    # bias); steep slopes make some heads read the same and adjacent seconds from step one.
    time_bias_max_slope: float = 2.0

    def __post_init__(self) -> None:
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by heads {self.heads}")
        for name in ("vocab_size", "max_patches", "depth", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1")
        if self.time_bias_max_slope < 0:
            raise ValueError("time_bias_max_slope must be ≥ 0 (0 = no time bias)")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BackboneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        if set(d) - known:
            raise ValueError(f"unknown BackboneConfig keys: {sorted(set(d) - known)}")
        return cls(**d)

    # LaBraM/BrainRVQ base: 12 × 200-d, 10 heads. Demo: small enough for minutes on 2 CPU cores.
    @classmethod
    def base(cls, **overrides: Any) -> "BackboneConfig":
        return cls(**overrides)

    @classmethod
    def demo(cls, **overrides: Any) -> "BackboneConfig":
        return cls(**{"embed_dim": 64, "depth": 4, "heads": 4, **overrides})


class Backbone(nn.Module):
    """x float [B, C, P, T], ch long [B, C], mask bool [B, C, P] (True = hidden) → tokens [B, C·P, D]."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = TemporalConv(patch_size=config.patch_size, embed_dim=config.embed_dim,
                                        channels=config.conv_channels)
        self.pos_embed = PositionEmbedding(dim=config.embed_dim, vocab_size=config.vocab_size,
                                           max_patches=config.max_patches)
        self.mask_token = nn.Parameter(torch.zeros(config.embed_dim))
        self.encoder = Transformer(dim=config.embed_dim, depth=config.depth, heads=config.heads,
                                   mlp_ratio=config.mlp_ratio, qkv_bias=config.qkv_bias)
        init_weights_(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.04, b=0.04)
        with torch.no_grad():
            for table in (self.pos_embed.channel, self.pos_embed.time):
                nn.init.trunc_normal_(table.weight, std=config.pos_init_std, a=-2 * config.pos_init_std,
                                      b=2 * config.pos_init_std)
            self.pos_embed.channel.weight[0].zero_()  # padding row
        self.encoder.rescale_residual_branches_()
        slopes = config.time_bias_max_slope * 2.0 ** (-8.0 * torch.arange(config.heads) / config.heads)
        self.register_buffer("time_slopes", slopes, persistent=False)  # derived from the config, not a weight

    def embed(self, x: Tensor) -> Tensor:
        """Patch embeddings [B, C·P, D] (before masking and positions): shared by both masked passes."""
        b, c, p, t = x.shape
        if p > self.config.max_patches:
            raise ValueError(f"{p} patches per channel exceed max_patches={self.config.max_patches}")
        return rearrange(self.patch_embed(x.reshape(b * c * p, t)), "(b n) d -> b n d", b=b)

    def encode(self, tokens: Tensor, ch: Tensor, patches: int, mask: Tensor | None = None) -> Tensor:
        """Masked tokens + positions through the transformer. tokens [B, N, D], mask bool [B, C, P] or None."""
        if mask is not None:
            tokens = torch.where(mask.flatten(1).unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        tokens = tokens + self.pos_embed(ch, patches)
        slopes = self.time_slopes if self.config.time_bias_max_slope > 0 else None
        return self.encoder(tokens, ch >= 0, patches, slopes=slopes)

    def forward(self, x: Tensor, ch: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.encode(self.embed(x), ch, x.shape[2], mask)
