"""ingest on the real demo recordings, the reader contract, and broken files built here."""

from __future__ import annotations

import shutil
from pathlib import Path

import mne
import numpy as np
import polars as pl
import pyedflib
import pytest

from edf_factory import corrupt_header, eeg_like, reheader_copy, truncate, write_edf
from pipeline.cli import main as cli
from pipeline.config import IngestConfig
from pipeline.io.edf import EdfioRecording
from pipeline.io.mne_reader import MneRecording
from pipeline.io.readers import open_recording
from pipeline.io.recording import RecordingError
from pipeline.prep.ingest import ingest


def test_bids_demo_manifest_and_events(bids_root: Path, tmp_path: Path):
    rows = ingest(bids_root, tmp_path, dataset="demo_bids")
    m = pl.read_parquet(tmp_path / "manifest.parquet")
    assert m["status"].to_list() == ["ok", "ok"]
    assert m["subject"].to_list() == ["s01", "s02"]
    assert m["n_channels"].to_list() == [128, 128]
    assert m["sfreq"].to_list() == [256.0, 256.0]
    assert m["duration_s"].to_list() == pytest.approx([1119.0, 1201.0])
    assert m["mains"].to_list() == [60.0, 60.0]  # from the BIDS eeg.json
    assert m["content_sha256"][0] != m["sha256"][0]
    ev = pl.read_parquet(tmp_path / "events.parquet")
    s01 = ev.filter(pl.col("recording") == rows[0]["recording"])
    counts = dict(s01.group_by("label").len().iter_rows())
    assert counts["face-upright"] == 198 and counts["house-inverted"] == 197
    assert set(s01["source"].unique()) == {"bids"}


def test_bids_status_bad_channels_are_honoured(bids_root: Path, tmp_path: Path):
    tree = tmp_path / "bids"
    shutil.copytree(bids_root, tree, ignore=shutil.ignore_patterns("sub-s02"))
    tsv = tree / "sub-s01" / "eeg" / "sub-s01_task-faceO_channels.tsv"
    text = tsv.read_text(encoding="utf-8-sig").replace("B14\tEEG", "B14\tEEG", 1)
    lines = text.splitlines()
    lines = [line.replace("\tgood\t", "\tbad\t") if line.startswith(("B14\t", "C1\t")) else line for line in lines]
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ingest(tree, tmp_path / "out")
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert sorted(m["bad_channels"][0].to_list()) == ["B14", "C1"]


def test_physionet_names_and_rate(physionet_edf: Path, tmp_path: Path):
    ingest(physionet_edf.parent, tmp_path, cfg=IngestConfig(subject_regex=r"(S\d{3})R\d{2}"))
    m = pl.read_parquet(tmp_path / "manifest.parquet").row(0, named=True)
    assert (m["status"], m["subject"], m["sfreq"], m["n_channels"]) == ("ok", "S001", 160.0, 64)
    assert m["channel_names"][:3] == ["Fc5.", "Fc3.", "Fc1."]
    ev = pl.read_parquet(tmp_path / "events.parquet")
    assert ev["label"].to_list() == ["T0"] and ev["source"].to_list() == ["edf+"]


@pytest.mark.parametrize("reader", [EdfioRecording, MneRecording])
def test_reader_contract_exact_values(demo_corpus: Path, reader):
    """Every reader returns µV float32 equal to pyedflib's physical values on the synthetic file."""
    path = demo_corpus / "synthetic" / "test_generator.edf"
    rec = reader(path)
    with pyedflib.EdfReader(str(path)) as ref:
        labels = ref.getSignalLabels()
        rates = [ref.getSampleFrequency(i) for i in range(len(labels))]
        for i, label in enumerate(labels):
            if rates[i] != rec.info.sfreq or label not in rec.info.channel_names:
                continue
            j = rec.info.channel_names.index(label)
            expected = ref.readSignal(i, start=1000, n=600)
            got = rec.read(1000, 1600, picks=np.array([j]))[0]
            step = (ref.getPhysicalMaximum(i) - ref.getPhysicalMinimum(i)) / (ref.getDigitalMaximum(i) - ref.getDigitalMinimum(i))
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, expected, atol=abs(step) + 1e-4 * np.abs(expected).max())


def test_readers_agree_on_real_eeg(physionet_edf: Path):
    a, b = EdfioRecording(physionet_edf), MneRecording(physionet_edf)
    assert a.info.channel_names == b.info.channel_names and a.info.n_samples == b.info.n_samples
    np.testing.assert_allclose(a.read(3000, 5000), b.read(3000, 5000), atol=1e-3)
    # and a lazy slice equals the same range of a whole read
    whole = mne.io.read_raw_edf(physionet_edf, preload=True, verbose="error").get_data() * 1e6
    np.testing.assert_allclose(a.read(3000, 5000), whole[:, 3000:5000], atol=1e-3)


def _bad_folder(physionet_edf: Path, root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    good = root / "good.edf"
    shutil.copy(physionet_edf, good)
    sfreq = 256.0
    mixed_data = eeg_like(3, int(40 * sfreq), sfreq)
    files = {
        "good": good,
        "truncated": truncate(physionet_edf, root / "truncated.edf"),
        "corrupt": corrupt_header(physionet_edf, root / "corrupt.edf"),
        "tiny": (root / "tiny.edf"),
        "annotations_only": root / "annotations_only.edf",
        "short": write_edf(root / "short.edf", eeg_like(3, int(10 * sfreq), sfreq), ["Fp1", "Cz", "O1"], sfreq),
        "duplicate": reheader_copy(physionet_edf, root / "zz_copy.edf"),
        "mixed_rates": root / "mixed.edf",
    }
    files["tiny"].write_bytes(b"0       ")
    import edfio

    edfio.Edf([], annotations=[edfio.EdfAnnotation(1.0, None, "only a note")]).write(files["annotations_only"])
    signals = [edfio.EdfSignal(row, sampling_frequency=sfreq, label=n, physical_dimension="uV")
               for row, n in zip(mixed_data, ["Fp1", "Cz", "O1"])]
    signals.append(edfio.EdfSignal(np.zeros(40 * 100), sampling_frequency=100, label="ECG", physical_dimension="mV"))
    edfio.Edf(signals).write(files["mixed_rates"])
    return files


def test_bad_input_is_rejected_with_reasons_and_the_stage_goes_on(physionet_edf: Path, tmp_path: Path):
    files = _bad_folder(physionet_edf, tmp_path / "raw")
    ingest(tmp_path / "raw", tmp_path / "out", cfg=IngestConfig(min_duration_s=30))
    m = {Path(r["path"]).name: r for r in pl.read_parquet(tmp_path / "out" / "manifest.parquet").iter_rows(named=True)}
    assert len(m) == len(files)  # every file has a row; none silently dropped
    assert m["good.edf"]["status"] == "ok"
    assert m["mixed.edf"]["status"] == "ok"  # usable: the off-rate channel is dropped and listed
    assert m["mixed.edf"]["dropped_channels"] == ["ECG (100 Hz)"] and m["mixed.edf"]["channel_names"] == ["Fp1", "Cz", "O1"]
    expect = {
        "truncated.edf": "truncated",
        "corrupt.edf": "corrupt header",
        "tiny.edf": "corrupt header",
        "annotations_only.edf": "no signal channels",
        "short.edf": "shorter than one window",
        "zz_copy.edf": "duplicate of",
    }
    for name, words in expect.items():
        row = m[name]
        assert row["status"] == "rejected", name
        assert words in row["reason"] and name in row["reason"], row["reason"]
    assert m["good.edf"]["path"] in m["zz_copy.edf"]["reason"]


def test_cli_exit_codes(physionet_edf: Path, tmp_path: Path, capsys):
    files = _bad_folder(physionet_edf, tmp_path / "raw")
    assert cli(["ingest", str(tmp_path / "raw"), "--out", str(tmp_path / "a")]) == 0
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    shutil.copy(files["corrupt"], only_bad)
    assert cli(["ingest", str(only_bad), "--out", str(tmp_path / "b")]) == 1
    assert "no usable recording" in capsys.readouterr().err
    with pytest.raises(RecordingError, match=r"annotations_only.edf: no signal channels"):
        ingest(tmp_path / "raw", tmp_path / "c", strict=True)
    assert cli(["ingest", str(tmp_path / "missing"), "--out", str(tmp_path / "d")]) == 1


def test_open_recording_names_the_file(tmp_path: Path):
    p = tmp_path / "nothing.edf"
    p.write_bytes(b"x" * 300)
    with pytest.raises(RecordingError, match="nothing.edf: corrupt header"):
        open_recording(p)


def test_bdf_24_bit_reads_like_mne(tmp_path: Path):
    """BDF samples are 24-bit: negative values and the full range decode as mne decodes them."""
    import edfio

    rng = np.random.default_rng(3)
    data = rng.standard_normal((3, 256 * 12)) * 2000.0  # ±thousands of µV: uses the top byte
    data[0, :50] = -262000.0  # near the physical minimum
    signals = [edfio.BdfSignal(row, sampling_frequency=256, label=name, physical_dimension="uV",
                               physical_range=(-262144, 262143))
               for row, name in zip(data, ["Fp1", "Cz", "O1"])]
    path = tmp_path / "rec.bdf"
    edfio.Bdf(signals).write(path)
    ours, ref = EdfioRecording(path), MneRecording(path)
    assert ours.info.format == "bdf"
    np.testing.assert_allclose(ours.read(100, 3000), ref.read(100, 3000), atol=0.05)
    np.testing.assert_allclose(ours.read(0, 50, picks=np.array([0]))[0], -262000.0, atol=0.05)


def test_reads_across_record_boundaries_agree_with_one_read(physionet_edf: Path):
    rec = EdfioRecording(physionet_edf)
    whole = rec.read(0, rec.info.n_samples)
    pieces = np.concatenate([rec.read(a, min(a + 333, rec.info.n_samples)) for a in range(0, rec.info.n_samples, 333)], axis=1)
    np.testing.assert_array_equal(whole, pieces)
    with pytest.raises(ValueError, match="outside"):
        rec.read(0, rec.info.n_samples + 1)
