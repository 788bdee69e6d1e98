"""Reconstruction targets and their inverses.

All functions take patches ``x`` [B, C, P, T] and the channel validity mask
``valid`` bool [B, C] (False = padding channel). Statistics never include
padding channels.

Definitions (following BrainRVQ's / NeuroRVQ's public code, with a real FFT):

* time target: per-patch z-score of the waveform,
  ``(x - mean_T(x)) / (std_T(x) + 1e-6)`` (unbiased std, as BrainRVQ).
* Fourier: ``torch.fft.rfft`` over the T = 200 samples → T/2 + 1 = 101 bins
  (BrainRVQ/NeuroRVQ use the full FFT, whose upper 99 bins are the mirrored
  conjugates of these and carry no extra information).
* amplitude / phase targets (DD-RVQ, LaBraM): ``|X|`` and ``angle(X)``, each
  z-scored *per window* over all valid channels × patches × bins (BrainRVQ's
  ``std_norm`` over dims (1, 2, 3)), which keeps the relative power of
  channels and patches inside a window.
* NeuroRVQ: ``log1p|X|`` z-scored per window; phase as (sin, cos); the signal
  target is the per-window z-scored waveform.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Stats", "patch_zscore", "window_zscore", "window_unzscore", "fourier", "from_fourier"]


@dataclass
class Stats:
    mean: Tensor  # broadcastable to the normalized tensor
    std: Tensor


def patch_zscore(x: Tensor, eps: float = 1e-6) -> tuple[Tensor, Stats]:
    """Per-patch z-score over the last axis. [..., T] → ([..., T], Stats [..., 1])."""
    std, mean = torch.std_mean(x, dim=-1, keepdim=True)
    std = std + eps
    return (x - mean) / std, Stats(mean, std)


def window_zscore(a: Tensor, valid: Tensor, eps: float = 1e-8) -> tuple[Tensor, Stats]:
    """Per-window z-score of a [B, C, P, F] over valid channels × P × F → Stats [B, 1, 1, 1]."""
    w = valid[:, :, None, None].to(a.dtype)  # [B, C, 1, 1]
    count = (w.sum(dim=(1, 2, 3), keepdim=True) * a.shape[2] * a.shape[3]).clamp_min(1)
    mean = (a * w).sum(dim=(1, 2, 3), keepdim=True) / count
    var = ((a - mean).square() * w).sum(dim=(1, 2, 3), keepdim=True) / count
    std = var.clamp_min(eps).sqrt()
    return (a - mean) / std, Stats(mean, std)


def window_unzscore(z: Tensor, stats: Stats) -> Tensor:
    return z * stats.std + stats.mean


def fourier(x: Tensor) -> tuple[Tensor, Tensor]:
    """x [..., T] → (amplitude [..., T/2+1], phase [..., T/2+1]) of the real FFT."""
    spec = torch.fft.rfft(x, dim=-1)
    return spec.abs(), spec.angle()


def from_fourier(amplitude: Tensor, cos: Tensor, sin: Tensor, n: int) -> Tensor:
    """Inverse real FFT of amplitude·(cos + i·sin) → [..., n]."""
    return torch.fft.irfft(torch.complex(amplitude * cos, amplitude * sin), n=n, dim=-1)
