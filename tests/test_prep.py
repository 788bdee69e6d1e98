"""The data plane is one library: the workflow's stage commands and embed (prepare()) give the same windows,
and the same mains rule; the same embeddings as the encoder run on the workflow's shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import cli
from pipeline.config import PipelineConfig, job_settings_json, load_config
from pipeline.embedding import embed, embed_windows, load_backbone
from pipeline.prep.prepare import PrepareSettings, prepare
from pipeline.store.zarr_store import open_group, open_shard
from pretrained_factory import EMBED_DIM, save_pretrained, untrained_model

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "demo.yaml"


def workflow_chain(cfg: PipelineConfig, dataset: str, source: Path, fmt: str, out: Path) -> Path:
    """The data rules' commands (workflow/rules/data.smk) with their job settings, in-process through the CLI."""
    def run(*args: str) -> None:
        assert cli.main(list(args)) == 0, args

    def settings(rule: str) -> str:
        return job_settings_json(cfg, rule, dataset=dataset)

    run("ingest", str(source), "--out", str(out), "--dataset", dataset, "--format", fmt,
        "--settings", settings("ingest"))
    run("standardize", str(out / "manifest.parquet"), "--out", str(out / "montage.parquet"),
        "--settings", settings("standardize"))
    run("preprocess", str(out / "montage.parquet"), "--out", str(out / "preprocessed"),
        "--settings", settings("preprocess"), "--workers", "1")
    run("patch", str(out / "preprocessed"), "--out", str(out / "shards"), "--settings", settings("patch"),
        "--workers", "1")
    return out / "shards"


def assert_same_shards(a: Path, b: Path) -> int:
    """Every window of shard folder `a` is in `b` at the same place, bit for bit (x, ch, importance)."""
    ia, ib = pl.read_parquet(a / "index.parquet"), pl.read_parquet(b / "index.parquet")
    assert ia.drop("shard").equals(ib.drop("shard")) and ia["shard"].to_list() == ib["shard"].to_list()
    for name in ia["shard"].unique().sort():
        sa, sb = open_shard(a / name), open_shard(b / name)
        for field in ("x", "ch", "importance"):
            xa, xb = np.asarray(getattr(sa, field)[...]), np.asarray(getattr(sb, field)[...])
            assert xa.dtype == xb.dtype and xa.shape == xb.shape
            assert np.array_equal(xa.view(np.uint8), xb.view(np.uint8)), (name, field)
    return ia.height


def test_a_recordings_own_mains_wins_in_the_workflow_and_in_embed(physionet_edf: Path, tmp_path: Path):
    """A recording whose BIDS eeg.json says 50 Hz, in a dataset configured at 60 Hz: both paths notch at 50,
    record it in the provenance, and write the same signal."""
    eeg = tmp_path / "bids" / "sub-01" / "eeg"
    eeg.mkdir(parents=True)
    (tmp_path / "bids" / "dataset_description.json").write_text('{"Name": "mains", "BIDSVersion": "1.8.0"}')
    shutil.copy(physionet_edf, eeg / "sub-01_task-rest_eeg.edf")
    (eeg / "sub-01_task-rest_eeg.json").write_text(json.dumps({"PowerLineFrequency": 50}))
    cfg = load_config(DEMO)
    assert cfg.datasets["demo_physionet"].preprocess.mains == 60.0

    workflow_chain(cfg, "demo_physionet", tmp_path / "bids", "bids", tmp_path / "wf")
    prepare(tmp_path / "bids", tmp_path / "embed", PrepareSettings.resolve(config=DEMO, dataset="demo_physionet"),
            fmt="bids")
    rec = "sub-01_task-rest_eeg"
    stores = [open_group(tmp_path / d / "preprocessed" / f"{rec}.zarr") for d in ("wf", "embed")]
    for store in stores:
        prov = store.attrs["provenance"]
        assert prov["mains"] == {"hz": 50.0, "source": "recording"}
        assert prov["preprocess"]["mains"] == 50.0 and prov["stream"]["spec"]["notch"] == [50.0]
    np.testing.assert_array_equal(stores[0]["signal"][...], stores[1]["signal"][...])
    assert assert_same_shards(tmp_path / "wf" / "shards", tmp_path / "embed" / "shards") > 0


def test_embed_prepares_the_workflows_windows_and_embeds_them_as_the_encoder_does(physionet_edf: Path,
                                                                                  tmp_path: Path):
    """embed on a demo recording, with the dataset's settings: its shards are the workflow's bit for bit, and its
    embeddings are the backbone's on the workflow's shards."""
    cfg = load_config(DEMO)
    source = physionet_edf.parent
    wf = workflow_chain(cfg, "demo_physionet", source, cfg.datasets["demo_physionet"].format, tmp_path / "wf")
    model = tmp_path / "model.safetensors"
    save_pretrained(untrained_model(), model)
    table = embed(source, model, tmp_path / "features.parquet", keep_work=tmp_path / "work", device="cpu",
                  settings=PrepareSettings.resolve(config=DEMO, dataset="demo_physionet"))
    assert assert_same_shards(wf, tmp_path / "work" / "shards") == table.num_rows > 0
    backbone, _, _ = load_backbone(model)
    index, vectors = embed_windows(backbone, wf, device="cpu")
    assert index["start_s"].to_pylist() == table["start_s"].to_pylist()
    ours = np.asarray(table["embedding"].combine_chunks().flatten()).reshape(-1, EMBED_DIM)
    np.testing.assert_array_equal(ours, vectors)


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_dag")  # the worker that holds the finished DAG (test_workflow.py, test_operations.py)
def test_embed_agrees_with_the_finished_dag(finished, tmp_path: Path):
    """The same agreement against Snakemake's own shards and the DAG's pretrained encoder."""
    from workflow_helpers import TEST_RESULTS

    work, results = finished.workdir, finished.workdir / TEST_RESULTS
    model = results / "pretrain" / finished.cfg["pretrain"]["name"]
    table = embed(work / finished.cfg["datasets"]["demo_physionet"]["path"], model, tmp_path / "f.parquet",
                  keep_work=tmp_path / "work", device="cpu",
                  settings=PrepareSettings.resolve(config=finished.config, dataset="demo_physionet"))
    shards = results / "demo_physionet" / "shards"
    assert assert_same_shards(shards, tmp_path / "work" / "shards") == table.num_rows > 0
    backbone, _, _ = load_backbone(model)
    _, vectors = embed_windows(backbone, shards, device="cpu")
    ours = np.asarray(table["embedding"].combine_chunks().flatten()).reshape(table.num_rows, -1)
    np.testing.assert_array_equal(ours, vectors)


@pytest.mark.slow
def test_the_patch_rule_declares_the_ingest_tables_it_reads(tmp_path: Path):
    """Snakemake's rule graph has ingest → patch (manifest.parquet, events.parquet are patch's inputs), so a rule run
    never patches without the splits, and a new manifest reruns patch."""
    import re

    from workflow_helpers import TEST_CONFIG, make_workdir, snakemake, tail

    proc = snakemake(make_workdir(tmp_path / "wd"), TEST_CONFIG, "--rulegraph")
    assert proc.returncode == 0, tail(proc)
    names = dict(re.findall(r'(\d+)\[label = "(\w+)"', proc.stdout))
    edges = {(names[a], names[b]) for a, b in re.findall(r"(\d+) -> (\d+)", proc.stdout)}
    assert {("preprocess", "patch"), ("ingest", "patch"), ("ingest", "samples")} <= edges
