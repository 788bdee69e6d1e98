"""What operating the pipeline needs, shown for real through Snakemake on a tiny config of real demo EEG.

The whole tiny DAG (.test/config.yaml: ingest → … → pretrain → finetune → tables) runs once per session (the
`finished` fixture of conftest.py, shared with test_workflow.py); every test then works on dry runs of that workdir
or on copies of it (`copy_workdir`: results, raw data and Snakemake's metadata):

* reruns — a config change reruns exactly the jobs that read it (a new seed, method, ablation or dataset: only its
  own jobs), an irrelevant change resumes the training runs' checkpoints, and touching raw EEG reruns nothing;
* reuse — a second checkout pretrains on an existing code store and tokenizer without training or extracting
  anything, and refuses a code store made by another tokenizer, naming the store and both fingerprints;
* resume — a killed pretraining job (the job alone, retried by `--retries`; or Snakemake with it) resumes from
  its last checkpoint and ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from workflow_helpers import (TEST_RESULTS, Finished, group_processes, kill_group, nothing_to_do, output,
                              planned_jobs, snakemake, snakemake_popen, summary, tail, wait_for)

# one pytest-xdist worker holds the session's finished tiny DAG (conftest `finished`) for every test that uses it
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_dag")]

DS = "demo_bids"  # the labelled dataset (role both); demo_physionet is pretraining only
TOKENIZER = f"{TEST_RESULTS}/tokenizer/ddrvq-demo"
CODES = f"{TEST_RESULTS}/codes/ddrvq-demo"
PRETRAIN = f"{TEST_RESULTS}/pretrain/brainrvq-demo"
METHODS = ("full", "scratch", "logreg")  # .test/config.yaml's; seeds 0 and 1
LOGS = f"{TEST_RESULTS}/logs"


# ---------------------------------------------------------------------------------------------
# 1. reruns


def _job(job: dict) -> str:
    wc = job["wildcards"]
    return job["rule"] + (f"[{','.join(f'{k}={v}' for k, v in sorted(wc.items()))}]" if wc else "")


def _finetune(*methods: str, seeds=(0, 1), dataset: str = DS) -> set[str]:
    return {f"finetune[dataset={dataset},method={m},seed={s}]" for m in methods for s in seeds}


def per_dataset(rule: str, datasets=(DS, "demo_physionet")) -> set[str]:
    return {f"{rule}[dataset={d}]" for d in datasets}


def per_tokenizer(rule: str, tok: str = "ddrvq-demo", datasets=(DS, "demo_physionet")) -> set[str]:
    return {f"{rule}[dataset={d},tok={tok}]" for d in datasets}


FROM_TOKENIZER = {"train_tokenizer[tok=ddrvq-demo]", *per_tokenizer("extract_codes"), "pretrain[run=brainrvq-demo]"}
PRETRAINED = ("full", "scratch")  # methods with a pretrained model as input (scratch: its architecture)
NEW = "Missing output files"  # the reason of a job whose outputs are new
REMADE = "Input files updated by another job"
PARAMS = "Params have changed"
# a second labelled dataset: demo_bids again, downstream only
DATASET2 = {"description": "demo_bids again", "format": "bids", "path": "resources/cache/demo/pylossless",
            "fetch": "demo", "mains": 60, "role": "downstream", "montage": {"positions": "biosemi128"},
            "splits": {"test": ["s02"], "val_fraction": 0.2, "val_unit": "time"},
            "labels": {"mode": "events", "classes": ["face", "house"], "window_s": 1.0,
                       "map": {"face-upright": "face", "face-inverted": "face", "house-upright": "house",
                               "house-inverted": "house"}}}
# the same config in other words: lists reordered, defaults and nulls spelled out
SAME = {"finetune.seeds": [1, 0], "finetune.methods": ["logreg", "scratch", "full"], "finetune.probe_lr": 0.005,
        "finetune.primary_metric": "balanced_accuracy", "tokenizer.pretrained": None, "tokenizer.variants": [], "pretrain.codes": None,
        "pretrain.ablations": {}, "ingest.min_duration_s": None, "pretrain.mask.ratio": 0.5,
        "tokenizer.model.codebook_size": 64}


@pytest.mark.parametrize("change, expected, causes", [
    # fine-tuning: a learning rate is read by the trained methods only (logreg reads none), a probe's by nothing here
    pytest.param({"finetune.lr": 0.002}, _finetune(*PRETRAINED) | {"tables"}, {"finetune": PARAMS}, id="finetune-lr"),
    pytest.param({"finetune.batch_size": 16}, _finetune(*METHODS) | {"tables"}, {"finetune": PARAMS},
                 id="finetune-batch"),
    pytest.param({"finetune.probe_lr": 0.01}, set(), {}, id="probe-lr-without-probe"),
    pytest.param({"pretrain.mask.ratio": 0.4}, {"pretrain[run=brainrvq-demo]", *_finetune(*PRETRAINED), "tables"},
                 {"pretrain": PARAMS}, id="pretrain"),
    # logreg reads band powers of the samples: no tokenizer, no pretrained model, not rerun
    pytest.param({"tokenizer.train.lr": 0.001}, FROM_TOKENIZER | _finetune(*PRETRAINED) | {"tables"},
                 {"train_tokenizer": PARAMS}, id="tokenizer"),
    pytest.param({"preprocess.h_freq": 40.0},
                 per_dataset("preprocess") | per_dataset("patch") | {f"samples[dataset={DS}]"} | FROM_TOKENIZER
                 | _finetune(*METHODS) | {"tables"}, {"preprocess": PARAMS}, id="preprocess"),
    # list-valued settings: what is added runs, nothing else
    pytest.param({"finetune.seeds": [0, 1, 2]}, _finetune(*METHODS, seeds=(2,)) | {"tables"},
                 {"finetune": NEW}, id="add-seed"),
    pytest.param({"finetune.methods": [*METHODS, "probe"]}, _finetune("probe") | {"tables"}, {"finetune": NEW},
                 id="add-method"),
    pytest.param({"pretrain.ablations": {"random-mask": {"mask": {"strategy": "random"}}},
                  "finetune.methods": [*METHODS, "ablation:random-mask"]},
                 {"pretrain[run=random-mask]", *_finetune("ablation-random-mask"), "tables"},
                 {"pretrain": NEW, "finetune": NEW}, id="add-ablation"),
    # a tokenizer variant: its own tokenizer, codes, pretraining run and fine-tuning; the main chain untouched
    pytest.param({"tokenizer.variants": ["ddrvq_time"], "finetune.methods": [*METHODS, "tokenizer:ddrvq_time"]},
                 {"train_tokenizer[tok=ddrvq-demo-ddrvq_time]", *per_tokenizer("extract_codes", "ddrvq-demo-ddrvq_time"),
                  "pretrain[run=tokenizer-ddrvq_time]", *_finetune("tokenizer-ddrvq_time"), "tables"},
                 {"train_tokenizer": NEW, "extract_codes": NEW, "pretrain": NEW, "finetune": NEW}, id="add-variant"),
    pytest.param({"datasets.demo_bids2": DATASET2},
                 {f"{rule}[dataset=demo_bids2]" for rule in ("ingest", "standardize", "preprocess", "samples")}
                 | _finetune(*METHODS, dataset="demo_bids2") | {"tables"},
                 {rule: NEW for rule in ("ingest", "standardize", "preprocess", "samples", "finetune")},
                 id="add-dataset"),
    pytest.param(SAME, set(), {}, id="same-config-in-other-words"),
])
def test_a_config_change_reruns_exactly_what_depends_on_it(finished: Finished, change, expected, causes):
    config = finished.config_with("-".join(change), change)
    dry = snakemake(finished.workdir, config, "all", "-n")
    assert dry.returncode == 0, tail(dry)
    jobs = [_job(j) for j in planned_jobs(dry)]
    assert len(jobs) == len(set(jobs)), jobs
    assert set(jobs) == expected
    if not expected:
        assert nothing_to_do(dry), tail(dry)
    # Only the changed stage reruns for its params (or is new); everything after it because its input is remade.
    for job in planned_jobs(dry):
        assert job["reason"].startswith(causes.get(job["rule"], REMADE)), job
    # --summary agrees: what is not planned is "no update", with status ok — the other jobs of a rerun rule too
    # (the seeds and methods that were there before)
    plan = summary(finished.workdir, config, "all")
    planned_outputs = {o for j in planned_jobs(dry) for o in j["output"]}
    for out, row in plan.items():
        if out not in planned_outputs:
            assert row["plan"] == "no update" and row["status"] == "ok", (out, row)
    if "logreg" not in " ".join(expected):
        assert all(plan[f"{TEST_RESULTS}/finetune/{DS}/logreg/seed-{s}/metrics.json"]["plan"] == "no update"
                   for s in (0, 1))


def test_an_irrelevant_change_resumes_the_training_checkpoints(finished: Finished):
    """A new seed, method and ablation and another method's learning rate leave the checkpoint identity of the runs
    already made equal: forced to run again, pretraining and fine-tuning resume their last checkpoint (the finished
    step) instead of moving them aside and training from step 0."""
    work = finished.copy("irrelevant")
    config = finished.config_with("irrelevant", {
        "finetune.seeds": [0, 1, 2], "finetune.probe_lr": 0.02, "finetune.methods": [*METHODS, "probe", "ablation:flat"],
        "pretrain.ablations": {"flat": {"model": {"hierarchical": False}}}})
    for target, log in ((f"{PRETRAIN}/model.safetensors", f"{LOGS}/pretrain/brainrvq-demo.log"),
                        (f"{TEST_RESULTS}/finetune/{DS}/full/seed-0/metrics.json",
                         f"{LOGS}/{DS}/finetune/full-seed-0.log")):
        run = (work / target).parent
        before = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))
        assert before, run
        proc = snakemake(work, config, target, "--force")
        assert proc.returncode == 0, tail(proc)
        text = (work / log).read_text()
        assert f"resumed from {run.relative_to(work) / 'checkpoints' / before[-1]}" in text, text[-3000:]
        assert "made with other settings" not in text and not list(run.glob("checkpoints.stale-*")), text[-3000:]


def test_touching_raw_eeg_reruns_nothing(finished: Finished):
    work = finished.copy("touched")
    assert nothing_to_do(snakemake(work, finished.config, "all", "-n"))  # a copied workdir is as finished
    # The copy's demo cache is a link to the shared one: give it a PhysioNet folder of its own to touch.
    shared = (work / "resources" / "cache").resolve()
    (work / "resources" / "cache").unlink()
    demo = work / "resources" / "cache" / "demo"
    demo.mkdir(parents=True)
    for entry in (shared / "demo").iterdir():
        if entry.name == "physionet":
            shutil.copytree(entry, demo / entry.name)  # copy2: mtimes kept
        elif entry.is_file():
            shutil.copy2(entry, demo / entry.name)
        else:
            (demo / entry.name).symlink_to(entry, target_is_directory=True)
    assert nothing_to_do(snakemake(work, finished.config, "all", "-n"))
    raw = demo / "physionet"
    for path in (raw / "S001R02.edf", raw):
        os.utime(path)  # `touch`: newer than every output now
    # The raw folder really is ingest's input here (user data, no demo stamp in between)…
    detailed = snakemake(work, finished.config, "all", "--detailed-summary")
    rows = [line.split("\t") for line in detailed.stdout.splitlines() if "\t" in line]
    inputs = dict(zip(rows[0], next(r for r in rows if r[0] == f"{TEST_RESULTS}/demo_physionet/manifest.parquet")))
    assert inputs["input-file(s)"].split(",") == ["resources/cache/demo/physionet"], inputs
    # …and its mtime is no trigger: nothing to do.
    dry = snakemake(work, finished.config, "all", "-n")
    assert nothing_to_do(dry), tail(dry)


def test_a_rerun_after_a_config_change_really_retrains(finished: Finished):
    """Snakemake reruns pretrain after a pretraining change, and the stage does not resume the checkpoints the
    previous config left in <run>/checkpoints (they are moved aside): it trains anew, so the weights change.
    (train_tokenizer and finetune share the loop.)"""
    work = finished.copy("retrain")
    config = finished.config_with("lr10", {"pretrain.train.lr": 0.02})
    assert {j["rule"] for j in planned_jobs(snakemake(work, config, f"{PRETRAIN}/model.safetensors", "-n"))} == {
        "pretrain"}
    before = load_file(str(finished.workdir / PRETRAIN / "model.safetensors"))
    proc = snakemake(work, config, f"{PRETRAIN}/model.safetensors")
    assert proc.returncode == 0, tail(proc)
    log = (work / f"{LOGS}/pretrain/brainrvq-demo.log").read_text()
    assert "resumed from" not in log, log
    after = load_file(str(work / PRETRAIN / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------------------------------
# 2. reuse of an existing code store and tokenizer


def _fingerprint(model: Path) -> dict[str, str]:
    with safe_open(str(model), framework="pt") as fh:
        return fh.metadata()


def _another_tokenizer(src: Path, dst: Path) -> str:
    """A copy of tokenizer `src` with one weight changed, published with its own (true) fingerprint."""
    from pipeline.store.fingerprint import weights_fingerprint

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints"))
    meta = _fingerprint(src / "model.safetensors")
    tensors = load_file(str(src / "model.safetensors"))
    name = next(k for k in sorted(tensors) if tensors[k].is_floating_point())
    tensors[name] = tensors[name] + 1e-3
    fingerprint = weights_fingerprint(json.loads(meta["config"]), tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={**meta, "fingerprint": fingerprint})
    return fingerprint


def test_a_checkout_reuses_a_code_store_and_refuses_another_tokenizers(finished: Finished):
    store, tokenizer = finished.workdir / CODES, finished.workdir / TOKENIZER
    expected_fp = _fingerprint(tokenizer / "model.safetensors")["fingerprint"]
    assert json.loads((store / DS / "fingerprint.json").read_text())["fingerprint"] == expected_fp
    # Another checkout with the same data plane, no tokenizer, codes or pretraining of its own.
    work = finished.copy("reuse")
    for own in (TOKENIZER, CODES, PRETRAIN):
        shutil.rmtree(work / own)
    config = finished.config_with("reuse", {"pretrain.codes": str(store), "tokenizer.pretrained": str(tokenizer)})
    dry = snakemake(work, config, "all", "-n")
    assert dry.returncode == 0, tail(dry)
    jobs = {_job(j) for j in planned_jobs(dry)}
    assert jobs == {"pretrain[run=brainrvq-demo]", *_finetune(*PRETRAINED), "tables"}  # no train_tokenizer, no codes
    proc = snakemake(work, config, "all")
    assert proc.returncode == 0, tail(proc)
    log = (work / f"{LOGS}/pretrain/brainrvq-demo.log").read_text()
    assert "resumed from" not in log  # trained here, from scratch
    assert _fingerprint(work / PRETRAIN / "model.safetensors")["tokenizer_fingerprint"] == expected_fp
    metrics = json.loads((work / PRETRAIN / "metrics.json").read_text())
    assert metrics["codes"] == [str(store / DS), str(store / "demo_physionet")]
    assert not (work / TOKENIZER).exists() and not (work / CODES).exists()
    assert nothing_to_do(snakemake(work, config, "all", "-n"))

    # The same store with another tokenizer: pretrain is planned, then refuses with both fingerprints.
    other_fp = _another_tokenizer(tokenizer, finished.base / "other-tokenizer")
    assert other_fp != expected_fp
    mismatch = finished.config_with("mismatch", {"pretrain.codes": str(store),
                                                 "tokenizer.pretrained": str(finished.base / "other-tokenizer")})
    assert "pretrain" in {j["rule"] for j in planned_jobs(snakemake(work, mismatch, "all", "-n"))}
    failed = snakemake(work, mismatch, f"{PRETRAIN}/model.safetensors")
    assert failed.returncode != 0
    assert "Error in rule pretrain" in output(failed)
    log = (work / f"{LOGS}/pretrain/brainrvq-demo.log").read_text()
    assert f"{store / DS}: codes were made by tokenizer {expected_fp[:12]}" in log, log[-2000:]
    assert f"this run's tokenizer is {other_fp[:12]}" in log and "pretrain.codes" in log, log[-2000:]


# ---------------------------------------------------------------------------------------------
# 3. resume after a kill, and retries


RESUME = f"{TEST_RESULTS}/pretrain/resume-demo"  # a run of its own: no checkpoints from the main run in its folder


def _checkpoints(run: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*")
                  if ".tmp-" not in p.name and (p / "state.json").is_file())


def test_a_killed_snakemake_mid_preprocess_reruns_with_the_demo_command_and_keeps_finished_recordings(
        finished: Finished):
    """kill -9 of Snakemake itself (and its jobs) while preprocess runs: the demo's command (`make demo`:
    pipeline.stale_lock, then snakemake --rerun-incomplete) runs again without --unlock, and preprocessing resumes
    recording by recording — the ones finished before the kill are reused, not recomputed."""
    import subprocess
    import sys

    from pipeline.prep.preprocess import progress_dir

    work = finished.copy("killed-preprocess")
    out = work / TEST_RESULTS / DS / "preprocessed"
    shutil.rmtree(out)  # preprocess must run again for this dataset (two recordings)
    target = f"{TEST_RESULTS}/{DS}/preprocessed"
    sm = snakemake_popen(work, finished.config, target, "--rerun-incomplete", log=work / "snakemake.log")
    try:
        done = wait_for(lambda: sorted(p.name for p in progress_dir(out).glob("*.zarr")), timeout=300, proc=sm)
    finally:
        kill_group(sm)
    # killed before the stage finished (its recordings table is its last write), with Snakemake's lock left behind
    assert not (out / "recordings.parquet").exists() and any((work / ".snakemake" / "locks").iterdir())
    assert subprocess.run([sys.executable, "-m", "pipeline.stale_lock", str(work)], capture_output=True, text=True,
                          cwd=work).returncode == 0
    proc = snakemake(work, finished.config, target, "--rerun-incomplete")
    assert proc.returncode == 0, tail(proc)
    log = (work / f"{LOGS}/{DS}/preprocess.log").read_text()
    for store in done:
        assert f"{store.removesuffix('.zarr')}: preprocessed store up to date, reused" in log, log[-2000:]
    assert sorted(p.name for p in out.glob("*.zarr")) == sorted(p.name for p in (finished.workdir / TEST_RESULTS / DS
                                                                                  / "preprocessed").glob("*.zarr"))
    assert nothing_to_do(snakemake(work, finished.config, target, "-n"))


def test_a_killed_pretraining_resumes_to_the_same_weights(finished: Finished):
    config = finished.config_with("resume", {"pretrain.name": "resume-demo", "pretrain.train.max_steps": 12,
                                             "pretrain.train.checkpoint_every": 2, "pretrain.train.eval_every": 4,
                                             "pretrain.train.deterministic": True})
    target = f"{RESUME}/model.safetensors"
    reference = finished.copy("uninterrupted")
    proc = snakemake(reference, config, target)
    assert proc.returncode == 0, tail(proc)

    work = finished.copy("interrupted")
    run, job_log, sm_log = work / RESUME, work / f"{LOGS}/pretrain/resume-demo.log", work / "snakemake.log"
    sm = snakemake_popen(work, config, target, "--retries", "1", log=sm_log)
    try:
        # (a) The job dies (OOM killer, a lost node): SIGKILL the training processes only. Snakemake retries it.
        first = wait_for(lambda: _checkpoints(run), timeout=300, proc=sm)[-1]
        # the innermost process: `python -m pipeline pretrain`, below the shell and `accelerate launch`
        trainers = [pid for pid, argv in group_processes(sm.pid).items() if argv[1:4] == ["-m", "pipeline", "pretrain"]]
        assert trainers, group_processes(sm.pid)
        for pid in trainers:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: "Trying to restart job" in sm_log.read_text(), timeout=120, proc=sm)
        wait_for(lambda: job_log.is_file() and "resumed from" in job_log.read_text(), timeout=300, proc=sm)
        # (b) Snakemake itself dies with its job (scancel, a reboot): SIGKILL the whole process group.
        second = wait_for(lambda: [s for s in _checkpoints(run) if s > first], timeout=300, proc=sm)[-1]
        kill_group(sm)
    finally:
        if sm.poll() is None:
            kill_group(sm)
    assert first < second < 12 and not (run / "model.safetensors").exists(), "killed after the run had finished"
    wait_for(lambda: not group_processes(sm.pid), timeout=30)

    # The operator's rerun: unlock the workdir, rerun incomplete jobs.
    assert snakemake(work, config, "--unlock").returncode == 0
    proc = snakemake(work, config, target, "--rerun-incomplete")
    assert proc.returncode == 0, tail(proc)
    log = job_log.read_text()
    assert f"resumed from {RESUME}/checkpoints/step-{second:07d} (step {second})" in log, log[-2000:]

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    keys = [(r["kind"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)), keys
    assert [s for k, s in keys if k == "train"] == list(range(1, 13))
    assert [s for k, s in keys if k == "heldout"] == [4, 8, 12]
    resumed = load_file(str(run / "model.safetensors"))
    expected = load_file(str(reference / RESUME / "model.safetensors"))
    assert resumed.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    # Nothing left to do, and the published metrics are the uninterrupted run's.
    assert nothing_to_do(snakemake(work, config, target, "-n"))
    heldout = json.loads((run / "metrics.json").read_text())["heldout"]
    expected_heldout = json.loads((reference / RESUME / "metrics.json").read_text())["heldout"]
    assert heldout["tokens"] == expected_heldout["tokens"]
    assert heldout["loss"] == pytest.approx(expected_heldout["loss"], rel=1e-5)
