"""Pretraining throughput on this machine (CPU): the training step, the data loader alone, peak memory.

    python benchmarks/pretrain.py                                  → benchmarks/out/pretrain.json
    python benchmarks/pretrain.py --sizes base --precision bf16 --steps 5
    python benchmarks/pretrain.py --skip-loader
    python benchmarks/pretrain.py --profile base --precision bf16  → torch.profiler table of one step

1. Training step, per (size, precision), each in a fresh subprocess (so peak RSS is per configuration):
   pipeline.train.loop.optimizer_step, the function fit() calls for every batch — count the targets, autocast
   forward (pipeline.train.steps.pretrain_step: both masked passes, symmetric is on by default), backward,
   gradient clipping, AdamW + schedule step, zero_grad — through the same Accelerator
   (make_accelerator; precision bf16 = TrainConfig.mixed_precision "bf16", i.e.
   torch.autocast("cpu", torch.bfloat16)). Batches: 8 windows × 19 channels × 30 patches of 200
   samples (4560 input patches per step; sums of sinusoids + noise), codes uniform in
   [0, codebook) (8192 at base, 512 at demo), masks from pipeline.train.masking.sample_mask
   (via draw_masks) on random importance features, so ≈ 45 % of the patches are masked as in
   training. A fresh batch per step; warm-up steps, then the median of --steps timed steps.
   Patches/s counts input patches (B·C·P), as fit() logs them.
2. Loader alone: MaskedBatches(WindowBatches(index, epoch_batches(...), fields=FIELDS), MaskConfig())
   over the demo shards and codes (results/demo, or built into benchmarks/out/work/ if absent), through
   the same DataLoader as fit() (num_workers 0 and 1), batch 8, several epochs; a fresh dataset per
   epoch as fit() makes one (stores re-opened, chunk cache cold). Reported: patches/s, and its ratio
   to each training step's consumption.

The machine may be shared: before each timed step the benchmark waits (bounded) for a quiet machine,
and records how many cores *other* processes kept busy during the step (/proc/stat); a step disturbed
by more than 0.1 core is retaken up to --retries times and the least disturbed take is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import OUT, ROOT
from tokenizer_model import CHANNELS, PATCHES, _batch, _cpu_ticks, wait_for_quiet

RESULT = OUT / "pretrain.json"
CODEBOOK = {"demo": 512, "base": 8192}
# The targets (base size, this 2-core machine class) and the published implementation measured here.
TARGETS = {"base_train_patches_per_s": 800, "loader_over_step": 20.0}
REFERENCE = {"published_full_step_patches_per_s": 261, "published_model_only_patches_per_s": 305}
DISTURBED = 0.1  # other processes' busy cores above which a timed step counts as disturbed


# --------------------------------------------------------------------------- training step (child process)


def _model(size: str, precision: str, batch: int):
    import torch

    from pipeline.config import TrainConfig
    from pipeline.models.backbone import BackboneConfig
    from pipeline.models.pretrain import PretrainConfig, PretrainModel
    from pipeline.montage import load_vocabulary
    from pipeline.train.loop import adamw, make_accelerator
    from pipeline.train.schedule import warmup_cosine

    torch.manual_seed(0)
    # as pipeline.train.pretrain.model_config builds it for 30-patch windows
    backbone = (BackboneConfig.base if size == "base" else BackboneConfig.demo)(
        vocab_size=len(load_vocabulary()), max_patches=max(PATCHES, 64))
    config = PretrainConfig(backbone=backbone, domains=("time", "freq"), levels=3, codebook_size=CODEBOOK[size])
    tc = TrainConfig(batch_size=batch, max_steps=10_000, mixed_precision="bf16" if precision == "bf16" else "no")
    accelerator = make_accelerator(tc)
    model = PretrainModel(config)
    optimizer = adamw(model, tc)
    scheduler = warmup_cosine(optimizer, warmup_steps=tc.warmup_steps, total_steps=tc.max_steps,
                              min_ratio=tc.min_lr_ratio)
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, optimizer, scheduler, accelerator, tc, config


def _batches(n: int, windows: int, config, seed: int = 0) -> list[dict]:
    """n training batches as the loader yields them: x, ch, importance, codes, window, mask."""
    import torch

    from pipeline.config import MaskConfig
    from pipeline.train.pretrain import draw_masks, window_generator

    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(seed + i)
        x, ch = _batch(windows, config.backbone, seed=seed + i)
        b = {"x": x, "ch": ch, "importance": torch.rand(windows, CHANNELS, PATCHES, 5, generator=g),
             "codes": torch.randint(0, config.codebook_size, (windows, CHANNELS, PATCHES, len(config.domains),
                                                              config.levels), generator=g),
             "window": torch.arange(i * windows, (i + 1) * windows)}
        b["mask"] = draw_masks(b, MaskConfig(), 0.5, lambda w: window_generator(seed, 0, w))
        out.append(b)
    return out


def _train_step(model, optimizer, scheduler, accelerator, tc, batch: dict, phases: dict | None = None) -> float:
    """One optimizer step through pipeline.train.loop.optimizer_step, the function fit() calls per batch (micro-
    batches, DDP no_sync on all but the last, autocast, backward, clipping, AdamW, schedule), with the pretraining
    stage's train step and target count. The host waits for the step's last value (the grad norm) before the clock
    stops, so asynchronous devices are timed to the end."""
    from pipeline.train.loop import optimizer_step
    from pipeline.train.steps import pretrain_step

    raw = accelerator.unwrap_model(model)
    t0 = time.perf_counter()
    out = optimizer_step(model, optimizer, scheduler, accelerator, tc, batch, pretrain_step,
                         count=lambda b: raw.count_targets(b["ch"], b["mask"]))
    mask_ratio = float(out.record["mask_ratio"])
    float(out.grad_norm)
    if phases is not None:
        phases.setdefault("step", []).append(time.perf_counter() - t0)
    return mask_ratio


def run_one(size: str, precision: str, *, batch: int, steps: int, warmup: int, retries: int,
            quiet_wait: float) -> dict:
    import torch

    model, optimizer, scheduler, accelerator, tc, config = _model(size, precision, batch)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    data = _batches(warmup + steps * (1 + retries), batch, config)
    patches = batch * CHANNELS * PATCHES
    hz = os.sysconf("SC_CLK_TCK")
    with accelerator.autocast():
        autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None

    first_step_s = None
    t0 = time.perf_counter()
    for i in range(warmup):
        _train_step(model, optimizer, scheduler, accelerator, tc, data[i])
        if i == 0:
            first_step_s = time.perf_counter() - t0
    used = warmup
    takes, phases, ratios = [], {}, []
    for _ in range(steps):
        best = None
        for attempt in range(retries + 1):
            quiet_before = wait_for_quiet(quiet_wait) if quiet_wait > 0 else None
            busy0, own0 = _cpu_ticks()
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            step_phases: dict = {}
            ratios.append(_train_step(model, optimizer, scheduler, accelerator, tc, data[used], step_phases))
            used += 1
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            busy1, own1 = _cpu_ticks()
            seconds = step_phases["step"][0]
            other = max(0.0, ((busy1 - busy0) - (own1 - own0)) / hz / seconds)
            take = {"s": seconds, "own_cpu_s": (own1 - own0) / hz, "sys_s": ru1.ru_stime - ru0.ru_stime,
                    "minor_faults": ru1.ru_minflt - ru0.ru_minflt, "other_cores_busy": round(other, 2),
                    "attempts": attempt + 1,
                    "quiet_before": quiet_before, "phases": {k: v[0] for k, v in step_phases.items()}}
            if best is None or take["other_cores_busy"] < best["other_cores_busy"]:
                best = take
            if other <= DISTURBED:
                break
        takes.append(best)
        for k, v in best["phases"].items():
            phases.setdefault(k, []).append(v)
    times = [t["s"] for t in takes]
    clean = [t["s"] for t in takes if t["other_cores_busy"] <= DISTURBED]
    median = statistics.median(times)
    return {
        "size": size,
        "precision": precision,
        "autocast_dtype": str(autocast) if autocast is not None else None,
        "windows_per_batch": batch,
        "patches_per_step": patches,
        "tokens_per_pass": CHANNELS * PATCHES,
        "symmetric": config.symmetric,
        "mask_ratio_mean": round(statistics.fmean(ratios), 4),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": config.to_dict(),
        "first_step_s": round(first_step_s, 3) if first_step_s is not None else None,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "step_s": round(median, 4),
        "step_s_min": round(min(times), 4),
        "step_s_all": [round(t, 4) for t in times],
        "train_patches_per_s": round(patches / median, 1),
        "train_patches_per_s_best": round(patches / min(times), 1),
        "train_patches_per_s_undisturbed": round(patches / statistics.median(clean), 1) if clean else None,
        "undisturbed_steps": len(clean),
        "other_cores_busy_median": statistics.median(t["other_cores_busy"] for t in takes),
        "other_cores_busy_max": max(t["other_cores_busy"] for t in takes),
        "attempts": sum(t["attempts"] for t in takes),
        # CPU seconds of this process per step (its threads together): less sensitive to other load than
        # wall time, though OpenMP threads spin while waiting for a descheduled sibling
        "own_cpu_s_per_step": round(statistics.median(t["own_cpu_s"] for t in takes), 3),
        # kernel time and first-touch page faults: with glibc's default malloc every large activation is a fresh
        # mmap each step (5.5 s of a 10.2 s base step); pipeline/train/allocator.py keeps freed memory instead
        "sys_s_per_step": round(statistics.median(t["sys_s"] for t in takes), 3),
        "minor_faults_per_step": int(statistics.median(t["minor_faults"] for t in takes)),
        "phase_s_median": {k: round(statistics.median(v), 4) for k, v in phases.items()},
        "rss_after_build_mib": round(rss_model, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    }


def profile(size: str, precision: str, batch: int, rows: int = 30) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    model, optimizer, scheduler, accelerator, tc, config = _model(size, precision, batch)
    data = _batches(3, batch, config)
    for b in data[:2]:
        _train_step(model, optimizer, scheduler, accelerator, tc, b)
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        _train_step(model, optimizer, scheduler, accelerator, tc, data[2])
    avg = prof.key_averages()
    text = (f"# {size} {precision}: one training step, batch {batch}\n\n"
            + avg.table(sort_by="self_cpu_time_total", row_limit=rows)
            + "\n\nby input shape:\n"
            + prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows))
    return text


# --------------------------------------------------------------------------- loader (child process)


def demo_data() -> tuple[list[Path], list[Path], str]:
    """(shard folders, code folders, where from): the demo run's, or built here into benchmarks/out/work/."""
    names = ("demo_bids", "demo_physionet")
    shards = [ROOT / "results" / "demo" / n / "shards" for n in names]
    codes = [ROOT / "results" / "demo" / "codes" / "ddrvq-demo" / n for n in names]

    def ok(c: Path) -> bool:
        stamp = c / "fingerprint.json"
        return stamp.is_file() and "codebook_size" in json.loads(stamp.read_text())

    if all((s / "index.parquet").is_file() for s in shards) and all(ok(c) for c in codes):
        return shards, codes, "results/demo"
    from pipeline.config import TokenizerSection, TrainConfig
    from pipeline.stages.extract_codes import extract_codes
    from pipeline.train.tokenizer import train_tokenizer
    from tokenizer import build_shards  # the tokenizer benchmark's demo shards: 30 s windows, chunks of 4

    work = OUT / "work"
    shards = build_shards(work / "shards")
    tok = work / "tokenizer"
    if not (tok / "model.safetensors").is_file():
        section = TokenizerSection(model={"dead_code_threshold": 2.0, "commitment_weight": 0.25}, eval_windows=8,
                                   train=TrainConfig(batch_size=8, max_steps=40, lr=2e-3, warmup_steps=5,
                                                     checkpoint_every=40, eval_every=100, log_every=10))
        train_tokenizer(shards, tok, section)
    codes = []
    for s in shards:
        codes.append(work / "codes" / s.parent.name)
        if not ok(codes[-1]):
            extract_codes(s, tok, codes[-1])
    return shards, codes, "benchmarks/out/work"


def run_loader(workers: int, epochs: int, batch: int) -> dict:
    import torch

    from pipeline.config import MaskConfig
    from pipeline.data.windows import WindowBatches, WindowIndex, epoch_batches
    from pipeline.train.loop import make_loader
    from pipeline.train.pretrain import FIELDS, MaskedBatches, check_code_stores

    shards, codes, source = demo_data()
    meta = check_code_stores(shards, codes)
    index = WindowIndex.from_shard_dirs(shards, codes_dirs=codes)  # all splits: more batches per epoch
    per_epoch, batch_times, masked, valid = [], [], 0, 0
    shape = None
    step = 0
    total_steps = epochs * (len(index) // batch)
    busy0, own0 = _cpu_ticks()
    t_all = time.perf_counter()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        batches = epoch_batches(index, batch_size=batch, seed=0, epoch=epoch, buffer_chunks=8)
        data = MaskedBatches(WindowBatches(index, batches, fields=FIELDS), MaskConfig(), seed=0, epoch=epoch,
                             first_step=step, total_steps=total_steps)
        n_patches = 0
        tb = time.perf_counter()
        for b in make_loader(data, workers, 0):
            now = time.perf_counter()
            batch_times.append(now - tb)
            shape = tuple(b["x"].shape)
            n_patches += b["x"].shape[0] * b["x"].shape[1] * b["x"].shape[2]
            v = int((b["ch"] >= 0).sum()) * b["x"].shape[2]
            masked, valid = masked + int(b["mask"].sum()), valid + v
            step += 1
            tb = time.perf_counter()
        per_epoch.append({"s": time.perf_counter() - t0, "patches": n_patches, "batches": len(data)})
    wall = time.perf_counter() - t_all
    busy1, own1 = _cpu_ticks()
    other = max(0.0, ((busy1 - busy0) - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / wall)
    steady = per_epoch[1:] or per_epoch
    steady_pps = sum(e["patches"] for e in steady) / sum(e["s"] for e in steady)
    patches_per_batch = shape[0] * shape[1] * shape[2]
    return {
        "num_workers": workers,
        "data": source,
        "windows": len(index),
        "codebook_size": meta.codebook_size,
        "batch_shape_x": list(shape),
        "epochs": epochs,
        "batches_per_epoch": per_epoch[0]["batches"],
        "mask_ratio": round(masked / max(valid, 1), 4),
        "first_epoch_patches_per_s": round(per_epoch[0]["patches"] / per_epoch[0]["s"], 1),
        "patches_per_s": round(steady_pps, 1),  # epochs after the first (page cache warm)
        "patches_per_s_all_epochs": round(sum(e["patches"] for e in per_epoch) / wall, 1),
        "batch_s_median": round(statistics.median(batch_times), 5),
        "patches_per_s_median_batch": round(patches_per_batch / statistics.median(batch_times), 1),
        "other_cores_busy": round(other, 2),  # worker processes count as "other" with num_workers > 0
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------- driver


def machine_info() -> dict:
    import torch

    from _common import machine

    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    flags = Path("/proc/cpuinfo").read_text()
    return {**machine(), "platform": platform.platform(), "cpu_model": model, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "avx512_bf16": " avx512_bf16" in flags,
            "amx": " amx_bf16" in flags,
            # an allocator swapped in from outside (LD_PRELOAD=libjemalloc.so.2 MALLOC_CONF=...) changes the numbers
            "ld_preload": os.environ.get("LD_PRELOAD"), "malloc_conf": os.environ.get("MALLOC_CONF")}


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"benchmark child {args} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(report: dict) -> None:
    train = report.get("train", [])
    loaders = report.get("loader", [])
    fastest = max((r["patches_per_s"] for r in loaders), default=None)
    for r in train:
        ratios = {f"workers={lo['num_workers']}": round(lo["patches_per_s"] / r["train_patches_per_s"], 1)
                  for lo in loaders}
        r["loader_over_step"] = ratios
    base = [r for r in train if r["size"] == "base"]
    checks: dict = {}
    for r in base:
        checks[f"base_{r['precision']}_train_patches_per_s"] = {
            "value": r["train_patches_per_s"], "target": TARGETS["base_train_patches_per_s"],
            "pass": r["train_patches_per_s"] >= TARGETS["base_train_patches_per_s"]}
        if fastest is not None:
            checks[f"base_{r['precision']}_loader_over_step"] = {
                "value": round(fastest / r["train_patches_per_s"], 1), "target": TARGETS["loader_over_step"],
                "pass": fastest / r["train_patches_per_s"] >= TARGETS["loader_over_step"]}
    report["targets"] = {**TARGETS, **REFERENCE, "checks": checks}


def print_summary(report: dict) -> None:
    for r in report.get("train", []):
        print(f"{r['size']:4s} {r['precision']:4s}  {r['train_patches_per_s']:8.1f} patches/s  "
              f"({r['step_s']:.3f} s/step, best {r['train_patches_per_s_best']:.1f})  "
              f"kernel {r.get('sys_s_per_step', 0):.2f} s  "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB  "
              f"masked {r['mask_ratio_mean']:.3f}  other load {r['other_cores_busy_median']:.2f} core(s)  "
              f"loader/step {r.get('loader_over_step', {})}")
    for lo in report.get("loader", []):
        print(f"loader workers={lo['num_workers']}  {lo['patches_per_s']:10.1f} patches/s "
              f"(first epoch {lo['first_epoch_patches_per_s']:.1f}, median batch "
              f"{lo['patches_per_s_median_batch']:.1f})  mask ratio {lo['mask_ratio']:.3f}  "
              f"peak RSS {lo['peak_rss_mib']:.0f} MiB")
    for name, c in report.get("targets", {}).get("checks", {}).items():
        print(f"target {name}: {c['value']} vs ≥ {c['target']}: {'PASS' if c['pass'] else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["demo", "base"], choices=["demo", "base"])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="windows per step (19 channels × 30 patches each)")
    parser.add_argument("--retries", type=int, default=1, help="retakes of a step disturbed by other processes")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="seconds to wait (at most) for an idle machine before each timed step")
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--loader-epochs", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DataLoader workers to measure")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--update", action="store_true",
                        help="keep the other configurations of an existing --out file, replace the ones measured now")
    parser.add_argument("--profile", choices=["demo", "base"],
                        help="print a torch.profiler table of one step (first --precision) and exit")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "PRECISION"), help=argparse.SUPPRESS)
    parser.add_argument("--loader-one", type=int, metavar="WORKERS", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], batch=args.batch, steps=args.steps, warmup=args.warmup,
                                 retries=args.retries, quiet_wait=args.quiet_wait)))
        return
    if args.loader_one is not None:
        print(json.dumps(run_loader(args.loader_one, args.loader_epochs, args.batch)))
        return
    if args.profile:
        text = profile(args.profile, args.precision[0], args.batch)
        print(text)
        path = args.out.with_name(f"{args.out.stem}_profile_{args.profile}_{args.precision[0]}.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
        return

    report: dict = {"benchmark": "pretrain", "machine": machine_info(),
                    "settings": {"steps": args.steps, "warmup": args.warmup, "batch": args.batch,
                                 "retries": args.retries, "quiet_wait_s": args.quiet_wait,
                                 "disturbed_above_cores": DISTURBED},
                    "train": [], "loader": []}
    if args.update and args.out.is_file():
        old = json.loads(args.out.read_text())
        measure = {(s, p) for s in args.sizes for p in args.precision}
        report["train"] = [r for r in old.get("train", []) if (r["size"], r["precision"]) not in measure]
        if not args.skip_loader:
            report["loader"] = [r for r in old.get("loader", []) if r["num_workers"] not in args.workers]
        else:
            report["loader"] = old.get("loader", [])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.skip_loader:
        for workers in args.workers:
            if args.quiet_wait > 0:
                wait_for_quiet(args.quiet_wait)
            result = _child(["--loader-one", str(workers), "--loader-epochs", str(args.loader_epochs),
                             "--batch", str(args.batch)])
            result["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
            report["loader"].append(result)
            args.out.write_text(json.dumps(report, indent=2))
    for size in args.sizes:
        for precision in args.precision:
            result = _child(["--one", size, precision, "--batch", str(args.batch), "--steps", str(args.steps),
                             "--warmup", str(args.warmup), "--retries", str(args.retries),
                             "--quiet-wait", str(args.quiet_wait)])
            result["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
            report["train"].append(result)
            report["train"].sort(key=lambda r: (r["size"] != "demo", r["precision"] != "fp32"))
            summarize(report)
            args.out.write_text(json.dumps(report, indent=2))  # after every configuration
            print_summary({"train": [result]})
    summarize(report)
    args.out.write_text(json.dumps(report, indent=2))
    print()
    print_summary(report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
