"""Tokenizer training: Accelerate-managed, resumable, with metrics, held-out evaluation and plots.

Data parallelism: every process reads its contiguous slice of the same global batch (pipeline.data.windows),
DDP averages gradients and the quantizers all-reduce their EMA statistics, so N processes follow the
trajectory of one process at the same global batch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pipeline.config import TokenizerSection, tokenizer_job_settings
from pipeline.data.windows import WindowBatches, WindowIndex, cache_for, epoch_batches
from pipeline.eval import plots
from pipeline.eval.reconstruction import merge, reconstruction_metrics
from pipeline.models.config import TokenizerConfig
from pipeline.models.tokenizer import build_tokenizer
from pipeline.montage import load_vocabulary
from pipeline.store import model_file
from pipeline.store.atomic import write_text_atomic
from pipeline.store.zarr_store import open_shard
from pipeline.train.device import device_of, to_device, to_host
from pipeline.train.identity import shards_fingerprint
from pipeline.train.loop import fit, make_accelerator
from pipeline.train.steps import tokenizer_step

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


@torch.no_grad()
def evaluate(model, index: WindowIndex, *, n_windows: int, batch_size: int) -> tuple[dict, dict]:
    """Held-out metrics on the first `n_windows` windows (a fixed set), and arrays for plots."""
    rows = np.arange(min(n_windows, len(index)))
    data = WindowBatches(index, [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)])
    parts, sample = [], None
    device = device_of(model)
    for i in range(len(data)):
        batch = to_device(data[i], device)
        rec = model.reconstruct(batch["x"], batch["ch"])
        waveform = rec.waveform.float()  # under bf16 autocast the decoder's output is bf16
        parts.append(reconstruction_metrics(batch["x"], waveform, rec.valid))
        if sample is None:
            sample = {k: v.numpy() for k, v in to_host({"x": batch["x"], "w": waveform, "ch": batch["ch"]}).items()}
    return merge(parts), sample


def train_tokenizer(shard_dirs: Sequence[str | Path], out: str | Path, section: TokenizerSection,
                    *, stop_after: int | None = None) -> TrainResult:
    """Train (or resume) a tokenizer into `out`; `stop_after` ends early (tests of resumption)."""
    out = Path(out)
    tc = section.train
    accelerator = make_accelerator(tc)
    train_index = WindowIndex.from_shard_dirs(shard_dirs, splits=["train", "val"])
    heldout_index = WindowIndex.from_shard_dirs(shard_dirs, splits=[section.heldout_split])
    n_patches = open_shard(train_index.table["shard_path"][0]).x.shape[2]
    config = model_config(section, n_patches)
    model = build_tokenizer(config)
    state_extra = {"config": config.to_dict(), "section": tokenizer_job_settings(section),
                   "shards": [str(d) for d in shard_dirs],
                   # the inputs' content: a rebuilt shard folder at the same path is another run
                   "shards_fingerprint": shards_fingerprint(shard_dirs)}
    samples: dict = {}

    def make_data(epoch: int, first_step: int) -> WindowBatches:
        batches = epoch_batches(train_index, batch_size=tc.batch_size, seed=tc.seed, epoch=epoch,
                                buffer_chunks=tc.buffer_chunks, streams=tc.loader_streams)
        cache = cache_for(buffer_chunks=tc.buffer_chunks, streams=tc.loader_streams,
                          world_size=accelerator.num_processes)
        return WindowBatches(train_index, batches, rank=accelerator.process_index,
                             world_size=accelerator.num_processes, cache_chunks=cache, storage_dtypes=True)

    def run_eval(raw_model, step: int) -> dict:
        heldout, samples["last"] = evaluate(raw_model, heldout_index, n_windows=section.eval_windows,
                                            batch_size=tc.batch_size)
        return heldout

    result = fit(model, out, tc, accelerator, make_data=make_data, train_step=tokenizer_step, evaluate=run_eval,
                 state_extra=state_extra, stop_after=stop_after)
    if accelerator.is_main_process and result.step >= tc.max_steps:
        publish(accelerator.unwrap_model(model), out, result.records, result.evaluation, samples["last"],
                state_extra)
    accelerator.wait_for_everyone()
    return TrainResult(step=result.step, heldout=result.evaluation, out=out)


def publish(model, out: Path, records: list[dict], heldout: dict, sample: dict, state_extra: dict) -> None:
    """Final weights (safetensors, config inside), metrics.json and the plots."""
    fingerprint = model_file.publish(model, out, kind="tokenizer", config=state_extra["config"])
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
