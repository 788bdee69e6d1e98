"""Masked hierarchical code prediction: the BrainRVQ pretraining objective.

For every masked patch the model predicts the tokenizer's codes of each domain (time, frequency)
coarse to fine: level 0 from the encoder state h, level k from LayerNorm(h + Σ_{j<k} E_j[code_j]),
the embeddings of the codes of the levels below. In training the lower-level codes are the true ones
(teacher forcing); at inference they are the model's own argmax predictions. With
`hierarchical=False` every level is predicted from h alone (the paper's non-hierarchical ablation).

The symmetric second pass (LaBraM) encodes the same windows with the complementary mask, so every
valid patch is a prediction target once per step; both passes run as one batch of 2B windows.
The loss is Σ_domains Σ_levels w_level · CE over all masked tokens of both passes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from .backbone import Backbone, BackboneConfig
from .layers import init_weights_
from .linear_ce import linear_cross_entropy

__all__ = ["PretrainConfig", "CodeHeads", "PretrainModel", "PretrainOutput"]


@dataclass(frozen=True)
class PretrainConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    domains: tuple[str, ...] = ("time", "freq")  # must match the code stores' domains
    levels: int = 3
    codebook_size: int = 8192
    level_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    hierarchical: bool = True  # False: independent heads per level (ablation)
    symmetric: bool = True  # complementary-mask second pass

    def __post_init__(self) -> None:
        if len(self.level_weights) < self.levels:
            raise ValueError(f"level_weights {self.level_weights} must give a weight for each of {self.levels} levels")
        if not self.domains or self.levels < 1 or self.codebook_size < 2:
            raise ValueError("need at least one domain, one level and a codebook of ≥ 2 codes")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples → lists, as in the checkpoint metadata

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainConfig":
        d = dict(d)
        # a saved config without the time bias comes from a model trained before it existed: keep it off
        backbone = BackboneConfig.from_dict({"time_bias_max_slope": 0.0, **d.pop("backbone", {})})
        known = {f.name for f in dataclasses.fields(cls)}
        if set(d) - known:
            raise ValueError(f"unknown PretrainConfig keys: {sorted(set(d) - known)}")
        for key in ("domains", "level_weights"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(backbone=backbone, **d)


class CodeHeads(nn.Module):
    """h [M, D] (+ codes [M, S, L] for teacher forcing) → logits [S][L] of [M, K] and codes used [M, S, L].

    Logits stay a nested list: stacking them and indexing back would make autograd zero-fill the whole
    stack once per level in the backward pass (measured: a quarter of the step at base size).
    """

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__()
        dim, k = config.backbone.embed_dim, config.codebook_size
        self.n_domains, self.levels, self.hierarchical = len(config.domains), config.levels, config.hierarchical
        self.heads = nn.ModuleList(nn.Linear(dim, k) for _ in range(self.n_domains * self.levels))
        n_cond = self.n_domains * (self.levels - 1) if self.hierarchical else 0
        self.code_embed = nn.ModuleList(nn.Embedding(k, dim) for _ in range(n_cond))
        self.cond_norm = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in range(n_cond))

    def _input(self, s: int, lvl: int, h: Tensor, cond: Tensor) -> Tensor:
        """Level lvl's head input: h at level 0 (and everywhere when not hierarchical), else LN(h + Σ code embeddings)."""
        if lvl == 0 or not self.hierarchical:
            return h
        return self.cond_norm[s * (self.levels - 1) + lvl - 1](h + cond)

    def _condition(self, s: int, lvl: int, cond: Tensor, given: Tensor) -> Tensor:
        if self.hierarchical and lvl < self.levels - 1:
            return cond + self.code_embed[s * (self.levels - 1) + lvl](given)
        return cond

    def forward(self, h: Tensor, codes: Tensor | None = None) -> tuple[list[list[Tensor]], Tensor]:
        logits: list[list[Tensor]] = []
        used = []
        for s in range(self.n_domains):
            cond = torch.zeros_like(h)
            logits.append([])
            for lvl in range(self.levels):
                out = self.heads[s * self.levels + lvl](self._input(s, lvl, h, cond))
                logits[s].append(out)
                given = codes[:, s, lvl] if codes is not None else out.argmax(-1)
                used.append(given)
                cond = self._condition(s, lvl, cond, given)
        return logits, rearrange(torch.stack(used), "(s l) m -> m s l", s=self.n_domains)

    def score(self, h: Tensor, codes: Tensor, weight: Tensor | None = None) -> tuple[list[list[Tensor]], Tensor]:
        """Teacher-forced training objective without materializing logits: (summed cross-entropy [S][L] of 0-d
        differentiable tensors, argmax hits long [S, L]) over the rows of h against codes [M, S, L], rows weighted
        by weight [M] (0/1: the rows that are targets; default all)."""
        losses: list[list[Tensor]] = []
        hits = []
        for s in range(self.n_domains):
            cond = torch.zeros_like(h)
            losses.append([])
            for lvl in range(self.levels):
                head = self.heads[s * self.levels + lvl]
                loss, hit = linear_cross_entropy(self._input(s, lvl, h, cond), head.weight, head.bias, codes[:, s, lvl],
                                                 weight)
                losses[s].append(loss)
                hits.append(hit)
                cond = self._condition(s, lvl, cond, codes[:, s, lvl])
        return losses, torch.stack(hits).reshape(self.n_domains, self.levels)


@dataclass
class PretrainOutput:
    loss: Tensor  # 0-d, differentiable: Σ_domains Σ_levels w_level · mean CE over the scored tokens
    loss_sum: Tensor  # 0-d, differentiable: the same with summed (not averaged) CE, for exact data parallelism
    losses: dict[str, Tensor]  # per domain/level mean cross-entropy (0-d, detached, on the device), "loss" total
    accuracy: Tensor  # [S, L] teacher-forced token accuracy on the masked tokens
    n_targets: Tensor  # 0-d: masked tokens scored (both passes); a device tensor (reading it is a host sync)


class PretrainModel(nn.Module):
    def __init__(self, config: PretrainConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config.backbone)
        self.heads = CodeHeads(config)
        init_weights_(self.heads)

    def count_targets(self, ch: Tensor, mask: Tensor) -> Tensor:
        """Tokens scored for these windows: the masked valid patches, plus their complement when symmetric."""
        valid = (ch >= 0)[:, :, None].expand_as(mask)
        return valid.sum() if self.config.symmetric else (mask & valid).sum()

    def _targets(self, x: Tensor, ch: Tensor, codes: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encoder states [M, D], target codes [M, S, L] and target weights [M] (1 = scored) over the B·C·P tokens.

        Static shapes (no boolean selection: its size would be a host sync). Symmetric: each token's state comes
        from the pass that hid it (the masked pass where masked, the complementary pass elsewhere), so every valid
        token is scored once and M = B·C·P, as many rows as the selection had without padding."""
        valid = (ch >= 0)[:, :, None].expand_as(mask)
        mask = mask & valid
        tokens = self.backbone.embed(x)
        if self.config.symmetric:
            h = self.backbone.encode(torch.cat([tokens, tokens]), torch.cat([ch, ch]), x.shape[2],
                                     torch.cat([mask, valid & ~mask]))
            first, second = h.chunk(2)
            h, weight = torch.where(mask.flatten(1)[..., None], first, second), valid
        else:
            h, weight = self.backbone.encode(tokens, ch, x.shape[2], mask), mask
        target = rearrange(codes, "b c p s l -> (b c p) s l").long().clamp_min(0)  # −1 at padding: weight 0
        return h.reshape(-1, h.shape[-1]), target, weight.flatten()

    def forward(self, x: Tensor, ch: Tensor, codes: Tensor, mask: Tensor) -> PretrainOutput:
        """x [B, C, P, T], ch [B, C], codes [B, C, P, S, L] (−1 at padding), mask bool [B, C, P]."""
        h, target, weight = self._targets(x, ch, codes, mask)
        ce, hits = self.heads.score(h, target, weight)  # teacher forcing
        cfg = self.config
        n = weight.sum()
        denominator = n.clamp_min(1).float()  # nothing masked: 0, not NaN
        total = h.new_zeros((), dtype=torch.float32)
        losses: dict[str, Tensor] = {}
        for s, domain in enumerate(cfg.domains):
            for lvl in range(cfg.levels):
                total = total + cfg.level_weights[lvl] * ce[s][lvl]
                losses[f"{domain}_L{lvl}"] = ce[s][lvl].detach() / denominator
        losses["loss"] = total.detach() / denominator
        return PretrainOutput(loss=total / denominator, loss_sum=total, losses=losses,
                              accuracy=hits.float() / denominator, n_targets=n)

    @torch.no_grad()
    def predict(self, x: Tensor, ch: Tensor, codes: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Inference path: (predicted codes [M, S, L], target codes [M, S, L]) at the masked tokens,
        each level conditioned on the model's own predictions of the levels below."""
        h, target, weight = self._targets(x, ch, codes, mask)
        sel = weight  # evaluation: a boolean selection (a host sync) is fine here
        _, predicted = self.heads(h[sel], None)
        return predicted, target[sel]
