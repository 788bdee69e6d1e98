"""No host sync inside a non-logging training step (pipeline.train.syncs.HostSyncCounter), for the three training
stages' steps as fit() runs them (pipeline.train.loop.optimizer_step), on batches of the real demo EEG."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from pipeline.config import MaskConfig, TrainConfig
from pipeline.data.windows import WindowBatches, WindowIndex, epoch_batches
from pipeline.models.backbone import Backbone, BackboneConfig
from pipeline.models.classifier import Classifier
from pipeline.models.config import TokenizerConfig
from pipeline.models.pretrain import PretrainConfig, PretrainModel
from pipeline.models.tokenizer import build_tokenizer
from pipeline.montage import load_vocabulary
from pipeline.train.finetune import classification_step
from pipeline.train.loop import adamw, make_accelerator, optimizer_step
from pipeline.train.pretrain import draw_masks, window_generator
from pipeline.train.schedule import warmup_cosine
from pipeline.train.steps import pretrain_step, tokenizer_step
from pipeline.train.syncs import HostSyncCounter


@pytest.fixture(scope="module")
def eeg_batches(demo_shards) -> list[dict]:
    """Three 4-window batches of the demo EEG (10 s windows; the PhysioNet recording has padding channels)."""
    index = WindowIndex.from_shard_dirs(demo_shards, splits=["train"])
    data = WindowBatches(index, epoch_batches(index, batch_size=4, seed=0, epoch=0), fields=("x", "ch", "importance"))
    return [data[i] for i in range(3)]


def _steps(model, tc: TrainConfig, batches: list[dict], step, count=None) -> list[list[tuple[str, str]]]:
    """Host syncs of each optimizer step, as fit() runs it."""
    accelerator = make_accelerator(tc)
    optimizer = adamw(model, tc)
    scheduler = warmup_cosine(optimizer, warmup_steps=2, total_steps=10, min_ratio=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    out = []
    for batch in batches:
        with HostSyncCounter() as counter:
            optimizer_step(model, optimizer, scheduler, accelerator, tc, batch, step, count=count)
        out.append(counter.syncs)
    return out


def test_pretraining_step_makes_no_host_sync(eeg_batches):
    torch.manual_seed(0)
    backbone = BackboneConfig.demo(vocab_size=len(load_vocabulary()), embed_dim=32, depth=2, heads=4)
    model = PretrainModel(PretrainConfig(backbone=backbone, codebook_size=64))
    batches = []
    for b in eeg_batches:
        g = torch.Generator().manual_seed(int(b["window"][0]))
        b = {**b, "codes": torch.randint(0, 64, (*b["x"].shape[:3], 2, 3), generator=g)}
        b["mask"] = draw_masks(b, MaskConfig(), 0.5, lambda w: window_generator(0, 0, w))
        batches.append(b)
    syncs = _steps(model, TrainConfig(batch_size=4, micro_batch=2), batches, pretrain_step,
                   count=lambda b: model.count_targets(b["ch"], b["mask"]))
    assert syncs == [[], [], []]


def test_tokenizer_step_makes_no_host_sync_after_the_codebook_init(eeg_batches):
    """The first step's k-means init may read the data once; every later step (EMA, dead-code restarts) none."""
    torch.manual_seed(0)
    config = TokenizerConfig.demo("ddrvq", vocab_size=len(load_vocabulary()), max_patches=64, codebook_size=64,
                                  dead_code_threshold=2.0)
    syncs = _steps(build_tokenizer(config), TrainConfig(batch_size=4), eeg_batches, tokenizer_step)
    assert syncs[1:] == [[], []]


def test_finetuning_step_makes_no_host_sync(eeg_batches):
    torch.manual_seed(0)
    backbone = Backbone(BackboneConfig.demo(vocab_size=len(load_vocabulary()), embed_dim=32, depth=2, heads=4))
    model = Classifier(backbone, 3)
    batches = [{**b, "y": torch.as_tensor(np.arange(len(b["window"])) % 3)} for b in eeg_batches]
    step = functools.partial(classification_step, task="multiclass", class_weight=torch.tensor([1.0, 2.0, 1.0]),
                             label_smoothing=0.1)
    assert _steps(model, TrainConfig(batch_size=4), batches, step) == [[], [], []]
