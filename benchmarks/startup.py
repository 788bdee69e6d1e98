"""Start-up of small jobs: whole stage processes as the workflow runs them, this checkout against another.

    python benchmarks/startup.py [--before /path/to/checkout] [--repeats 5] [--only chain,stage,finetune,threshold]
      → benchmarks/out/startup.json

Every measurement is a fresh process tree started as the rule's shell command starts it (`python -m pipeline
<stage> …`, the torch fine-tuning methods through `python -m pipeline.launch … --`), with this checkout's code,
and with --before's code (PYTHONPATH=<before>, same interpreter and packages) in the same round: rounds
interleave the sides, so both share the machine's background load. CPU seconds are user+system of the whole tree
(resource.getrusage(RUSAGE_CHILDREN) around the command: dask workers and launcher children included, as long as
they are waited for); wall seconds beside them. Median and [min, max] over the repeats.

* chain — ingest → standardize → preprocess as three processes on one 1 h 23-channel 256 Hz EDF (the input of
  benchmarks/preprocess.py), against the MNE chain of the same benchmark in one process
  (read_raw_edf(preload) → filter(0.1, 75) → notch_filter(60) → resample(200) → np.save). Target: ours ≥ 2× in
  CPU seconds.
* stage — one data stage of the demo: preprocess and patch of demo_bids (2 recordings, --workers 2 as the demo's
  rules pass), and preprocess of demo_physionet (1 recording).
* finetune — one fine-tuning job of the demo task (demo_bids face/house samples, the demo's finetune settings):
  `logreg` (classical: the stage alone) and `full` through the launcher with a demo-size untrained pretrained
  model and 1 epoch (a small job: start-up is most of it).
* threshold — preprocess of N copies of a recording with a 2-worker local cluster (cluster_min_recordings 1) and
  in-process (--workers 1), this checkout only: where the cluster starts to pay (dask.cluster_min_recordings).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import OUT, ROOT, demo_corpus, machine, write_result

DATA = OUT / "data"
WORK = OUT / "startup"
CHAIN_SETTINGS = {"mains": 60.0}  # benchmarks/preprocess.py's SETTINGS
THRESHOLD_N = (2, 4, 8, 16)


def run_tree(cmd: list[str], *, code: Path, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run `cmd` with `code`'s pipeline package first on the path: CPU (user+sys of all waited-for descendants),
    wall, exit status; its stderr tail when it fails."""
    e = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
         **(env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd or code, env=e, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), "wall_s": wall,
            "log": proc.stdout + proc.stderr}


def summarize(runs: list[dict]) -> dict:
    out = {"repeats": len(runs)}
    for key in ("cpu_s", "wall_s"):
        vals = [r[key] for r in runs]
        out[key] = round(statistics.median(vals), 3)
        out[f"{key}_range"] = [round(min(vals), 3), round(max(vals), 3)]
    if "parts" in runs[0]:
        out["parts_cpu_s"] = {k: round(statistics.median(r["parts"][k]["cpu_s"] for r in runs), 3)
                              for k in runs[0]["parts"]}
    logs = [r.get("log", "") for r in runs]
    out["logs_with_traceback"] = sum("Traceback" in x for x in logs)
    return out


def clean(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


# ---------------------------------------------------------------------------------------------------------- inputs


def hour_edf() -> tuple[Path, list[str]]:
    sys.path.insert(0, str(Path(__file__).parent))
    from preprocess import one_hour_edf, targets

    edf = DATA / "eeg23_256hz_1h.edf"
    if not edf.is_file():
        one_hour_edf(edf)
    return edf, targets()


def demo_inputs() -> dict:
    """demo_bids and demo_physionet ingested + standardized (this checkout), preprocessed once for patch, the
    face/house samples and a demo-size untrained pretrained model for fine-tuning; cached under WORK."""
    from pipeline.config import job_settings_json, load_config, stage_settings_json

    cfg = load_config(ROOT / "config" / "demo.yaml")
    corpus = demo_corpus()
    out = {}
    for name, src, fmt in (("demo_bids", corpus / "pylossless", "bids"), ("demo_physionet", corpus / "physionet", "edf")):
        d = WORK / name
        rules = ("ingest", "standardize", "preprocess", "patch") + (("samples",) if name == "demo_bids" else ())
        settings = {r: job_settings_json(cfg, r, dataset=name) for r in rules}
        if not (d / "montage.parquet").is_file():
            from pipeline.config import IngestConfig, MontageConfig, load_settings
            from pipeline.prep.ingest import ingest
            from pipeline.prep.standardize import standardize

            ingest(src, d, dataset=name, fmt=fmt, cfg=load_settings(IngestConfig, settings["ingest"]))
            standardize(d / "manifest.parquet", d / "montage.parquet", load_settings(MontageConfig, settings["standardize"]))
        out[name] = {"dir": d, "settings": settings}
    bids = WORK / "demo_bids"
    if not (bids / "pre" / "recordings.parquet").is_file():
        from pipeline.config import PatchSettings, PreprocessConfig, load_settings
        from pipeline.prep.preprocess import preprocess
        from pipeline.prep.shards import patch

        preprocess(bids / "montage.parquet", bids / "pre", load_settings(PreprocessConfig, out["demo_bids"]["settings"]["preprocess"]))
        patch(bids / "pre", bids / "samples", load_settings(PatchSettings, out["demo_bids"]["settings"]["samples"]), ingested=bids)
    model = WORK / "pretrained"
    if not (model / "model.safetensors").is_file():
        import torch

        from pipeline.models.pretrain import PretrainModel
        from pipeline.store import model_file
        from pipeline.train.pretrain import CodeMeta, model_config

        torch.manual_seed(0)
        mc = model_config(cfg.pretrain, 19 * 30, CodeMeta("startup-benchmark", ("time", "freq"), 3,
                                                           cfg.tokenizer.model.get("codebook_size", 64)))
        model_file.publish(PretrainModel(mc), model, kind="pretrain", config=mc.to_dict(),
                           extra={"tokenizer_fingerprint": "startup-benchmark"})
        (model / "metrics.json").write_text(json.dumps({"corpus": []}))
    ft = {m: json.loads(job_settings_json(cfg, "finetune", dataset="demo_bids", method=m)) for m in ("logreg", "full")}
    ft["full"]["epochs"] = 1
    out["finetune"] = {"settings": {m: json.dumps(v, sort_keys=True) for m, v in ft.items()},
                       "labels": stage_settings_json(cfg.datasets["demo_bids"], "labels"), "model": model,
                       "mixed_precision": ft["full"]["mixed_precision"]}
    return out


# ---------------------------------------------------------------------------------------------------------- jobs

PY = sys.executable


def chain_job(code: Path, edf: Path, channels: list[str], work: Path) -> dict:
    clean(work)
    parts = {}
    parts["ingest"] = run_tree([PY, "-m", "pipeline", "ingest", str(edf), "--out", str(work), "--dataset", "bench"], code=code)
    parts["standardize"] = run_tree([PY, "-m", "pipeline", "standardize", str(work / "manifest.parquet"), "--out",
                                     str(work / "montage.parquet"), "--settings", json.dumps({"channels": channels})],
                                    code=code)
    parts["preprocess"] = run_tree([PY, "-m", "pipeline", "preprocess", str(work / "montage.parquet"), "--out",
                                    str(work / "pre"), "--settings", json.dumps(CHAIN_SETTINGS)], code=code)
    return {"cpu_s": sum(p["cpu_s"] for p in parts.values()), "wall_s": sum(p["wall_s"] for p in parts.values()),
            "parts": parts, "log": "".join(p["log"] for p in parts.values())}


def mne_job(edf: Path, work: Path) -> dict:
    from preprocess import REFERENCE

    clean(work)
    work.mkdir(parents=True)
    return run_tree([PY, "-c", REFERENCE, str(edf), str(work / "ref.npy"), "null"], code=ROOT)


def preprocess_job(code: Path, d: Path, settings: str, work: Path, *extra: str) -> dict:
    clean(work)
    return run_tree([PY, "-m", "pipeline", "preprocess", str(d / "montage.parquet"), "--out", str(work),
                     "--settings", settings, *extra], code=code)


def patch_job(code: Path, d: Path, settings: str, work: Path) -> dict:
    clean(work)
    return run_tree([PY, "-m", "pipeline", "patch", str(d / "pre"), "--out", str(work), "--settings", settings,
                     "--workers", "2"], code=code)


def finetune_job(code: Path, ft: dict, method: str, work: Path) -> dict:
    clean(work)
    samples = WORK / "demo_bids" / "samples"
    stage = ["-m", "pipeline", "finetune", str(samples), "--out", str(work), "--method", method, "--seed", "0",
             "--dataset", "demo_bids", "--labels", ft["labels"], "--settings", ft["settings"][method]]
    if method == "logreg":
        return run_tree([PY, *stage], code=code)
    launch = ["-m", "pipeline.launch", "--rule", "finetune", "--gpus", "0", "--nodes", "1",
              "--mixed-precision", ft["mixed_precision"], "--"]
    return run_tree([PY, *launch, *stage, "--pretrained", str(ft["model"])], code=code)


# ---------------------------------------------------------------------------------------------------------- main


def rounds(jobs: dict, repeats: int) -> dict:
    """jobs: name → zero-argument callable; run each once per round, in order, `repeats` rounds."""
    runs: dict[str, list] = {k: [] for k in jobs}
    for i in range(repeats):
        for name, job in jobs.items():
            runs[name].append(job())
            r = runs[name][-1]
            print(f"round {i + 1}/{repeats} {name}: cpu {r['cpu_s']:.2f} s, wall {r['wall_s']:.2f} s", file=sys.stderr)
    return {k: summarize(v) for k, v in runs.items()}


def ratio(a: dict, b: dict, key: str = "cpu_s") -> float:
    return round(a[key] / b[key], 3)


def threshold_copies(src: Path, n: int, name: str) -> Path:
    """n distinct copies of `src` (one sample of the last record differs: ingest refuses identical signal data),
    ingested and standardized (23 sites for the 1 h file, the default 19 for PhysioNet)."""
    from pipeline.config import MontageConfig
    from pipeline.prep.ingest import ingest
    from pipeline.prep.standardize import standardize

    pool = WORK / "threshold" / f"{name}-files"
    pool.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        f = pool / f"rec{i:02d}.edf"
        if not f.is_file():
            data = bytearray(src.read_bytes())
            data[-2:] = i.to_bytes(2, "little", signed=True)
            f.write_bytes(bytes(data))
    d = WORK / "threshold" / f"{name}-{n}"
    if (d / "montage.parquet").is_file():
        return d
    clean(d)
    (d / "src").mkdir(parents=True)
    for i in range(n):
        os.link(pool / f"rec{i:02d}.edf", d / "src" / f"rec{i:02d}.edf")
    ingest(d / "src", d, dataset=name, strict=True)
    montage = MontageConfig(channels=tuple(hour_edf()[1])) if name == "hour23" else MontageConfig()
    standardize(d / "manifest.parquet", d / "montage.parquet", montage)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=Path, default=None, help="checkout to compare with (e.g. a worktree at main)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threshold-repeats", type=int, default=3)
    ap.add_argument("--only", default="chain,stage,finetune,threshold")
    opts = ap.parse_args()
    only = set(opts.only.split(","))
    sides = {"after": ROOT, **({"before": opts.before.resolve()} if opts.before else {})}
    t_start = time.perf_counter()
    result: dict = {"sides": {k: str(v) for k, v in sides.items()}, "commits": {}}
    for side, code in sides.items():
        rev = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(code), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        result["commits"][side] = rev.stdout.strip() + (" + uncommitted changes" if dirty else "")
    edf, channels = hour_edf()

    if "chain" in only:
        jobs = {f"chain_{s}": (lambda c=c, s=s: chain_job(c, edf, channels, WORK / f"chain_{s}")) for s, c in sides.items()}
        jobs["mne_reference"] = lambda: mne_job(edf, WORK / "mne")
        res = rounds(jobs, opts.repeats)
        res["ratio_mne_over_ours_cpu"] = {s: ratio(res["mne_reference"], res[f"chain_{s}"]) for s in sides}
        result["chain"] = res
    if only & {"stage", "finetune"}:
        demo = demo_inputs()
    if "stage" in only:
        bids, phys = demo["demo_bids"], demo["demo_physionet"]
        jobs = {}
        for s, c in sides.items():
            jobs[f"preprocess_demo_bids_{s}"] = (lambda c=c, s=s: preprocess_job(
                c, bids["dir"], bids["settings"]["preprocess"], WORK / f"pre_bids_{s}", "--workers", "2"))
            jobs[f"patch_demo_bids_{s}"] = (lambda c=c, s=s: patch_job(
                c, bids["dir"], bids["settings"]["patch"], WORK / f"shards_bids_{s}"))
            jobs[f"preprocess_demo_physionet_{s}"] = (lambda c=c, s=s: preprocess_job(
                c, phys["dir"], phys["settings"]["preprocess"], WORK / f"pre_phys_{s}", "--workers", "2"))
        res = rounds(jobs, opts.repeats)
        if "before" in sides:
            res["ratio_before_over_after"] = {
                job: {k: ratio(res[f"{job}_before"], res[f"{job}_after"], k) for k in ("cpu_s", "wall_s")}
                for job in ("preprocess_demo_bids", "patch_demo_bids", "preprocess_demo_physionet")}
        result["stage"] = res
    if "finetune" in only:
        ft = demo["finetune"]
        jobs = {f"finetune_{m}_{s}": (lambda c=c, m=m, s=s: finetune_job(c, ft, m, WORK / f"ft_{m}_{s}"))
                for m in ("logreg", "full") for s, c in sides.items()}
        res = rounds(jobs, opts.repeats)
        if "before" in sides:
            res["ratio_before_over_after"] = {
                m: {k: ratio(res[f"finetune_{m}_before"], res[f"finetune_{m}_after"], k) for k in ("cpu_s", "wall_s")}
                for m in ("logreg", "full")}
        result["finetune"] = res
    if "threshold" in only:
        res = {}
        phys_src = demo_corpus() / "physionet" / "S001R02.edf"
        for name, src in (("hour23", edf), ("physionet", phys_src)):
            settings = json.dumps(CHAIN_SETTINGS)
            for n in THRESHOLD_N:
                d = threshold_copies(src, n, name)
                jobs = {
                    f"{name}_{n}_cluster": lambda d=d: preprocess_job(ROOT, d, settings, d / "pre", "--workers", "2",
                                                                      "--cluster-min-recordings", "1"),
                    f"{name}_{n}_in_process": lambda d=d: preprocess_job(ROOT, d, settings, d / "pre", "--workers", "1"),
                }
                res.update(rounds(jobs, opts.threshold_repeats))
        result["threshold"] = res
    result["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    result["machine_load_1min_at_end"] = os.getloadavg()[0]
    write_result("startup", result)


if __name__ == "__main__":
    main()
