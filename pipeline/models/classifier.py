"""Downstream classifier: the pretrained (or freshly initialised) backbone, mean-pooled over valid tokens, and a
linear head. Layer-wise learning-rate decay groups for fine-tuning (BEiT/LaBraM practice)."""

from __future__ import annotations

from torch import Tensor, nn

from .backbone import Backbone

__all__ = ["Classifier", "freeze_report", "layer_decay_groups", "pool_valid"]


def pool_valid(tokens: Tensor, ch: Tensor) -> Tensor:
    """Mean over the tokens of valid channels. tokens [B, C·P, D], ch [B, C] → [B, D]."""
    b, n, _ = tokens.shape
    weights = (ch >= 0).repeat_interleave(n // ch.shape[1], dim=1).to(tokens.dtype)  # [B, C·P], channel-major
    return (tokens * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp_min(1.0)


class Classifier(nn.Module):
    def __init__(self, backbone: Backbone, n_outputs: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        dim = backbone.config.embed_dim
        self.backbone = backbone
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, n_outputs)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def features(self, x: Tensor, ch: Tensor) -> Tensor:
        return self.fc_norm(pool_valid(self.backbone(x, ch), ch))

    def forward(self, x: Tensor, ch: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x, ch)))


def layer_decay_groups(model: Classifier, *, lr: float, weight_decay: float, layer_decay: float,
                       probe: bool = False) -> list[dict]:
    """AdamW parameter groups: layer l of L gets lr · decay^(L + 1 − l); embeddings are layer 0, the head L + 1.
    With `probe`, only the head (and its norm) train: the backbone is frozen."""
    depth = len(model.backbone.encoder.blocks)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if probe and name.startswith("backbone."):
            p.requires_grad_(False)
            continue
        if name.startswith("backbone.encoder.blocks."):
            layer = int(name.split(".")[3]) + 1
        elif name.startswith("backbone.encoder.norm") or not name.startswith("backbone."):
            layer = depth + 1
        else:  # patch embedding, positions, mask token
            layer = 0
        no_decay = p.ndim < 2 or "embed" in name or "token" in name
        key = (layer, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": lr * layer_decay ** (depth + 1 - layer),
                           "weight_decay": 0.0 if no_decay else weight_decay}
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def freeze_report(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total

