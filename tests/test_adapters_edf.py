"""Dataset adapters for the EDF-based paper datasets (TUAB, TUEV, CHB-MIT, PhysioNet-MI, EEGMAT).

Each test builds a small tree in the release's own layout: real EDF files (edfio), channel names as in the
release, and the release's own label source (folders, `.rec` CSV, `chbNN-summary.txt`, EDF+ annotations,
file-name suffixes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import polars as pl
import pytest

from edf_factory import eeg_like, write_edf
from pipeline.io.adapters import ADAPTERS
from pipeline.io.adapters.chbmit import read_summary
from pipeline.io.adapters.tuev import read_rec
from pipeline.io.discover import discover
from pipeline.io.source import SourceFile
from pipeline.prep.ingest import ingest

TUH_NAMES = ["EEG FP1-REF", "EEG F7-REF", "EEG T3-REF", "EEG T5-REF"]
CHB_NAMES = ["FP1-F7", "F7-T7", "T7-P7", "P7-O1"]
PHYSIONET_NAMES = ["Fc5.", "Fc3.", "Cz..", "Fp1."]
EEGMAT_NAMES = ["EEG Fp1", "EEG Fp2", "EEG Cz", "EEG A2-A1", "ECG ECG"]
_seed = iter(range(10_000))  # every file gets its own samples: ingest rejects identical signal data


def _edf(path: Path, names: Sequence[str], sfreq: float, seconds: int,
         annotations: Sequence[tuple[float, float | None, str]] = ()) -> Path:
    data = eeg_like(len(names), int(sfreq * seconds), sfreq, seed=next(_seed))
    return write_edf(path, data, names, sfreq, annotations=annotations)


def _by_recording(files: list[SourceFile]) -> dict[str, SourceFile]:
    recordings = [f.recording for f in files]
    assert len(set(recordings)) == len(recordings)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", r) for r in recordings)
    return {f.recording: f for f in files}


# --- TUAB --------------------------------------------------------------------------------------------------

def _tuab_tree(root: Path) -> Path:
    edf = root / "v3.0.1" / "edf"
    _edf(edf / "train/normal/01_tcp_ar/aaaaamyj_s001_t000.edf", TUH_NAMES, 250, 4)
    _edf(edf / "train/abnormal/01_tcp_ar/aaaaaocp_s002_t001.edf", TUH_NAMES, 250, 4)
    _edf(edf / "eval/abnormal/01_tcp_ar/aaaaapys_s001_t000.edf", TUH_NAMES, 256, 4)
    _edf(edf / "eval/normal/aaaaabdn_s003_t000.edf", TUH_NAMES, 250, 4)  # older layout: no montage folder
    return edf


def test_tuab_labels_and_splits_from_folders(tmp_path: Path):
    edf = _tuab_tree(tmp_path)
    files = _by_recording(discover(edf, fmt="tuab"))
    got = {r: (f.subject, f.session, f.split, f.label, f.events) for r, f in files.items()}
    assert got == {
        "train__normal__01_tcp_ar__aaaaamyj_s001_t000": ("aaaaamyj", "s001", "train", "normal", ()),
        "train__abnormal__01_tcp_ar__aaaaaocp_s002_t001": ("aaaaaocp", "s002", "train", "abnormal", ()),
        "eval__abnormal__01_tcp_ar__aaaaapys_s001_t000": ("aaaaapys", "s001", "test", "abnormal", ()),
        "eval__normal__aaaaabdn_s003_t000": ("aaaaabdn", "s003", "test", "normal", ()),
    }
    # The release's version folder works as root too; the split folder alone still knows its labels.
    assert len(ADAPTERS["tuab"](edf.parent)) == 4
    assert {f.label for f in ADAPTERS["tuab"](edf / "eval")} == {"normal", "abnormal"}

    rows = ingest(edf, tmp_path / "out", dataset="tuab", fmt="tuab")
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert m["status"].to_list() == ["ok"] * 4
    assert m["subject"].to_list() == ["aaaaapys", "aaaaabdn", "aaaaaocp", "aaaaamyj"]  # sorted by path
    assert m["channel_names"][0].to_list() == TUH_NAMES
    assert [r["recording"] for r in rows] == m["recording"].to_list()
    assert pl.read_parquet(tmp_path / "out" / "events.parquet").height == 0


def test_tuab_wrong_layout_and_empty_root(tmp_path: Path):
    edf = _tuab_tree(tmp_path)
    stray = _edf(edf / "train" / "unsorted" / "aaaaaxyz_s001_t000.edf", TUH_NAMES, 250, 2)
    with pytest.raises(ValueError, match=rf"{re.escape(str(stray))}: not under a \{{train,eval\}}/\{{normal"):
        ADAPTERS["tuab"](edf)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no TUAB recordings found.*edf/\{train,eval\}/\{normal,abnormal\}"):
        ADAPTERS["tuab"](tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"missing: no such folder; expected the TUAB release layout"):
        ADAPTERS["tuab"](tmp_path / "missing")


# --- TUEV --------------------------------------------------------------------------------------------------

# .rec lines as in the release: channel index (TCP montage), start s, stop s, class code 1..6.
REC_TRAIN = """\
0,13.0000,14.0000,6
1,13.0000,14.0000,6
2,2.0000,3.0000,1
3,2.0000,3.0000,1
4,2.0000,3.0000,1
2,7.5000,8.5000,4

"""
REC_EVAL = "14,5.0,6.0,3\n15,5.0,6.0,3\n8,9.0,10.0,2\n8,9.0,10.0,5\n"


def _tuev_tree(root: Path) -> Path:
    edf = root / "edf"
    a = _edf(edf / "train/aaaaaaar/aaaaaaar_00000001.edf", TUH_NAMES, 250, 16)
    a.with_suffix(".rec").write_text(REC_TRAIN)
    b = _edf(edf / "eval/aaaaaabc/aaaaaabc_00000002.edf", TUH_NAMES, 256, 12)
    b.with_suffix(".rec").write_text(REC_EVAL)
    _edf(edf / "train/aaaaaaas/aaaaaaas_00000003.edf", TUH_NAMES, 250, 6)  # its .rec is missing
    return edf


def test_tuev_events_from_rec_files_one_per_event(tmp_path: Path):
    edf = _tuev_tree(tmp_path)
    files = _by_recording(ADAPTERS["tuev"](edf))
    a = files["train__aaaaaaar__aaaaaaar_00000001"]
    assert (a.subject, a.split, a.label) == ("aaaaaaar", "train", "")
    # the spike on channels 2-4 and the background on channels 0-1 are one event each
    assert a.events == ((2.0, 1.0, "spsw"), (7.5, 1.0, "eyem"), (13.0, 1.0, "bckg"))
    b = files["eval__aaaaaabc__aaaaaabc_00000002"]
    assert (b.subject, b.split) == ("aaaaaabc", "test")
    assert b.events == ((5.0, 1.0, "pled"), (9.0, 1.0, "gped"), (9.0, 1.0, "artf"))  # two classes, same time
    c = files["train__aaaaaaas__aaaaaaas_00000003"]
    assert c.events == () and c.split == "train"
    assert len(c.sidecar_notes) == 1 and "aaaaaaas_00000003.rec: missing" in c.sidecar_notes[0]

    rows = ingest(edf, tmp_path / "out", dataset="tuev", fmt="tuev")
    assert [r["status"] for r in rows] == ["ok"] * 3
    ev = pl.read_parquet(tmp_path / "out" / "events.parquet")
    got = sorted(ev.select("recording", "onset_s", "duration_s", "label").iter_rows())
    assert got == sorted(
        [("train__aaaaaaar__aaaaaaar_00000001", o, d, t) for o, d, t in a.events]
        + [("eval__aaaaaabc__aaaaaabc_00000002", o, d, t) for o, d, t in b.events]
    )


@pytest.mark.parametrize("line, message", [
    ("0,1.0,2.0,7", r"line 2: unknown event code '7'"),
    ("0,1.0,2.0", r"line 2: expected 4 comma-separated fields"),
    ("0,one,2.0,6", r"line 2: non-numeric field"),
    ("0,3.0,2.0,6", r"line 2: bad interval start=3.0 stop=2.0"),
])
def test_tuev_malformed_rec_names_the_file_and_line(tmp_path: Path, line: str, message: str):
    edf = _tuev_tree(tmp_path)
    rec = edf / "train/aaaaaaar/aaaaaaar_00000001.rec"
    rec.write_text(f"0,13.0,14.0,6\n{line}\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(rec))}: {message}"):
        ADAPTERS["tuev"](edf)
    with pytest.raises(ValueError, match=re.escape(str(rec))):
        read_rec(rec)


def test_tuev_wrong_root(tmp_path: Path):
    _edf(tmp_path / "flat" / "x_00000001.edf", TUH_NAMES, 250, 2)
    with pytest.raises(ValueError, match=r"x_00000001.edf: not under a train/ or eval/ folder.*edf/\{train,eval\}"):
        ADAPTERS["tuev"](tmp_path / "flat")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no TUEV recordings found; expected the release layout"):
        ADAPTERS["tuev"](tmp_path / "empty")


# --- CHB-MIT -----------------------------------------------------------------------------------------------

CHB01_SUMMARY = """\
Data Sampling Rate: 256 Hz
*************************

Channels in EDF Files:
**********************
Channel 1: FP1-F7
Channel 2: F7-T7
Channel 3: T7-P7
Channel 4: P7-O1

File Name: chb01_01.edf
File Start Time: 11:42:54
File End Time: 12:42:54
Number of Seizures in File: 0

File Name: chb01_03.edf
File Start Time: 13:43:04
File End Time: 14:43:04
Number of Seizures in File: 1
Seizure Start Time: 12 seconds
Seizure End Time: 22 seconds

File Name: chb01_04.edf
File Start Time: 14:43:12
File End Time: 15:43:12
Number of Seizures in File: 0
"""
# chb24 style: no file start/end times, numbered seizures, irregular spacing.
CHB24_SUMMARY = """\
Data Sampling Rate: 256 Hz
*************************

File Name: chb24_01.edf
Number of Seizures in File: 2
Seizure 1 Start Time:  4 seconds
Seizure 1 End Time:  9 seconds
Seizure 2  Start Time: 20 seconds
Seizure 2 End Time:   25.5 seconds

File Name: chb24_02.edf
Number of Seizures in File: 0
"""


def _chbmit_tree(root: Path) -> Path:
    top = root / "1.0.0"
    for name in ("chb01_01", "chb01_03", "chb01_46"):  # chb01_46 is missing from the summary
        _edf(top / "chb01" / f"{name}.edf", CHB_NAMES, 256, 30)
    (top / "chb01" / "chb01-summary.txt").write_text(CHB01_SUMMARY)
    _edf(top / "chb24" / "chb24_01.edf", CHB_NAMES, 256, 30)
    (top / "chb24" / "chb24-summary.txt").write_text(CHB24_SUMMARY)
    (top / "RECORDS").write_text("chb01/chb01_01.edf\nchb01/chb01_03.edf\nchb24/chb24_01.edf\n")
    return top


def test_chbmit_seizures_from_summaries(tmp_path: Path):
    top = _chbmit_tree(tmp_path)
    files = _by_recording(ADAPTERS["chbmit"](top))
    assert {r: (f.subject, f.split, f.label, f.events) for r, f in files.items()} == {
        "chb01__chb01_01": ("chb01", "", "", ()),
        "chb01__chb01_03": ("chb01", "", "", ((12.0, 10.0, "seizure"),)),
        "chb01__chb01_46": ("chb01", "", "", ()),
        "chb24__chb24_01": ("chb24", "", "", ((4.0, 5.0, "seizure"), (20.0, 5.5, "seizure"))),
    }
    assert files["chb01__chb01_46"].sidecar_notes == ("chb01_46.edf is not listed in chb01-summary.txt: "
                                                      "no seizure labels",)
    assert files["chb01__chb01_03"].sidecar_notes == ()
    # one subject folder as root keeps the same recording ids
    assert [f.recording for f in ADAPTERS["chbmit"](top / "chb24")] == ["chb24__chb24_01"]

    ingest(top, tmp_path / "out", dataset="chbmit", fmt="chbmit")
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert m["status"].to_list() == ["ok"] * 4 and m["sfreq"].to_list() == [256.0] * 4
    assert m["subject"].to_list() == ["chb01", "chb01", "chb01", "chb24"]
    ev = pl.read_parquet(tmp_path / "out" / "events.parquet")
    assert sorted(ev.select("recording", "onset_s", "duration_s", "label").iter_rows()) == [
        ("chb01__chb01_03", 12.0, 10.0, "seizure"),
        ("chb24__chb24_01", 4.0, 5.0, "seizure"),
        ("chb24__chb24_01", 20.0, 5.5, "seizure"),
    ]


@pytest.mark.parametrize("old, new, message", [
    ("Number of Seizures in File: 1", "Number of Seizures in File: 2", r"chb01_03.edf: 'Number of Seizures in File: 2' "
                                                                       r"but 1 start/end pair\(s\) listed"),
    ("Seizure End Time: 22 seconds", "", r"line \d+: chb01_03.edf: seizure start 12 s has no end time"),
    ("Seizure Start Time: 12 seconds", "", r"line \d+: chb01_03.edf: end time without a start time"),
    ("Seizure End Time: 22 seconds", "Seizure End Time: 10 seconds", r"seizure ends \(10 s\) before it starts"),
    ("Seizure Start Time: 12 seconds", "Seizure Start Time: twelve", r"line \d+: cannot read seizure time"),
])
def test_chbmit_malformed_summary_names_the_file(tmp_path: Path, old: str, new: str, message: str):
    top = _chbmit_tree(tmp_path)
    summary = top / "chb01" / "chb01-summary.txt"
    summary.write_text(CHB01_SUMMARY.replace(old, new))
    with pytest.raises(ValueError, match=rf"{re.escape(str(summary))}: .*{message}"):
        ADAPTERS["chbmit"](top)


def test_chbmit_missing_summary_and_wrong_root(tmp_path: Path):
    top = _chbmit_tree(tmp_path)
    (top / "chb24" / "chb24-summary.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"chb24-summary.txt: missing; CHB-MIT seizure labels"):
        ADAPTERS["chbmit"](top)
    _edf(tmp_path / "other" / "rec.edf", CHB_NAMES, 256, 2)
    with pytest.raises(ValueError, match=r"other: no CHB-MIT recordings found.*chbNN/chbNN_MM.edf"):
        ADAPTERS["chbmit"](tmp_path / "other")


def test_chbmit_summary_parser_reads_both_styles(tmp_path: Path):
    path = tmp_path / "chb24-summary.txt"
    path.write_text(CHB24_SUMMARY)
    assert read_summary(path) == {
        "chb24_01.edf": ((4.0, 5.0, "seizure"), (20.0, 5.5, "seizure")),
        "chb24_02.edf": (),
    }


# --- PhysioNet-MI ------------------------------------------------------------------------------------------

def _cues(first: str, second: str) -> list[tuple[float, float, str]]:
    # as in the release: rest (T0) 4.2 s, then a 4.1 s cue, alternating
    return [(0.0, 4.2, "T0"), (4.2, 4.1, first), (8.3, 4.2, "T0"), (12.5, 4.1, second), (16.6, 4.2, "T0")]


def _physionet_tree(root: Path) -> Path:
    top = root / "1.0.0"
    _edf(top / "S001/S001R01.edf", PHYSIONET_NAMES, 160, 6, [(0.0, 6.0, "T0")])  # baseline: skipped
    _edf(top / "S001/S001R03.edf", PHYSIONET_NAMES, 160, 21, _cues("T1", "T2"))  # executed: skipped
    _edf(top / "S001/S001R04.edf", PHYSIONET_NAMES, 160, 21, _cues("T2", "T1"))
    _edf(top / "S001/S001R06.edf", PHYSIONET_NAMES, 160, 21, _cues("T1", "T2"))
    _edf(top / "S002/S002R12.edf", PHYSIONET_NAMES, 160, 21, _cues("T1", "T1"))
    _edf(top / "S002/S002R14.edf", PHYSIONET_NAMES, 160, 21, _cues("T2", "T2"))
    return top


def test_physionet_mi_classes_from_run_type_and_annotations(tmp_path: Path):
    top = _physionet_tree(tmp_path)
    files = _by_recording(ADAPTERS["physionet_mi"](top))
    got = {r: (f.subject, f.run, f.task, f.split, [(round(o, 6), round(d, 6), t) for o, d, t in f.events])
           for r, f in files.items()}
    assert got == {
        "S001__S001R04": ("S001", "04", "imagine_left_right", "", [(4.2, 4.1, "right_fist"), (12.5, 4.1, "left_fist")]),
        "S001__S001R06": ("S001", "06", "imagine_fists_feet", "", [(4.2, 4.1, "both_fists"), (12.5, 4.1, "both_feet")]),
        "S002__S002R12": ("S002", "12", "imagine_left_right", "", [(4.2, 4.1, "left_fist"), (12.5, 4.1, "left_fist")]),
        "S002__S002R14": ("S002", "14", "imagine_fists_feet", "", [(4.2, 4.1, "both_feet"), (12.5, 4.1, "both_feet")]),
    }
    assert all(f.sidecar_notes == () for f in files.values())

    ingest(top, tmp_path / "out", dataset="physionet_mi", fmt="physionet_mi")
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert m["status"].to_list() == ["ok"] * 4 and m["run"].to_list() == ["04", "06", "12", "14"]
    ev = pl.read_parquet(tmp_path / "out" / "events.parquet")
    assert ev.height == 8 and set(ev["label"]) == {"left_fist", "right_fist", "both_fists", "both_feet"}


def test_physionet_mi_without_imagery_runs_says_so(tmp_path: Path):
    _edf(tmp_path / "S001" / "S001R02.edf", PHYSIONET_NAMES, 160, 4, [(0.0, 4.0, "T0")])
    with pytest.raises(ValueError, match=r"no PhysioNet-MI recordings found \(1 file\(s\) of other runs, none of "
                                         r"imagery runs 4, 6, 8, 10, 12, 14\).*S###/S###R##.edf"):
        ADAPTERS["physionet_mi"](tmp_path)


def test_physionet_mi_unreadable_file_is_listed_for_ingest_to_reject(tmp_path: Path):
    top = _physionet_tree(tmp_path)
    bad = top / "S003" / "S003R08.edf"
    bad.parent.mkdir()
    bad.write_bytes(b"0" * 100)
    files = _by_recording(ADAPTERS["physionet_mi"](top))
    assert files["S003__S003R08"].events == ()
    assert "annotations unreadable" in files["S003__S003R08"].sidecar_notes[0]


# --- EEGMAT ------------------------------------------------------------------------------------------------

def test_eegmat_rest_and_task_from_file_names(tmp_path: Path):
    top = tmp_path / "1.0.0"
    for subject in ("Subject00", "Subject01"):
        _edf(top / f"{subject}_1.edf", EEGMAT_NAMES, 500, 6)
        _edf(top / f"{subject}_2.edf", EEGMAT_NAMES, 500, 6)
    (top / "subject-info.csv").write_text("Subject,Age,Gender,Recording year,Number of subtractions,Count quality\n")
    files = _by_recording(ADAPTERS["mental_arithmetic"](top))
    assert {r: (f.subject, f.run, f.label, f.split, f.events) for r, f in files.items()} == {
        "Subject00_1": ("Subject00", "1", "rest", "", ()),
        "Subject00_2": ("Subject00", "2", "task", "", ()),
        "Subject01_1": ("Subject01", "1", "rest", "", ()),
        "Subject01_2": ("Subject01", "2", "task", "", ()),
    }
    rows = ingest(top, tmp_path / "out", dataset="mental_arithmetic", fmt="mental_arithmetic")
    assert [(r["recording"], r["subject"], r["status"]) for r in rows] == [
        ("Subject00_1", "Subject00", "ok"), ("Subject00_2", "Subject00", "ok"),
        ("Subject01_1", "Subject01", "ok"), ("Subject01_2", "Subject01", "ok"),
    ]
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match=r"none: no EEGMAT recordings found; expected .*SubjectNN_1.edf"):
        ADAPTERS["mental_arithmetic"](tmp_path / "none")


# --- configs -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, mode, classes", [
    ("tuab", "recording", ["normal", "abnormal"]),
    ("tuev", "events", ["spsw", "gped", "pled", "eyem", "artf", "bckg"]),
    ("chbmit", "intervals", ["background", "seizure"]),
    ("physionet_mi", "events", ["left_fist", "right_fist", "both_fists", "both_feet"]),
    ("mental_arithmetic", "recording", ["rest", "task"]),
])
def test_dataset_configs_name_their_adapter_and_classes(repo_root: Path, name: str, mode: str, classes: list[str]):
    from pipeline.config import load_config
    from pipeline.montage.channel_sets import load_channel_set

    ds = load_config(repo_root / "config" / "config.yaml").datasets[name]  # via dataset_files, typed and checked
    assert ds.format == name and name in ADAPTERS and ds.role == "downstream"
    assert ds.labels.mode == mode and list(ds.labels.classes) == classes
    assert load_channel_set(ds.montage.channels)
    assert ds.splits.val or ds.splits.val_fraction > 0  # every dataset has a validation split for model selection
