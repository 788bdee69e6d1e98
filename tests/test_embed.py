"""embed: EDF files → one pretrained-backbone embedding per clean window → parquet."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edf_factory import corrupt_header
from pretrained_factory import EMBED_DIM, save_pretrained, untrained_model
from pipeline.embedding import embed, embed_windows, load_backbone
from pipeline.prep.prepare import PrepareSettings as EmbedSettings
from pipeline.prep.preprocess import preprocess
from pipeline.stages.common import StageFailed
from pipeline.store.tables import MONTAGE_SCHEMA, read_rows, write_rows

ROOT = Path(__file__).resolve().parents[1]
WINDOW_S = 10.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("pretrained")
    return folder, save_pretrained(untrained_model(), folder / "model.safetensors")


@pytest.fixture(scope="module")
def embedded(physionet_edf: Path, model_dir, tmp_path_factory):
    """One embed run on the real PhysioNet EDF at 10 s windows, its work folder kept."""
    root = tmp_path_factory.mktemp("embed")
    settings = EmbedSettings.resolve(window_s=WINDOW_S)
    table = embed(physionet_edf, model_dir[0], root / "features.parquet", settings=settings,
                  keep_work=root / "work", device="cpu")
    return table, root


def test_one_row_per_clean_window(embedded, physionet_edf: Path, model_dir):
    table, root = embedded
    on_disk = pq.read_table(root / "features.parquet")
    assert on_disk.equals(table)
    patched = pl.read_parquet(root / "work" / "shards" / "index.parquet")  # the patch stage's own count
    assert table.num_rows == patched.height > 0
    assert patched.height <= 6  # 61 s → at most six clean 10 s windows
    df = pl.from_arrow(table.drop_columns(["embedding"]))
    assert df["recording"].unique().to_list() == ["S001R02"]
    assert df["source_path"].unique().to_list() == [str(physionet_edf.resolve())]
    starts = df["start_s"].to_numpy()
    assert starts.tolist() == sorted(patched["start_s"].to_list())
    assert np.all(np.diff(starts) % WINDOW_S == 0) and np.all(np.diff(starts) > 0)
    if patched.height == 6:
        assert starts.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert (df["window_s"] == WINDOW_S).all()
    assert (df["n_channels_valid"] > 0).all() and (df["n_channels_valid"] <= 19).all()

    kind = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == EMBED_DIM and kind.value_type == pa.float32()
    vectors = np.asarray(table["embedding"].combine_chunks().flatten()).reshape(-1, EMBED_DIM)
    assert np.isfinite(vectors).all() and vectors.std() > 0
    meta = on_disk.schema.metadata
    assert meta[b"model_fingerprint"].decode() == model_dir[1]
    settings = json.loads(meta[b"settings"])
    assert settings["patch"]["window_s"] == WINDOW_S and settings["montage"]["channels"] == "standard_1020"
    assert json.loads(meta[b"rejected"]) == []


def test_deterministic_and_depends_on_weights(embedded, physionet_edf: Path, model_dir, tmp_path: Path):
    table, root = embedded
    again = embed(physionet_edf, model_dir[0], tmp_path / "again.parquet",
                  settings=EmbedSettings.resolve(window_s=WINDOW_S), device="cpu", batch_windows=4)
    assert again["embedding"].to_pylist() == table["embedding"].to_pylist()  # bit-identical, any batch size
    assert not list(tmp_path.glob("*.tmp-*"))

    other = untrained_model(seed=1)
    save_pretrained(other, tmp_path / "other.safetensors")
    backbone, fingerprint, _ = load_backbone(tmp_path / "other.safetensors")
    assert fingerprint != model_dir[1]
    _, vectors = embed_windows(backbone, root / "work" / "shards", device="cpu")
    first = np.asarray(table["embedding"].combine_chunks().flatten()).reshape(-1, EMBED_DIM)
    assert vectors.shape == first.shape
    assert not np.allclose(vectors, first)


def test_embedding_runs_on_the_device(embedded, model_dir):
    """Under the device check (a separate device played on the CPU) the backbone is placed, batches are moved
    and results come back before numpy; the embeddings are the plain run's."""
    from pipeline.train.device import device_check

    table, root = embedded
    with device_check(True) as check:
        backbone, _, _ = load_backbone(model_dir[0])
        _, vectors = embed_windows(backbone, root / "work" / "shards", device="cpu")
        assert check.ops > 0
    first = np.asarray(table["embedding"].combine_chunks().flatten()).reshape(-1, EMBED_DIM)
    np.testing.assert_array_equal(vectors, first)


def test_each_recording_is_notched_at_its_own_mains(embedded, tmp_path: Path):
    """One preprocess call over recordings of two line frequencies: each is notched at its own (the rule of
    pipeline.prep.preprocess.mains_for, which embed and the workflow share)."""
    from pipeline.config import PreprocessConfig
    from pipeline.store.zarr_store import open_group

    rows = read_rows(embedded[1] / "work" / "montage.parquet")
    rows.append({**rows[0], "recording": "copy-50hz", "mains": 50.0})  # as a BIDS eeg.json would state it
    write_rows(rows, MONTAGE_SCHEMA, tmp_path / "montage.parquet")
    preprocess(tmp_path / "montage.parquet", tmp_path / "pre", PreprocessConfig(mains=60.0))
    written = read_rows(tmp_path / "pre" / "recordings.parquet")
    assert sorted(r["recording"] for r in written) == ["S001R02", "copy-50hz"]
    for rec, mains, source in (("S001R02", 60.0, "dataset"), ("copy-50hz", 50.0, "recording")):
        prov = open_group(tmp_path / "pre" / f"{rec}.zarr").attrs["provenance"]
        assert prov["preprocess"]["mains"] == mains and prov["mains"] == {"hz": mains, "source": source}


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline", "embed", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_with_dataset_settings_reports_rejects(physionet_edf: Path, model_dir, tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(physionet_edf, raw / physionet_edf.name)
    corrupt_header(physionet_edf, raw / "broken.edf")
    out = tmp_path / "features.parquet"
    proc = _run_cli(str(raw), "--model", str(model_dir[0] / "model.safetensors"), "--out", str(out),
                    "--config", "config/demo.yaml", "--dataset", "demo_physionet", "--window-s", "10",
                    "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "broken.edf" in proc.stderr and "rejected" in proc.stderr
    table = pq.read_table(out)
    assert table.num_rows > 0 and set(table["subject"].to_pylist()) == {"S001"}  # the dataset's subject_regex
    settings = json.loads(table.schema.metadata[b"settings"])
    assert settings["dataset"] == "demo_physionet" and settings["patch"]["window_s"] == 10
    rejected = json.loads(table.schema.metadata[b"rejected"])
    assert [r["stage"] for r in rejected] == ["ingest"] and "broken.edf" in rejected[0]["reason"]


def test_bad_input_fails_naming_the_file(physionet_edf: Path, model_dir, tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    corrupt_header(physionet_edf, raw / "corrupt.edf")
    out = tmp_path / "features.parquet"
    proc = _run_cli(str(raw), "--model", str(model_dir[0]), "--out", str(out), "--window-s", "10")
    assert proc.returncode == 1
    assert "corrupt.edf" in proc.stderr and "error:" in proc.stderr
    assert not out.exists()
    with pytest.raises(StageFailed, match="corrupt.edf"):
        embed(raw, model_dir[0], out, settings=EmbedSettings.resolve(window_s=WINDOW_S))


def test_bad_model_and_config_are_clear_errors(physionet_edf: Path, tmp_path: Path):
    from pipeline.config import ConfigError

    with pytest.raises(StageFailed, match="no pretrained model at"):
        embed(physionet_edf, tmp_path / "nowhere", tmp_path / "f.parquet")
    with pytest.raises(ConfigError, match="demo_physionet"):
        EmbedSettings.resolve(config=ROOT / "config" / "demo.yaml", dataset="nope")


def test_no_window_passing_the_amplitude_rule_names_the_options(physionet_edf: Path, model_dir, tmp_path: Path):
    """Issue 17: embed with strict settings returned nothing and did not say why or what to change."""
    strict = EmbedSettings.resolve(window_s=WINDOW_S, reject_uv=5.0)  # real EEG exceeds 5 µV every second
    assert strict.preprocess.reject_uv == 5.0
    with pytest.raises(StageFailed, match=r"no window passed: (\d+) of \1 rejected by the 5 µV amplitude \(and NaN\) "
                                          r"rule .*try --reject-uv 10 or --window-s 3"):
        embed(physionet_edf, model_dir[0], tmp_path / "f.parquet", settings=strict, device="cpu")
    proc = _run_cli(str(physionet_edf), "--model", str(model_dir[0]), "--out", str(tmp_path / "g.parquet"),
                    "--window-s", "10", "--reject-uv", "5", "--device", "cpu")
    assert proc.returncode == 1 and "try --reject-uv 10 or --window-s 3" in proc.stderr
    assert "Traceback" not in proc.stderr
