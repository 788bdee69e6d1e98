"""Estimated GPU-hours per torch stage of the paper run, from a gpu_check.json and the pipeline config.

    python benchmarks/gpu_hours.py results/gpu_check/gpu_check.json                  # config/config.yaml
    python benchmarks/gpu_hours.py gpu_check.json --config my.yaml --out gpu_hours.md
    python benchmarks/gpu_hours.py gpu_check.json --corpus-windows 2.5e6 --samples samples.json

Every number comes from the JSON (measured per-GPU throughput, the FLOP formula of benchmarks/gpu_check.py) or
from the config (steps, global batch, precision, window length, channel sets, GPUs per job, fine-tuning methods,
seeds and epochs) — except what neither holds, which is an option with a stated default:

* extract-codes: the number of pretraining-corpus windows. Default: the windows pretraining reads
  (max_steps × batch_size), i.e. one epoch's worth; pass --corpus-windows for the real corpus. Schedules held as
  epochs (train.epochs, the paper config's) need it: their steps are epochs × (corpus windows // batch).
* fine-tuning: the samples per downstream dataset, from --samples FILE.json ({dataset: labelled windows, all
  splits}: the row counts of each dataset's samples/index.parquet); datasets without a count are listed as skipped.

Assumptions (also written into the output):

* GPU-hours = work ÷ per-GPU throughput measured by gpu_check at `windows_per_step` windows per GPU; data
  parallelism is taken as perfectly efficient, so wall-clock hours = GPU-hours ÷ the job's GPUs
  (config `resources.<stage>.gpu`). A per-GPU batch in the config other than the measured one is flagged.
* tokenizer / pretraining: max_steps × batch_size × patches per window ÷ measured patches/s, at the stage's
  mixed_precision (bf16 → the *_bf16 section, otherwise *_fp32); pretraining once per run (main + ablations).
* extract-codes: windows ÷ measured windows/s (fp32 eval, including host↔device copies).
* fine-tuning: per dataset, method and seed, epochs × samples × FLOPs per sample ÷ the pretraining step's achieved
  FLOP/s at finetune.mixed_precision. FLOPs per sample = the backbone forward at the dataset's channels × patches
  (gpu_check.backbone_forward_flops) × 3 for the methods that train the backbone (full, scratch, ablation:*),
  × 1 for probe (frozen backbone, forward only); the baselines (classical regressions on the CPU, braindecode
  networks far smaller than the backbone) are left out. Every sample is counted
  as a training sample in every epoch (validation and test passes are forward-only and smaller: an upper bound
  on their share), and short windows (a few hundred tokens or fewer) reach a lower FLOP/s than the pretraining
  step, which makes these hours a lower bound on that side. Treat fine-tuning rows as order-of-magnitude.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

TRAINS_BACKBONE = 3  # forward + backward ≈ 3 forwards
from pipeline.config import BASELINE_METHODS, with_epochs  # noqa: E402

CPU_METHODS = BASELINE_METHODS  # not the backbone's FLOPs (see the docstring)


def load_check(path: Path) -> dict:
    path = path / "gpu_check.json" if path.is_dir() else path
    if not path.is_file():
        raise SystemExit(f"{path}: no gpu_check.json (run benchmarks/gpu_check.py --out DIR first)")
    report = json.loads(path.read_text())
    if report.get("benchmark") != "gpu_check":
        raise SystemExit(f"{path}: not a gpu_check report (no benchmark: gpu_check)")
    return report


def section(report: dict, name: str) -> dict:
    s = report["sections"].get(name)
    if not s or s.get("status") != "ok":
        why = "missing" if not s else s.get("error") or s.get("reason") or s.get("status")
        raise SystemExit(f"gpu_check.json: section {name!r} is not usable ({why}); rerun gpu_check")
    return s


def precision_section(kind: str, mixed_precision: str) -> str:
    return f"{kind}_{'bf16' if mixed_precision == 'bf16' else 'fp32'}"


def window_shape(ds) -> tuple[int, int]:
    """(channels, patches) of one dataset's samples, from its montage channel set and window length."""
    from pipeline.montage import load_channel_set

    if ds.montage.channels is None:
        raise ValueError(f"dataset {ds.name}: montage.channels is null (all channels): channel count not in the config")
    channels = len(load_channel_set(ds.montage.channels))
    window = ds.labels.window_s or ds.patch.window_s
    patches = int(round(window * ds.preprocess.sfreq / ds.patch.patch_len))
    return channels, patches


def gpus(cfg_raw: dict, stage: str) -> int:
    return int((cfg_raw.get("resources") or {}).get(stage, {}).get("gpu", 1))


def training_row(stage: str, runs: int, tc, check: dict, patches_per_window: int, shape: tuple[int, int],
                 n_gpus: int) -> dict:
    measured_shape = (check["channels"], check["patches_per_window"])
    patches = runs * tc.max_steps * tc.batch_size * patches_per_window
    gpu_s = patches / check["patches_per_s"]
    per_gpu_batch = tc.batch_size / n_gpus
    notes = []
    if measured_shape != shape:
        notes.append(f"measured at {measured_shape[0]}×{measured_shape[1]} tokens per window, config {shape[0]}×{shape[1]}")
    if per_gpu_batch != check["windows_per_step"]:
        notes.append(f"config per-GPU batch {per_gpu_batch:g} ≠ measured {check['windows_per_step']}")
    return {"stage": stage, "runs": runs, "work": f"{runs} × {tc.max_steps} steps × {tc.batch_size} windows × "
                                                  f"{patches_per_window} patches", "units": patches,
            "rate": check["patches_per_s"], "rate_unit": f"patches/s/GPU ({check['precision']})",
            "gpu_hours": gpu_s / 3600, "gpus": n_gpus, "wall_hours": gpu_s / 3600 / n_gpus, "notes": notes}


def estimate(report: dict, cfg, cfg_raw: dict, *, corpus_windows: float | None, samples: dict[str, int]) -> dict:
    from gpu_check import backbone_forward_flops

    from pipeline.models.backbone import BackboneConfig

    pretrain_sets = [ds for ds in cfg.datasets.values() if ds.role in ("pretrain", "both")]
    if not pretrain_sets:
        raise SystemExit("config: no dataset with role pretrain/both: nothing to estimate")
    shape = window_shape(pretrain_sets[0])
    ppw = shape[0] * shape[1]
    rows = []

    def steps(tc):  # an epoch-held schedule as steps over the corpus (pipeline.config.with_epochs)
        if tc.epochs is None:
            return tc
        if corpus_windows is None:
            raise SystemExit("config holds the training schedule in epochs: pass --corpus-windows")
        return with_epochs(tc, int(corpus_windows))

    tok = section(report, precision_section("tokenizer", cfg.tokenizer.train.mixed_precision))
    rows.append(training_row("train_tokenizer", len(cfg.tokenizers()), steps(cfg.tokenizer.train), tok, ppw, shape,
                             gpus(cfg_raw, "train_tokenizer")))
    pre = section(report, precision_section("pretrain", cfg.pretrain.train.mixed_precision))
    runs = len(cfg.pretrain_runs())  # main + ablations + one per tokenizer variant
    rows.append(training_row("pretrain", runs, steps(cfg.pretrain.train), pre, ppw, shape, gpus(cfg_raw, "pretrain")))

    ext = section(report, "extract_codes")
    windows = corpus_windows if corpus_windows is not None else cfg.pretrain.train.max_steps * cfg.pretrain.train.batch_size
    source = "--corpus-windows" if corpus_windows is not None else "pretrain max_steps × batch_size (one pass)"
    gpu_s = windows / ext["windows_per_s"]
    rows.append({"stage": "extract_codes", "runs": len(pretrain_sets), "work": f"{windows:.3g} windows ({source})",
                 "units": windows, "rate": ext["windows_per_s"], "rate_unit": "windows/s/GPU (fp32, with copies)",
                 "gpu_hours": gpu_s / 3600, "gpus": max(gpus(cfg_raw, "extract_codes"), 1),
                 "wall_hours": gpu_s / 3600 / max(gpus(cfg_raw, "extract_codes"), 1),
                 "notes": [f"{1e6 / ext['windows_per_s'] / 3600:.3g} GPU-hours per million windows"]})

    ft = cfg.finetune
    fpre = section(report, precision_section("pretrain", ft.mixed_precision))
    flops_per_s = fpre["tflops_per_s"] * 1e12
    # the backbone fine-tuning trains: the pretraining run's (pipeline.train.pretrain.model_config; the vocabulary
    # size does not enter the FLOPs)
    preset = BackboneConfig.base if cfg.pretrain.size == "base" else BackboneConfig.demo
    backbone = preset(**dict(dict(cfg.pretrain.model).get("backbone", {})))
    ft_rows = []
    for name, ds in cfg.datasets.items():
        if ds.role not in ("downstream", "both") or ds.labels.mode == "none":
            continue
        if name not in samples:
            ft_rows.append({"dataset": name, "skipped": "no sample count (pass --samples)"})
            continue
        c, p = window_shape(ds)
        forward = sum(backbone_forward_flops(backbone, 1, c, p).values())
        for method in ft.methods:
            if method in CPU_METHODS:
                continue
            factor = 1 if method == "probe" else TRAINS_BACKBONE
            flops = len(ft.seeds) * ft.epochs * samples[name] * forward * factor
            ft_rows.append({"dataset": name, "method": method, "channels": c, "patches": p, "samples": samples[name],
                            "seeds": len(ft.seeds), "epochs": ft.epochs, "flops": flops,
                            "gpu_hours": flops / flops_per_s / 3600})
    ft_hours = sum(r.get("gpu_hours", 0.0) for r in ft_rows)
    rows.append({"stage": "finetune", "runs": sum(1 for r in ft_rows if "method" in r) * len(ft.seeds),
                 "work": f"{len(ft.seeds)} seeds × {ft.epochs} epochs × samples × backbone FLOPs",
                 "units": sum(r.get("flops", 0.0) for r in ft_rows), "rate": fpre["tflops_per_s"],
                 "rate_unit": f"TFLOP/s/GPU (pretrain step, {fpre['precision']})", "gpu_hours": ft_hours,
                 "gpus": gpus(cfg_raw, "finetune"), "wall_hours": ft_hours / max(gpus(cfg_raw, "finetune"), 1),
                 "notes": ["per-job GPUs; jobs run in parallel as the cluster allows", "order of magnitude"]})
    env = report["sections"].get("environment", {})
    return {"source": {"device": env.get("device_name"), "torch": env.get("torch"), "date": env.get("date_utc"),
                       "mode": env.get("mode")},
            "rows": rows, "finetune": ft_rows, "total_gpu_hours": sum(r["gpu_hours"] for r in rows),
            "samples": samples, "assumptions": __doc__.split("Assumptions (also written into the output):")[1].strip()}


def markdown(result: dict) -> str:
    src = result["source"]
    lines = [f"GPU-hours from gpu_check ({src['mode']} mode, {src['device']}, torch {src['torch']}, {src['date']})", "",
             "| stage | work | measured rate | GPU-hours | GPUs | wall hours | notes |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['stage']} | {r['work']} | {r['rate']:.4g} {r['rate_unit']} | {r['gpu_hours']:.4g} | "
                     f"{r['gpus']} | {r['wall_hours']:.4g} | {'; '.join(r['notes'])} |")
    lines.append(f"| **total** | | | **{result['total_gpu_hours']:.4g}** | | | |")
    lines += ["", "| fine-tuning dataset | method | channels × patches | samples | GPU-hours |", "|---|---|---|---|---|"]
    for r in result["finetune"]:
        if "skipped" in r:
            lines.append(f"| {r['dataset']} | — | — | — | skipped: {r['skipped']} |")
        else:
            lines.append(f"| {r['dataset']} | {r['method']} | {r['channels']} × {r['patches']} | {r['samples']} | "
                         f"{r['gpu_hours']:.4g} |")
    lines += ["", "Assumptions:", "", result["assumptions"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", type=Path, help="gpu_check.json (or its folder)")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--corpus-windows", type=float, help="pretraining-corpus windows for extract-codes")
    parser.add_argument("--samples", type=Path, help="JSON {dataset: labelled windows} (samples/index.parquet rows)")
    parser.add_argument("--out", type=Path, help="write the table here (.md) and the numbers next to it (.json)")
    args = parser.parse_args(argv)

    import yaml

    from pipeline.config import load_config

    cfg = load_config(args.config)
    cfg_raw = yaml.safe_load(args.config.read_text())
    samples: dict[str, int] = {}
    if args.samples:
        samples.update({k: int(v) for k, v in json.loads(args.samples.read_text()).items()})
    result = estimate(load_check(args.check), cfg, cfg_raw, corpus_windows=args.corpus_windows, samples=samples)
    text = markdown(result)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
