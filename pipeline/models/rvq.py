"""Vector quantizers with EMA codebooks: one codebook (`VectorQuantizer`) and a
residual stack of them (`ResidualVectorQuantizer`).

Conventions (shared by both classes)
------------------------------------
* Inputs are ``[..., D]``; codes are ``long``; a residual stack adds a trailing
  ``levels`` axis to the codes: ``[..., L]``.
* ``l2_normalize=True`` (the BrainRVQ / LaBraM "NormEMA" quantizer): every level
  L2-normalizes *its own input* and every codeword is kept on the unit sphere,
  so the nearest code is the one with the largest cosine,
  ``argmax(x̂ @ codebookᵀ)``. With ``l2_normalize=False`` the nearest code is
  the Euclidean one, ``argmax(x @ codebookᵀ - ½‖e‖²)``. Neither form builds a
  ``cdist`` matrix; the score matrix is built in row chunks of ~8 MB.
* Residual at level k (this is what BrainRVQ's public ``ResidualVQ`` does, and
  what we follow)::

      r_1     = z                       # the encoder head output, NOT normalized
      x̂_k     = l2norm(r_k)             # what level k quantizes (cosine)
      e_k     = codebook_k[argmax(x̂_k @ codebook_kᵀ)]      # a unit vector
      r_{k+1} = r_k - e_k
      quantized = e_1 + e_2 + ... + e_L   # = decode(codes)

  i.e. every level codes the *direction* of what is left, with a unit-norm
  codeword, and the output is the sum of the unit codewords. (Normalizing the
  input once and then subtracting unit codewords from an already-normalized
  residual would make ``r_2`` small and ``e_2`` unit-norm, so the sum could
  never approximate the input; leaving ``r_1`` unnormalized lets the encoder
  pick the scale at which a sum of unit steps approximates it.)
* Straight-through: each level outputs ``e_k.detach() + (x̂_k - x̂_k.detach())``.
  Its gradient w.r.t. ``x̂_k`` is the identity, like ``x̂ + (e - x̂).detach()``,
  but its *value* is exactly ``e_k`` in floating point, so in eval mode
  ``forward(x).quantized == decode(encode(x))`` bit for bit.
* Precision: assignment, EMA statistics, k-means and the commitment loss run in fp32 outside autocast
  (``_fp32``), in training as in ``encode``: under bf16 autocast the score matmul would be bf16 and near-tied
  codewords would be chosen differently in training and in code extraction.
* Commitment loss per level: ``mse(x̂_k, e_k.detach())``, summed over levels
  and multiplied by ``commitment_weight`` (BrainRVQ uses beta = 1).
* EMA (training mode only, never a gradient to the codebook)::

      cluster_size ← decay·cluster_size + (1-decay)·counts
      embed_sum    ← decay·embed_sum    + (1-decay)·Σ assigned x̂
      codebook     = embed_sum / laplace(cluster_size)   (then L2-normalized)
      laplace(c)   = (c + eps) / (Σc + K·eps) · Σc

  A fresh quantizer starts with ``cluster_size = 1`` and ``embed_sum =
  codebook`` (one pseudo-observation per codeword) so unused codes keep their
  codeword instead of collapsing to zero.
* ``kmeans_init``: the first forward in training mode replaces each level's
  codebook by k-means on that level's inputs ``x̂_k`` (cosine k-means when
  L2-normalized), ``kmeans_iters`` Lloyd iterations, seeded by the global torch
  RNG (deterministic under ``torch.manual_seed``). If the batch holds fewer
  vectors N than codes K, only N codes are fitted and the other K − N keep
  their random init with ``cluster_size = 0`` (no duplicate codewords: exact
  duplicates tie, and a tie makes the code of a vector arbitrary).
* ``dead_code_threshold`` (EMA count units, i.e. expected uses per batch; 0
  disables): after each EMA update (except in the k-means init step), codes
  with ``cluster_size < threshold`` are replaced by distinct random vectors of
  the current batch's ``x̂_k`` (at most N per step) and get
  ``cluster_size = threshold``.
* Row weights: ``quantize``/``forward`` take an optional 0/1 weight per row (padding tokens 0), so callers keep
  static shapes: weight-0 rows get codes but add nothing to the commitment loss, the EMA statistics, the usage
  or the restart samples. Host syncs: none in a training step after the first (the k-means init reads its rows
  once); the ``initialized`` flag is mirrored in Python, dead-code restarts are ``torch.where`` updates of
  every code (no data-dependent branch). Under torch.distributed the restart gathers rows with their sizes
  (one size exchange per step).
* Distributed: if ``torch.distributed`` is initialized, per-batch counts and sums
  are all-reduced before the EMA update, and k-means / restart samples are
  computed on rank 0 from the rows of all ranks gathered in rank order, then
  broadcast. N processes thus reach the same codebook as one process that sees
  the concatenated global batch (given the same RNG state on rank 0). The
  usage/perplexity statistics are global in training mode, local in eval mode.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "VQResult",
    "RVQResult",
    "VectorQuantizer",
    "ResidualVectorQuantizer",
    "kmeans",
    "nearest_code",
]

_SCORE_CHUNK_BYTES = 8 * 2**20  # row-chunk the [N, K] score matrix to ~8 MB (stays in L2/L3)


# --------------------------------------------------------------------------- helpers


def l2norm(t: Tensor) -> Tensor:
    return F.normalize(t, p=2.0, dim=-1)


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum_(t: Tensor) -> Tensor:
    if _is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _broadcast_(t: Tensor, src: int = 0) -> Tensor:
    if _is_distributed():
        dist.broadcast(t, src=src)
    return t


def _is_rank0() -> bool:
    return not _is_distributed() or dist.get_rank() == 0


def _gather_rows(x: Tensor) -> Tensor:
    """Rows of every rank's x [n_r, D], concatenated in rank order (x itself if not distributed)."""
    if not _is_distributed():
        return x
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(s) for s in sizes]
    padded = x.new_zeros(max(counts), x.shape[1])
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts)])


def sample_rows(x: Tensor, n: int) -> Tensor:
    """``n`` random rows of ``x`` [N, D] (without replacement when N ≥ n)."""
    num = x.shape[0]
    if num >= n:
        idx = torch.randperm(num, device=x.device)[:n]
    else:
        idx = torch.randint(0, num, (n,), device=x.device)
    return x[idx]


def laplace_smooth(cluster_size: Tensor, eps: float) -> Tensor:
    """(c + eps) / (Σc + K·eps) · Σc — keeps Σ unchanged, never exactly zero for eps > 0."""
    n = cluster_size.sum()
    k = cluster_size.shape[0]
    smoothed = (cluster_size + eps) / (n + k * eps) * n
    return smoothed.clamp_min(torch.finfo(cluster_size.dtype).tiny)


def _fp32(method):
    """Run a quantizer method on fp32 inputs with autocast off (see Precision in the module docstring)."""
    @functools.wraps(method)
    def wrapper(self, x: Tensor, *args, **kwargs):
        with torch.autocast(x.device.type, enabled=False):
            return method(self, x.float(), *args, **kwargs)
    return wrapper


def nearest_code(x: Tensor, codebook: Tensor, *, euclidean: bool) -> Tensor:
    """Index of the best code for every row of ``x`` [N, D] → long [N].

    Cosine (unit codebook): argmax x @ Eᵀ. Euclidean: argmax x @ Eᵀ - ½‖e‖².
    The [N, K] score matrix is built in row chunks so it stays cache-sized.
    """
    num, k = x.shape[0], codebook.shape[0]
    codebook_t = codebook.t()  # [D, K]
    bias = -0.5 * codebook.pow(2).sum(-1) if euclidean else None  # [K]
    out = torch.empty(num, dtype=torch.long, device=x.device)
    rows = max(64, _SCORE_CHUNK_BYTES // (4 * k))
    for start in range(0, num, rows):
        chunk = x[start : start + rows]
        scores = torch.mm(chunk, codebook_t) if bias is None else torch.addmm(bias, chunk, codebook_t)
        torch.argmax(scores, dim=1, out=out[start : start + rows])
    return out


def kmeans(samples: Tensor, num_clusters: int, *, iters: int, cosine: bool) -> tuple[Tensor, Tensor]:
    """Lloyd k-means on [N, D] → (means [K, D], bins long [K]). Empty clusters keep their mean."""
    means = sample_rows(samples, num_clusters)
    if cosine:
        means = l2norm(means)
    bins = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(iters):
        assign = nearest_code(samples, means, euclidean=not cosine)
        bins = torch.bincount(assign, minlength=num_clusters)
        sums = samples.new_zeros(num_clusters, samples.shape[1]).index_add_(0, assign, samples)
        new_means = sums / bins.clamp_min(1).unsqueeze(1).to(samples.dtype)
        if cosine:
            new_means = l2norm(new_means)
        means = torch.where((bins == 0).unsqueeze(1), means, new_means)
    return means, bins


def usage_and_perplexity(counts: Tensor) -> tuple[Tensor, Tensor]:
    """counts [K] → (fraction of codes used, exp(entropy)) as 0-d tensors."""
    total = counts.sum().clamp_min(1)
    probs = counts / total
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return (counts > 0).float().mean(), entropy.exp()


# --------------------------------------------------------------------------- results


@dataclass
class VQResult:
    quantized: Tensor  # [..., D] straight-through; value == codebook[codes]
    codes: Tensor  # long [...]
    commit_loss: Tensor  # 0-d
    usage: Tensor  # 0-d, fraction of the K codes used in this batch
    perplexity: Tensor  # 0-d, exp(entropy of the batch code histogram)


@dataclass
class RVQResult:
    quantized: Tensor  # [..., D] straight-through; value == decode(codes)
    codes: Tensor  # long [..., L]
    commit_loss: Tensor  # 0-d, summed over levels (× commitment_weight)
    usage: Tensor  # [L]
    perplexity: Tensor  # [L]


# --------------------------------------------------------------------------- quantizers


class VectorQuantizer(nn.Module):
    """One EMA codebook. See the module docstring for the exact update rules."""

    def __init__(
        self,
        *,
        dim: int,
        codebook_size: int,
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment_weight: float = 1.0,
        l2_normalize: bool = True,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        if codebook_size < 1 or dim < 1:
            raise ValueError("dim and codebook_size must be positive")
        self.dim = dim
        self.codebook_size = codebook_size
        self.decay = decay
        self.eps = eps
        self.commitment_weight = commitment_weight
        self.l2_normalize = l2_normalize
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold

        codebook = torch.randn(codebook_size, dim)
        if l2_normalize:
            codebook = l2norm(codebook)
        self.register_buffer("codebook", codebook)  # [K, D]
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # [K]
        self.register_buffer("embed_sum", codebook.clone())  # [K, D]
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self._initialized: bool | None = None  # the buffer's value, read once (None: not read yet)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, decay={self.decay}, "
            f"l2_normalize={self.l2_normalize}, kmeans_init={self.kmeans_init}, "
            f"dead_code_threshold={self.dead_code_threshold}"
        )

    # ---- codebook state

    def _prepare(self, x: Tensor) -> Tensor:
        return l2norm(x) if self.l2_normalize else x

    @torch.no_grad()
    def _refresh_codebook(self) -> None:
        codebook = self.embed_sum / laplace_smooth(self.cluster_size, self.eps).unsqueeze(1)
        self.codebook.copy_(self._prepare(codebook))

    @torch.no_grad()
    def init_codebook_(self, codebook: Tensor, *, cluster_size: Tensor | None = None) -> None:
        """Set the codebook [K, D] (and optionally its EMA counts [K]; default one each)."""
        codebook = self._prepare(codebook.to(self.codebook))
        counts = torch.ones_like(self.cluster_size) if cluster_size is None else cluster_size.to(self.cluster_size)
        self.codebook.copy_(codebook)
        self.cluster_size.copy_(counts)
        self.embed_sum.copy_(codebook * laplace_smooth(counts, self.eps).unsqueeze(1))
        self.initialized.fill_(True)
        self._initialized = True

    def _load_from_state_dict(self, *args, **kwargs):
        self._initialized = None  # a loaded state may say otherwise: read the buffer again
        super()._load_from_state_dict(*args, **kwargs)

    def _is_initialized(self) -> bool:
        if self._initialized is None:
            self._initialized = bool(self.initialized)  # one host read per quantizer, not per step
        return self._initialized

    @torch.no_grad()
    def _kmeans_init_(self, x: Tensor) -> None:
        # k-means runs on rank 0 over the global batch (all ranks' rows in rank
        # order, as one process would see it) and is broadcast. With fewer rows
        # than codes, only the first N codes are fitted; the rest keep their
        # random init with an EMA count of 0 (the dead-code restart fills them
        # from later batches). Drawing the extra centroids from the same rows
        # would create exact duplicate codewords, whose ties make codes
        # arbitrary (and batch-dependent) between identical vectors.
        x = _gather_rows(x)
        if x.shape[0] == 0:
            return
        k = min(self.codebook_size, x.shape[0])
        means = self.codebook.clone()
        bins = torch.zeros_like(self.cluster_size)
        if _is_rank0():
            fitted, counts = kmeans(x, k, iters=self.kmeans_iters, cosine=self.l2_normalize)
            means[:k] = fitted
            bins[:k] = counts.to(bins.dtype)
        _broadcast_(means)
        _broadcast_(bins)
        self.init_codebook_(means, cluster_size=bins)

    @torch.no_grad()
    def _ema_update_(self, x: Tensor, codes: Tensor, weight: Tensor) -> Tensor:
        """x [N, D] (the level's prepared inputs), codes [N], weight [N] → global counts [K]."""
        k, d = self.codebook_size, self.dim
        stats = x.new_zeros(k, d + 1)  # [K, 1 + D]: counts | sums, one all-reduce
        stats[:, 0].index_add_(0, codes, weight)
        stats[:, 1:].index_add_(0, codes, x * weight[:, None])
        _all_reduce_sum_(stats)
        counts, sums = stats[:, 0], stats[:, 1:]
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        self._refresh_codebook()
        return counts

    @torch.no_grad()
    def _restart_dead_codes_(self, x: Tensor, weight: Tensor) -> None:
        """Codes with an EMA count below the threshold take distinct random rows of weight > 0 (the first dead
        codes in index order, at most one per row). Every code is updated through torch.where: no branch on the
        data, so no host sync."""
        if self.dead_code_threshold <= 0:
            return
        if _is_distributed():  # samples come from the global batch, drawn on rank 0
            x, weight = _gather_rows(x), _gather_rows(weight[:, None])[:, 0]
        if x.shape[0] == 0:
            return
        dead = self.cluster_size < self.dead_code_threshold  # [K], identical on all ranks
        real = weight > 0
        order = (torch.rand(x.shape[0], device=x.device) + real).argsort(descending=True)  # real rows first
        rank = dead.long().cumsum(0) - 1  # each dead code's rank among the dead
        take = dead & (rank < real.sum())
        fresh = self._prepare(x[order[rank.clamp(0, x.shape[0] - 1)]])  # [K, D]
        _broadcast_(fresh)
        take = _broadcast_(take.to(torch.uint8)).bool()
        threshold = torch.full_like(self.cluster_size, self.dead_code_threshold)
        self.cluster_size.copy_(torch.where(take, threshold, self.cluster_size))
        self.codebook.copy_(torch.where(take[:, None], fresh, self.codebook))
        smoothed = laplace_smooth(self.cluster_size, self.eps).unsqueeze(1)
        self.embed_sum.copy_(torch.where(take[:, None], fresh * smoothed, self.embed_sum))
        self._refresh_codebook()

    # ---- public API

    def assign(self, x: Tensor) -> Tensor:
        """Prepared inputs [N, D] → codes [N] (no state change)."""
        return nearest_code(x.detach(), self.codebook, euclidean=not self.l2_normalize)

    def lookup(self, codes: Tensor) -> Tensor:
        """codes long [...] → codewords [..., D]."""
        return F.embedding(codes, self.codebook)

    @_fp32
    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """x [..., D] → codes long [...]."""
        flat = rearrange(self._prepare(x), "... d -> (...) d")
        return self.assign(flat).reshape(x.shape[:-1])

    def decode(self, codes: Tensor) -> Tensor:
        """codes long [...] → vectors [..., D]."""
        return self.lookup(codes)

    @_fp32
    def quantize(self, x: Tensor, weight: Tensor | None = None) -> tuple[VQResult, Tensor]:
        """Flat x [N, D], weight [N] (0/1, default 1) → (result, counts [K]). Used by the residual stack."""
        xh = self._prepare(x)  # x̂ [N, D]
        weight = torch.ones(x.shape[0], device=x.device) if weight is None else weight.to(x.dtype)
        fresh_init = self.training and not self._is_initialized()
        if fresh_init:
            self._kmeans_init_(xh.detach()[weight > 0])  # once per quantizer: the boolean selection may sync
        codes = self.assign(xh)  # [N]
        q = self.lookup(codes)  # [N, D], no grad (buffer)
        # mean squared error over the weighted rows (0 when there are none, not NaN)
        commit = ((xh - q).pow(2).sum(-1) * weight).sum() / (weight.sum() * self.dim).clamp_min(1.0)
        commit = commit * self.commitment_weight
        quantized = q + (xh - xh.detach())  # value exactly q, gradient identity w.r.t. x̂
        if self.training:
            counts = self._ema_update_(xh.detach(), codes, weight)
            if not fresh_init:  # the init batch's rows already are centroids: restarting from them would duplicate
                self._restart_dead_codes_(xh.detach(), weight)
        else:  # index_add, not bincount (which reads the maximum on the host)
            counts = x.new_zeros(self.codebook_size).index_add_(0, codes, weight)
        usage, perplexity = usage_and_perplexity(counts)
        return VQResult(quantized, codes, commit, usage, perplexity), counts

    def forward(self, x: Tensor, weight: Tensor | None = None) -> VQResult:
        """x [..., D] (weight [...], 0/1) → VQResult (quantized [..., D], codes [...])."""
        lead = x.shape[:-1]
        res, _ = self.quantize(rearrange(x, "... d -> (...) d"), None if weight is None else weight.reshape(-1))
        res.quantized = res.quantized.reshape(*lead, self.dim)
        res.codes = res.codes.reshape(lead)
        return res


class ResidualVectorQuantizer(nn.Module):
    """``levels`` VectorQuantizers applied to successive residuals (see module docstring)."""

    def __init__(
        self,
        *,
        dim: int,
        codebook_size: int,
        levels: int,
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment_weight: float = 1.0,
        l2_normalize: bool = True,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be ≥ 1, got {levels}")
        self.dim = dim
        self.codebook_size = codebook_size
        self.levels = levels
        self.layers = nn.ModuleList(
            VectorQuantizer(
                dim=dim,
                codebook_size=codebook_size,
                decay=decay,
                eps=eps,
                commitment_weight=commitment_weight,
                l2_normalize=l2_normalize,
                kmeans_init=kmeans_init,
                kmeans_iters=kmeans_iters,
                dead_code_threshold=dead_code_threshold,
            )
            for _ in range(levels)
        )

    @property
    def bits_per_vector(self) -> float:
        return self.levels * math.log2(self.codebook_size)

    @_fp32
    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """x [..., D] → codes long [..., L]. Never changes the codebooks."""
        lead = x.shape[:-1]
        residual = rearrange(x, "... d -> (...) d")
        codes = []
        for vq in self.layers:
            level_codes = vq.assign(vq._prepare(residual))
            residual = residual - vq.lookup(level_codes)
            codes.append(level_codes)
        return torch.stack(codes, dim=-1).reshape(*lead, self.levels)

    def decode(self, codes: Tensor) -> Tensor:
        """codes long [..., L] → Σ_k codebook_k[codes[..., k]]  [..., D]."""
        if codes.shape[-1] != self.levels:
            raise ValueError(f"expected {self.levels} levels in the last axis, got {codes.shape[-1]}")
        out = self.layers[0].lookup(codes[..., 0])
        for k in range(1, self.levels):
            out = out + self.layers[k].lookup(codes[..., k])
        return out

    @_fp32
    def forward(self, x: Tensor, weight: Tensor | None = None) -> RVQResult:
        """x [..., D] (weight [...], 0/1: rows that count) → RVQResult. Training mode: k-means init, EMA update,
        dead-code restart."""
        lead = x.shape[:-1]
        residual = rearrange(x, "... d -> (...) d")  # r_1 = z  [N, D]
        weight = None if weight is None else weight.reshape(-1)
        quantized: Tensor | None = None
        codes, commits, usage, perplexity = [], [], [], []
        for vq in self.layers:
            res, _ = vq.quantize(residual, weight)
            quantized = res.quantized if quantized is None else quantized + res.quantized
            residual = residual - res.quantized.detach()  # r_{k+1} = r_k - e_k
            codes.append(res.codes)
            commits.append(res.commit_loss)
            usage.append(res.usage)
            perplexity.append(res.perplexity)
        assert quantized is not None
        return RVQResult(
            quantized=quantized.reshape(*lead, self.dim),
            codes=torch.stack(codes, dim=-1).reshape(*lead, self.levels),
            commit_loss=torch.stack(commits).sum(),
            usage=torch.stack(usage),
            perplexity=torch.stack(perplexity),
        )
