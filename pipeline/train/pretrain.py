"""Pretraining: masked hierarchical code prediction on cached codes, with curriculum masking.

Reads the shards' signals (model input) and the extract-codes stores (targets); never runs the tokenizer.
Masks are drawn in the data loader, one generator per window seeded by (seed, epoch, window), so a window's
mask does not depend on which process or batch slice it lands in: N processes see exactly what one sees.
The curriculum's progress is the global step over max_steps.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from torch.utils.data import Dataset

from pipeline.config import MaskConfig, PretrainSection, pretrain_job_settings
from pipeline.data.windows import WindowBatches, WindowIndex, cache_for, epoch_batches, recording_hashes
from pipeline.eval import plots
from pipeline.models.backbone import BackboneConfig
from pipeline.models.pretrain import PretrainConfig, PretrainModel
from pipeline.montage import load_vocabulary
from pipeline.store import model_file
from pipeline.store.atomic import write_text_atomic
from pipeline.store.zarr_store import open_shard
from pipeline.train.device import device_of, to_device, to_host
from pipeline.train.identity import codes_fingerprint, shards_fingerprint
from pipeline.train.loop import fit, make_accelerator
from pipeline.train.steps import pretrain_step
from pipeline.train.masking import sample_mask

log = logging.getLogger(__name__)

FIELDS = ("x", "ch", "importance", "codes")
EVAL_EPOCH = 2**31 - 1  # seed namespace of the fixed held-out masks (never a training epoch)


class CodeStoreMismatch(ValueError):
    """Code stores that do not belong together (or to the expected tokenizer); the message says which."""


@dataclass(frozen=True)
class CodeMeta:
    fingerprint: str
    domains: tuple[str, ...]
    levels: int
    codebook_size: int


def check_code_stores(shard_dirs: Sequence[Path], codes_dirs: Sequence[Path], *,
                      expect_fingerprint: str | None = None) -> CodeMeta:
    """All code folders come from one tokenizer (the expected one, if given) and cover their shards."""
    metas = []
    for shards, codes in zip(shard_dirs, codes_dirs):
        stamp = Path(codes) / "fingerprint.json"
        if not stamp.is_file():
            raise CodeStoreMismatch(f"{codes}: not a code store (no fingerprint.json; run extract-codes)")
        meta = json.loads(stamp.read_text())
        missing = sorted(set(_shard_names(shards)) - set(_shard_names(codes)))
        if missing:
            raise CodeStoreMismatch(f"{codes}: no codes for {len(missing)} shard(s) of {shards}, e.g. {missing[0]}")
        metas.append((codes, meta))
    fingerprints = {m["fingerprint"] for _, m in metas}
    if len(fingerprints) > 1:
        listing = "; ".join(f"{c}: {m['fingerprint'][:12]}" for c, m in metas)
        raise CodeStoreMismatch(f"code stores come from different tokenizers: {listing}")
    codes0, meta = metas[0]
    if expect_fingerprint is not None and meta["fingerprint"] != expect_fingerprint:
        raise CodeStoreMismatch(
            f"{codes0}: codes were made by tokenizer {meta['fingerprint'][:12]}, but this run's tokenizer is "
            f"{expect_fingerprint[:12]}; point `pretrain.codes` at a store made by this tokenizer, or set it to "
            "null to extract codes here")
    for key in ("domains", "levels", "codebook_size"):
        if key not in meta:
            raise CodeStoreMismatch(f"{codes0}/fingerprint.json: no '{key}' (written by an older extract-codes)")
    return CodeMeta(meta["fingerprint"], tuple(meta["domains"]), int(meta["levels"]), int(meta["codebook_size"]))


def _shard_names(folder: Path) -> list[str]:
    import polars as pl

    return pl.read_parquet(Path(folder) / "index.parquet")["shard"].unique().to_list()


def model_config(section: PretrainSection, n_patches: int, codes: CodeMeta) -> PretrainConfig:
    overrides = dict(section.model)
    backbone_overrides = {"vocab_size": len(load_vocabulary()), "max_patches": max(n_patches, 64),
                          **dict(overrides.pop("backbone", {}))}
    backbone = (BackboneConfig.base if section.size == "base" else BackboneConfig.demo)(**backbone_overrides)
    for key in ("level_weights", "domains"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    return PretrainConfig(backbone=backbone, domains=codes.domains, levels=codes.levels,
                          codebook_size=codes.codebook_size, **overrides)


def window_generator(seed: int, epoch: int, window: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, window]).generate_state(1)[0]))


class MaskedBatches(Dataset):
    """WindowBatches plus a `mask` bool [B, C, P] drawn per window (see the module docstring)."""

    def __init__(self, data: WindowBatches, mask: MaskConfig, *, seed: int, epoch: int, first_step: int,
                 total_steps: int) -> None:
        self.data, self.mask = data, mask
        self.seed, self.epoch, self.first_step, self.total_steps = seed, epoch, first_step, total_steps

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        batch = self.data[i]
        progress = (self.first_step + i) / max(1, self.total_steps)
        batch["mask"] = draw_masks(batch, self.mask, progress, lambda w: window_generator(self.seed, self.epoch, w))
        return batch


def draw_masks(batch: dict, cfg: MaskConfig, progress: float, generator_of) -> torch.Tensor:
    valid = batch["ch"] >= 0
    return torch.cat([
        sample_mask(batch["importance"][b:b + 1], valid[b:b + 1], cfg, progress, generator_of(int(w)))
        for b, w in enumerate(batch["window"])
    ])


@torch.no_grad()
def evaluate(model: PretrainModel, index: WindowIndex, cfg: MaskConfig, *, n_windows: int, batch_size: int,
             seed: int) -> dict:
    """Held-out token accuracy per domain and level: teacher-forced, inference (own predictions for the levels
    below) and the majority-code baseline, on a fixed set of windows with fixed masks (progress = 1)."""
    model.eval()
    rows = np.arange(min(n_windows, len(index)))
    data = WindowBatches(index, [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)], fields=FIELDS)
    domains, levels = model.config.domains, model.config.levels
    hits_tf = np.zeros((len(domains), levels))
    hits_inf = np.zeros((len(domains), levels))
    targets, loss_sum, n = [], 0.0, 0
    device = device_of(model)
    for i in range(len(data)):
        batch = data[i]
        batch["mask"] = draw_masks(batch, cfg, 1.0, lambda w: window_generator(seed, EVAL_EPOCH, w))
        b = to_device(batch, device)
        out = model(b["x"], b["ch"], b["codes"], b["mask"])
        predicted, target = model.predict(b["x"], b["ch"], b["codes"], b["mask"])
        accuracy, hits, target, loss, count = to_host((out.accuracy, (predicted == target).sum(0), target,
                                                       out.losses["loss"], out.n_targets))
        count = int(count)
        hits_tf += accuracy.double().numpy() * count
        hits_inf += hits.numpy()
        loss_sum += float(loss) * count
        n += count
        targets.append(target.numpy())
    model.train()
    if n == 0:
        return {"tokens": 0}
    target = np.concatenate(targets)
    majority = np.array([[np.bincount(target[:, s, lvl]).max() / len(target) for lvl in range(levels)]
                         for s in range(len(domains))])

    def per_domain(a: np.ndarray) -> dict[str, list[float]]:
        return {d: [float(v) for v in a[s]] for s, d in enumerate(domains)}

    return {"tokens": n, "loss": loss_sum / n, "accuracy": per_domain(hits_tf / n),
            "accuracy_inference": per_domain(hits_inf / n), "majority": per_domain(majority)}


@dataclass
class PretrainResult:
    step: int
    heldout: dict
    out: Path


def pretrain(shard_dirs: Sequence[str | Path], codes_dirs: Sequence[str | Path], out: str | Path,
             section: PretrainSection, *, expect_fingerprint: str | None = None,
             stop_after: int | None = None) -> PretrainResult:
    """Pretrain (or resume) into `out`; `codes_dirs[i]` are the code stores of `shard_dirs[i]`."""
    out = Path(out)
    shard_dirs, codes_dirs = [Path(d) for d in shard_dirs], [Path(d) for d in codes_dirs]
    tc = section.train
    codes = check_code_stores(shard_dirs, codes_dirs, expect_fingerprint=expect_fingerprint)
    accelerator = make_accelerator(tc)
    train_index = WindowIndex.from_shard_dirs(shard_dirs, splits=["train", "val"], codes_dirs=codes_dirs)
    heldout_index = WindowIndex.from_shard_dirs(shard_dirs, splits=[section.heldout_split], codes_dirs=codes_dirs)
    n_patches = open_shard(train_index.table["shard_path"][0]).x.shape[2]
    config = model_config(section, n_patches, codes)
    model = PretrainModel(config)
    # The recordings trained on, by content hash: fine-tuning's leakage guard checks test splits against them.
    # read by the main process only (every shard's attributes) and broadcast: N ranks do not each open every shard
    corpus = [[{"content_sha256": h, "recording": r} for h, r in recording_hashes(train_index).items()]
              if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(corpus)
    corpus = corpus[0]
    state_extra = {"config": config.to_dict(), "section": pretrain_job_settings(section),
                   "tokenizer_fingerprint": codes.fingerprint,
                   "shards": [str(d) for d in shard_dirs], "codes": [str(d) for d in codes_dirs], "corpus": corpus,
                   # the inputs' content: rebuilt shards or codes at the same paths are another run
                   "shards_fingerprint": shards_fingerprint(shard_dirs), "codes_fingerprint": codes_fingerprint(codes_dirs)}
    log.info("pretraining %s: %.1fM parameters, %d training windows, %d process(es) on %s",
             section.name, sum(p.numel() for p in model.parameters()) / 1e6, len(train_index),
             accelerator.num_processes, accelerator.device)

    def make_data(epoch: int, first_step: int) -> MaskedBatches:
        batches = epoch_batches(train_index, batch_size=tc.batch_size, seed=tc.seed, epoch=epoch,
                                buffer_chunks=tc.buffer_chunks, streams=tc.loader_streams)
        cache = cache_for(buffer_chunks=tc.buffer_chunks, streams=tc.loader_streams,
                          world_size=accelerator.num_processes)
        data = WindowBatches(train_index, batches, rank=accelerator.process_index,
                             world_size=accelerator.num_processes, fields=FIELDS, cache_chunks=cache,
                             storage_dtypes=True)
        return MaskedBatches(data, section.mask, seed=tc.seed, epoch=epoch, first_step=first_step,
                             total_steps=tc.max_steps)

    def run_eval(raw_model, step: int) -> dict:
        return evaluate(raw_model, heldout_index, section.mask, n_windows=section.eval_windows,
                        batch_size=tc.batch_size, seed=tc.seed)

    result = fit(model, out, tc, accelerator, make_data=make_data, train_step=pretrain_step, evaluate=run_eval,
                 count=lambda b: model.count_targets(b["ch"], b["mask"]), state_extra=state_extra,
                 stop_after=stop_after)
    if accelerator.is_main_process and result.step >= tc.max_steps:
        publish(accelerator.unwrap_model(model), out, result.records, result.evaluation, state_extra)
    accelerator.wait_for_everyone()
    return PretrainResult(step=result.step, heldout=result.evaluation, out=out)


def publish(model: PretrainModel, out: Path, records: list[dict], heldout: dict, state_extra: dict) -> None:
    """model.safetensors (config, fingerprint and tokenizer fingerprint in its metadata), metrics.json, plots."""
    fingerprint = model_file.publish(model, out, kind="pretrain", config=state_extra["config"],
                                     extra={"tokenizer_fingerprint": state_extra["tokenizer_fingerprint"]})
    write_text_atomic(out / "metrics.json", json.dumps({"heldout": heldout, "fingerprint": fingerprint,
                                                        "steps": records[-1]["step"] if records else 0,
                                                        **state_extra}, indent=2))
    plots.plot_losses(records, out / "loss.png", title="pretraining cross-entropy per domain and level")
    plots.plot_level_accuracy(records, out / "accuracy.png", list(model.config.domains))


def load_pretrained_folder(folder: str | Path) -> tuple[PretrainModel, dict]:
    """(model, safetensors metadata) from <folder>/model.safetensors (or a .safetensors path), checked
    (pipeline.store.model_file: kind, config, shapes, fingerprint)."""
    model, info = model_file.load(folder, "pretrain")
    return model, info.metadata

