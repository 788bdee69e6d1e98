"""`TokenizerConfig`: one frozen dataclass describing any tokenizer variant.

It travels inside checkpoints (``to_dict`` / ``from_dict``), nanoGPT-style.

Variants
--------
``ddrvq``       BrainRVQ's dual-domain RVQ: shared encoder, a time head + RVQ +
                decoder (z-scored waveform) and a frequency head + RVQ + decoder
                (z-scored Fourier amplitude and phase). domains = (time, freq).
``ddrvq_time``  ablation: the time branch only. domains = (time,).
``ddrvq_freq``  ablation: the frequency branch only. domains = (freq,).
``labram``      LaBraM's VQ-NSP baseline: same encoder, one quantizer level
                (levels = 1), frequency targets only. domains = (freq,).
``neurorvq``    NeuroRVQ: four parallel conv scales, one RVQ per scale (8 levels
                at paper size), amplitude + sin/cos(phase) + inverse-FFT waveform
                losses. domains = (scale0, …, scale3).

Code budget (for DD-RVQ vs LaBraM comparisons)
----------------------------------------------
We compare at the same *per-code budget*: every quantizer level of every
variant uses the same codebook (``codebook_size`` × ``code_dim``, 8192 × 64 at
paper size), i.e. every emitted code carries log2(8192) = 13 bits and every
code stream has the same vocabulary for the downstream masked-code model.
Equal *bits per patch* is not reachable with LaBraM's single level: DD-RVQ
emits 2 domains × 3 levels × 13 = 78 bits per patch, which a single code
would need a 2^78-entry codebook for (and codes are stored as int16, so a
codebook is capped at 32767 entries). ``bits_per_patch`` reports each
variant's rate so results can be read as rate–distortion points.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["TokenizerConfig", "VARIANTS", "NEURORVQ_SCALES"]

VARIANTS = ("ddrvq", "ddrvq_time", "ddrvq_freq", "labram", "neurorvq")
NEURORVQ_SCALES = 4
INT16_MAX = 32767


@dataclass(frozen=True)
class TokenizerConfig:
    variant: str = "ddrvq"
    # data: x [B, C, P, patch_size], ch [B, C] ids in [0, vocab_size) or -1
    vocab_size: int = 512
    patch_size: int = 200
    max_patches: int = 64
    # encoder (LaBraM/BrainRVQ "base": 12 × 200-d, 10 heads)
    embed_dim: int = 200
    depth: int = 12
    heads: int = 10
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    conv_channels: int = 8
    # decoders (BrainRVQ: a 3-block 200-d transformer per domain)
    decoder_dim: int = 200
    decoder_depth: int = 3
    decoder_heads: int = 10
    # quantizers
    codebook_size: int = 8192
    code_dim: int = 64
    levels: int = 3
    decay: float = 0.99
    eps: float = 1e-5
    l2_normalize: bool = True
    kmeans_init: bool = True
    kmeans_iters: int = 10
    # EMA-count threshold for restarting unused codes (0 = off, as in the
    # published BrainRVQ/LaBraM code). 1e-3 ≈ "not picked for several hundred
    # steps" at decay 0.99; it also revives the duplicate centroids that k-means
    # leaves when the first batch holds fewer vectors than codes.
    dead_code_threshold: float = 1e-3
    # loss weights (BrainRVQ and NeuroRVQ weight every term 1)
    commitment_weight: float = 1.0
    time_weight: float = 1.0
    amplitude_weight: float = 1.0
    phase_weight: float = 1.0
    signal_weight: float = 1.0  # neurorvq: waveform rebuilt by inverse FFT

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not 1 <= self.codebook_size <= INT16_MAX:
            raise ValueError(f"codebook_size must be in [1, {INT16_MAX}] (codes are stored as int16)")
        if self.variant == "labram" and self.levels != 1:
            raise ValueError("the labram variant is a single quantizer: levels must be 1")
        if self.embed_dim % self.heads or self.decoder_dim % self.decoder_heads:
            raise ValueError("embed_dim/decoder_dim must be divisible by heads/decoder_heads")
        if self.conv_channels % 4:
            raise ValueError("conv_channels must be a multiple of 4 (GroupNorm with 4 groups)")
        if self.patch_size % 8:
            raise ValueError("patch_size must be a multiple of 8")
        for name in ("vocab_size", "max_patches", "depth", "decoder_depth", "code_dim", "levels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1")

    # ---- derived

    @property
    def domains(self) -> tuple[str, ...]:
        return {
            "ddrvq": ("time", "freq"),
            "ddrvq_time": ("time",),
            "ddrvq_freq": ("freq",),
            "labram": ("freq",),
            "neurorvq": tuple(f"scale{i}" for i in range(NEURORVQ_SCALES)),
        }[self.variant]

    @property
    def n_domains(self) -> int:
        return len(self.domains)

    @property
    def n_bins(self) -> int:
        return self.patch_size // 2 + 1

    @property
    def code_shape(self) -> tuple[int, int]:
        """Trailing shape of the codes: (domains, levels)."""
        return (self.n_domains, self.levels)

    @property
    def bits_per_patch(self) -> float:
        return self.n_domains * self.levels * math.log2(self.codebook_size)

    # ---- (de)serialization

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TokenizerConfig keys: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> TokenizerConfig:
        return dataclasses.replace(self, **changes)

    # ---- presets

    @classmethod
    def paper(cls, variant: str = "ddrvq", **overrides: Any) -> TokenizerConfig:
        """Published sizes: 12 × 200-d encoder, 3 × 200-d decoders, 8192 × 64 codebooks,
        3 levels (DD-RVQ), 1 level (LaBraM), 8 levels per scale (NeuroRVQ)."""
        levels = {"labram": 1, "neurorvq": 8}.get(variant, 3)
        return cls(**{"variant": variant, "levels": levels, **overrides})

    @classmethod
    def demo(cls, variant: str = "ddrvq", **overrides: Any) -> TokenizerConfig:
        """Tiny model that trains on 2 CPU cores in minutes."""
        levels = {"labram": 1, "neurorvq": 2}.get(variant, 3)
        base = dict(
            variant=variant,
            embed_dim=64,
            depth=2,
            heads=4,
            decoder_dim=64,
            decoder_depth=1,
            decoder_heads=4,
            codebook_size=512,
            code_dim=32,
            levels=levels,
            kmeans_iters=5,
            # measured on 4-window batches (2280 tokens, 512 codes): with the paper's
            # β = 1 and a 1e-2 threshold every level collapses to perplexity 1 within
            # 40 steps; restarting codes used < 2×/batch and β = 0.25 keep 20–45.
            dead_code_threshold=2.0,
            commitment_weight=0.25,
        )
        return cls(**{**base, **overrides})
