"""Held-out reconstruction quality of a tokenizer, computed on the waveform every variant returns.

Measured in the signal domain (not each variant's own target space) so that variants with different
targets — waveform, Fourier amplitude/phase, multi-scale — are compared on one footing.
"""

from __future__ import annotations

import torch
from torch import Tensor


def reconstruction_metrics(x: Tensor, waveform: Tensor, valid: Tensor, eps: float = 1e-8) -> dict[str, float]:
    """x, waveform [B, C, P, T] (input units), valid bool [B, C] → summed statistics for `merge`."""
    t = x[valid].flatten(0, -2).double()  # [N patches, T]
    w = waveform[valid].flatten(0, -2).double()
    tc, wc = t - t.mean(-1, keepdim=True), w - w.mean(-1, keepdim=True)
    denom = (tc.norm(dim=-1) * wc.norm(dim=-1))
    ok = denom > eps  # flat patches have no correlation
    corr = (tc * wc).sum(-1)[ok] / denom[ok]
    ft, fw = torch.fft.rfft(t), torch.fft.rfft(w)
    at, aw = ft.abs(), fw.abs()
    phase_err = (1 - torch.cos(torch.angle(fw) - torch.angle(ft))) * at  # amplitude-weighted
    return {
        "sq_err": float(((w - t) ** 2).sum()),
        "sq_sig": float((t ** 2).sum()),
        "corr_sum": float(corr.sum()),
        "corr_n": int(ok.sum()),
        "log_amp_abs_err_sum": float((torch.log1p(aw) - torch.log1p(at)).abs().sum()),
        "amp_n": int(at.numel()),
        "phase_err_sum": float(phase_err.sum()),
        "phase_weight": float(at.sum()),
    }


def merge(parts: list[dict[str, float]]) -> dict[str, float]:
    """Totals of `reconstruction_metrics` over batches → the reported metrics."""
    tot = {k: sum(p[k] for p in parts) for k in parts[0]}
    return {
        "nmse": tot["sq_err"] / max(tot["sq_sig"], 1e-12),
        "pearson": tot["corr_sum"] / max(tot["corr_n"], 1),
        "log_amplitude_mae": tot["log_amp_abs_err_sum"] / max(tot["amp_n"], 1),
        "phase_error": tot["phase_err_sum"] / max(tot["phase_weight"], 1e-12),  # 0 = exact, 1 = random
        "patches": tot["corr_n"],
    }
