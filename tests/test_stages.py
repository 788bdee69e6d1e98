"""standardize → preprocess → patch on real demo EEG: outputs, round trips, provenance, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zarr

from edf_factory import write_edf
from pipeline.config import (IngestConfig, MontageConfig, PatchConfig, PatchSettings, PreprocessConfig, SplitConfig,
                             to_dict)
from pipeline.io.readers import open_recording
from pipeline.montage import load_vocabulary
from pipeline.prep import shards as patch_stage
from pipeline.prep.ingest import ingest
from pipeline.prep.preprocess import preprocess
from pipeline.prep.shards import patch
from pipeline.prep.standardize import standardize
from pipeline.prep.windows import plan_windows
from pipeline.signal.importance import FEATURE_NAMES, patch_features
from pipeline.store.tables import MONTAGE_SCHEMA, read_rows, write_rows
from pipeline.store.zarr_store import open_group, open_shard

PRE = PreprocessConfig(mains=60.0)
PATCH = PatchSettings(patch=PatchConfig(window_s=10, windows_per_shard=4, chunk_windows=2),
                      splits=SplitConfig(test=("S001",)))


@pytest.fixture(scope="module")
def physionet_run(physionet_edf: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("physionet")
    ingest(physionet_edf.parent, out, cfg=IngestConfig(subject_regex=r"(S\d{3})R\d{2}", min_duration_s=10))
    standardize(out / "manifest.parquet", out / "montage.parquet", MontageConfig(channels="standard_1020"))
    preprocess(out / "montage.parquet", out / "preprocessed", PRE)
    patch(out / "preprocessed", out / "shards", PATCH)
    return out


def test_standardize_maps_physionet_names(physionet_run: Path):
    row = pl.read_parquet(physionet_run / "montage.parquet").row(0, named=True)
    vocab = load_vocabulary()
    assert row["status"] == "ok" and row["missing_channels"] == []
    assert row["channel_ids"] == [vocab.id_of(t) for t in row["targets"]]
    assert len(row["unmapped_channels"]) == 64 - 19  # the other 10-10 sites, not guessed into targets


def test_standardize_rejects_a_recording_with_nothing_to_map(tmp_path: Path):
    write_edf(tmp_path / "raw" / "ecg.edf", np.ones((2, 40 * 100)), ["ECG", "EMG chin"], 100.0)
    ingest(tmp_path / "raw", tmp_path)
    from pipeline.stages.common import StageFailed

    with pytest.raises(StageFailed, match="no usable recording"):
        standardize(tmp_path / "manifest.parquet", tmp_path / "montage.parquet")
    row = pl.read_parquet(tmp_path / "montage.parquet").row(0, named=True)
    assert row["status"] == "rejected" and "ecg.edf" in row["reason"] and "no channel maps" in row["reason"]
    assert row["unmapped_channels"] == ["ECG", "EMG chin"]


def test_preprocess_output_rate_length_and_provenance(physionet_run: Path, physionet_edf: Path):
    table = pl.read_parquet(physionet_run / "preprocessed" / "recordings.parquet").row(0, named=True)
    g = open_group(physionet_run / "preprocessed" / table["store"])
    assert g["signal"].shape == (19, 61 * 200)  # 160 Hz → 200 Hz, exactly ceil(n · 5 / 4)
    prov = g.attrs["provenance"]
    assert prov["reader"] == "edfio"
    assert prov["stream"]["resample"]["up"] == 5 and prov["stream"]["resample"]["down"] == 4
    assert prov["preprocess"]["l_freq"] == 0.1 and prov["preprocess"]["mains"] == 60.0
    assert prov["montage"]["targets"][:2] == ["Fp1", "Fp2"]
    # The output is the band-passed signal in µV/100: compare with the raw Cz, low-passed by resampling.
    x = g["signal"][...]
    raw = open_recording(physionet_edf)
    cz = raw.read(0, raw.info.n_samples, picks=np.array([raw.info.channel_names.index("Cz..")]))[0]
    ratio = x[g.attrs["targets"].index("Cz")].std() / (cz - cz.mean()).std()
    assert 0.008 < ratio < 0.0105  # scale 0.01, minus the little power outside 0.1–75 Hz


def test_shard_round_trip(physionet_run: Path):
    index = pl.read_parquet(physionet_run / "shards" / "index.parquet")
    pre = open_group(next((physionet_run / "preprocessed").glob("*.zarr")))
    signal = pre["signal"][...]
    assert len(index) == 6  # 61 s → six 10 s windows
    assert index["split"].unique().to_list() == ["test"] and index["subject"].unique().to_list() == ["S001"]
    assert sorted(index["shard"].unique().to_list()) == ["S001R02/part-000.zarr", "S001R02/part-001.zarr"]
    for row in index.iter_rows(named=True):
        shard = open_shard(physionet_run / "shards" / row["shard"])
        x = shard.x[row["row"]]
        start = int(round(row["start_s"] * 200))
        expected = signal[:, start:start + 2000].reshape(19, 10, 200)
        np.testing.assert_allclose(x.astype(np.float32), expected, rtol=2e-3, atol=2e-4)  # float16
        np.testing.assert_allclose(shard.importance[row["row"]], patch_features(expected), rtol=1e-4, atol=1e-5)
        assert shard.ch[row["row"]].tolist() == pre.attrs["channel_ids"]
    shard = open_shard(physionet_run / "shards" / "S001R02/part-000.zarr")
    assert shard.x.shape == (4, 19, 10, 200) and shard.x.chunks == (2, 19, 10, 200) and shard.x.dtype == np.float16
    assert shard.importance.shape[-1] == len(FEATURE_NAMES) == 5
    assert shard.attrs["importance_features"] == list(FEATURE_NAMES)
    assert shard.attrs["provenance"]["preprocess"]["sfreq"] == 200.0  # every step travels with the shard
    assert zarr.open_group(str(physionet_run / "shards" / "S001R02/part-000.zarr"), mode="r").metadata.zarr_format == 3


def test_flat_channel_masked_and_spike_windows_rejected(physionet_edf: Path, tmp_path: Path):
    rec = open_recording(physionet_edf)
    names = list(rec.info.channel_names)
    data = rec.read(0, rec.info.n_samples).astype(np.float64)
    data[names.index("Cz..")] = 0.0  # a dead electrode
    data[names.index("Pz..")] = 0.0
    spike_at = int(35.5 * 160)  # one huge artifact inside the fourth 10 s window
    data[names.index("O1.."), spike_at:spike_at + 16] += 5000.0
    write_edf(tmp_path / "raw" / "S009R01.edf", data, names, 160.0)
    ingest(tmp_path / "raw", tmp_path, cfg=IngestConfig(min_duration_s=10))
    standardize(tmp_path / "manifest.parquet", tmp_path / "montage.parquet")
    table = preprocess(tmp_path / "montage.parquet", tmp_path / "pre", PRE)
    assert table[0]["masked_channels"] == ["Cz", "Pz"]
    patch(tmp_path / "pre", tmp_path / "shards", PATCH)
    index = pl.read_parquet(tmp_path / "shards" / "index.parquet")
    assert 30.0 not in index["start_s"].to_list() and len(index) == 5  # the spiky window is gone
    shard = open_shard(tmp_path / "shards" / index["shard"][0])
    ch = shard.ch[0]
    vocab = load_vocabulary()
    targets = [vocab.name_of(i) for i in ch if i >= 0]
    assert "Cz" not in targets and "Pz" not in targets and (ch == -1).sum() == 2
    assert np.all(shard.x[0][ch == -1] == 0)


def test_plan_windows_drops_windows_touching_bad_seconds():
    bad = np.zeros(60, dtype=bool)
    bad[25] = True
    plan = plan_windows(60 * 200, bad, PatchConfig(window_s=10), 200.0)
    assert plan.starts.tolist() == [0, 2000, 6000, 8000, 10000]  # 20–30 s holds second 25
    assert plan.n_rejected == 1
    overlapping = plan_windows(60 * 200, bad, PatchConfig(window_s=10, stride_s=5), 200.0)
    assert overlapping.n_rejected == 2 and 4000 not in overlapping.starts and 5000 not in overlapping.starts
    assert 3000 in overlapping.starts  # 15–25 s ends just before second 25


def test_rerun_reuses_and_a_killed_write_leaves_nothing_trusted(physionet_run: Path, tmp_path: Path, monkeypatch, caplog):
    work = tmp_path / "run"
    shutil.copytree(physionet_run / "preprocessed", work / "preprocessed")
    # A crash in the middle of writing a recording's shards leaves no folder at its final path…
    real = patch_stage.create_shard
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(patch_stage, "create_shard", failing)
    with pytest.raises(Exception):
        patch(work / "preprocessed", work / "shards", PATCH, ingested=physionet_run)
    assert not (work / "shards" / "S001R02").exists() and not list((work / "shards").glob("S001R02.tmp-*"))
    assert not (work / "shards" / "index.parquet").exists()
    monkeypatch.setattr(patch_stage, "create_shard", real)
    # …and what a SIGKILL would leave (a temporary sibling) is ignored and cleaned by the rerun.
    (work / "shards" / "S001R02.tmp-999-deadbeef" / "part-000.zarr").mkdir(parents=True)
    patch(work / "preprocessed", work / "shards", PATCH, ingested=physionet_run)
    assert not list((work / "shards").glob("*.tmp-*"))
    assert len(pl.read_parquet(work / "shards" / "index.parquet")) == 6
    # A second run with the same settings reuses the shards; new settings rebuild them.
    stamp = (work / "shards" / "S001R02" / "fingerprint.json").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        patch(work / "preprocessed", work / "shards", PATCH, ingested=physionet_run)
    assert "shards up to date, reused" in caplog.text
    assert (work / "shards" / "S001R02" / "fingerprint.json").stat().st_mtime_ns == stamp
    patch(work / "preprocessed", work / "shards", PatchSettings(patch=PatchConfig(window_s=20)), ingested=physionet_run)
    assert len(pl.read_parquet(work / "shards" / "index.parquet")) == 3


def test_preprocess_resume_skips_done_recordings(physionet_run: Path, tmp_path: Path, caplog):
    out = tmp_path / "pre"
    preprocess(physionet_run / "montage.parquet", out, PRE)
    with caplog.at_level("INFO"):
        again = preprocess(physionet_run / "montage.parquet", out, PRE)
    assert "preprocessed store up to date, reused" in caplog.text
    assert again[0]["status"] == "ok" and again[0]["n_samples"] == 61 * 200
    changed = preprocess(physionet_run / "montage.parquet", out, PreprocessConfig(mains=50.0, h_freq=40.0))
    g = open_group(out / changed[0]["store"])
    assert g.attrs["provenance"]["preprocess"]["h_freq"] == 40.0


@pytest.mark.slow
def test_dask_cluster_and_scheduler_give_the_same_shards(bids_root: Path, tmp_path: Path):
    """In-process, a local dask cluster of 2 processes, and a running scheduler agree exactly."""
    tree = tmp_path / "bids"
    shutil.copytree(bids_root, tree)
    ingest(tree, tmp_path)
    standardize(tmp_path / "manifest.parquet", tmp_path / "montage.parquet",
                MontageConfig(channels="standard_1020", positions="biosemi128"))
    settings = PatchSettings(patch=PatchConfig(window_s=30, windows_per_shard=64))
    for workers in (1, 2):
        preprocess(tmp_path / "montage.parquet", tmp_path / f"pre{workers}", PRE, n_workers=workers)
        patch(tmp_path / f"pre{workers}", tmp_path / f"shards{workers}", settings, n_workers=workers)
    # an existing dask.distributed scheduler, given by address, as a cluster deployment would
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        patch(tmp_path / "pre1", tmp_path / "shards_sched", settings, scheduler=cluster.scheduler_address)
    a = pl.read_parquet(tmp_path / "shards1" / "index.parquet")
    assert len(a) > 60
    for other in ("shards2", "shards_sched"):
        assert a.equals(pl.read_parquet(tmp_path / other / "index.parquet"))
        for shard in a["shard"].unique().to_list():
            np.testing.assert_array_equal(open_shard(tmp_path / "shards1" / shard).x[...],
                                          open_shard(tmp_path / other / shard).x[...])
    meta = json.loads((tmp_path / "shards1" / a["shard"][0].split("/")[0] / "fingerprint.json").read_text())
    assert meta["fingerprint"]


def test_patch_refuses_to_run_without_the_ingest_tables(physionet_run: Path, tmp_path: Path):
    """Run by hand on a copied preprocessed/ folder, patch would lose the official split and the events: it stops,
    naming the missing table and the fix; with --ingested it reads them from where they are."""
    from pipeline import cli
    from pipeline.stages.common import StageFailed

    shutil.copytree(physionet_run / "preprocessed", tmp_path / "elsewhere" / "preprocessed")
    with pytest.raises(StageFailed, match=r"manifest\.parquet.*--ingested"):
        patch(tmp_path / "elsewhere" / "preprocessed", tmp_path / "shards", PATCH)
    assert not (tmp_path / "shards" / "index.parquet").exists()
    args = ["patch", str(tmp_path / "elsewhere" / "preprocessed"), "--out", str(tmp_path / "shards")]
    assert cli.main(args) == 1
    assert cli.main([*args, "--ingested", str(physionet_run), "--settings", json.dumps(to_dict(PATCH))]) == 0
    assert pl.read_parquet(tmp_path / "shards" / "index.parquet").equals(
        pl.read_parquet(physionet_run / "shards" / "index.parquet"))


def test_a_killed_preprocess_keeps_its_finished_recordings_when_snakemake_deletes_the_output(
        physionet_run: Path, tmp_path: Path, monkeypatch, caplog):
    """Killed after its first recording, then its output folder deleted (what Snakemake does before rerunning the
    job): the rerun reuses the finished recording and processes only the other one."""
    from pipeline.prep import preprocess as prep

    rows = read_rows(physionet_run / "montage.parquet")
    rows.append({**rows[0], "recording": "second"})
    write_rows(rows, MONTAGE_SCHEMA, tmp_path / "montage.parquet")
    real, done = prep.process, []

    def killed_on_the_second(row, *args, **kwargs):
        if row["recording"] == "second":
            raise KeyboardInterrupt  # a kill: nothing after this line of the stage runs
        done.append(row["recording"])
        return real(row, *args, **kwargs)

    monkeypatch.setattr(prep, "process", killed_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        preprocess(tmp_path / "montage.parquet", tmp_path / "pre", PRE)
    shutil.rmtree(tmp_path / "pre")  # Snakemake removes a directory output before it reruns the job
    monkeypatch.setattr(prep, "process", lambda row, *a, **k: done.append(row["recording"]) or real(row, *a, **k))
    with caplog.at_level("INFO"):
        table = preprocess(tmp_path / "montage.parquet", tmp_path / "pre", PRE)
    assert done == ["S001R02", "second"] and "S001R02: preprocessed store up to date, reused" in caplog.text
    assert [r["status"] for r in table] == ["ok", "ok"] and not prep.progress_dir(tmp_path / "pre").exists()
    np.testing.assert_array_equal(open_group(tmp_path / "pre" / "S001R02.zarr")["signal"][...],
                                  open_group(physionet_run / "preprocessed" / "S001R02.zarr")["signal"][...])


# --------------------------------------------------------------------------- start-up of the stage processes

HEAVY = ("torch", "sklearn", "matplotlib", "distributed", "dask", "scipy.signal", "mne", "polars")
_STAGE_WITH_MODULES = """
import json, sys
from pipeline.cli import main
rc = main(sys.argv[1:])
print("MODULES " + json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
sys.exit(rc)
"""


def _stage_process(*args: str, cwd: Path) -> tuple[list[str], str]:
    """Run `python -m pipeline <args>` in a fresh process; (the heavy modules it imported, its log)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _STAGE_WITH_MODULES.format(heavy=HEAVY), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES "))
    return json.loads(line.split(" ", 1)[1]), proc.stdout + proc.stderr


@pytest.mark.slow
def test_data_stage_processes_import_no_torch_sklearn_matplotlib_or_dask(physionet_edf: Path, tmp_path: Path):
    """ingest → standardize → preprocess → patch as the rules run them (one recording, --workers 2): none of them
    pays for torch, scikit-learn, matplotlib, scipy.signal or a dask cluster (docs/benchmarks.md, "Start-up")."""
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    steps = {
        "ingest": ["ingest", str(physionet_edf.parent), "--out", str(out), "--settings",
                   json.dumps({"subject_regex": r"(S\d{3})R\d{2}", "min_duration_s": 10})],
        "standardize": ["standardize", str(out / "manifest.parquet"), "--out", str(out / "montage.parquet")],
        "preprocess": ["preprocess", str(out / "montage.parquet"), "--out", str(out / "preprocessed"),
                       "--settings", json.dumps(to_dict(PRE)), "--workers", "2"],
        "patch": ["patch", str(out / "preprocessed"), "--out", str(out / "shards"), "--settings",
                  json.dumps(to_dict(PATCH)), "--workers", "2"],
    }
    for stage, args in steps.items():
        imported, _ = _stage_process(*args, cwd=repo)
        assert imported == [], f"{stage} imported {imported}"
    assert len(pl.read_parquet(out / "shards" / "index.parquet")) > 0


@pytest.mark.slow
def test_a_stage_on_a_local_cluster_logs_no_traceback(physionet_edf: Path, tmp_path: Path):
    """preprocess and patch of 2 recordings on a 2-worker local cluster: a clean run's log holds no traceback.
    (Closing both workers at once made the scheduler tell the one still closing that the other had left; that
    write failed and distributed logged a CommClosedError traceback in about 1 of 6 successful runs.) Below
    --cluster-min-recordings the same stage starts no cluster."""
    repo = Path(__file__).resolve().parents[1]
    raw = tmp_path / "raw"
    raw.mkdir()
    data = bytearray(physionet_edf.read_bytes())
    for i in range(2):  # two recordings with different signal data (ingest refuses duplicates)
        data[-2:] = i.to_bytes(2, "little", signed=True)
        (raw / f"S00{i + 1}R02.edf").write_bytes(bytes(data))
    ingest(raw, tmp_path, cfg=IngestConfig(subject_regex=r"(S\d{3})R\d{2}", min_duration_s=10))
    standardize(tmp_path / "manifest.parquet", tmp_path / "montage.parquet", MontageConfig(channels="standard_1020"))
    cluster = ["--workers", "2", "--cluster-min-recordings", "2"]
    for args in (["preprocess", str(tmp_path / "montage.parquet"), "--out", str(tmp_path / "pre"),
                  "--settings", json.dumps(to_dict(PRE)), *cluster],
                 ["patch", str(tmp_path / "pre"), "--out", str(tmp_path / "shards"),
                  "--settings", json.dumps(to_dict(PATCH)), *cluster]):
        imported, log = _stage_process(*args, cwd=repo)
        assert "local dask cluster: 2 worker processes" in log and "distributed" in imported
        assert "Traceback" not in log and "CommClosedError" not in log, log
        assert "Start Nanny" not in log  # distributed's INFO chatter stays out of the stage log
        # recordings done / total with rate and ETA, in the log (tqdm's bar drew nothing into a file)
        assert f"{args[0]}: recording 2/2 (100 %) · " in log and " · ETA 0s" in log, log
    assert len(pl.read_parquet(tmp_path / "shards" / "index.parquet")["recording"].unique()) == 2
    imported, log = _stage_process("preprocess", str(tmp_path / "montage.parquet"), "--out", str(tmp_path / "pre1"),
                                   "--settings", json.dumps(to_dict(PRE)), "--workers", "2",
                                   "--cluster-min-recordings", "3", cwd=repo)
    assert "distributed" not in imported and "in-process, no dask cluster" in log
    assert "preprocess: recording 2/2 (100 %) · " in log, log
