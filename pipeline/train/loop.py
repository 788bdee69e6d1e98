"""The training loop every torch stage shares: Accelerate, AdamW + warm-up/cosine, clipping, gradient
accumulation, checkpoints that resume exactly, JSON-lines metrics, periodic held-out evaluation.

What differs between stages is passed in: how an epoch's data is built (`make_data`), how a batch becomes a
loss (`train_step`), what is evaluated (`evaluate`) and what is published at the end (`publish`).

Determinism contract (tested for the tokenizer and pretraining): the data order is a pure function of
(seed, epoch), the DataLoader has its own generator, and a checkpoint stores step, epoch and the batch within
the epoch plus the RNG state, so a resumed run replays exactly the batches an uninterrupted run would see.
Gradient accumulation splits each global batch into micro-batches: it trades memory for time and
leaves the batch order, and therefore the run, unchanged. `micro_batch` sizes them per device (windows per forward);
`batch_size` stays the global batch of one optimizer step, so the learning rate belongs to `batch_size` alone: it does
not change with the number of processes or micro-batches (the loss is the global batch's mean), and a different
`batch_size` needs its own lr (the usual rule: scale it linearly with the batch, e.g. ×8 for 8× the windows).

No host syncs between optimizer steps (tested with pipeline.train.syncs.HostSyncCounter): losses, accuracies and
counts stay device tensors in the step's record, read by the host only on a log step (`host_record`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from torch.utils.data import Dataset

from pipeline.config import TrainConfig
from pipeline.data.dtypes import to_compute_dtypes
from pipeline.progress import Progress
from pipeline.train.allocator import keep_freed_memory
from pipeline.train.checkpoint import latest, load_checkpoint, rng_state, save_checkpoint
from pipeline.train.device import place, to_device, to_host
from pipeline.train.metrics import MetricsLog
from pipeline.train.schedule import warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    # differentiable: the batch's mean loss, or — when fit() is given `count` — its SUM over the counted items
    loss: torch.Tensor
    record: dict[str, Any]  # JSON-able numbers for metrics.jsonl; a "losses" dict (means) is averaged


@dataclass
class FitResult:
    step: int
    records: list[dict]
    evaluation: dict = field(default_factory=dict)  # the final held-out evaluation (main process)


def make_accelerator(tc: TrainConfig) -> Accelerator:
    # TF32 tensor cores for fp32 matmuls and convolutions on CUDA (≈8× the fp32 rate on an H100/H200, 10-bit
    # mantissa products, fp32 accumulation); bit-reproducible runs keep full fp32
    torch.backends.cuda.matmul.allow_tf32 = not tc.deterministic
    torch.backends.cudnn.allow_tf32 = not tc.deterministic
    if tc.deterministic:
        # deterministic cuBLAS matmuls need a fixed workspace, set before CUDA initializes (else they raise)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, cpu=not torch.cuda.is_available())
    if accelerator.device.type == "cpu":
        keep_freed_memory()
        if tc.mixed_precision == "bf16" and not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
            # measured at base size on such a CPU: 3× slower matmuls than fp32 (bf16 is emulated)
            log.warning("mixed_precision bf16 on a CPU without native bf16 (avx512_bf16/AMX) is slower than fp32; "
                        "set train.mixed_precision: 'no' for CPU runs")
    set_seed(tc.seed)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True)
    return accelerator


def adamw(model: torch.nn.Module, tc: TrainConfig, *, param_groups: list[dict] | None = None) -> torch.optim.AdamW:
    """AdamW without weight decay on biases, norms and embeddings (BEiT/LaBraM practice)."""
    if param_groups is None:
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "embed" in name or "token" in name else decay).append(p)
        param_groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for all parameters (on CUDA the foreach default launches several per group), with the step
    # counters on the device: the foreach/for-loop paths read them with .item() (no sync while they are CPU
    # scalars, but the fused path needs neither). CPU and CUDA both have the fused kernel.
    return torch.optim.AdamW(param_groups, lr=tc.lr, betas=(0.9, 0.99), fused=True)


def compile_blocks(model: torch.nn.Module, *, backend: str = "inductor") -> int:
    """torch.compile every transformer block in place (each block's ops fused, its launches cut); the attention
    inputs are built outside the blocks, so one compiled graph serves every block of a shape, and a block compiles
    as one graph (fullgraph: a graph break raises instead of silently splitting it). → blocks compiled."""
    from pipeline.models.layers import Block

    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for block in blocks:
        block.compile(backend=backend, fullgraph=True, dynamic=False)
    return len(blocks)


def make_loader(dataset: Dataset, num_workers: int, start: int, *,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    # Its own generator: a DataLoader otherwise draws its worker seed from the global RNG when an
    # iterator starts, which would shift the RNG stream of a resumed run. Pinned batches make to_device's
    # non_blocking copies asynchronous on CUDA.
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=range(start, len(dataset)),
                                       num_workers=num_workers, generator=torch.Generator().manual_seed(start),
                                       persistent_workers=False, pin_memory=pin_memory)


def micro_batches(batch: dict[str, torch.Tensor], tc: TrainConfig) -> list[dict[str, torch.Tensor]]:
    """This process's batch cut into micro-batches: of `tc.micro_batch` windows when set, else `tc.grad_accum` parts."""
    size = len(batch["window"])
    n = -(-size // tc.micro_batch) if tc.micro_batch else tc.grad_accum
    if n <= 1:
        return [batch]
    bounds = np.array_split(np.arange(size), min(n, size))
    return [{k: v[idx[0]:idx[-1] + 1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            for idx in bounds]


def _average(values: list, weights: torch.Tensor | None) -> torch.Tensor:
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in values])
    if weights is None:
        return stacked.mean(0)
    w = weights.to(stacked.device, stacked.dtype)
    # all-zero weights (nothing counted): the plain mean, without a data-dependent branch
    w = torch.where(w.sum() > 0, w, torch.ones_like(w))
    return (stacked * w.reshape(-1, *[1] * (stacked.dim() - 1))).sum(0) / w.sum()


def _merge_records(records: list[dict], weights: torch.Tensor | None = None) -> dict:
    out = dict(records[-1])
    if "losses" in out and len(records) > 1:
        out["losses"] = {k: _average([r["losses"][k] for r in records], weights) for k in out["losses"]}
    return out


def _global_losses(accelerator: Accelerator, losses: dict, local: torch.Tensor, total: torch.Tensor) -> dict:
    """Per-process mean losses → the global batch's mean losses (weighted by each process's item count)."""
    if accelerator.num_processes == 1:
        return losses
    keys = sorted(losses)
    summed = accelerator.reduce(torch.stack([torch.as_tensor(losses[k], dtype=torch.float32, device=local.device)
                                             for k in keys]) * local, "sum")
    return dict(zip(keys, summed / total.clamp_min(1.0)))


def host_record(record: dict) -> dict:
    """A step's record (device tensors) → JSON-able numbers: the one host sync, on log steps only."""
    def number(v):
        if isinstance(v, torch.Tensor):
            return v.item() if v.dim() == 0 else v.tolist()
        return v

    host = to_host(record)
    return {k: ({kk: number(vv) for kk, vv in v.items()} if isinstance(v, dict) else number(v))
            for k, v in host.items()}


@dataclass
class StepOutput:
    record: dict[str, Any]  # the (merged, global) train_step record: device tensors until host_record
    grad_norm: torch.Tensor  # 0-d, before clipping


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, accelerator: Accelerator,
                   tc: TrainConfig, batch: dict, train_step: Callable[[torch.nn.Module, dict], StepResult], *,
                   count: Callable[[dict], torch.Tensor] | None = None) -> StepOutput:
    """One optimizer step on this process's slice of a global batch: micro-batches (accumulated, DDP-synced on the
    last), clipping, AdamW, the schedule. What fit() runs per batch, and what the benchmarks time. No host sync."""
    model.train()
    # widened on the device: batches cross in the shards' float16/int16 (half the bytes to pin and copy)
    micro = [to_compute_dtypes(to_device(mb, accelerator.device)) for mb in micro_batches(batch, tc)]
    counts = local = total = None
    if count is not None:
        counts = torch.stack([torch.as_tensor(count(mb), device=accelerator.device).float() for mb in micro])
        local = counts.sum()
        total = accelerator.reduce(local.reshape(1), "sum")[0] if accelerator.num_processes > 1 else local
        # DDP averages gradients over processes: scale sums so the average is the global mean's gradient
        scale = accelerator.num_processes / total.clamp_min(1.0)
    records = []
    for j, mb in enumerate(micro):
        sync = contextlib.nullcontext() if j == len(micro) - 1 else accelerator.no_sync(model)
        with sync:
            with accelerator.autocast():
                result = train_step(model, mb)
            accelerator.backward(result.loss * scale if count is not None else result.loss / len(micro))
        records.append(result.record)
    record = _merge_records(records, counts)
    if count is not None and "losses" in record:
        record["losses"] = _global_losses(accelerator, record["losses"], local, total)
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepOutput(record, grad_norm)


def _run_changes(checkpoint: Path, extra: dict) -> list[str]:
    """The identity keys (settings and input fingerprints) on which `checkpoint` differs from this run."""
    state = json.loads((checkpoint / "state.json").read_text())
    return [k for k, v in extra.items() if state.get(k) != v]


def fit(model: torch.nn.Module, out: Path, tc: TrainConfig, accelerator: Accelerator, *,
        make_data: Callable[[int, int], Dataset],
        train_step: Callable[[torch.nn.Module, dict], StepResult],
        evaluate: Callable[[torch.nn.Module, int], dict] | None = None,
        count: Callable[[dict], torch.Tensor] | None = None,
        state_extra: dict | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        stop_after: int | None = None) -> FitResult:
    """Train `model` into `out` (checkpoints/, metrics.jsonl) until `tc.max_steps` (or `stop_after`).

    make_data(epoch, first_step) → map-style dataset of this process's slices of the epoch's global batches,
    where first_step is the global step of the epoch's first batch (for step-based curricula).
    evaluate(raw_model, step) → metrics dict, run on the main process every `eval_every` steps and at the end.
    count(batch) → number of loss items (e.g. masked tokens) in a (micro-)batch. When the count varies between
    batches, a mean per process or micro-batch would weight items unequally; with `count`, train_step returns
    loss sums and the loop divides by the global batch's count (one all-reduce of a scalar), so N processes
    and any accumulation compute exactly the gradient of one process on the whole batch.
    """
    optimizer = optimizer or adamw(model, tc)
    scheduler = warmup_cosine(optimizer, warmup_steps=tc.warmup_steps, total_steps=tc.max_steps,
                              min_ratio=tc.min_lr_ratio)
    ckpt_root = out / "checkpoints"
    step, epoch, batch_in_epoch = 0, 0, 0
    extra = json.loads(json.dumps(state_extra or {}))  # JSON-normalized: compared with what checkpoints hold
    resume = latest(ckpt_root)
    changed = _run_changes(resume, extra) if resume is not None else []
    accelerator.wait_for_everyone()  # every rank has decided before the main process moves anything
    if changed:
        # A rerun after a change of settings or inputs must retrain, not resume the old run.
        if accelerator.is_main_process:
            stale = ckpt_root.with_name(f"checkpoints.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            ckpt_root.rename(stale)
            log.warning("%s: checkpoints were made from other %s; moved to %s, training from step 0", out,
                        ", ".join(changed), stale)
        accelerator.wait_for_everyone()
        resume = None
    if resume is not None:
        state = load_checkpoint(resume, model=model, optimizer=optimizer, scheduler=scheduler,
                                rank=accelerator.process_index)
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        if not state["rng_restored"]:  # resumed with more processes than wrote the checkpoint
            set_seed(int(np.random.SeedSequence([tc.seed, step, accelerator.process_index]).generate_state(1)[0]))
        log.info("resumed from %s (step %d) on %d process(es)", resume, step, accelerator.num_processes)
    # The main process alone owns metrics.jsonl (truncated to the checkpoint on resume, appended to after).
    metrics = MetricsLog(out / "metrics.jsonl", resume_from_step=step if resume else None) \
        if accelerator.is_main_process else None
    model = place(model, accelerator.device)
    if tc.compile:
        log.info("torch.compile: %d transformer blocks", compile_blocks(model))
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    end = tc.max_steps if stop_after is None else min(tc.max_steps, stop_after)

    def checkpoint() -> None:
        rng = gather_object([rng_state()])  # every rank's generators, so that each continues its own stream
        if accelerator.is_main_process:
            save_checkpoint(ckpt_root, step=step, model=raw_model, optimizer=optimizer, scheduler=scheduler,
                            state={"epoch": epoch, "batch_in_epoch": batch_in_epoch, **extra}, rng=rng)
        accelerator.wait_for_everyone()

    def held_out() -> dict:
        # the training precision: held-out numbers describe the model as it trains (and as it will run)
        with accelerator.autocast():
            return evaluate(raw_model, step)

    t_last, patches_since = time.perf_counter(), 0
    progress = Progress(f"{out.parent.name}/{out.name}", end, start=step, enabled=accelerator.is_main_process,
                        logger=log)
    evaluated: tuple[int, dict] = (-1, {})
    if (resume is not None and evaluate is not None and accelerator.is_main_process and step < end
            and step % tc.eval_every == 0
            and not any(r.get("kind") == "heldout" and r.get("step") == step for r in metrics.read())):
        # killed between this step's checkpoint and its evaluation: evaluate before training on
        evaluated = (step, held_out())
        metrics.write({"kind": "heldout", "step": step, **evaluated[1]})
    while step < end:
        data = make_data(epoch, step - batch_in_epoch)
        if len(data) == 0:
            raise ValueError(f"{out}: not one full batch of {tc.batch_size} windows to train on")
        for batch in make_loader(data, tc.num_workers, batch_in_epoch, pin_memory=accelerator.device.type == "cuda"):
            result = optimizer_step(model, optimizer, scheduler, accelerator, tc, batch, train_step, count=count)
            step += 1
            batch_in_epoch += 1
            x = batch["x"]
            patches_since += int(x.shape[0] * x.shape[1] * x.shape[2]) * accelerator.num_processes
            if accelerator.is_main_process and (step % tc.log_every == 0 or step == 1):
                now = time.perf_counter()
                record = {"kind": "train", "step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                          **host_record({**result.record, "grad_norm": result.grad_norm}),
                          "patches_per_s": patches_since / max(now - t_last, 1e-9)}
                metrics.write(record)
                loss = record.get("losses", {}).get("loss")
                progress.update(step, (f"loss {loss:.4g} · " if isinstance(loss, float) else "")
                                + f"{record['patches_per_s']:.0f} patches/s")
                t_last, patches_since = now, 0
            # Checkpoint first: an evaluation that fails must not cost the steps since the last checkpoint.
            if step % tc.checkpoint_every == 0:
                checkpoint()
            if evaluate is not None and step % tc.eval_every == 0 and accelerator.is_main_process:
                evaluated = (step, held_out())
                metrics.write({"kind": "heldout", "step": step, **evaluated[1]})
            if step >= end:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    checkpoint()
    final: dict = {}
    if accelerator.is_main_process and step >= tc.max_steps and evaluate is not None:
        if evaluated[0] == step:  # the last step was an evaluation step: not twice
            final = evaluated[1]
        else:
            final = held_out()
            metrics.write({"kind": "heldout", "step": step, **final})
    accelerator.wait_for_everyone()
    return FitResult(step=step, records=metrics.read() if accelerator.is_main_process else [], evaluation=final)
