"""Linear layer + cross-entropy in row chunks, with the gradients computed in the forward pass.

A code head maps every scored token to 8192 logits. Done the plain way, each head of each step
materializes logits [tokens, 8192] in fp32 (≈150 MB at base size), their log-softmax, its gradient
and the casts between, all in fresh memory: measured on a 2-core CPU that is ≈0.6 s per head per
step, mostly memory traffic and page faults. Here the logits of a chunk of rows live only while that
chunk's loss and gradient are computed (softmax − one-hot is the gradient of the summed
cross-entropy with respect to the logits), so the peak extra memory is one chunk of logits
(≈32 MB at 1024 rows) and the gradients reach backward already summed. Same FLOPs as the plain
way: the forward matmul and the two gradient matmuls.

Under autocast the matmuls run in the autocast dtype (as nn.Linear would), softmax and the loss in fp32.

Rows carry an optional 0/1 weight (the rows that are targets), so a caller can keep static shapes (no boolean
selection, whose size would have to be read by the host). Without gradients (torch.no_grad, evaluation) only the
loss and the hits are computed: no softmax, no gradient matmuls.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linear_cross_entropy"]

CHUNK_ROWS = {"cuda": 8192, "cpu": 1024}  # logits live a chunk at a time: cache-sized on a CPU, big launches on a GPU


def chunk_rows(device: torch.device) -> int:
    return CHUNK_ROWS.get(device.type, CHUNK_ROWS["cpu"])


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor, target: Tensor, rows_weight: Tensor | None,
                chunk: int, grad: bool) -> tuple[Tensor, Tensor]:
        device = h.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
        need_h, need_w, need_b = (n and grad for n in ctx.needs_input_grad[:3])
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        hits = torch.zeros((), dtype=torch.long, device=h.device)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=h.device) if need_b else None
        with torch.autocast(device, enabled=False):
            w, b, x = weight.to(dtype), bias.to(dtype), h.to(dtype)
            for start in range(0, x.shape[0], chunk):
                rows, t = x[start:start + chunk], target[start:start + chunk]
                z = torch.addmm(b, rows, w.t()).float()  # logits [n, K]
                lse = torch.logsumexp(z, dim=-1)
                ce, hit = lse - z.gather(1, t[:, None]).squeeze(1), z.argmax(-1) == t
                if rows_weight is not None:
                    rw = rows_weight[start:start + chunk]
                    ce, hit = ce * rw, hit & (rw > 0)
                loss += ce.sum()
                hits += hit.sum()
                if not (need_h or need_w or need_b):
                    continue
                z.sub_(lse[:, None]).exp_()  # softmax, in place
                z[torch.arange(t.shape[0], device=z.device), t] -= 1.0  # − one-hot: d(Σ CE)/d logits
                if rows_weight is not None:
                    z.mul_(rw[:, None])
                g = z if dtype == torch.float32 else z.to(dtype)
                if need_h:
                    grad_h[start:start + chunk] = g @ w
                if need_w:
                    if dtype == torch.float32:
                        grad_w.addmm_(g.t(), rows)
                    else:
                        grad_w += (g.t() @ rows).float()
                if need_b:
                    grad_b += z.sum(0)
        ctx.save_for_backward(*(t if t is not None else torch.empty(0) for t in (grad_h, grad_w, grad_b)))
        ctx.dtypes = (weight.dtype, bias.dtype)
        ctx.mark_non_differentiable(hits)
        return loss, hits

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_hits: Tensor):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        return (grad_h * grad_loss.to(grad_h.dtype) if need_h else None,
                (grad_w * grad_loss).to(ctx.dtypes[0]) if need_w else None,
                (grad_b * grad_loss).to(ctx.dtypes[1]) if need_b else None, None, None, None, None)


def linear_cross_entropy(h: Tensor, weight: Tensor, bias: Tensor, target: Tensor, rows_weight: Tensor | None = None,
                         chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """Σ over rows of w·cross_entropy(h @ weightᵀ + bias, target), and the number of rows (w > 0) whose argmax
    logit is the target. h [M, D], weight [K, D], bias [K], target long [M], rows_weight float [M] (default 1)
    → (loss 0-d fp32, hits 0-d long). The loss is differentiable with respect to h, weight and bias."""
    if h.shape[0] != target.shape[0]:
        raise ValueError(f"{h.shape[0]} rows but {target.shape[0]} targets")
    if rows_weight is not None:
        rows_weight = rows_weight.float()
    grad = torch.is_grad_enabled()  # inside an autograd.Function's forward it is always off: decided here
    return _LinearCrossEntropy.apply(h, weight, bias, target.long(), rows_weight, chunk or chunk_rows(h.device), grad)
