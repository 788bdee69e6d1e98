"""Tokenizer training: Accelerate-managed, resumable, with metrics, held-out evaluation and plots.

Data parallelism: every process reads its contiguous slice of the same global batch (pipeline.data.windows),
DDP averages gradients and the quantizers all-reduce their EMA statistics, so N processes follow the
trajectory of one process at the same global batch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file

from pipeline.config import TokenizerSection, to_dict
from pipeline.data.windows import WindowBatches, WindowIndex, epoch_batches
from pipeline.eval import plots
from pipeline.eval.reconstruction import merge, reconstruction_metrics
from pipeline.models.config import TokenizerConfig
from pipeline.models.tokenizer import build_tokenizer
from pipeline.montage import load_vocabulary
from pipeline.store.atomic import atomic_path, write_text_atomic
from pipeline.store.fingerprint import weights_fingerprint
from pipeline.store.zarr_store import open_shard
from pipeline.train.checkpoint import latest, load_checkpoint, save_checkpoint, state_tensors
from pipeline.train.metrics import MetricsLog
from pipeline.train.schedule import warmup_cosine

log = logging.getLogger(__name__)


def model_config(section: TokenizerSection, n_patches: int) -> TokenizerConfig:
    preset = TokenizerConfig.paper if section.size == "paper" else TokenizerConfig.demo
    overrides = {"vocab_size": len(load_vocabulary()), "max_patches": max(n_patches, 64), **dict(section.model)}
    return preset(section.variant, **overrides)


@dataclass
class TrainResult:
    step: int
    heldout: dict[str, float]
    out: Path


def _loader(dataset, num_workers: int, start: int):
    # Its own generator: a DataLoader otherwise draws its worker seed from the global RNG when an
    # iterator starts, which would shift the RNG stream of a resumed run (dead-code restarts use it).
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=range(start, len(dataset)),
                                       num_workers=num_workers, generator=torch.Generator().manual_seed(start))


@torch.no_grad()
def evaluate(model, index: WindowIndex, *, n_windows: int, batch_size: int) -> tuple[dict, dict]:
    """Held-out metrics on the first `n_windows` windows (a fixed set), and arrays for plots."""
    rows = np.arange(min(n_windows, len(index)))
    data = WindowBatches(index, [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)])
    parts, sample = [], None
    for i in range(len(data)):
        batch = data[i]
        rec = model.reconstruct(batch["x"], batch["ch"])
        parts.append(reconstruction_metrics(batch["x"], rec.waveform, rec.valid))
        if sample is None:
            sample = {"x": batch["x"].numpy(), "w": rec.waveform.numpy(), "ch": batch["ch"].numpy()}
    return merge(parts), sample


def train_tokenizer(shard_dirs: Sequence[str | Path], out: str | Path, section: TokenizerSection,
                    *, stop_after: int | None = None) -> TrainResult:
    """Train (or resume) a tokenizer into `out`; `stop_after` ends early (tests of resumption)."""
    out = Path(out)
    tc = section.train
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(tc.seed)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True)
    train_index = WindowIndex.from_shard_dirs(shard_dirs, splits=["train", "val"])
    heldout_index = WindowIndex.from_shard_dirs(shard_dirs, splits=[section.heldout_split])
    n_patches = open_shard(train_index.table["shard_path"][0]).x.shape[2]
    config = model_config(section, n_patches)
    model = build_tokenizer(config)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embed" in name else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=(0.9, 0.99))
    scheduler = warmup_cosine(optimizer, warmup_steps=tc.warmup_steps, total_steps=tc.max_steps,
                              min_ratio=tc.min_lr_ratio)

    ckpt_root = out / "checkpoints"
    step, epoch, batch_in_epoch = 0, 0, 0
    resume = latest(ckpt_root)
    if resume is not None:
        state = load_checkpoint(resume, model=model, optimizer=optimizer, scheduler=scheduler)
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        log.info("resumed from %s (step %d)", resume, step)
    metrics = MetricsLog(out / "metrics.jsonl", resume_from_step=step if resume else None)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    state_extra = {"config": config.to_dict(), "section": to_dict(section), "shards": [str(d) for d in shard_dirs]}

    def checkpoint():
        if accelerator.is_main_process:
            save_checkpoint(ckpt_root, step=step, model=raw_model, optimizer=optimizer, scheduler=scheduler,
                            state={"epoch": epoch, "batch_in_epoch": batch_in_epoch, **state_extra})
        accelerator.wait_for_everyone()

    t_last, patches_since = time.perf_counter(), 0
    while step < tc.max_steps and (stop_after is None or step < stop_after):
        batches = epoch_batches(train_index, batch_size=tc.batch_size, seed=tc.seed, epoch=epoch,
                                buffer_chunks=tc.buffer_chunks)
        if not batches:
            raise ValueError(f"fewer training windows ({len(train_index)}) than one batch ({tc.batch_size})")
        data = WindowBatches(train_index, batches, rank=accelerator.process_index,
                             world_size=accelerator.num_processes)
        for batch in _loader(data, tc.num_workers, batch_in_epoch):
            model.train()
            with accelerator.autocast():
                result = model(batch["x"].to(accelerator.device), batch["ch"].to(accelerator.device))
            accelerator.backward(result.loss)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            batch_in_epoch += 1
            patches_since += int(batch["x"].shape[0] * batch["x"].shape[1] * batch["x"].shape[2]) * accelerator.num_processes
            if accelerator.is_main_process and (step % tc.log_every == 0 or step == 1):
                now = time.perf_counter()
                metrics.write({"kind": "train", "step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                               "losses": {k: float(v) for k, v in result.losses.items()},
                               "grad_norm": float(grad_norm), "usage": result.usage, "perplexity": result.perplexity,
                               "patches_per_s": patches_since / max(now - t_last, 1e-9)})
                t_last, patches_since = now, 0
            if step % tc.eval_every == 0 and accelerator.is_main_process:
                heldout, _ = evaluate(raw_model, heldout_index, n_windows=section.eval_windows, batch_size=tc.batch_size)
                metrics.write({"kind": "heldout", "step": step, **heldout})
            if step % tc.checkpoint_every == 0:
                checkpoint()
            if step >= tc.max_steps or (stop_after is not None and step >= stop_after):
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    checkpoint()
    heldout: dict = {}
    if accelerator.is_main_process and step >= tc.max_steps:
        heldout, sample = evaluate(raw_model, heldout_index, n_windows=section.eval_windows, batch_size=tc.batch_size)
        metrics.write({"kind": "heldout", "step": step, **heldout})
        publish(raw_model, out, metrics.read(), heldout, sample, state_extra)
    accelerator.wait_for_everyone()
    return TrainResult(step=step, heldout=heldout, out=out)


def publish(model, out: Path, records: list[dict], heldout: dict, sample: dict, state_extra: dict) -> None:
    """Final weights (safetensors, config inside), metrics.json and the plots."""
    tensors = state_tensors(model)
    fingerprint = weights_fingerprint(state_extra["config"], tensors)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"config": json.dumps(state_extra["config"]), "fingerprint": fingerprint})
    write_text_atomic(out / "metrics.json", json.dumps({"heldout": heldout, "fingerprint": fingerprint,
                                                        "steps": records[-1]["step"] if records else 0,
                                                        **state_extra}, indent=2))
    plots.plot_losses(records, out / "loss.png", title="tokenizer training loss per term")
    plots.plot_codebook_usage(records, out / "codebook_usage.png", list(model.config.domains))
    vocab = load_vocabulary()
    x, w, ch = sample["x"], sample["w"], sample["ch"]
    n_b, n_c, n_p = x.shape[:3]
    picks = [(b, c, p) for b, c, p in ((0, 0, n_p // 10), (0, n_c // 2, n_p // 3), (n_b - 1, n_c - 1, 2 * n_p // 3))
             if ch[b, c] >= 0]
    plots.plot_reconstructions(np.stack([x[b, c, p] for b, c, p in picks]), np.stack([w[b, c, p] for b, c, p in picks]),
                               [f"{vocab.name_of(int(ch[b, c]))} patch {p}" for b, c, p in picks],
                               out / "reconstructions.png",
                               title=f"held-out reconstructions (NMSE {heldout['nmse']:.3f}, r {heldout['pearson']:.3f})")
