"""Adapters and readers of the non-EDF releases: BCIC-IV-2a (GDF + true-label .mat), SEED-V (Neuroscan CNT),
SHU-MI (.mat trials) and users' epochs (mne -epo.fif, .npz), each on small files written here in the
release's own format (tests/format_writers.py for GDF and CNT, which mne reads but cannot write)."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import polars as pl
import pytest
import scipy.io

from format_writers import write_cnt, write_gdf
from pipeline.io.adapters import ADAPTERS, bciciv2a, seedv, shu_mi
from pipeline.io.discover import discover
from pipeline.io.mne_reader import MneRecording
from pipeline.io.readers import data_offset, open_recording
from pipeline.io.recording import RecordingError
from pipeline.io.trials import TrialsRecording
from pipeline.prep.ingest import ingest

SFREQ_2A = 250
CODES = {"left": 769, "right": 770, "feet": 771, "tongue": 772}


# ------------------------------------------------------------------------------------------------
# BCIC-IV-2a: GDF files laid out like A0xT.gdf / A0xE.gdf


def write_2a_session(path: Path, classes: list[str], *, evaluation: bool, rejected: tuple[int, ...] = (),
                     seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """A short BCIC-IV-2a-like session: 22 EEG + 3 EOG channels at 250 Hz, one 8 s trial per class: 768 at
    the trial start, the cue 2 s later (769-772, or 783 in an evaluation session), 1023 on rejected trials.
    Returns the quantized µV data and the cue onsets in seconds."""
    rng = np.random.default_rng(seed)
    lead, trial = 2 * SFREQ_2A, 8 * SFREQ_2A
    n = lead + trial * len(classes) + SFREQ_2A
    data = rng.normal(0.0, 25.0, (25, n))
    events, cues = [(0, 32766, 0), (10, 276, 250)], []
    for i, cls in enumerate(classes):
        start = lead + i * trial
        events.append((start, 768, trial))
        if i in rejected:
            events.append((start, 1023, trial))
        cue = start + 2 * SFREQ_2A
        events.append((cue, 783 if evaluation else CODES[cls], 313))
        cues.append(cue / SFREQ_2A)
    names = list(bciciv2a.GDF_LABELS) + list(bciciv2a.EOG_LABELS)
    return write_gdf(path, data, names, SFREQ_2A, events=sorted(events)), cues


def test_gdf_writer_round_trips_through_mne(tmp_path: Path):
    data = np.random.default_rng(1).normal(0, 40, (3, 1250))
    events = [(0, 32766, 0), (100, 768, 500), (600, 769, 313), (700, 1023, 400)]
    expected = write_gdf(tmp_path / "x.gdf", data, ["EEG-Fz", "EEG-0", "EOG-left"], 250.0, events=events)
    raw = mne.io.read_raw_gdf(tmp_path / "x.gdf", preload=True, verbose="error")
    assert raw.ch_names == ["EEG-Fz", "EEG-0", "EOG-left"]
    assert (raw.info["sfreq"], raw.n_times) == (250.0, 1250)
    assert list(raw.annotations.description) == ["32766", "768", "769", "1023"]
    np.testing.assert_allclose(raw.annotations.onset, [0.0, 0.4, 2.4, 2.8])
    np.testing.assert_allclose(raw.annotations.duration[1:], [2.0, 1.252, 1.6])
    np.testing.assert_allclose(raw.get_data() * 1e6, expected, atol=1e-9)
    assert np.abs(expected - data).max() < 40 * 6 / 32767  # int16 quantization only


@pytest.fixture(scope="module")
def bcic_tree(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bciciv2a")
    train = ["left", "right", "feet", "tongue"]
    test = ["tongue", "left", "feet", "right"]
    a01t, cues_t = write_2a_session(root / "A01T.gdf", train, evaluation=False, rejected=(2,), seed=1)
    a01e, cues_e = write_2a_session(root / "A01E.gdf", test, evaluation=True, seed=2)
    write_2a_session(root / "sub" / "A02T.gdf", ["right", "left"], evaluation=False, seed=3)
    (root / "true_labels").mkdir()
    scipy.io.savemat(root / "true_labels" / "A01E.mat",
                     {"classlabel": np.array([[bciciv2a.CLASSES.index(c) + 1] for c in test], dtype=np.uint8)})
    scipy.io.savemat(root / "true_labels" / "A01T.mat",
                     {"classlabel": np.array([[bciciv2a.CLASSES.index(c) + 1] for c in train], dtype=np.uint8)})
    return {"root": root, "A01T": (a01t, cues_t, train), "A01E": (a01e, cues_e, test)}


def test_bciciv2a_adapter_subjects_splits_events(bcic_tree: dict):
    found = {s.recording: s for s in discover(bcic_tree["root"], fmt="bciciv2a")}
    assert sorted(found) == ["A01E", "A01T", "sub__A02T"]
    assert [(s.subject, s.session, s.split) for s in (found["A01T"], found["A01E"], found["sub__A02T"])] == [
        ("A01", "T", "train"), ("A01", "E", "test"), ("A02", "T", "train")]
    for rec in ("A01T", "A01E"):
        _, cues, classes = bcic_tree[rec]
        cue_events = [e for e in found[rec].events if e[2] != "rejected"]
        assert cue_events == [(pytest.approx(c), 4.0, cls) for c, cls in zip(cues, classes)]
    # trial 2 of A01T is marked rejected (1023 at its start, 2 s before its cue); kept, and reported
    cue2 = bcic_tree["A01T"][1][2]
    assert [e for e in found["A01T"].events if e[2] == "rejected"] == [(pytest.approx(cue2 - 2.0), 8.0, "rejected")]
    assert [e[2] for e in found["sub__A02T"].events] == ["right", "left"]


def test_bciciv2a_reader_renames_eeg_drops_eog_in_microvolts(bcic_tree: dict):
    data, _, _ = bcic_tree["A01T"]
    path = bcic_tree["root"] / "A01T.gdf"
    rec = open_recording(path)
    assert isinstance(rec, MneRecording)
    info = rec.info
    assert (info.format, info.reader, info.sfreq, info.n_samples) == ("gdf", "mne", 250.0, data.shape[1])
    assert info.channel_names == bciciv2a.SITES
    assert info.dropped == ("EOG-left (eog)", "EOG-central (eog)", "EOG-right (eog)")
    assert any("BCIC-IV-2a channel labels renamed" in n for n in info.notes)
    got = rec.read(100, 900)
    assert got.dtype == np.float32 and got.shape == (22, 800)
    np.testing.assert_allclose(got, data[:22, 100:900], atol=1e-3)
    picked = rec.read(0, 50, picks=np.array([21, 0]))
    np.testing.assert_allclose(picked, data[[21, 0], :50], atol=1e-3)
    assert data_offset(path) == 0  # not an EDF header: the content hash covers the whole file


def test_bciciv2a_ingest_manifest_and_events(bcic_tree: dict, tmp_path: Path):
    rows = ingest(bcic_tree["root"], tmp_path, dataset="bciciv2a", fmt="bciciv2a")
    m = pl.read_parquet(tmp_path / "manifest.parquet")
    assert m["status"].to_list() == ["ok", "ok", "ok"], [r.get("reason") for r in rows]
    assert m["recording"].to_list() == ["A01E", "A01T", "sub__A02T"]
    assert m["subject"].to_list() == ["A01", "A01", "A02"]
    assert m["session"].to_list() == ["E", "T", "T"]
    assert m["n_channels"].to_list() == [22, 22, 22]
    assert m["channel_names"][0].to_list() == list(bciciv2a.SITES)
    assert m["dropped_channels"][0].to_list() == ["EOG-left (eog)", "EOG-central (eog)", "EOG-right (eog)"]
    assert m["sha256"][0] == m["content_sha256"][0]  # whole-file hash for GDF
    ev = pl.read_parquet(tmp_path / "events.parquet")
    for rec in ("A01T", "A01E"):
        labels = ev.filter((pl.col("recording") == rec) & (pl.col("label") != "rejected"))["label"].to_list()
        assert labels == bcic_tree[rec][2]
    assert ev.filter(pl.col("label") == "rejected")["recording"].to_list() == ["A01T"]


def _copy_session(src: Path, dst_root: Path, name: str) -> Path:
    dst_root.mkdir(parents=True, exist_ok=True)
    (dst_root / name).write_bytes(src.read_bytes())
    return dst_root / name


def test_bciciv2a_label_file_errors_name_the_files(bcic_tree: dict, tmp_path: Path):
    gdf = bcic_tree["root"] / "A01E.gdf"
    # missing true-label file
    root = tmp_path / "missing"
    _copy_session(gdf, root, "A01E.gdf")
    with pytest.raises(FileNotFoundError, match=r"A01E\.gdf.*A01E\.mat"):
        discover(root, fmt="bciciv2a")
    # malformed: no classlabel field
    root = tmp_path / "malformed"
    _copy_session(gdf, root, "A01E.gdf")
    scipy.io.savemat(root / "A01E.mat", {"labels": np.array([1, 2, 3, 4])})
    with pytest.raises(RecordingError, match=r"malformed/A01E\.mat: no 'classlabel' field"):
        discover(root, fmt="bciciv2a")
    # values outside 1..4
    scipy.io.savemat(root / "A01E.mat", {"classlabel": np.array([[1], [2], [5], [4]])})
    with pytest.raises(RecordingError, match=r"A01E\.mat: 'classlabel' values must be 1\.\.4"):
        discover(root, fmt="bciciv2a")
    # count differs from the 783 cues
    root = tmp_path / "count"
    _copy_session(gdf, root, "A01E.gdf")
    scipy.io.savemat(root / "A01E.mat", {"classlabel": np.array([[1], [2], [3]])})
    with pytest.raises(RecordingError, match=r"count/A01E\.gdf has 4 cues \(783\) but .*count/A01E\.mat has 3"):
        discover(root, fmt="bciciv2a")
    # a training-session label file that disagrees with the GDF's cue codes
    root = tmp_path / "disagree"
    _copy_session(bcic_tree["root"] / "A01T.gdf", root, "A01T.gdf")
    scipy.io.savemat(root / "A01T.mat", {"classlabel": np.array([[4], [3], [2], [1]])})
    with pytest.raises(RecordingError, match=r"disagree/A01T\.gdf and .*disagree/A01T\.mat"):
        discover(root, fmt="bciciv2a")


# ------------------------------------------------------------------------------------------------
# SEED-V: Neuroscan CNT

SEEDV_62 = ("FP1 FPZ FP2 AF3 AF4 F7 F5 F3 F1 FZ F2 F4 F6 F8 FT7 FC5 FC3 FC1 FCZ FC2 FC4 FC6 FT8 T7 C5 C3 C1 CZ C2 "
            "C4 C6 T8 TP7 CP5 CP3 CP1 CPZ CP2 CP4 CP6 TP8 P7 P5 P3 P1 PZ P2 P4 P6 P8 PO7 PO5 PO3 POZ PO4 PO6 PO8 "
            "CB1 O1 OZ O2 CB2").split()


def test_cnt_writer_round_trips_through_mne(tmp_path: Path):
    data = np.random.default_rng(4).normal(0, 30, (4, 3000))
    for n_bytes in (2, 4):
        path = tmp_path / f"x{n_bytes}.cnt"
        expected = write_cnt(path, data, ["FP1", "CZ", "VEO", "HEO"], 1000, events=[(0, 1), (1234, 7)],
                             n_bytes=n_bytes, resolution_uv=0.1)
        raw = mne.io.read_raw_cnt(path, preload=False, verbose="error")
        assert raw.ch_names == ["FP1", "CZ", "VEO", "HEO"]
        assert (raw.info["sfreq"], raw.n_times) == (1000.0, 3000)
        assert list(raw.annotations.description) == ["1", "7"]
        np.testing.assert_allclose(raw.annotations.onset, [0.0, 1.234])
        np.testing.assert_allclose(raw.get_data(start=500, stop=2500) * 1e6, expected[:, 500:2500], atol=1e-4)
        assert np.abs(expected - data).max() <= 0.05 + 1e-9


@pytest.fixture(scope="module")
def seedv_tree(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("seedv")
    names = SEEDV_62[:31] + ["M1"] + SEEDV_62[31:] + ["M2", "VEO", "HEO"]  # 66 channels, as in the release
    data = np.random.default_rng(5).normal(0, 20, (len(names), 1500))
    out = {"root": root, "names": names}
    for i, stem in enumerate(("1_1_20180804", "1_2_20180810", "12_3_20180517")):
        out[stem] = write_cnt(root / "EEG_raw" / f"{stem}.cnt", np.roll(data, i, axis=1), names, 1000, n_bytes=4)
    (root / "EEG_raw" / "notes.cnt").write_bytes(b"not a recording")  # skipped: not the release's naming
    return out


def test_seedv_adapter_trials_from_the_release_table(seedv_tree: dict):
    found = {s.recording: s for s in discover(seedv_tree["root"], fmt="seedv")}
    assert sorted(found) == ["EEG_raw__12_3_20180517", "EEG_raw__1_1_20180804", "EEG_raw__1_2_20180810"]
    s1, s2, s3 = found["EEG_raw__1_1_20180804"], found["EEG_raw__1_2_20180810"], found["EEG_raw__12_3_20180517"]
    assert [(s.subject, s.session, s.split) for s in (s1, s2, s3)] == [("1", "1", ""), ("1", "2", ""), ("12", "3", "")]
    assert all(len(s.events) == 15 for s in (s1, s2, s3))
    # first/last trials of each session, as in the reference tables (start, end - start, emotion)
    assert s1.events[0] == (30.0, 72.0, "happy") and s1.events[-1] == (3204.0, 155.0, "disgust")
    assert s2.events[0] == (30.0, 237.0, "sad") and s2.events[3] == (646.0, 127.0, "disgust")
    assert s3.events[1] == (353.0, 65.0, "fear") and s3.events[-1] == (2888.0, 178.0, "disgust")
    counts = {e: [ev[2] for ev in s1.events].count(e) for e in seedv.EMOTIONS}
    assert counts == {e: 3 for e in seedv.EMOTIONS}
    assert all(s < s + d <= 3359 for s, d, _ in s1.events)


def test_seedv_reader_cnt_eeg_channels_in_microvolts(seedv_tree: dict):
    path = seedv_tree["root"] / "EEG_raw" / "1_2_20180810.cnt"
    rec = open_recording(path)
    info = rec.info
    assert (info.format, info.reader, info.sfreq, info.n_samples) == ("cnt", "mne", 1000.0, 1500)
    keep = [i for i, n in enumerate(seedv_tree["names"]) if n not in ("VEO", "HEO")]
    assert info.channel_names == tuple(seedv_tree["names"][i] for i in keep)
    assert len(info.channel_names) == 64  # 62 EEG + M1/M2; the montage's 62-channel set leaves M1/M2 out
    assert info.dropped == ("VEO (eog)", "HEO (eog)")
    expected = seedv_tree["1_2_20180810"][keep]
    np.testing.assert_allclose(rec.read(200, 1300), expected[:, 200:1300], atol=1e-3)
    assert data_offset(path) == 0


def test_seedv_ingest_events(seedv_tree: dict, tmp_path: Path):
    ingest(seedv_tree["root"], tmp_path, dataset="seedv", fmt="seedv")
    m = pl.read_parquet(tmp_path / "manifest.parquet")
    assert m["status"].to_list() == ["ok"] * 3 and m["sfreq"].to_list() == [1000.0] * 3
    ev = pl.read_parquet(tmp_path / "events.parquet").filter(pl.col("recording") == "EEG_raw__1_1_20180804")
    assert ev["label"].to_list() == [seedv.EMOTIONS[k] for k in seedv.TRIAL_EMOTION["1"]]


# ------------------------------------------------------------------------------------------------
# SHU-MI: MATLAB trial files


def write_shu(path: Path, labels: list[int], seed: int = 0, n_samples: int = 1000) -> np.ndarray:
    data = np.random.default_rng(seed).normal(0, 15, (len(labels), 32, n_samples))
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"data": data, "labels": np.array([labels], dtype=np.uint8)})  # labels [1, trials]
    return data


def test_shu_mi_adapter_and_reader(tmp_path: Path):
    data = write_shu(tmp_path / "sub-003_ses-02_task_motorimagery_eeg.mat", [1, 2, 2, 1, 2])
    write_shu(tmp_path / "sub-021_ses-05_task_motorimagery_eeg.mat", [2, 1], seed=1)
    found = discover(tmp_path, fmt="shu_mi")
    assert [(s.subject, s.session, s.split, s.events) for s in found] == [("003", "02", "", ()), ("021", "05", "", ())]
    rec = open_recording(found[0].path)
    assert isinstance(rec, TrialsRecording)
    info = rec.info
    assert (info.format, info.reader, info.sfreq, info.n_samples) == ("trials", "mat", 250.0, 5000)
    assert info.channel_names == shu_mi.CHANNELS and len(info.channel_names) == 32
    assert info.annotations == tuple((4.0 * i, 4.0, lab) for i, lab in
                                     enumerate(["left", "right", "right", "left", "right"]))
    # trials laid end to end: samples [1000 k, 1000 (k+1)) are trial k; a read across a boundary joins them
    got = rec.read(990, 1010, picks=np.array([5, 0]))
    np.testing.assert_allclose(got, np.concatenate([data[0, [5, 0], 990:], data[1, [5, 0], :10]], axis=1), rtol=1e-6)
    assert rec.read(0, 5000).shape == (32, 5000) and rec.read(0, 1).dtype == np.float32
    assert data_offset(found[0].path) == 0


def test_shu_mi_malformed_files_are_rejected_naming_the_field(tmp_path: Path):
    bad_label = tmp_path / "sub-001_ses-01_task_motorimagery_eeg.mat"
    write_shu(bad_label, [1, 3])
    with pytest.raises(RecordingError, match=r"sub-001_ses-01_task_motorimagery_eeg\.mat: 'labels' values must be"):
        open_recording(bad_label)
    no_labels = tmp_path / "sub-002_ses-01_task_motorimagery_eeg.mat"
    scipy.io.savemat(no_labels, {"data": np.zeros((2, 32, 1000))})
    with pytest.raises(RecordingError, match=r"sub-002_ses-01_task_motorimagery_eeg\.mat: no 'labels' field"):
        open_recording(no_labels)
    transposed = tmp_path / "sub-004_ses-01_task_motorimagery_eeg.mat"
    scipy.io.savemat(transposed, {"data": np.zeros((2, 1000, 32)), "labels": np.array([[1, 2]])})
    with pytest.raises(RecordingError, match=r"'data' must be \[trials, 32, samples\], got shape \(2, 1000, 32\)"):
        open_recording(transposed)


# ------------------------------------------------------------------------------------------------
# User data: mne epochs and .npz trials


def test_epochs_fif_adapter_and_reader(tmp_path: Path):
    info = mne.create_info(["Fz", "Cz", "Pz", "EOG1"], 200.0, ["eeg", "eeg", "eeg", "eog"])
    volts = np.random.default_rng(6).normal(0, 20e-6, (3, 4, 400))
    events = np.array([[0, 0, 2], [500, 0, 1], [1000, 0, 2]])
    epochs = mne.EpochsArray(volts, info, events=events, event_id={"rest": 1, "task": 2}, verbose="error")
    epochs.save(tmp_path / "sub-07_task-mi-epo.fif", verbose="error")
    epochs.save(tmp_path / "pilot-epo.fif", verbose="error")
    found = discover(tmp_path, fmt="epochs_fif")
    assert [(s.recording, s.subject) for s in found] == [("pilot-epo", "pilot"), ("sub-07_task-mi-epo", "07")]
    rec = open_recording(found[1].path)
    assert (rec.info.format, rec.info.reader, rec.info.sfreq, rec.info.n_samples) == ("trials", "mne-epochs", 200.0,
                                                                                      1200)
    assert rec.info.channel_names == ("Fz", "Cz", "Pz") and rec.info.dropped == ("EOG1 (eog)",)
    assert rec.info.annotations == ((0.0, 2.0, "task"), (2.0, 2.0, "rest"), (4.0, 2.0, "task"))
    np.testing.assert_allclose(rec.read(400, 800), volts[1, :3] * 1e6, rtol=1e-5)


def write_npz(path: Path, *, drop: str | None = None, **override) -> np.ndarray:
    x = np.random.default_rng(8).normal(0, 10, (4, 3, 500)).astype(np.float32)
    fields = {"X": x, "y": np.array([0, 1, 1, 0]), "ch_names": np.array(["C3", "Cz", "C4"]), "sfreq": 250.0,
              "subject": "s01"}
    fields.update(override)
    fields.pop(drop, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **fields)
    return x


def test_trials_npz_adapter_reader_and_ingest(tmp_path: Path):
    root = tmp_path / "npz"
    x = write_npz(root / "a.npz")
    write_npz(root / "b.npz", subject="s02", y=np.array(["left", "right", "left", "right"]))
    write_npz(root / "c.npz", X=np.zeros((4, 3, 500)) + 1e-5, unit="V", subject="s03")
    write_npz(root / "d.npz", y=np.array([0, 1, 1]), subject="s04")  # y too short
    write_npz(root / "e.npz", drop="sfreq")
    found = discover(root, fmt="trials_npz")
    assert [(s.recording, s.subject) for s in found] == [("a", "s01"), ("b", "s02"), ("c", "s03"), ("d", "s04"),
                                                          ("e", "s01")]
    rec = open_recording(root / "a.npz")
    assert (rec.info.format, rec.info.reader, rec.info.sfreq, rec.info.n_samples) == ("trials", "npz", 250.0, 2000)
    assert rec.info.channel_names == ("C3", "Cz", "C4")
    np.testing.assert_array_equal(rec.read(500, 1000), x[1])
    np.testing.assert_allclose(open_recording(root / "c.npz").read(0, 10), 10.0, rtol=1e-6)  # V → µV

    rows = ingest(root, tmp_path / "out", dataset="mine", fmt="trials_npz")
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert m["status"].to_list() == ["ok", "ok", "ok", "rejected", "rejected"]
    assert m["subject"].to_list() == ["s01", "s02", "s03", "s04", "s01"]
    reasons = {r["recording"]: r["reason"] for r in rows}
    assert "d.npz: key 'y': expected shape (4,)" in reasons["d"]
    assert "e.npz: missing key(s) ['sfreq']" in reasons["e"]
    ev = pl.read_parquet(tmp_path / "out" / "events.parquet")
    assert ev.filter(pl.col("recording") == "a")["label"].to_list() == ["0", "1", "1", "0"]
    b = ev.filter(pl.col("recording") == "b")
    assert b["label"].to_list() == ["left", "right", "left", "right"]
    assert b["onset_s"].to_list() == [0.0, 2.0, 4.0, 6.0] and b["duration_s"].to_list() == [2.0] * 4


@pytest.mark.parametrize(("override", "key"), [
    ({"X": np.zeros((4, 500))}, "X"),
    ({"ch_names": np.array(["C3", "Cz"])}, "ch_names"),
    ({"sfreq": -1.0}, "sfreq"),
    ({"subject": ""}, "subject"),
    ({"y": np.array([0.5, 1, 1, 0])}, "y"),
    ({"ch_names": np.array(["C3", "Cz", "C4"], dtype=object)}, "ch_names"),
])
def test_trials_npz_validation_names_file_and_key(tmp_path: Path, override: dict, key: str):
    path = tmp_path / "bad.npz"
    write_npz(path, **override)
    with pytest.raises(RecordingError, match=rf"bad\.npz: key '{key}'"):
        open_recording(path)


def test_all_adapters_registered():
    assert {"bciciv2a", "seedv", "shu_mi", "epochs_fif", "trials_npz"} <= set(ADAPTERS)


def test_unreadable_gdf_is_a_rejected_row_and_unknown_units_are_noted(bcic_tree: dict, tmp_path: Path):
    root = tmp_path / "tree"
    _copy_session(bcic_tree["root"] / "A01T.gdf", root, "A01T.gdf")
    (root / "A03T.gdf").write_bytes(b"GDF 2.10" + b"\x00" * 100)  # header cut short
    rows = ingest(root, tmp_path / "out", dataset="bciciv2a", fmt="bciciv2a")
    assert [r["status"] for r in rows] == ["ok", "rejected"]
    assert rows[1]["reason"].startswith(f"{root / 'A03T.gdf'}: cannot read as gdf")
    # a channel whose GDF unit code is not µV/mV: mne passes its values through; they are read as µV and noted
    data = np.random.default_rng(9).normal(0, 30, (2, 500))
    expected = write_gdf(tmp_path / "u.gdf", data, ["C3", "C4"], 250.0, unit_code=512)
    rec = open_recording(tmp_path / "u.gdf")
    assert rec.info.notes == ("GDF unit code not µV/mV on C3, C4: read as µV",)
    np.testing.assert_allclose(rec.read(0, 500), expected, atol=1e-3)
