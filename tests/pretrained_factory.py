"""Small untrained pretraining models saved as pipeline.train.pretrain.publish writes them (embed's tests)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline.models.backbone import BackboneConfig
from pipeline.models.pretrain import PretrainConfig, PretrainModel
from pipeline.montage import load_vocabulary
from pipeline.store.fingerprint import weights_fingerprint
from pipeline.train.checkpoint import state_tensors

EMBED_DIM = 32


def save_pretrained(model: PretrainModel, path: Path) -> str:
    """model.safetensors as pipeline.train.pretrain.publish writes it; returns the fingerprint."""
    tensors = state_tensors(model)
    config = model.config.to_dict()
    fingerprint = weights_fingerprint(config, tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"config": json.dumps(config), "fingerprint": fingerprint,
                                            "kind": "pretrain", "tokenizer_fingerprint": "untrained-test"})
    return fingerprint


def untrained_model(seed: int = 0) -> PretrainModel:
    torch.manual_seed(seed)
    backbone = BackboneConfig.demo(vocab_size=len(load_vocabulary()), embed_dim=EMBED_DIM, depth=1, heads=4)
    return PretrainModel(PretrainConfig(backbone=backbone, codebook_size=16))
