"""Tokenizer training on real demo shards: it learns, it resumes exactly, codes are stable and reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import load_file

from pipeline.config import TokenizerSection, TrainConfig
from pipeline.data.windows import WindowBatches, WindowIndex, epoch_batches
from pipeline.stages.extract_codes import extract_codes
from pipeline.train.checkpoint import latest
from pipeline.train.tokenizer import train_tokenizer


def _section(**train) -> TokenizerSection:
    base = dict(batch_size=8, max_steps=8, lr=2e-3, warmup_steps=2, checkpoint_every=2, eval_every=100, log_every=1)
    return TokenizerSection(model={"dead_code_threshold": 2.0, "commitment_weight": 0.25},
                            train=TrainConfig(**{**base, **train}), eval_windows=8)


def test_window_order_is_deterministic_and_rank_slices_cover_the_global_batch(demo_shards):
    index = WindowIndex.from_shard_dirs(demo_shards, splits=["train"])
    a = epoch_batches(index, batch_size=8, seed=1, epoch=3)
    b = epoch_batches(index, batch_size=8, seed=1, epoch=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(np.concatenate(a), np.concatenate(epoch_batches(index, batch_size=8, seed=1, epoch=4)))
    assert len(np.unique(np.concatenate(a))) == len(np.concatenate(a))  # no window twice in an epoch
    whole = WindowBatches(index, a)[0]
    parts = [WindowBatches(index, a, rank=r, world_size=2)[0] for r in (0, 1)]
    assert sorted(torch.cat([p["window"] for p in parts]).tolist()) == sorted(whole["window"].tolist())
    held = WindowIndex.from_shard_dirs(demo_shards, splits=["test"])
    assert set(held.table["subject"]) == {"s02"} and "s02" not in set(index.table["subject"])


def test_loader_streams_give_each_rank_its_own_chunks(demo_shards):
    """With 4 streams and 2 ranks every rank reads only chunks it owns (each chunk decoded by one rank), the global
    batches do not depend on the rank count, and batches can cross in the shards' float16/int16."""
    index = WindowIndex.from_shard_dirs(demo_shards, splits=["train"])
    batches = epoch_batches(index, batch_size=8, seed=1, epoch=0, streams=4, buffer_chunks=2)
    flat = np.concatenate(batches)
    assert len(np.unique(flat)) == len(flat) and len(batches) >= 4
    chunk = index.table["chunk"].to_numpy()
    owned = [set(chunk[np.concatenate([np.array_split(b, 2)[r] for b in batches])]) for r in (0, 1)]
    assert not owned[0] & owned[1]
    ranks = [WindowBatches(index, batches, rank=r, world_size=2, storage_dtypes=True) for r in (0, 1)]
    for r in ranks:
        for i in range(len(batches)):
            item = r[i]
    assert sum(r.decoded for r in ranks) == len(owned[0] | owned[1])  # read amplification 1
    assert item["x"].dtype == torch.float16 and item["ch"].dtype == torch.int16
    with pytest.raises(ValueError, match="loader_streams"):
        epoch_batches(index, batch_size=8, seed=1, epoch=0, streams=3)


@pytest.mark.slow
def test_short_training_learns_and_uses_codebooks(demo_shards, tmp_path: Path):
    result = train_tokenizer(demo_shards, tmp_path, _section(max_steps=40, checkpoint_every=40))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    first = np.mean([r["losses"]["loss"] for r in train[:3]])
    last = np.mean([r["losses"]["loss"] for r in train[-5:]])
    assert last < 0.85 * first, (first, last)
    ppl = np.array(train[-1]["perplexity"])  # [domains, levels]
    assert (ppl > 1.5).all(), ppl  # more than one code in use at every level of both domains
    assert result.heldout["patches"] > 0 and np.isfinite(result.heldout["nmse"])
    for png in ("loss.png", "codebook_usage.png", "reconstructions.png"):
        assert (tmp_path / png).stat().st_size > 10_000


def test_resumed_training_continues_exactly(demo_shards, tmp_path: Path):
    section = _section(max_steps=6, checkpoint_every=2)
    full = train_tokenizer(demo_shards, tmp_path / "full", section)
    part = train_tokenizer(demo_shards, tmp_path / "resumed", section, stop_after=3)  # killed after step 3…
    assert part.step == 3 and latest(tmp_path / "resumed" / "checkpoints").name == "step-0000003"
    resumed = train_tokenizer(demo_shards, tmp_path / "resumed", section)  # …and rerun
    assert resumed.step == full.step == 6
    a, b = latest(tmp_path / "full" / "checkpoints"), latest(tmp_path / "resumed" / "checkpoints")
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)
    oa = torch.load(a / "optimizer.pt", weights_only=True)["optimizer"]
    ob = torch.load(b / "optimizer.pt", weights_only=True)["optimizer"]
    assert oa["state"].keys() == ob["state"].keys()
    for k in oa["state"]:
        assert oa["state"][k]["step"] == ob["state"][k]["step"]
        torch.testing.assert_close(oa["state"][k]["exp_avg"], ob["state"][k]["exp_avg"], rtol=1e-4, atol=1e-7)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # no duplicated steps in the metrics


def test_codes_are_batch_independent_and_reused(demo_shards, tmp_path: Path):
    train_tokenizer(demo_shards, tmp_path / "tok", _section(max_steps=2))
    a = extract_codes(demo_shards[1], tmp_path / "tok", tmp_path / "codes_a", batch_windows=1)
    b = extract_codes(demo_shards[1], tmp_path / "tok", tmp_path / "codes_b", batch_windows=5)
    assert a["computed"] > 0 and a["fingerprint"] == b["fingerprint"]
    shard = "S001R02/part-000.zarr"
    ca = zarr.open_group(str(tmp_path / "codes_a" / shard), mode="r")["codes"][...]
    cb = zarr.open_group(str(tmp_path / "codes_b" / shard), mode="r")["codes"][...]
    np.testing.assert_array_equal(ca, cb)
    assert ca.dtype == np.int16 and ca.shape[-2:] == (2, 3) and ca.min() >= 0
    again = extract_codes(demo_shards[1], tmp_path / "tok", tmp_path / "codes_a", batch_windows=7)
    assert again["computed"] == 0 and again["reused"] == a["computed"]


def test_training_evaluation_and_extraction_run_on_the_device(demo_shards, tmp_path: Path):
    """Under the device check (a separate device played on the CPU): evaluation of a placed tokenizer moves its
    batches and results, training places the model, and extract-codes encodes on the device."""
    from pipeline.models.tokenizer import build_tokenizer
    from pipeline.train.device import device_check, place
    from pipeline.train.tokenizer import evaluate, model_config

    held = WindowIndex.from_shard_dirs(demo_shards, splits=["test"])
    with device_check(True) as check:
        model = place(build_tokenizer(model_config(_section(), 10)), "cpu")
        metrics, sample = evaluate(model, held, n_windows=4, batch_size=4)
        assert np.isfinite(metrics["nmse"]) and sample["w"].shape == sample["x"].shape and check.ops > 0
        ops = check.ops
        train_tokenizer(demo_shards, tmp_path / "tok", _section(max_steps=2, eval_every=2))
        assert check.ops > ops
        ops = check.ops
        stats = extract_codes(demo_shards[1], tmp_path / "tok", tmp_path / "codes")
        assert stats["computed"] > 0 and check.ops > ops


@pytest.mark.slow
def test_two_processes_extract_the_codes_of_one(demo_shards, tmp_path: Path):
    """extract-codes under torchrun with 2 CPU processes (shards split between them) writes the codes that one
    process writes with another batch size."""
    import subprocess
    import sys

    train_tokenizer(demo_shards, tmp_path / "tok", _section(max_steps=2))
    one = extract_codes(demo_shards[0], tmp_path / "tok", tmp_path / "one", batch_windows=3)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "pipeline",
                          "extract-codes", str(demo_shards[0]), "--tokenizer", str(tmp_path / "tok"),
                          "--out", str(tmp_path / "two"), "--batch-windows", "64"], capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    stats = json.loads((tmp_path / "two" / "fingerprint.json").read_text())
    assert stats["processes"] == 2 and stats["computed"] == one["computed"] >= 2
    assert stats["fingerprint"] == one["fingerprint"]
    for store in sorted((tmp_path / "one").rglob("part-*.zarr")):
        a = zarr.open_group(str(store), mode="r")["codes"][...]
        b = zarr.open_group(str(tmp_path / "two" / store.relative_to(tmp_path / "one")), mode="r")["codes"][...]
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_two_processes_match_one_at_the_same_global_batch(demo_shards, tmp_path: Path):
    """torchrun with 2 CPU processes (gloo) ends where 1 process ends: DDP gradients and the
    quantizers' all-reduced EMA statistics make the global batch, not the process count, matter."""
    import subprocess
    import sys

    # Dead-code restarts off: a restart is a threshold decision that a 1e-7 difference can flip.
    settings = json.dumps({"model": {"dead_code_threshold": 0.0, "commitment_weight": 0.25}, "eval_windows": 8,
                           "train": {"batch_size": 8, "max_steps": 4, "warmup_steps": 2, "checkpoint_every": 2,
                                     "eval_every": 100, "log_every": 1}})
    args = ["-m", "pipeline", "train-tokenizer", *map(str, demo_shards), "--settings", settings]
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    # Float reduction order differs between 1 and 2 processes; Adam magnifies it on near-zero
    # biases, so the model as a whole is compared, and each tensor loosely.
    flat_a = torch.cat([a[k].float().flatten() for k in sorted(a)])
    flat_b = torch.cat([b[k].float().flatten() for k in sorted(a)])
    assert float((flat_a - flat_b).norm() / flat_a.norm()) < 1e-4
    for k in a:
        rel = float((a[k].float() - b[k].float()).norm() / (a[k].float().norm() + 1e-12))
        assert rel < 3e-2, (k, rel)


def test_rebuilt_shards_at_the_same_path_retrain_the_tokenizer_and_recompute_codes(demo_shards, tmp_path: Path):
    """Run identity = settings + inputs: shards rebuilt with other content under the same folder must not resume
    the old tokenizer run, and their code stores must not be reused (the shard names stay the same)."""
    from pipeline.config import PatchConfig, PatchSettings
    from pipeline.prep.shards import patch

    physionet = demo_shards[1].parent
    shards = tmp_path / "shards"
    patch(physionet / "preprocessed", shards, PatchSettings(patch=PatchConfig(window_s=10, chunk_windows=8)))
    import dataclasses

    section = dataclasses.replace(_section(batch_size=4, max_steps=4), heldout_split="train")  # one subject here
    train_tokenizer([shards], tmp_path / "tok", section, stop_after=2)
    # the same folder, other windows (overlapping now): the tokenizer's own settings are unchanged
    patch(physionet / "preprocessed", shards, PatchSettings(patch=PatchConfig(window_s=10, chunk_windows=8, stride_s=5)))
    result = train_tokenizer([shards], tmp_path / "tok", section)
    assert list(tmp_path.glob("tok/checkpoints.stale-*")), "the old shards' checkpoints were resumed"
    steps = [json.loads(line)["step"] for line in (tmp_path / "tok" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert result.step == 4 and steps[0] == 1 and steps == sorted(set(steps))

    first = extract_codes(shards, tmp_path / "tok", tmp_path / "codes")
    patch(physionet / "preprocessed", shards, PatchSettings(patch=PatchConfig(window_s=10, chunk_windows=8)))
    again = extract_codes(shards, tmp_path / "tok", tmp_path / "codes")
    assert first["computed"] > 0 and again["computed"] == first["computed"] and again["reused"] == 0
    shard = "S001R02/part-000.zarr"
    n_windows = zarr.open_group(str(shards / shard), mode="r")["x"].shape[0]
    assert zarr.open_group(str(tmp_path / "codes" / shard), mode="r")["codes"].shape[0] == n_windows
