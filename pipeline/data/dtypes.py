"""The batch dtypes the models compute with, apart from the loaders (torch only: the GPU check imports it without the
data libraries)."""

from __future__ import annotations

import torch


def to_compute_dtypes(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """x → float32, ch and codes → long (the models' dtypes); other entries as they are. Idempotent: applied on
    the device to batches that crossed in their storage dtypes."""
    casts = {"x": torch.float32, "ch": torch.long, "codes": torch.long}
    return {k: v.to(casts[k]) if k in casts and isinstance(v, torch.Tensor) else v for k, v in batch.items()}
