"""Tokenizer benchmark: speed at demo and paper sizes, and held-out reconstruction per variant.

    python benchmarks/tokenizer.py                 → benchmarks/out/tokenizer.json (+ .md table)
    python benchmarks/tokenizer.py --steps 100 --skip-speed

1. Speed (training step and encode, patches/s, peak RSS; batches of 30 s × 19-channel windows) at
   the demo and paper sizes, measured by benchmarks/tokenizer_model.py's `run_one`.
2. Reconstruction: DD-RVQ, its single-domain ablations and LaBraM's VQ-NSP are trained on the same
   demo shards (real EEG: pylossless s01 + PhysioNet S001R02, 30 s windows), for the same steps, with
   the same seed and schedule, and evaluated on the held-out subject s02 in the signal domain
   (NMSE and Pearson r of the waveform, log-amplitude error, amplitude-weighted phase error).
   Code budget: every level of every variant has the same codebook (demo: 512 × 32). The ablations
   get DD-RVQ's number of codes per patch (6 levels in their one domain: equal bits per patch);
   LaBraM is a single level by definition and is reported at its own, lower rate (bits_per_patch).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import OUT, demo_shards, write_result

from pipeline.config import TokenizerSection, TrainConfig

# (label, variant, model overrides beyond the demo size)
VARIANTS = (
    ("DD-RVQ (time + freq, 3 levels each)", "ddrvq", {}),
    ("time only (6 levels)", "ddrvq_time", {"levels": 6}),
    ("freq only (6 levels)", "ddrvq_freq", {"levels": 6}),
    ("LaBraM VQ-NSP (1 level)", "labram", {}),
)
SHARED = {"dead_code_threshold": 2.0, "commitment_weight": 0.25}  # as config/demo.yaml


def build_shards(root: Path) -> list[Path]:
    return demo_shards(root, window_s=30, chunk_windows=4, bids_test=("s02",))


def reconstruction(steps: int, seed: int) -> list[dict]:
    from pipeline.models.config import TokenizerConfig
    from pipeline.train.tokenizer import train_tokenizer

    shards = build_shards(OUT / "data" / "tokenizer_shards")
    rows = []
    for label, variant, overrides in VARIANTS:
        model = {**SHARED, **overrides}
        section = TokenizerSection(name=variant, variant=variant, model=model, eval_windows=64,
                                   train=TrainConfig(batch_size=8, max_steps=steps, lr=2e-3, warmup_steps=20,
                                                     checkpoint_every=steps, eval_every=steps, log_every=10,
                                                     seed=seed))
        out = OUT / "tokenizer_runs" / f"{variant}-{steps}-{seed}"
        t0 = time.perf_counter()
        result = train_tokenizer(shards, out, section)
        cfg = TokenizerConfig.demo(variant, **model)
        rows.append({"variant": label, "name": variant, "bits_per_patch": cfg.bits_per_patch,
                     "codes_per_patch": cfg.n_domains * cfg.levels, "train_wall_s": time.perf_counter() - t0,
                     **result.heldout})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def speed() -> list[dict]:
    from tokenizer_model import run_one

    rows = []
    for size, batch in (("demo", 8), ("paper", 8)):
        r = run_one(size, "ddrvq", batch, repeats=3, warmup=2, retries=1, quiet_wait=30.0)
        rows.append({k: r[k] for k in ("size", "variant", "windows_per_batch", "train_patches_per_s",
                                        "encode_patches_per_s", "peak_rss_mib") if k in r})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(recon: list[dict], steps: int) -> str:
    best = min(recon, key=lambda r: r["nmse"])
    lines = [f"Held-out reconstruction on subject s02 (real EEG), {steps} training steps, demo size:", "",
             "| variant | codes/patch | bits/patch | NMSE ↓ | Pearson r ↑ | log-amp MAE ↓ | phase err ↓ |",
             "|---|---|---|---|---|---|---|"]
    for r in recon:
        lines.append(f"| {r['variant']} | {r['codes_per_patch']} | {r['bits_per_patch']:.0f} | {r['nmse']:.3f} | "
                     f"{r['pearson']:.3f} | {r['log_amplitude_mae']:.3f} | {r['phase_error']:.3f} |")
    lines += ["", f"Best reconstruction (lowest NMSE): **{best['variant']}**."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    recon = reconstruction(args.steps, args.seed)
    table = markdown(recon, args.steps)
    result = {"reconstruction": recon, "best_by_nmse": min(recon, key=lambda r: r["nmse"])["variant"],
              "steps": args.steps, "seed": args.seed, "table": table}
    if not args.skip_speed:
        result["speed"] = speed()
        result["targets_paper"] = {"train_patches_per_s": 600, "encode_patches_per_s": 1370}
    write_result("tokenizer", result)
    (OUT / "tokenizer.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
