"""EEG tokenizers: DD-RVQ (BrainRVQ) with its ablations, LaBraM's VQ-NSP, NeuroRVQ.

Inputs: ``x`` float [B, C, P, T] (T = 200 samples = 1 s patches, µV/100) and
``ch`` long [B, C] (global channel ids, −1 = padding channel).

Common API (both classes):

* ``encode(x, ch) -> codes`` long [B, C, P, S, L] (S = domains, L = levels;
  −1 for padding channels). Never touches the codebooks.
* ``forward(x, ch) -> TokenizerOutput`` (loss, named loss terms, codes,
  usage/perplexity [S, L], reconstruction). In training mode this also runs
  the codebook EMA / k-means init / dead-code restart.
* ``decode(codes, ch) -> dict`` of predictions [B, C, P, F] (target space).
* ``reconstruct(x, ch) -> Reconstruction`` (eval mode, no grad): predictions,
  targets and the predicted waveform in input units.
* ``to_checkpoint()`` / ``load_tokenizer(ckpt)``: {"config": dict, "model": state_dict}.

Padding channels are zeroed, never attended to (a masked key column, layers.py), quantized with weight 0
(no EMA statistics from them; their codes are reported as −1) and excluded from every loss and statistic, so
they cannot change the codes of real channels. Shapes stay static (no host syncs: tests/test_syncs.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from .config import TokenizerConfig
from .frontends import MultiScaleTemporalConv, TemporalConv
from .layers import PositionEmbedding, Transformer, init_weights_
from .rvq import ResidualVectorQuantizer
from .targets import fourier, from_fourier, patch_zscore, window_unzscore, window_zscore

__all__ = [
    "Reconstruction",
    "TokenizerOutput",
    "DDRVQTokenizer",
    "NeuroRVQTokenizer",
    "Tokenizer",
    "build_tokenizer",
    "load_tokenizer",
]


# --------------------------------------------------------------------------- results


@dataclass
class Reconstruction:
    predictions: dict[str, Tensor]  # name → [B, C, P, F], in target space
    targets: dict[str, Tensor] | None  # name → [B, C, P, F]
    waveform: Tensor | None  # [B, C, P, T] predicted waveform in input units (see tokenizer docs)
    valid: Tensor  # bool [B, C]


@dataclass
class TokenizerOutput:
    loss: Tensor  # 0-d, differentiable
    losses: dict[str, Tensor]  # named 0-d terms (detached), for logging
    codes: Tensor  # long [B, C, P, S, L]; −1 at padding channels
    usage: Tensor  # [S, L] fraction of each codebook used in this batch
    perplexity: Tensor  # [S, L]
    # predictions + targets (detached); waveform only for neurorvq (the DD-RVQ
    # family skips it while training; `reconstruct()` always fills it)
    reconstruction: Reconstruction = field(repr=False)


# --------------------------------------------------------------------------- helpers


class _Tokens:
    """The valid (non-padding) tokens of a batch, flattened as (b c p), as a 0/1 weight over all tokens.

    Static shapes: every token goes through the model (padding tokens are zeroed inputs) and padding is handled by
    weights and torch.where, never by a boolean selection, whose size the host would have to read (a sync)."""

    def __init__(self, valid: Tensor, patches: int) -> None:
        self.valid = valid  # [B, C]
        self.batch, self.channels = valid.shape
        self.patches = patches
        self.total = self.batch * self.channels * patches
        self.flat = repeat(valid, "b c -> (b c p)", p=patches)  # bool [B·C·P]
        self.weight = self.flat.float()

    def scatter(self, t: Tensor, fill: float | int = 0) -> Tensor:
        # [B·C·P, ...] with `fill` at padding tokens
        return torch.where(self.flat.reshape(-1, *[1] * (t.dim() - 1)), t, torch.full_like(t, fill))

    def unflatten(self, t: Tensor) -> Tensor:
        # [B·C·P, ...] → [B, C, P, ...]
        return t.reshape(self.batch, self.channels, self.patches, *t.shape[1:])


def _masked_mse(pred: Tensor, target: Tensor, tokens: _Tokens) -> Tensor:
    # pred/target [B, C, P, F] → mean over valid tokens and features (no valid token: 0, not NaN)
    f = pred.shape[-1]
    err = (pred.reshape(-1, f) - target.reshape(-1, f)).pow(2).sum(-1)
    return (err * tokens.weight).sum() / (tokens.weight.sum() * f).clamp_min(1.0)


def _mlp_head(dim_in: int, hidden: int, dim_out: int, act: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, hidden), act(), nn.Linear(hidden, dim_out))


# --------------------------------------------------------------------------- base


class _TokenizerBase(nn.Module):
    config: TokenizerConfig

    def _make_rvq(self) -> ResidualVectorQuantizer:
        c = self.config
        return ResidualVectorQuantizer(
            dim=c.code_dim,
            codebook_size=c.codebook_size,
            levels=c.levels,
            decay=c.decay,
            eps=c.eps,
            commitment_weight=c.commitment_weight,
            l2_normalize=c.l2_normalize,
            kmeans_init=c.kmeans_init,
            kmeans_iters=c.kmeans_iters,
            dead_code_threshold=c.dead_code_threshold,
        )

    def _check(self, x: Tensor, ch: Tensor) -> None:
        c = self.config
        if x.ndim != 4 or x.shape[-1] != c.patch_size:
            raise ValueError(f"x must be [B, C, P, {c.patch_size}], got {tuple(x.shape)}")
        if tuple(ch.shape) != tuple(x.shape[:2]):
            raise ValueError(f"ch must be [B, C] = {tuple(x.shape[:2])}, got {tuple(ch.shape)}")
        if x.shape[2] > c.max_patches:
            raise ValueError(f"{x.shape[2]} patches > max_patches={c.max_patches}")
        if not ch.numel():
            return
        if self.training and torch.is_grad_enabled():  # on the device: reading ch.max() would sync every step
            torch._assert_async(ch.max() < c.vocab_size, f"a channel id ≥ vocab_size={c.vocab_size}")
        elif int(ch.max()) >= c.vocab_size:
            raise ValueError(f"channel id {int(ch.max())} ≥ vocab_size={c.vocab_size}")

    def _prepare(self, x: Tensor, ch: Tensor) -> tuple[Tensor, _Tokens]:
        self._check(x, ch)
        valid = ch >= 0  # [B, C]
        x = x.masked_fill(~valid[:, :, None, None], 0.0)  # padding may hold anything (even NaN)
        return x, _Tokens(valid, x.shape[2])

    def _quantize(
        self, latents: dict[str, Tensor], tokens: _Tokens
    ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """latents name → [B·N, code_dim] → (quantized name → [B, N, code_dim], codes, usage, ppl, commit,
        terms)."""
        quantized, codes, usage, ppl, commits = {}, [], [], [], {}
        for name, z in latents.items():
            res = self.quantizers[name](z, tokens.weight)
            quantized[name] = rearrange(tokens.scatter(res.quantized), "(b n) d -> b n d", b=tokens.batch)
            codes.append(tokens.unflatten(tokens.scatter(res.codes, fill=-1)))  # [B, C, P, L]
            usage.append(res.usage)
            ppl.append(res.perplexity)
            commits[f"commit_{name}"] = res.commit_loss
        commit = torch.stack(list(commits.values())).sum()
        return quantized, torch.stack(codes, dim=3), torch.stack(usage), torch.stack(ppl), commit, commits

    def _dequantize(self, codes: Tensor, tokens: _Tokens) -> dict[str, Tensor]:
        """codes [B, C, P, S, L] → name → quantized [B, N, code_dim] (zeros at padding)."""
        flat = rearrange(codes, "b c p s l -> (b c p) s l")
        out = {}
        for i, name in enumerate(self.config.domains):
            q = self.quantizers[name].decode(flat[:, i].clamp_min(0))
            out[name] = rearrange(tokens.scatter(q), "(b n) d -> b n d", b=tokens.batch)
        return out

    # subclasses: _latents(x, ch, tokens) -> name → [B·N, code_dim]
    #             _decode(quantized, ch, tokens) -> name → [B, C, P, F]
    #             _loss(x, predictions, tokens, want_waveform) -> (terms, targets, waveform)

    @torch.no_grad()
    def encode(self, x: Tensor, ch: Tensor) -> Tensor:
        """x [B, C, P, T], ch [B, C] → codes long [B, C, P, S, L] (−1 at padding channels)."""
        x, tokens = self._prepare(x, ch)
        codes = [
            tokens.unflatten(tokens.scatter(self.quantizers[name].encode(z), fill=-1))
            for name, z in self._latents(x, ch, tokens).items()
        ]
        return torch.stack(codes, dim=3)

    def decode(self, codes: Tensor, ch: Tensor) -> dict[str, Tensor]:
        """codes [B, C, P, S, L], ch [B, C] → predictions name → [B, C, P, F] (target space)."""
        tokens = _Tokens(ch >= 0, codes.shape[2])
        return self._decode(self._dequantize(codes, tokens), ch, tokens)

    def forward(self, x: Tensor, ch: Tensor) -> TokenizerOutput:
        x, tokens = self._prepare(x, ch)
        latents = self._latents(x, ch, tokens)
        quantized, codes, usage, ppl, commit, commits = self._quantize(latents, tokens)
        predictions = self._decode(quantized, ch, tokens)
        terms, targets, waveform = self._loss(x, predictions, tokens, want_waveform=False)
        loss = commit + sum(self._weight(name) * value for name, value in terms.items())
        losses = {**terms, **commits, "commit": commit, "loss": loss}
        recon = Reconstruction(
            predictions={k: v.detach() for k, v in predictions.items()},
            targets=targets,
            waveform=None if waveform is None else waveform.detach(),
            valid=tokens.valid,
        )
        return TokenizerOutput(
            loss=loss,
            losses={k: v.detach() for k, v in losses.items()},
            codes=codes,
            usage=usage.detach(),
            perplexity=ppl.detach(),
            reconstruction=recon,
        )

    @torch.no_grad()
    def reconstruct(self, x: Tensor, ch: Tensor) -> Reconstruction:
        """Eval-mode round trip x → codes → predictions, with targets and the waveform."""
        was_training = self.training
        self.eval()
        try:
            x, tokens = self._prepare(x, ch)
            quantized = self._dequantize(self.encode(x, ch), tokens)
            predictions = self._decode(quantized, ch, tokens)
            _, targets, waveform = self._loss(x, predictions, tokens, want_waveform=True)
            return Reconstruction(predictions=predictions, targets=targets, waveform=waveform, valid=tokens.valid)
        finally:
            self.train(was_training)

    def _weight(self, term: str) -> float:
        c = self.config
        return {
            "time": c.time_weight,
            "amplitude": c.amplitude_weight,
            "phase": c.phase_weight,
            "signal": c.signal_weight,
        }[term]

    def to_checkpoint(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "model": self.state_dict()}


# --------------------------------------------------------------------------- DD-RVQ family


class _Decoder(nn.Module):
    """Quantized tokens [B, N, code_dim] → a small transformer → one MLP head per output."""

    def __init__(self, config: TokenizerConfig, outputs: dict[str, int]) -> None:
        super().__init__()
        c = config
        self.proj = nn.Linear(c.code_dim, c.decoder_dim)
        self.pos = PositionEmbedding(dim=c.decoder_dim, vocab_size=c.vocab_size, max_patches=c.max_patches)
        self.transformer = Transformer(
            dim=c.decoder_dim, depth=c.decoder_depth, heads=c.decoder_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias
        )
        self.heads = nn.ModuleDict({k: _mlp_head(c.decoder_dim, c.decoder_dim, n) for k, n in outputs.items()})

    def forward(self, q: Tensor, ch: Tensor, valid: Tensor, patches: int) -> dict[str, Tensor]:
        h = self.transformer(self.proj(q) + self.pos(ch, patches), valid, patches)  # [B, N, Dd]
        return {k: rearrange(head(h), "b (c p) f -> b c p f", p=patches) for k, head in self.heads.items()}


class DDRVQTokenizer(_TokenizerBase):
    """BrainRVQ's DD-RVQ and its single-branch relatives (ddrvq_time, ddrvq_freq, labram).

    encoder: per-patch TemporalConv → + channel/time embeddings → Transformer over
    all C×P tokens of a window → one (Linear, Tanh, Linear) head per domain →
    one RVQ per domain → one decoder per domain:
      time: z-scored waveform (per patch),            200 values
      freq: z-scored |rFFT| and angle(rFFT) (per window), 101 + 101 values
    loss = Σ_domains commitment + time_weight·mse_time + amplitude_weight·mse_amp
           + phase_weight·mse_phase (mean over valid tokens).
    (BrainRVQ's public code feeds one shared head to both RVQs; we give each
    domain its own head so the two latents can specialize. Cost: negligible.)

    ``reconstruct(...).waveform``: time branch → prediction × input patch std +
    input patch mean; freq-only variants → inverse rFFT of the un-z-scored
    amplitude and phase. Both use input statistics that are not in the codes.
    """

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        if config.variant == "neurorvq":
            raise ValueError("use NeuroRVQTokenizer for the neurorvq variant")
        self.config = c = config
        self.frontend = TemporalConv(patch_size=c.patch_size, embed_dim=c.embed_dim, channels=c.conv_channels)
        self.pos = PositionEmbedding(dim=c.embed_dim, vocab_size=c.vocab_size, max_patches=c.max_patches)
        self.encoder = Transformer(dim=c.embed_dim, depth=c.depth, heads=c.heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias)
        self.heads = nn.ModuleDict({d: _mlp_head(c.embed_dim, c.embed_dim, c.code_dim) for d in c.domains})
        self.quantizers = nn.ModuleDict({d: self._make_rvq() for d in c.domains})
        outputs = {"time": {"time": c.patch_size}, "freq": {"amplitude": c.n_bins, "phase": c.n_bins}}
        self.decoders = nn.ModuleDict({d: _Decoder(c, outputs[d]) for d in c.domains})
        init_weights_(self)
        self.encoder.rescale_residual_branches_()
        for dec in self.decoders.values():
            dec.transformer.rescale_residual_branches_()

    def _latents(self, x: Tensor, ch: Tensor, tokens: _Tokens) -> dict[str, Tensor]:
        b, c, p, _ = x.shape
        patches = self.frontend(rearrange(x, "b c p t -> (b c p) t"))  # [B·C·P, E]
        h = rearrange(patches, "(b n) e -> b n e", b=b) + self.pos(ch, p)  # [B, N, E]
        h = self.encoder(h, tokens.valid, p)  # [B, N, E]
        h = rearrange(h, "b n e -> (b n) e")  # [B·N, E]
        return {d: head(h) for d, head in self.heads.items()}  # name → [B·N, code_dim]

    def _decode(self, quantized: dict[str, Tensor], ch: Tensor, tokens: _Tokens) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for d, q in quantized.items():
            out.update(self.decoders[d](q, ch, tokens.valid, tokens.patches))
        return out

    def _loss(
        self, x: Tensor, predictions: dict[str, Tensor], tokens: _Tokens, *, want_waveform: bool
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor | None]:
        targets: dict[str, Tensor] = {}
        waveform = None
        if "time" in predictions:
            targets["time"], stats = patch_zscore(x)
            if want_waveform:
                waveform = predictions["time"] * stats.std + stats.mean
        if "amplitude" in predictions:
            amplitude, phase = fourier(x)
            targets["amplitude"], amp_stats = window_zscore(amplitude, tokens.valid)
            targets["phase"], phase_stats = window_zscore(phase, tokens.valid)
            if want_waveform and waveform is None:
                amp = window_unzscore(predictions["amplitude"], amp_stats).clamp_min(0)
                ang = window_unzscore(predictions["phase"], phase_stats)
                waveform = from_fourier(amp, ang.cos(), ang.sin(), x.shape[-1])
        terms = {k: _masked_mse(predictions[k], t, tokens) for k, t in targets.items()}
        if waveform is not None:
            waveform = waveform * tokens.valid[:, :, None, None]
        return terms, targets, waveform


# --------------------------------------------------------------------------- NeuroRVQ


class _NeuroDecoder(nn.Module):
    """Per-scale input projection → one shared transformer (scales batched) →
    concatenated features [B, N, S·Dd] → amplitude / sin / cos heads."""

    def __init__(self, config: TokenizerConfig, scales: int) -> None:
        super().__init__()
        c = config
        self.scales = scales
        self.proj = nn.ModuleList(nn.Linear(c.code_dim, c.decoder_dim) for _ in range(scales))
        self.pos = PositionEmbedding(dim=c.decoder_dim, vocab_size=c.vocab_size, max_patches=c.max_patches)
        self.transformer = Transformer(
            dim=c.decoder_dim, depth=c.decoder_depth, heads=c.decoder_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias
        )
        wide = scales * c.decoder_dim
        self.amplitude = _mlp_head(wide, c.decoder_dim, c.n_bins, act=nn.GELU)
        self.sin = nn.Sequential(_mlp_head(wide, c.decoder_dim, c.n_bins), nn.Tanh())
        self.cos = nn.Sequential(_mlp_head(wide, c.decoder_dim, c.n_bins), nn.Tanh())

    def forward(self, qs: list[Tensor], ch: Tensor, valid: Tensor, patches: int) -> dict[str, Tensor]:
        pos = self.pos(ch, patches)  # [B, N, Dd]
        h = torch.cat([proj(q) + pos for proj, q in zip(self.proj, qs)])  # [(S B), N, Dd]
        h = self.transformer(h, valid.repeat(self.scales, 1), patches)
        h = rearrange(h, "(s b) n d -> b n (s d)", s=self.scales)  # [B, N, S·Dd]
        return {
            name: rearrange(head(h), "b (c p) f -> b c p f", p=patches)
            for name, head in (("amplitude", self.amplitude), ("sin", self.sin), ("cos", self.cos))
        }


class NeuroRVQTokenizer(_TokenizerBase):
    """NeuroRVQ: four conv scales → one shared transformer (run on the scales as
    one [(S·B), N, E] batch) → per-scale head + RVQ → a shared decoder over all
    scales → log-amplitude, sin(phase), cos(phase); the waveform is rebuilt by
    inverse rFFT of expm1(amplitude)·(cos + i·sin).

    targets: log1p|rFFT| z-scored per window; sin/cos of the rFFT phase; the
    per-window z-scored waveform. loss = commitment + amplitude_weight·mse(amp)
    + phase_weight·[1 − cos-sim((cos,sin), target) + 0.1·mean((sin²+cos²−1)²)]
    + signal_weight·mse(z-scored rebuilt waveform, z-scored input).
    """

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        if config.variant != "neurorvq":
            raise ValueError("NeuroRVQTokenizer only builds the neurorvq variant")
        self.config = c = config
        self.frontend = MultiScaleTemporalConv(patch_size=c.patch_size, embed_dim=c.embed_dim, channels=c.conv_channels)
        self.pos = PositionEmbedding(dim=c.embed_dim, vocab_size=c.vocab_size, max_patches=c.max_patches)
        self.encoder = Transformer(dim=c.embed_dim, depth=c.depth, heads=c.heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias)
        self.heads = nn.ModuleDict({d: _mlp_head(c.embed_dim, c.embed_dim, c.code_dim) for d in c.domains})
        self.quantizers = nn.ModuleDict({d: self._make_rvq() for d in c.domains})
        self.decoder = _NeuroDecoder(c, c.n_domains)
        init_weights_(self)
        self.encoder.rescale_residual_branches_()
        self.decoder.transformer.rescale_residual_branches_()

    def _latents(self, x: Tensor, ch: Tensor, tokens: _Tokens) -> dict[str, Tensor]:
        b, c, p, _ = x.shape
        s = self.config.n_domains
        scales = self.frontend(rearrange(x, "b c p t -> (b c p) t"))  # [S, B·C·P, E]
        h = rearrange(scales, "s (b n) e -> s b n e", b=b) + self.pos(ch, p)  # [S, B, N, E]
        h = self.encoder(rearrange(h, "s b n e -> (s b) n e"), tokens.valid.repeat(s, 1), p)
        h = rearrange(h, "(s b) n e -> s (b n) e", s=s)
        return {d: head(h[i]) for i, (d, head) in enumerate(self.heads.items())}

    def _decode(self, quantized: dict[str, Tensor], ch: Tensor, tokens: _Tokens) -> dict[str, Tensor]:
        qs = [quantized[d] for d in self.config.domains]
        return self.decoder(qs, ch, tokens.valid, tokens.patches)

    def _loss(
        self, x: Tensor, predictions: dict[str, Tensor], tokens: _Tokens, *, want_waveform: bool
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor | None]:
        amplitude, phase = fourier(x)
        log_amp, amp_stats = window_zscore(torch.log1p(amplitude), tokens.valid)
        targets = {"amplitude": log_amp, "sin": phase.sin(), "cos": phase.cos()}
        targets["signal"], _ = window_zscore(x, tokens.valid)

        # clamp the log-amplitude so an early, wild prediction cannot overflow expm1
        amp = torch.expm1(window_unzscore(predictions["amplitude"], amp_stats).clamp(max=30.0))
        waveform = from_fourier(amp, predictions["cos"], predictions["sin"], x.shape[-1])  # [B, C, P, T]
        waveform = waveform * tokens.valid[:, :, None, None]
        signal, _ = window_zscore(waveform, tokens.valid)
        predictions["signal"] = signal

        f = targets["sin"].shape[-1]
        pred_cs = torch.stack([predictions[k].reshape(-1, f) for k in ("cos", "sin")], dim=-1)  # [B·C·P, F, 2]
        true_cs = torch.stack([targets[k].reshape(-1, f) for k in ("cos", "sin")], dim=-1)
        w = tokens.weight[:, None]  # means over the valid tokens' bins
        n = (tokens.weight.sum() * f).clamp_min(1.0)
        cosine = (F.cosine_similarity(pred_cs, true_cs, dim=-1) * w).sum() / n
        phase_loss = (1.0 - cosine) + 0.1 * ((pred_cs.square().sum(-1) - 1.0).square() * w).sum() / n
        terms = {
            "amplitude": _masked_mse(predictions["amplitude"], targets["amplitude"], tokens),
            "phase": phase_loss,
            "signal": _masked_mse(signal, targets["signal"], tokens),
        }
        return terms, targets, waveform


# --------------------------------------------------------------------------- factory

Tokenizer = DDRVQTokenizer | NeuroRVQTokenizer


def build_tokenizer(config: TokenizerConfig) -> DDRVQTokenizer | NeuroRVQTokenizer:
    return NeuroRVQTokenizer(config) if config.variant == "neurorvq" else DDRVQTokenizer(config)


def load_tokenizer(checkpoint: dict[str, Any], *, strict: bool = True) -> DDRVQTokenizer | NeuroRVQTokenizer:
    """Inverse of ``tokenizer.to_checkpoint()``."""
    model = build_tokenizer(TokenizerConfig.from_dict(checkpoint["config"]))
    model.load_state_dict(checkpoint["model"], strict=strict)
    return model
