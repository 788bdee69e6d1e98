"""GPU check: one short device call that measures the torch stages at paper size and checks what runs on the chip.

    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py --out $OUT       # full mode, ≤ 8 min on one GPU
    python benchmarks/gpu_check.py --smoke --out /tmp/gc             # tiny, CPU, < 1 min (run by the tests)

Writes <out>/gpu_check.json atomically after every section, so a run killed part-way still leaves the
sections done so far. Each section has its own time budget: it stops repeating when over it and says so
(`stopped_by_budget`); a section that would start after the total budget is recorded as skipped.

Sections (paper/base sizes, 30 s windows × 19 channels, `--windows` windows per GPU per step; 8 = the
paper's global batch of 64 over 8 GPUs):

  environment      torch/CUDA/cuDNN versions, device, date, command line, matmul/SDPA flags
  sdpa             which SDPA backend the backbone's and tokenizer's attention actually dispatch to (profiler op
                   names of a real forward+backward), the call signatures they pass (head dim 20, float ALiBi
                   bias / bool key mask), and for each signature which backend works alone and how fast
  tokenizer_bf16   DD-RVQ tokenizer training step (paper size): patches/s, step time, peak memory,
  tokenizer_fp32   FLOP count (formula stated below, and torch.utils.flop_counter), TFLOP/s, MFU
  pretrain_bf16    pretraining step (base backbone, 2 domains × 3 levels × 8192 codes, symmetric masks),
  pretrain_fp32    the same numbers
  agreement        bf16 vs fp32 on the same weights and batch: loss relative difference, gradient cosine and
                   relative norm difference per parameter group (and code agreement for the tokenizer)
  extract_codes    tokenizer `encode` in eval/inference mode, fp32, `--extract-windows` windows per batch:
                   windows/s, with and without the host↔device copies
  fit              pipeline.train.loop.fit under DDP at world size 1, tokenizer and pretraining, 4 steps:
                   uninterrupted, and stop at 2 + resume to 4; checks the resume (step numbers, optimizer steps
                   taken) and that the final weights equal the uninterrupted run's

A training step here is the body of pipeline.train.loop.fit for one optimizer step without Accelerate
(counting the targets, autocast forward with the stage's train_step, backward, clipping, AdamW + schedule,
zero_grad), with the batch moved to the device inside the step as fit() does. bf16 = torch.autocast(device,
torch.bfloat16), which is what Accelerate's mixed_precision "bf16" enters. Timings: torch.cuda.synchronize()
before and after each timed call, time.perf_counter() between.

This script must not import zarr, polars or mne, even indirectly (the device machine has only torch,
accelerate, einops, safetensors, numpy and pyyaml): it uses pipeline.models, pipeline.train.loop / steps /
masking / checkpoint / schedule, pipeline.config and pipeline.montage only — the stages' own train steps
(pipeline.train.steps), not their shard-reading modules.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as dt
import gc
import itertools
import json
import logging
import math
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pipeline.config import MaskConfig, TrainConfig  # noqa: E402
from pipeline.models.backbone import BackboneConfig  # noqa: E402
from pipeline.models.config import TokenizerConfig  # noqa: E402
from pipeline.models.pretrain import PretrainConfig, PretrainModel  # noqa: E402
from pipeline.models.tokenizer import build_tokenizer  # noqa: E402
from pipeline.train.loop import adamw  # noqa: E402
from pipeline.train.masking import sample_mask  # noqa: E402
from pipeline.train.schedule import warmup_cosine  # noqa: E402
from pipeline.train.steps import pretrain_step, tokenizer_step  # noqa: E402

log = logging.getLogger("gpu_check")

# NVIDIA H200 (SXM) datasheet, "BF16 Tensor Core 1,979 TFLOPS" is quoted *with sparsity*; dense is half: 989.5.
# (The H100 SXM has the same dense bf16 peak; the H200 differs in memory.) Pass --peak-tflops for another chip.
H200_DENSE_BF16_TFLOPS = 989.0
STANDARD_1020 = ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3", "Pz", "P4",
                 "P8", "O1", "O2")
SECTIONS = ("environment", "sdpa", "tokenizer_bf16", "tokenizer_fp32", "pretrain_bf16", "pretrain_fp32",
            "agreement", "extract_codes", "fit")
# seconds per section (full mode): 7 min in all, leaving a minute for imports, CUDA start-up and model builds
BUDGETS = {"environment": 10, "sdpa": 40, "tokenizer_bf16": 40, "tokenizer_fp32": 40, "pretrain_bf16": 40,
           "pretrain_fp32": 40, "agreement": 40, "extract_codes": 40, "fit": 90}
SMOKE_BUDGETS = {name: 20.0 for name in SECTIONS}


@dataclass
class Options:
    out: Path
    smoke: bool = False
    device: str = "cuda"
    windows: int = 8  # windows per step per GPU (paper: global batch 64 over 8 GPUs)
    channels: int = 19
    patches: int = 30  # 30 s windows of 1 s patches
    padded_windows: int = 0  # windows whose last channel is padding (ch = −1), to exercise the padding path
    warmup: int = 3  # untimed steps first (the tokenizer's first step also runs the k-means codebook init)
    steps: int = 20  # timed steps at most (fewer when over the section's budget)
    extract_windows: int = 256  # windows per encode batch
    extract_batches: int = 10  # timed encode batches at most
    fit_steps: int = 4
    fit_batches_per_epoch: int = 3  # so the 4-step fit crosses an epoch boundary after the resume
    peak_tflops: float = H200_DENSE_BF16_TFLOPS
    total_budget_s: float = 450.0
    budgets: dict[str, float] = field(default_factory=lambda: dict(BUDGETS))
    sections: tuple[str, ...] = SECTIONS
    seed: int = 0

    @classmethod
    def smoke_mode(cls, out: Path) -> "Options":
        return cls(out=out, smoke=True, device="cpu", windows=2, channels=4, patches=4, padded_windows=1,
                   warmup=1, steps=2, extract_windows=4, extract_batches=2, total_budget_s=120.0,
                   budgets=dict(SMOKE_BUDGETS))

    @property
    def size(self) -> str:
        return "demo" if self.smoke else "paper/base"


class Budget:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over(self) -> bool:
        return self.elapsed() > self.seconds


# --------------------------------------------------------------------------- device helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"max_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20,
                "max_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20}
    # CPU: the process's lifetime peak RSS (ru_maxrss cannot be reset), not this section's
    return {"process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed_reps(fn: Callable[[], Any], *, reps: int, budget: Budget, device: torch.device) -> dict:
    """Up to `reps` timed calls of fn (at least one), stopping when the budget is spent."""
    times: list[float] = []
    stopped = False
    for _ in range(reps):
        if times and budget.over():
            stopped = True
            break
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"timed": len(times), "stopped_by_budget": stopped, "median_s": statistics.median(times),
            "min_s": min(times), "all_s": [round(t, 6) for t in times]}


# --------------------------------------------------------------------------- models and batches


def vocab_size() -> int:
    from pipeline.montage import load_vocabulary

    return len(load_vocabulary())


def tokenizer_config(opts: Options) -> TokenizerConfig:
    # as pipeline.train.tokenizer.model_config builds it (size paper / demo)
    preset = TokenizerConfig.demo if opts.smoke else TokenizerConfig.paper
    return preset("ddrvq", vocab_size=vocab_size(), max_patches=max(opts.patches, 64))


def pretrain_config(opts: Options) -> PretrainConfig:
    # as pipeline.train.pretrain.model_config builds it, with the codes of the tokenizer above
    tok = tokenizer_config(opts)
    preset = BackboneConfig.demo if opts.smoke else BackboneConfig.base
    backbone = preset(vocab_size=tok.vocab_size, max_patches=max(opts.patches, 64))
    return PretrainConfig(backbone=backbone, domains=tok.domains, levels=tok.levels, codebook_size=tok.codebook_size)


def channel_ids(n: int) -> torch.Tensor:
    """Vocabulary ids of the first n 10-20 sites (then further ids), as the patch stage writes them."""
    from pipeline.montage import load_vocabulary

    vocab = load_vocabulary()
    ids = [vocab.id_of(name) for name in STANDARD_1020[:n]]
    ids += [i for i in range(len(vocab)) if i not in ids][: n - len(ids)]
    return torch.tensor(ids, dtype=torch.long)


def make_batch(opts: Options, seed: int, *, codebook_size: int, code_shape: tuple[int, int],
               windows: int | None = None) -> dict[str, torch.Tensor]:
    """A batch as pipeline.data.windows.WindowBatches (+ MaskedBatches' mask) yields it, on the CPU:
    x float32 [B, C, P, 200] (sums of sinusoids + noise at the µV/100 scale), ch int64 [B, C] (−1 padding),
    importance float32 [B, C, P, 5], codes int64 [B, C, P, S, L], window int64 [B], mask bool [B, C, P]."""
    b, c, p, t = windows or opts.windows, opts.channels, opts.patches, 200
    g = torch.Generator().manual_seed(seed)
    time_s = torch.arange(p * t) / 200.0
    freqs = torch.rand(b, c, 4, 1, generator=g) * 30 + 1
    amps = torch.rand(b, c, 4, 1, generator=g) * 0.5
    phases = torch.rand(b, c, 4, 1, generator=g) * 2 * math.pi
    x = (amps * torch.sin(2 * math.pi * freqs * time_s + phases)).sum(2) + 0.05 * torch.randn(b, c, p * t, generator=g)
    ch = channel_ids(c).repeat(b, 1)
    ch[: opts.padded_windows, -1] = -1
    importance = torch.rand(b, c, p, 5, generator=g)
    codes = torch.randint(0, codebook_size, (b, c, p, *code_shape), generator=g)
    codes[ch < 0] = -1
    mask = sample_mask(importance, ch >= 0, MaskConfig(), 0.5, g)
    return {"x": x.reshape(b, c, p, t).float(), "ch": ch, "importance": importance, "codes": codes,
            "window": torch.arange(seed * b, (seed + 1) * b), "mask": mask}


def batches_for(opts: Options, kind: str, n: int, *, first_seed: int = 0) -> list[dict]:
    tok = tokenizer_config(opts)
    return [make_batch(opts, first_seed + i, codebook_size=tok.codebook_size, code_shape=tok.code_shape)
            for i in range(n)]


def build(kind: str, opts: Options) -> torch.nn.Module:
    torch.manual_seed(opts.seed)
    return build_tokenizer(tokenizer_config(opts)) if kind == "tokenizer" else PretrainModel(pretrain_config(opts))


# --------------------------------------------------------------------------- one optimizer step


def count_targets(model, batch: dict) -> torch.Tensor:
    raw = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    return raw.count_targets(batch["ch"], batch["mask"])


class Trainer:
    """One optimizer step of pipeline.train.loop.fit (one process, no accumulation), without Accelerate."""

    def __init__(self, kind: str, model: torch.nn.Module, device: torch.device, bf16: bool) -> None:
        self.kind, self.model, self.device, self.bf16 = kind, model, device, bf16
        self.tc = TrainConfig(batch_size=8, max_steps=10_000, mixed_precision="bf16" if bf16 else "no")
        self.optimizer = adamw(model, self.tc)
        self.scheduler = warmup_cosine(self.optimizer, warmup_steps=self.tc.warmup_steps,
                                       total_steps=self.tc.max_steps, min_ratio=self.tc.min_lr_ratio)

    def loss(self, batch: dict) -> torch.Tensor:
        """Forward + the loss fit() back-propagates (a sum over targets divided by their count for pretraining)."""
        self.model.train()
        if self.kind == "pretrain":
            # fit(): count(mb), reduced over processes; a device tensor (no host sync, as in optimizer_step)
            total = torch.as_tensor(count_targets(self.model, batch), device=self.device).float()
            with autocast(self.device, self.bf16):
                loss = pretrain_step(self.model, batch).loss
            return loss / total.clamp_min(1.0)
        with autocast(self.device, self.bf16):
            return tokenizer_step(self.model, batch).loss

    def step(self, batch: dict) -> None:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        self.loss(batch).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------- FLOP formulas

FLOP_FORMULA = (
    "matmul FLOPs only (norms, activations, softmax, FFTs, embedding lookups and the optimizer are not counted). "
    "Linear: 2·tokens·in·out. Transformer layer over W windows of N tokens, width D, MLP 4D: "
    "dense 2·W·N·(3D² + D² + 8D²) (qkv, proj, MLP) + attention 4·W·N²·D (QKᵀ and A·V). "
    "Patch front end per patch: 2·25·(8·15 + 2·8·8·3) conv MACs×2 (+ 2·200·D when 8·25 ≠ D). "
    "Training = 3 × forward (backward ≈ 2 × forward), except the RVQ code search (2·T·K·d per level and domain, "
    "no gradient) which counts once; the tokenizer's first-step k-means is excluded (warm-up). "
    "Pretraining: the patch embedding once, the encoder over both symmetric passes (2·B windows), "
    "and per domain and level a code head 2·M·D·K with M = the scored tokens (all valid tokens when symmetric). "
    "Tokenizer (DD-RVQ): front end, encoder, per domain a head (D→D→code_dim), the code search, and a decoder "
    "(code_dim→Dd, transformer, heads Dd→Dd→outputs: time 200, freq amplitude + phase 101 each)."
)


def transformer_flops(windows: int, n: int, dim: int, depth: int, mlp_ratio: float) -> tuple[float, float]:
    """(dense, attention) forward FLOPs of `depth` pre-LN blocks over `windows` windows of n tokens."""
    hidden = int(dim * mlp_ratio)
    dense = 2.0 * windows * n * depth * (4 * dim * dim + 2 * dim * hidden)
    attention = 4.0 * depth * windows * n * n * dim
    return dense, attention


def frontend_flops(patches: int, embed_dim: int, channels: int = 8, patch_size: int = 200) -> float:
    """pipeline.models.frontends.TemporalConv forward: conv k15/s8 (1→c), two conv k3 (c→c), optional projection."""
    length = (patch_size + 2 * 7 - 15) // 8 + 1
    flops = 2.0 * patches * length * (channels * 15 + 2 * channels * channels * 3)
    if channels * length != embed_dim:
        flops += 2.0 * patches * channels * length * embed_dim
    return flops


def backbone_forward_flops(bc: BackboneConfig, windows: int, channels: int, patches: int) -> dict[str, float]:
    """One forward of the backbone (no masking passes): fine-tuning's per-batch cost."""
    dense, attention = transformer_flops(windows, channels * patches, bc.embed_dim, bc.depth, bc.mlp_ratio)
    return {"patch_embed": frontend_flops(windows * channels * patches, bc.embed_dim, bc.conv_channels, bc.patch_size),
            "encoder_dense": dense, "encoder_attention": attention}


def pretrain_step_flops(config: PretrainConfig, windows: int, channels: int, patches: int,
                        scored_tokens: int) -> dict[str, float]:
    bc = config.backbone
    passes = 2 if config.symmetric else 1
    dense, attention = transformer_flops(passes * windows, channels * patches, bc.embed_dim, bc.depth, bc.mlp_ratio)
    forward = {
        "patch_embed": frontend_flops(windows * channels * patches, bc.embed_dim, bc.conv_channels, bc.patch_size),
        "encoder_dense": dense,
        "encoder_attention": attention,
        "code_heads": 2.0 * scored_tokens * bc.embed_dim * config.codebook_size * len(config.domains) * config.levels,
    }
    terms = {k: 3 * v for k, v in forward.items()}
    return {**terms, "total": sum(terms.values())}


def tokenizer_forward_flops(c: TokenizerConfig, windows: int, channels: int, patches: int,
                            *, decoders: bool = True) -> dict[str, float]:
    n, tokens = channels * patches, windows * channels * patches
    dense, attention = transformer_flops(windows, n, c.embed_dim, c.depth, c.mlp_ratio)
    out = {"frontend": frontend_flops(tokens, c.embed_dim, c.conv_channels, c.patch_size),
           "encoder_dense": dense, "encoder_attention": attention,
           "domain_heads": 2.0 * tokens * c.n_domains * (c.embed_dim ** 2 + c.embed_dim * c.code_dim),
           "code_search": 2.0 * tokens * c.n_domains * c.levels * c.codebook_size * c.code_dim}
    if decoders:
        outputs = {"time": [c.patch_size], "freq": [c.n_bins, c.n_bins]}
        dec_dense, dec_attention = transformer_flops(windows, n, c.decoder_dim, c.decoder_depth, c.mlp_ratio)
        dd = c.decoder_dim
        out["decoders"] = sum(2.0 * tokens * c.code_dim * dd + dec_dense + dec_attention
                              + sum(2.0 * tokens * (dd * dd + dd * k) for k in outputs[d]) for d in c.domains)
    return out


def tokenizer_step_flops(c: TokenizerConfig, windows: int, channels: int, patches: int) -> dict[str, float]:
    forward = tokenizer_forward_flops(c, windows, channels, patches)
    terms = {k: (v if k == "code_search" else 3 * v) for k, v in forward.items()}
    return {**terms, "total": sum(terms.values())}


COUNTER_NOTE = ("torch.utils.flop_counter.FlopCounterMode over one whole training step (forward, backward, optimizer). "
                "It has no formula for in-place addmm_ (the code heads' fp32 weight gradient in "
                "pipeline.models.linear_ce) nor for the CPU flash SDPA op, so on those paths it counts less than "
                "the formula; on CUDA it counts the flash/efficient/cuDNN SDPA ops and the math path's bmm.")


def counted_flops(fn: Callable[[], Any]) -> tuple[float, dict[str, float]]:
    """(total, per aten op) FLOPs torch.utils.flop_counter counts for one call (see COUNTER_NOTE)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    by_op = {str(op): float(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return float(counter.get_total_flops()), by_op


# --------------------------------------------------------------------------- sections


def section_environment(opts: Options, budget: Budget, device: torch.device) -> dict:
    import accelerate

    info: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv], "cwd": os.getcwd(), "python": platform.python_version(),
        "platform": platform.platform(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "accelerate": accelerate.__version__, "cudnn": torch.backends.cudnn.version(),
        "device": str(device), "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "allow_tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "peak_tflops_bf16_dense": opts.peak_tflops, "mode": "smoke" if opts.smoke else "full", "size": opts.size,
        "git_commit": _git_commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    device_memory_gib=props.total_memory / 2**30, multiprocessors=props.multi_processor_count,
                    cuda_devices=torch.cuda.device_count(),
                    sdp_enabled={"flash": torch.backends.cuda.flash_sdp_enabled(),
                                 "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                                 "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                                 "math": torch.backends.cuda.math_sdp_enabled()})
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None  # the device machine gets a copy of the working tree, possibly without .git


SDPA_OPS = {  # aten op of each SDPA backend (the profiler records it on the CPU side, for either device)
    "aten::_scaled_dot_product_flash_attention": "FLASH_ATTENTION",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "FLASH_ATTENTION (CPU)",
    "aten::_scaled_dot_product_efficient_attention": "EFFICIENT_ATTENTION",
    "aten::_scaled_dot_product_cudnn_attention": "CUDNN_ATTENTION",
    "aten::_scaled_dot_product_attention_math": "MATH",
}


@contextlib.contextmanager
def recorded_sdpa_calls():
    """Record the (q, k, v, attn_mask) of every F.scaled_dot_product_attention call, passing it on unchanged."""
    real = F.scaled_dot_product_attention
    calls: list[tuple] = []

    def recording(q, k, v, attn_mask=None, *args, **kwargs):
        calls.append((q.detach(), k.detach(), v.detach(), None if attn_mask is None else attn_mask.detach()))
        return real(q, k, v, attn_mask, *args, **kwargs)

    F.scaled_dot_product_attention = recording
    try:
        yield calls
    finally:
        F.scaled_dot_product_attention = real


def _signature(q, mask) -> str:
    m = "none" if mask is None else f"{mask.dtype}{list(mask.shape)}".replace("torch.", "")
    return f"q {str(q.dtype).replace('torch.', '')}{list(q.shape)} mask {m}"


def _try_backend(backend, q, k, v, mask, device: torch.device, bf16: bool, budget: Budget) -> dict:
    from torch.nn.attention import sdpa_kernel

    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))

    def call():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out.float().sum().backward()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel([backend]), autocast(device, bf16):
                call()
                timing = timed_reps(call, reps=5, budget=budget, device=device)
        except Exception as exc:  # "No available kernel" and whatever else a backend raises for this signature
            return {"works": False, "error": str(exc).strip().splitlines()[0][:300],
                    "why": sorted({str(w.message).strip()[:300] for w in caught})}
    return {"works": True, "forward_backward_ms": round(timing["median_s"] * 1e3, 3)}


def _dispatched(prof) -> dict[str, int]:
    ops = {}
    for evt in prof.key_averages():
        if evt.key in SDPA_OPS:
            ops[SDPA_OPS[evt.key]] = ops.get(SDPA_OPS[evt.key], 0) + evt.count
    return ops


def _attention_kernels(prof) -> list[str]:
    """CUDA kernel names that look like attention (flash/fmha/efficient/cudnn), for the record."""
    names = set()
    for evt in prof.key_averages():
        name = evt.key.lower()
        if evt.device_type == torch.autograd.DeviceType.CUDA and any(
                s in name for s in ("flash", "fmha", "attention", "efficient", "cudnn_sdpa")):
            names.add(evt.key[:160])
    return sorted(names)


def section_sdpa(opts: Options, budget: Budget, device: torch.device) -> dict:
    from torch.nn.attention import SDPBackend
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                SDPBackend.MATH]
    result: dict[str, Any] = {}
    for kind in ("pretrain", "tokenizer"):
        model = build(kind, opts).to(device)
        trainer = Trainer(kind, model, device, bf16=False)
        batch = {k: v.to(device) for k, v in batches_for(opts, kind, 1)[0].items()}
        if kind == "tokenizer":
            with torch.no_grad():
                model.train()(batch["x"], batch["ch"])  # k-means codebook init outside the profiled step
        for precision in ("fp32", "bf16"):
            trainer.bf16 = precision == "bf16"
            with recorded_sdpa_calls() as calls, profile(activities=activities) as prof:
                trainer.loss(batch).backward()
                sync(device)
            model.zero_grad(set_to_none=True)
            signatures: dict[str, tuple] = {}
            for call in calls:
                signatures.setdefault(_signature(call[0], call[3]), call)
            tried = {}
            for sig, (q, k, v, mask) in signatures.items():
                tried[sig] = {b.name: _try_backend(b, q, k, v, mask, device, trainer.bf16, budget) for b in backends}
            result[f"{kind}_{precision}"] = {
                "dispatched": _dispatched(prof),  # backend → calls (forward; backward ops are separate aten ops)
                "attention_kernels": _attention_kernels(prof),
                "sdpa_calls_per_step": len(calls),
                "signatures": tried,
            }
        del model, trainer, batch
        free(device)
    result["stopped_by_budget"] = budget.over()
    return result


def section_train(kind: str, precision: str, opts: Options, budget: Budget, device: torch.device) -> dict:
    bf16 = precision == "bf16"
    model = build(kind, opts).to(device)
    trainer = Trainer(kind, model, device, bf16)
    data = batches_for(opts, kind, 4)
    b, c, p = data[0]["x"].shape[:3]
    patches = b * c * p
    sync(device)
    t0 = time.perf_counter()
    trainer.step(data[0])
    sync(device)
    first = time.perf_counter() - t0
    for i in range(1, opts.warmup):
        trainer.step(data[i % len(data)])
    flops_counted, counted_by_op = counted_flops(lambda: trainer.step(data[1 % len(data)]))
    reset_peak(device)
    i = itertools.count()
    timing = timed_reps(lambda: trainer.step(data[next(i) % len(data)]), reps=opts.steps, budget=budget,
                        device=device)
    if kind == "pretrain":
        scored = int(model.count_targets(data[0]["ch"].to(device), data[0]["mask"].to(device)))
        flops = pretrain_step_flops(model.config, b, c, p, scored)
    else:
        flops = tokenizer_step_flops(model.config, b, c, p)
    median = timing.pop("median_s")
    achieved = flops["total"] / median
    out = {
        "precision": precision, "autocast_dtype": "bfloat16" if bf16 else None, "size": opts.size,
        "windows_per_step": b, "channels": c, "patches_per_window": p, "patches_per_step": patches,
        "parameters": sum(q.numel() for q in model.parameters()), "first_step_s": round(first, 4),
        "warmup_steps": opts.warmup, **timing, "step_s_median": median,
        "patches_per_s": patches / median, "windows_per_s": b / median,
        "peak_memory": peak_memory(device),
        "flops_per_step_formula": flops, "flops_formula": FLOP_FORMULA,
        "flops_per_step_counted": flops_counted, "flops_counted_by_op": counted_by_op,
        "flops_counted_note": COUNTER_NOTE,
        "counted_over_formula": flops_counted / flops["total"],
        "tflops_per_s": achieved / 1e12, "tflops_per_s_counted": flops_counted / median / 1e12,
        "mfu_vs_bf16_peak": achieved / (opts.peak_tflops * 1e12), "peak_tflops_bf16_dense": opts.peak_tflops,
        "config": model.config.to_dict(),
    }
    del model, trainer, data
    free(device)
    return out


def _group(name: str) -> str:
    """Parameter group for the agreement table: up to the block index, or the module holding the parameter."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1][:3]) or parts[0]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double(), b.double(), dim=0)) if a.norm() > 0 and b.norm() > 0 else float("nan")


def _grads(trainer: Trainer, batch: dict, state: dict, seed: int) -> tuple[float, dict[str, torch.Tensor]]:
    trainer.model.load_state_dict(state)
    trainer.model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the tokenizer's dead-code restarts draw rows: same draws in both precisions
    loss = trainer.loss(batch)
    loss.backward()
    grads = {n: p.grad.detach().float().flatten().cpu() for n, p in trainer.model.named_parameters()
             if p.grad is not None}
    return float(loss.detach()), grads


def agreement(kind: str, opts: Options, device: torch.device) -> dict:
    model = build(kind, opts).to(device)
    batch = {k: v.to(device) for k, v in batches_for(opts, kind, 1, first_seed=7)[0].items()}
    if kind == "tokenizer":
        with torch.no_grad():
            model.train()(batch["x"], batch["ch"])  # k-means codebook init, in fp32, before both measurements
    state = copy.deepcopy(model.state_dict())
    trainer = Trainer(kind, model, device, bf16=False)
    loss32, g32 = _grads(trainer, batch, state, opts.seed)
    trainer.bf16 = True
    loss16, g16 = _grads(trainer, batch, state, opts.seed)
    groups: dict[str, list[str]] = {}
    for name in g32:
        groups.setdefault(_group(name), []).append(name)
    table = {}
    for group, names in groups.items():
        a = torch.cat([g32[n] for n in names])
        b = torch.cat([g16[n] for n in names])
        table[group] = {"cosine": _cosine(a, b), "rel_norm_diff": float((b - a).norm() / a.norm().clamp_min(1e-30)),
                        "norm_fp32": float(a.norm()), "params": int(a.numel())}
    everything_a = torch.cat(list(g32.values()))
    everything_b = torch.cat([g16[n] for n in g32])
    finite = {g: r for g, r in table.items() if not math.isnan(r["cosine"])}
    worst = min(finite, key=lambda g: finite[g]["cosine"])
    out = {"loss_fp32": loss32, "loss_bf16": loss16, "loss_rel_diff": abs(loss16 - loss32) / max(abs(loss32), 1e-30),
           "grad_cosine_all": _cosine(everything_a, everything_b),
           "grad_rel_norm_diff_all": float((everything_b - everything_a).norm() / everything_a.norm()),
           "worst_group": worst, "worst_group_cosine": finite[worst]["cosine"],
           "max_group_rel_norm_diff": max(r["rel_norm_diff"] for r in table.values()),
           "groups_without_gradient": [g for g, r in table.items() if math.isnan(r["cosine"])],
           "groups": table}
    if kind == "tokenizer":
        out["code_agreement"] = _code_agreement(model, state, batch, device)
    del model, trainer
    free(device)
    return out


@torch.no_grad()
def _code_agreement(model, state: dict, batch: dict, device: torch.device) -> dict:
    """Fraction of (valid) tokens whose eval-mode code is the same under bf16 autocast as in fp32, per domain/level."""
    model.load_state_dict(state)
    model.eval()
    codes32 = model.encode(batch["x"], batch["ch"])
    with autocast(device, True):
        codes16 = model.encode(batch["x"], batch["ch"])
    valid = (batch["ch"] >= 0)[:, :, None].expand(codes32.shape[:3])
    same = (codes32 == codes16)[valid].float().mean(0)  # [S, L]
    return {d: [float(v) for v in same[s]] for s, d in enumerate(model.config.domains)}


def section_agreement(opts: Options, budget: Budget, device: torch.device) -> dict:
    out = {}
    for kind in ("pretrain", "tokenizer"):
        if out and budget.over():
            out["stopped_by_budget"] = True
            break
        out[kind] = agreement(kind, opts, device)
    return out


def section_extract_codes(opts: Options, budget: Budget, device: torch.device) -> dict:
    model = build("tokenizer", opts).to(device).eval()
    tok = model.config
    data = [make_batch(opts, 100 + i, codebook_size=tok.codebook_size, code_shape=tok.code_shape,
                       windows=opts.extract_windows) for i in range(2)]
    on_device = [{k: d[k].to(device) for k in ("x", "ch")} for d in data]
    i = itertools.count()
    with torch.inference_mode():
        model.encode(on_device[0]["x"], on_device[0]["ch"])  # warm-up
        reset_peak(device)
        with_copies = timed_reps(
            lambda: (lambda d: model.encode(d["x"].to(device), d["ch"].to(device)).cpu())(data[next(i) % 2]),
            reps=opts.extract_batches, budget=budget, device=device)
        model_only = timed_reps(lambda: model.encode(**on_device[next(i) % 2]), reps=opts.extract_batches,
                                budget=Budget(max(budget.seconds - budget.elapsed(), 0.0)), device=device)
    b, c, p = data[0]["x"].shape[:3]
    flops = tokenizer_forward_flops(tok, b, c, p, decoders=False)
    flops["total"] = sum(flops.values())
    out = {"precision": "fp32", "mode": "eval + torch.inference_mode", "windows_per_batch": b, "channels": c,
           "patches_per_window": p,
           "windows_per_s": b / with_copies["median_s"], "patches_per_s": b * c * p / with_copies["median_s"],
           "windows_per_s_model_only": b / model_only["median_s"],
           "with_host_copies": with_copies, "model_only": model_only, "peak_memory": peak_memory(device),
           "flops_per_batch_formula": flops,
           "tflops_per_s_model_only": flops["total"] / model_only["median_s"] / 1e12,
           "stopped_by_budget": with_copies["stopped_by_budget"] or model_only["stopped_by_budget"]}
    del model, data, on_device
    free(device)
    return out


# --------------------------------------------------------------------------- fit under DDP at world size 1


class SyntheticEpoch(torch.utils.data.Dataset):
    """make_data(epoch, first_step) for fit(): item i is batch i of the epoch, a pure function of (epoch, i)."""

    def __init__(self, opts: Options, epoch: int) -> None:
        self.opts, self.epoch = opts, epoch
        self.tok = tokenizer_config(opts)

    def __len__(self) -> int:
        return self.opts.fit_batches_per_epoch

    def __getitem__(self, i: int) -> dict:
        return make_batch(self.opts, 1000 * (self.epoch + 1) + i, codebook_size=self.tok.codebook_size,
                          code_shape=self.tok.code_shape)


class WorldOneDDP:
    """The Accelerator fit() is given, with prepare() wrapping the model in DDP where Accelerate does not.

    Accelerate wraps a model in DistributedDataParallel on GPUs only when num_processes > 1
    (Accelerator.multi_device → PartialState.use_distributed); at world size 1 on CUDA it returns the bare
    module even with a process group. On CPU (MULTI_CPU, gloo) it wraps at any size. Everything else is the
    real Accelerator's."""

    def __init__(self, accelerator) -> None:
        self._accelerator = accelerator
        self.wrapped_here = False

    def __getattr__(self, name: str):
        return getattr(self._accelerator, name)

    def prepare(self, model, optimizer):
        model, optimizer = self._accelerator.prepare(model, optimizer)
        if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
            device = self._accelerator.device
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index or 0] if device.type == "cuda" else None)
            self.wrapped_here = True
        return model, optimizer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _world_size_one_env() -> dict[str, str]:
    """torchrun's variables for one process, so Accelerate initializes a process group (nccl on CUDA, gloo on CPU)."""
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    for key, value in env.items():
        os.environ.setdefault(key, value)
    return {k: os.environ[k] for k in env}


def _fit_once(kind: str, opts: Options, out: Path, tc: TrainConfig, *, stop_after: int | None) -> dict:
    from pipeline.train.loop import fit, make_accelerator

    accelerator = WorldOneDDP(make_accelerator(tc))
    model = build(kind, opts)
    calls = {"n": 0}
    step_fn = tokenizer_step if kind == "tokenizer" else pretrain_step

    def train_step(m, batch):
        calls["n"] += 1
        return step_fn(m, batch)

    count = (lambda b: model.count_targets(b["ch"], b["mask"])) if kind == "pretrain" else None
    result = fit(model, out, tc, accelerator, make_data=lambda epoch, first: SyntheticEpoch(opts, epoch),
                 train_step=train_step, count=count, stop_after=stop_after)
    import torch.distributed as dist

    return {"step": result.step, "train_steps_run": calls["n"], "records": result.records,
            "ddp": {"wrapped_by": "gpu_check (WorldOneDDP)" if accelerator.wrapped_here else "accelerate",
                    "distributed_type": str(accelerator.distributed_type),
                    "process_group": dist.get_backend() if dist.is_initialized() else None,
                    "world_size": dist.get_world_size() if dist.is_initialized() else None},
            "device": str(accelerator.device)}


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from pipeline.train.checkpoint import latest

    return load_file(str(latest(out / "checkpoints") / "model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if set(a) != set(b):
        return float("inf")
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def _losses_by_step(records: list[dict]) -> dict[int, float]:
    return {r["step"]: r["losses"]["loss"] for r in records if r.get("kind") == "train"}


def fit_check(kind: str, opts: Options, work: Path, device: torch.device) -> dict:
    from pipeline.train.checkpoint import latest

    bf16 = device.type == "cuda"  # the paper config trains in bf16; bf16 on a CPU without it is emulated and slow
    tc = TrainConfig(batch_size=opts.windows, max_steps=opts.fit_steps, warmup_steps=2, lr=5e-4,
                     checkpoint_every=opts.fit_steps // 2, eval_every=10**6, log_every=1,
                     mixed_precision="bf16" if bf16 else "no", seed=opts.seed)
    t0 = time.perf_counter()
    whole = _fit_once(kind, opts, work / f"{kind}-whole", tc, stop_after=None)
    t_whole = time.perf_counter() - t0
    half = opts.fit_steps // 2
    first = _fit_once(kind, opts, work / f"{kind}-resumed", tc, stop_after=half)
    ckpt = latest(work / f"{kind}-resumed" / "checkpoints")
    resumed = _fit_once(kind, opts, work / f"{kind}-resumed", tc, stop_after=None)
    diff = _max_diff(_final_weights(work / f"{kind}-whole"), _final_weights(work / f"{kind}-resumed"))
    la, lb = _losses_by_step(whole["records"]), _losses_by_step(resumed["records"])
    out = {
        "precision": tc.mixed_precision, "steps": tc.max_steps, "batches_per_epoch": opts.fit_batches_per_epoch,
        "ddp": whole["ddp"], "device": whole["device"], "uninterrupted_s": t_whole,
        "uninterrupted_final_step": whole["step"],
        "stopped_at_step": first["step"], "checkpoint_after_stop": ckpt.name if ckpt else None,
        "resumed_final_step": resumed["step"], "optimizer_steps_after_resume": resumed["train_steps_run"],
        "logged_steps_after_resume": sorted(lb),
        "resumed_ok": (first["step"] == half and ckpt is not None and ckpt.name == f"step-{half:07d}"
                       and resumed["step"] == tc.max_steps and resumed["train_steps_run"] == tc.max_steps - half
                       and sorted(lb) == list(range(1, tc.max_steps + 1))),
        "max_abs_weight_diff_resumed_vs_uninterrupted": diff,
        "max_abs_loss_diff_resumed_vs_uninterrupted": max(abs(la[s] - lb[s]) for s in la) if set(la) == set(lb)
        else float("inf"),
        "losses_uninterrupted": la, "losses_resumed": lb,
    }
    out["equal_to_uninterrupted"] = diff == 0.0
    if diff != 0.0:
        # tell a resume bug from run-to-run nondeterminism (atomics in CUDA backward kernels): a second
        # uninterrupted run
        again = _fit_once(kind, opts, work / f"{kind}-again", tc, stop_after=None)
        out["max_abs_weight_diff_rerun_vs_uninterrupted"] = _max_diff(_final_weights(work / f"{kind}-whole"),
                                                                      _final_weights(work / f"{kind}-again"))
    return out


def section_fit(opts: Options, budget: Budget, device: torch.device) -> dict:
    import torch.distributed as dist

    env = _world_size_one_env()
    out: dict[str, Any] = {"env": env}
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_check_fit_") as tmp:
            for kind in ("pretrain", "tokenizer"):
                if kind != "pretrain" and budget.over():
                    out["stopped_by_budget"] = True
                    break
                out[kind] = fit_check(kind, opts, Path(tmp), device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    out["resumed_ok"] = all(out[k]["resumed_ok"] for k in ("pretrain", "tokenizer") if k in out)
    return out


# --------------------------------------------------------------------------- driver


def section_functions() -> dict[str, Callable[[Options, Budget, torch.device], dict]]:
    return {
        "environment": section_environment,
        "sdpa": section_sdpa,
        "tokenizer_bf16": lambda o, b, d: section_train("tokenizer", "bf16", o, b, d),
        "tokenizer_fp32": lambda o, b, d: section_train("tokenizer", "fp32", o, b, d),
        "pretrain_bf16": lambda o, b, d: section_train("pretrain", "bf16", o, b, d),
        "pretrain_fp32": lambda o, b, d: section_train("pretrain", "fp32", o, b, d),
        "agreement": section_agreement,
        "extract_codes": section_extract_codes,
        "fit": section_fit,
    }


def _plain(value: Any) -> Any:
    """JSON-able: tensors → lists, non-finite floats → strings (strict JSON has no NaN/inf)."""
    if isinstance(value, torch.Tensor):
        return _plain(value.detach().cpu().tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_atomic(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_plain(report), indent=2))
    os.replace(tmp, path)


def run(opts: Options) -> dict:
    device = torch.device(opts.device)
    if opts.smoke:
        # correctness, not speed: one thread, which does not spin against the other jobs of a shared CI machine
        # (OMP_NUM_THREADS also keeps Accelerate's MULTI_CPU set-up from raising the count again)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but torch.cuda.is_available() is False; use --smoke on a CPU")
    path = opts.out / "gpu_check.json"
    report: dict[str, Any] = {"benchmark": "gpu_check", "options": dataclasses.asdict(opts), "sections": {}}
    functions = section_functions()
    start = time.perf_counter()
    for name in opts.sections:
        left = opts.total_budget_s - (time.perf_counter() - start)
        budget_s = min(opts.budgets[name], max(left, 0.0))
        entry: dict[str, Any] = {"budget_s": budget_s}
        if left <= 0:
            entry.update(status="skipped", reason=f"total budget of {opts.total_budget_s} s spent")
        else:
            budget = Budget(budget_s)
            log.warning("gpu_check: %s (budget %.0f s)", name, budget_s)
            try:
                entry.update(status="ok", **functions[name](opts, budget, device))
            except Exception as exc:  # one broken section must not cost the others their numbers
                entry.update(status="error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
                log.error("gpu_check: section %s failed:\n%s", name, entry["traceback"])
                free(device)
            entry["wall_s"] = budget.elapsed()
        report["sections"][name] = entry
        report["elapsed_s"] = time.perf_counter() - start
        write_json_atomic(path, report)
    return report


def summary(report: dict) -> str:
    lines = []
    for name, s in report["sections"].items():
        if s["status"] != "ok":
            lines.append(f"{name:15s} {s['status'].upper()}: {s.get('error', s.get('reason', ''))}")
        elif "patches_per_s" in s and "mfu_vs_bf16_peak" in s:
            lines.append(f"{name:15s} {s['patches_per_s']:12.1f} patches/s  {s['step_s_median'] * 1e3:8.2f} ms/step  "
                         f"{s['tflops_per_s']:9.3g} TFLOP/s  MFU {s['mfu_vs_bf16_peak']:.3g}  "
                         f"peak {s['peak_memory']}")
        elif name == "extract_codes":
            lines.append(f"{name:15s} {s['windows_per_s']:12.1f} windows/s ({s['windows_per_s_model_only']:.1f} "
                         f"model only)")
        elif name == "fit":
            lines.append(f"{name:15s} resumed_ok {s['resumed_ok']}  " + "  ".join(
                f"{k}: equal {s[k]['equal_to_uninterrupted']} (max |Δw| "
                f"{s[k]['max_abs_weight_diff_resumed_vs_uninterrupted']:.3g})" for k in ("pretrain", "tokenizer")
                if k in s))
        elif name == "sdpa":
            lines.append(f"{name:15s} " + "  ".join(f"{k}: {v['dispatched']}" for k, v in s.items()
                                                     if isinstance(v, dict)))
        elif name == "agreement":
            lines.append(f"{name:15s} " + "  ".join(
                f"{k}: loss rel {v['loss_rel_diff']:.2e}, grad cos {v['grad_cosine_all']:.5f}"
                for k, v in s.items() if isinstance(v, dict)))
        else:
            lines.append(f"{name:15s} ok")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json")
    p.add_argument("--smoke", action="store_true", help="tiny demo sizes on the CPU, < 1 min (the test suite's mode)")
    p.add_argument("--device", help="cuda (default) or cpu; --smoke implies cpu")
    p.add_argument("--windows", type=int, help="windows per step per GPU (default 8: batch 64 over 8 GPUs)")
    p.add_argument("--steps", type=int, help="timed training steps at most per configuration")
    p.add_argument("--warmup", type=int)
    p.add_argument("--extract-windows", type=int, help="windows per encode batch (default 256)")
    p.add_argument("--peak-tflops", type=float, help=f"dense bf16 peak (default {H200_DENSE_BF16_TFLOPS}, H200)")
    p.add_argument("--total-budget", type=float, help="seconds for all sections (default 450)")
    p.add_argument("--budget", action="append", default=[], metavar="SECTION=SECONDS")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, help="run only these (in the usual order)")
    args = p.parse_args(argv)
    opts = Options.smoke_mode(args.out) if args.smoke else Options(out=args.out)
    overrides = {"device": args.device, "windows": args.windows, "steps": args.steps, "warmup": args.warmup,
                 "extract_windows": args.extract_windows, "peak_tflops": args.peak_tflops,
                 "total_budget_s": args.total_budget}
    opts = dataclasses.replace(opts, **{k: v for k, v in overrides.items() if v is not None})
    for item in args.budget:
        name, _, seconds = item.partition("=")
        if name not in SECTIONS or not seconds:
            p.error(f"--budget {item!r}: expected SECTION=SECONDS with SECTION one of {SECTIONS}")
        opts.budgets[name] = float(seconds)
    if args.sections:
        opts.sections = tuple(s for s in SECTIONS if s in args.sections)
    return opts


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    opts = parse_args(argv)
    report = run(opts)
    print(summary(report))
    print(f"wrote {opts.out / 'gpu_check.json'}")
    return 1 if any(s["status"] == "error" for s in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
