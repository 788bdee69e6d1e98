"""Importance-guided curriculum masking for masked-code pretraining (BrainRVQ).

Each sample is a ``[C, P]`` grid of 1 s patches (channels × time). Per patch, five cheap features
(:data:`pipeline.signal.importance.FEATURE_NAMES`: neural ratio, cleanliness, Hjorth complexity,
irregularity, Hjorth mobility) are min-max normalized over the valid patches of the sample and combined
into an information score ``info = 0.30·neural + 0.25·clean + 0.20·complexity + 0.15·irregularity +
0.10·mobility``. Masking then proceeds per sample:

1. ``s = w·info + (1 − w)·U(0, 1)``, z-scored over the valid patches; ``p = softmax(s / 0.8)``;
2. ``⌊0.5·n_valid⌋`` patches are drawn from ``p`` without replacement (Gumbel-top-k: the top-k of
   ``s / T + Gumbel`` is a draw without replacement from ``softmax(s / T)``);
3. each drawn patch is left visible again with probability 0.1;
4. in channel-major token order (token ``c·P + p``, runs may cross channel boundaries and restart only at
   sample boundaries) every 6th consecutive masked token is unmasked, so no run exceeds 5.

The curriculum changes only the weight, ``w = 0.2 + 0.5·progress`` (≈0.2 → 0.7), shifting the draw from
nearly uniform towards informative patches; ``strategy="random"`` draws the same count uniformly. All
numbers are the defaults of the public BrainRVQ code (see DESIGN.md, "Importance-guided curriculum
masking"). Differences from it: padding channels (``valid`` False) are excluded from normalization, draw
count and masking, and non-finite features count as 0.

Everything is vectorized over batch and patches; all randomness comes from the ``generator`` passed in,
which must live on the importance tensor's device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pipeline.config import MaskConfig  # the config section is the sampler's settings

__all__ = ["MaskConfig", "complementary", "curriculum_weight", "information_score", "limit_runs",
           "sample_mask"]


def curriculum_weight(cfg: MaskConfig, progress: float) -> float:
    """Information weight at ``progress`` (epoch/epochs or step/steps), clamped to [0, 1]."""
    if math.isnan(progress):
        raise ValueError("progress is NaN")
    progress = min(1.0, max(0.0, float(progress)))
    return cfg.weight_start + (cfg.weight_end - cfg.weight_start) * progress


def information_score(importance: Tensor, valid: Tensor,
                      feature_weights: tuple[float, ...] = MaskConfig.feature_weights) -> Tensor:
    """Raw features ``[B, C, P, F]`` + ``valid [B, C]`` → info score ``[B, C, P]`` (0 on padding).

    Each feature is min-max normalized over the valid ``C×P`` patches of its sample (a constant feature
    gives 0); non-finite values count as 0.
    """
    if importance.shape[-1] != len(feature_weights):
        raise ValueError(f"expected {len(feature_weights)} features, got shape {tuple(importance.shape)}")
    b, c, p, f = importance.shape
    x = torch.nan_to_num(importance.float(), nan=0.0, posinf=0.0, neginf=0.0).reshape(b, c * p, f)
    vp = valid.to(device=x.device, dtype=torch.bool)[:, :, None].expand(b, c, p).reshape(b, c * p, 1)
    lo = x.masked_fill(~vp, math.inf).amin(dim=1, keepdim=True)
    hi = x.masked_fill(~vp, -math.inf).amax(dim=1, keepdim=True)
    span = hi - lo
    ok = span > 0  # False for a constant feature and for a sample without valid patches (span -inf)
    scale = torch.where(ok, 1.0 / span, 0.0)
    norm = (x - torch.where(ok, lo, 0.0)) * scale
    w = torch.tensor(feature_weights, dtype=norm.dtype, device=norm.device)
    return (norm @ w).masked_fill(~vp[..., 0], 0.0).reshape(b, c, p)


def limit_runs(mask: Tensor, max_run: int) -> Tensor:
    """Unmask every ``(max_run+1)``-th consecutive True along the last axis (runs restart only at False)."""
    n = mask.shape[-1]
    idx = torch.arange(1, n + 1, device=mask.device).expand_as(mask)
    last_false = torch.where(mask, 0, idx).cummax(dim=-1).values  # 1-based index of the latest False, or 0
    run_pos = idx - last_false  # 1-based position inside the current run (for True entries)
    return mask & (run_pos % (max_run + 1) != 0)


def sample_mask(importance: Tensor, valid: Tensor, cfg: MaskConfig, progress: float,
                generator: torch.Generator | None = None) -> Tensor:
    """Boolean mask ``[B, C, P]`` (True = masked) for features ``[B, C, P, F]`` and ``valid [B, C]``.

    Padding channels are never masked; a sample without valid patches gets no mask.
    """
    b, c, p = importance.shape[:3]
    dev = importance.device
    vp = valid.to(device=dev, dtype=torch.bool)[:, :, None].expand(b, c, p).reshape(b, c * p)
    n_valid = vp.sum(dim=1)
    k = torch.floor(n_valid.double() * cfg.ratio).long()  # float64: same rounding as Python's int(ratio * n)

    def rand() -> Tensor:
        return torch.rand(b, c * p, generator=generator, device=dev)

    if cfg.strategy == "importance":
        w = curriculum_weight(cfg, progress)
        info = information_score(importance, valid, cfg.feature_weights).reshape(b, c * p)
        s = w * info + (1.0 - w) * rand()
        nv = n_valid.clamp_min(1)[:, None].float()
        mean = (s * vp).sum(dim=1, keepdim=True) / nv
        var = (((s - mean) * vp) ** 2).sum(dim=1, keepdim=True) / (nv - 1).clamp_min(1)
        z = (s - mean) / (var.sqrt() + 1e-6)  # unbiased std + 1e-6, as the reference
        gumbel = -torch.log(-torch.log(rand().clamp_min(torch.finfo(torch.float32).tiny)))
        keys = z / cfg.temperature + gumbel
    else:
        keys = rand()
    keys = keys.masked_fill(~vp, -math.inf)
    order = keys.argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(c * p, device=dev).expand(b, -1))
    mask = (rank < k[:, None]) & vp
    if cfg.keep_prob > 0:
        mask &= rand() >= cfg.keep_prob
    return limit_runs(mask, cfg.max_run).reshape(b, c, p)


def complementary(mask: Tensor, valid: Tensor) -> Tensor:
    """The other valid patches (``~mask`` on valid channels), masked in the symmetric second pass."""
    return ~mask & valid.to(device=mask.device, dtype=torch.bool)[:, :, None]
