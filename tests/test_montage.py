"""pipeline.montage: vocabulary, name normalization, montage plans."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mne
import numpy as np
import pytest
import yaml

from pipeline.montage import (
    MontagePlan,
    build_vocabulary_rows,
    load_channel_set,
    load_electrode_positions,
    load_vocabulary,
    normalize_name,
    plan_montage,
    resources_dir,
)
from pipeline.montage.positions import arc_distance_mm, ten_five_template
from pipeline.montage.names import electrode_label
from pipeline.montage.sites import CHBMIT_BIPOLAR, STANDARD_1020, TUH_DOUBLE_BANANA, bipolar_name

LEFT = ("Fp1", "F7", "F3", "T7", "C3", "P7", "P3", "O1")
RIGHT = ("Fp2", "F8", "F4", "T8", "C4", "P8", "P4", "O2")
MIDLINE = ("Fz", "Cz", "Pz")

# A TUH "01_tcp_ar"-style channel list (exact strings as TUH EDF headers carry them).
TUH_AR = [
    "EEG FP1-REF", "EEG FP2-REF", "EEG F3-REF", "EEG F4-REF", "EEG C3-REF", "EEG C4-REF",
    "EEG P3-REF", "EEG P4-REF", "EEG O1-REF", "EEG O2-REF", "EEG F7-REF", "EEG F8-REF",
    "EEG T3-REF", "EEG T4-REF", "EEG T5-REF", "EEG T6-REF", "EEG A1-REF", "EEG A2-REF",
    "EEG FZ-REF", "EEG CZ-REF", "EEG PZ-REF", "EEG ROC-REF", "EEG LOC-REF", "EEG EKG1-REF",
    "EEG T1-REF", "EEG T2-REF", "PHOTIC-REF", "IBI", "BURSTS", "SUPPR",
]


@pytest.fixture(scope="module")
def physionet_names(demo_corpus: Path) -> list[str]:
    return mne.io.read_raw_edf(demo_corpus / "physionet/S001R02.edf", preload=False, verbose=False).ch_names


@pytest.fixture(scope="module")
def biosemi_eeg_dir(demo_corpus: Path) -> Path:
    return demo_corpus / "pylossless/sub-s01/eeg"


@pytest.fixture(scope="module")
def biosemi_names(biosemi_eeg_dir: Path) -> list[str]:
    path = biosemi_eeg_dir / "sub-s01_task-faceO_eeg.edf"
    return mne.io.read_raw_edf(path, preload=False, verbose=False).ch_names


@pytest.fixture(scope="module")
def biosemi_plan(biosemi_names: list[str]) -> MontagePlan:
    return plan_montage(biosemi_names, targets="standard_1020", positions="biosemi128")


def _mne_positions(montage: str) -> dict[str, np.ndarray]:
    return mne.channels.make_standard_montage(montage).get_positions()["ch_pos"]


# --- vocabulary -------------------------------------------------------------


def test_committed_vocabulary_matches_builder():
    with (resources_dir() / "channel_vocabulary.tsv").open(encoding="utf-8", newline="") as fh:
        rows = [(int(r["id"]), r["name"], r["kind"]) for r in csv.DictReader(fh, delimiter="\t")]
    assert rows == build_vocabulary_rows(), "regenerate with `python -m pipeline.montage.vocabulary` (append only!)"
    names = [name for _, name, _ in rows]
    assert len(set(names)) == len(names)
    assert len({n.upper() for n in names}) == len(names)


def test_vocabulary_layout():
    vocab = load_vocabulary()
    assert vocab.names[:19] == STANDARD_1020
    assert all(vocab.kind_of(n) == "1020" for n in STANDARD_1020)
    assert vocab.kind_of("FCz") == "1010" and vocab.kind_of("AFF1h") == "1005"
    assert [vocab.kind_of(n) for n in ("A1", "A2", "M1", "M2")] == ["reference"] * 4
    assert not any(vocab.contains(old) for old in ("T3", "T4", "T5", "T6"))
    bipolar = [n for n in vocab.names if vocab.kind_of(n) == "bipolar"]
    assert bipolar == list(dict.fromkeys(bipolar_name(a, c) for a, c in TUH_DOUBLE_BANANA + CHBMIT_BIPOLAR))
    assert len(bipolar) == 22
    assert vocab.names[-len(bipolar):] == tuple(bipolar)  # bipolar pairs come last


def test_vocabulary_lookups():
    vocab = load_vocabulary()
    assert vocab.id_of("Cz") == 9 and vocab.name_of(9) == "Cz"
    assert vocab.contains("Fp1-F7") and not vocab.contains("FP1")
    assert len(vocab) == len(build_vocabulary_rows())
    with pytest.raises(KeyError, match="did you mean 'Fp1'"):
        vocab.id_of("FP1")
    with pytest.raises(KeyError, match="out of range"):
        vocab.name_of(len(vocab))


def test_channel_sets_are_canonical():
    raw = yaml.safe_load((resources_dir() / "channel_sets.yaml").read_text(encoding="utf-8"))
    sizes = {"standard_1020": 19, "tuh_double_banana": 16, "chbmit_bipolar": 22, "bcic_iv_2a": 22, "physionet_mi": 64}
    assert {k: len(v) for k, v in raw.items()} == sizes
    for name, channels in raw.items():
        assert load_channel_set(name) == tuple(channels), f"{name} must list canonical names"
        assert len(set(channels)) == len(channels)
    assert load_channel_set("standard_1020") == STANDARD_1020
    assert load_channel_set("tuh_double_banana") == tuple(bipolar_name(a, c) for a, c in TUH_DOUBLE_BANANA)
    assert load_channel_set(["FP1", "t3", "EEG T3-T5"]) == ("Fp1", "T7", "T7-P7")


def test_channel_set_errors():
    with pytest.raises(ValueError, match="unknown channel set 'nope'.*standard_1020"):
        load_channel_set("nope")
    with pytest.raises(ValueError, match="'ECG' is not a vocabulary channel"):
        load_channel_set(["Cz", "ECG"])


# --- name normalization ----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # TUH referential names
        ("EEG FP1-REF", "Fp1"), ("EEG T3-LE", "T7"), ("EEG A1-REF", "A1"), ("EEG FZ-REF", "Fz"),
        ("EEG CZ-AR", "Cz"), ("EEG O2-AVG", "O2"), ("EEG EKG1-REF", None), ("EEG T1-REF", None),
        ("EEG LOC-REF", None), ("PHOTIC-REF", None), ("IBI", None),
        # other prefixes / reference suffixes
        ("EEG-Fz", "Fz"), ("EEG-0", None), ("C4-M1", "C4"), ("EEG C3-A2", "C3"), ("A1-A2", None),
        # PhysioNet dots, case
        ("Fc5.", "FC5"), ("Cz..", "Cz"), ("Fp1.", "Fp1"), ("Afz.", "AFz"), ("T10.", "T10"),
        ("FP1", "Fp1"), ("fp1", "Fp1"), ("FZ", "Fz"), ("CPZ", "CPz"), ("afp1H", "AFp1h"),
        # old 10-20 names
        ("T3", "T7"), ("T4", "T8"), ("t5", "P7"), ("T6", "P8"),
        # bipolar, only for vocabulary pairs
        ("FP1-F7", "Fp1-F7"), ("T3-T5", "T7-P7"), ("EEG FP1-F7", "Fp1-F7"), (" EEG  FP1 - F7 ", "Fp1-F7"),
        ("FZ-CZ", "Fz-Cz"), ("T8-P8-1", "T8-P8"), ("F7-FP1", None), ("Fp1-Cz", None),
        # non-EEG channels
        ("ECG", None), ("EKG", None), ("EMG", None), ("EOG-left", None), ("EOG Fp1", None),
        ("Status", None), ("EDF Annotations", None), ("STI 014", None), ("Resp", None), ("Photic", None),
        ("", None), ("-", None), ("  ", None),
    ],
)
def test_normalize_name(raw: str, expected: str | None):
    assert normalize_name(raw) == expected


def test_physionet_names_normalize(physionet_names: list[str]):
    assert len(physionet_names) == 64
    normalized = [normalize_name(n) for n in physionet_names]
    assert None not in normalized
    assert tuple(normalized) == load_channel_set("physionet_mi")
    plan = plan_montage(physionet_names, targets="standard_1020")
    assert plan.missing == ()
    assert set(plan.method) == {"name"}
    assert [plan.sources[i] for i in plan.anode][:3] == ["Fp1.", "Fp2.", "F7.."]
    assert len(plan.unmapped) == 64 - 19 and set(plan.unmapped_reason) == {"not-targeted"}


# --- plans by name -----------------------------------------------------------


def test_bipolar_derivation_values():
    names = ["EEG FP1-REF", "EEG F7-REF", "ECG", "EEG T3-REF"]
    data = np.array([[1, 2, 3], [10, 20, 30], [7, 7, 7], [100, 300, 500]], dtype=np.float64)
    plan = plan_montage(names, targets=["Fp1-F7", "F7-T7", "T7", "O1"])
    assert plan.method == ("bipolar-derived", "bipolar-derived", "alias", "missing")
    assert plan.anode == (0, 1, 3, -1) and plan.cathode == (1, 3, -1, -1)
    vocab = load_vocabulary()
    assert plan.ids == (vocab.id_of("Fp1-F7"), vocab.id_of("F7-T7"), vocab.id_of("T7"), -1)
    assert plan.missing == ("O1",)
    out = plan.apply(data)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[-9, -18, -27], [-90, -280, -470], [100, 300, 500], [0, 0, 0]])
    assert plan.unmapped == ("ECG",) and plan.unmapped_reason == ("unknown-name",)
    with pytest.raises(ValueError, match=r"shape \[4 sources"):
        plan.apply(data[:3])


def test_tuh_double_banana_from_referential():
    plan = plan_montage(TUH_AR, targets="tuh_double_banana")
    assert plan.missing == ()
    assert set(plan.method) == {"bipolar-derived"}
    assert plan.source_of("Fp1-F7") == "EEG FP1-REF-EEG F7-REF"
    assert plan.source_of("T7-P7") == "EEG T3-REF-EEG T5-REF"
    unmapped = dict(zip(plan.unmapped, plan.unmapped_reason))
    assert unmapped["EEG EKG1-REF"] == "unknown-name" and unmapped["EEG T1-REF"] == "unknown-name"
    assert unmapped["EEG A1-REF"] == "not-targeted" and unmapped["EEG CZ-REF"] == "not-targeted"


def test_all_targets_keeps_source_order_and_first_duplicate():
    names = ["EEG CZ-REF", "ECG", "EEG T3-REF", "Cz", "FP1-F7", "T8-P8-0", "T8-P8-1", "EEG FP1-REF"]
    plan = plan_montage(names, targets=None)
    assert plan.targets == ("Cz", "T7", "Fp1-F7", "T8-P8", "Fp1")
    assert plan.method == ("name", "alias", "bipolar-source", "bipolar-source", "name")
    reasons = dict(zip(plan.unmapped, plan.unmapped_reason))
    assert reasons == {"ECG": "unknown-name", "Cz": "duplicate", "T8-P8-1": "duplicate"}
    assert plan_montage(names, targets="all") == plan


def test_bipolar_source_preferred_over_derivation():
    names = ["FP1", "F7", "FP1-F7"]
    plan = plan_montage(names, targets=["Fp1-F7"])
    assert plan.method == ("bipolar-source",) and plan.anode == (2,) and plan.cathode == (-1,)


def test_bad_channels_by_name():
    plan = plan_montage(TUH_AR, targets=["Fp1", "F7", "Fp1-F7", "Cz"], bad_channels=["EEG F7-REF", "CZ"])
    assert plan.method == ("name", "missing", "missing", "missing")
    assert "EEG F7-REF" not in plan.unmapped and "EEG CZ-REF" not in plan.unmapped


def test_target_errors():
    with pytest.raises(ValueError, match="'T1' is not a vocabulary channel"):
        plan_montage(TUH_AR, targets=["Cz", "T1"])
    with pytest.raises(ValueError, match="'Cz' is listed twice"):
        plan_montage(TUH_AR, targets=["Cz", "CZ"])
    with pytest.raises(ValueError, match="needs explicit targets"):
        plan_montage(["A1"], targets=None, positions="biosemi128")
    with pytest.raises(ValueError, match="neither an mne standard montage nor an existing file"):
        plan_montage(["A1"], targets=["Cz"], positions="no_such_cap")


def test_plan_dict_round_trip(biosemi_plan: MontagePlan):
    for plan in (biosemi_plan, plan_montage(TUH_AR, targets="tuh_double_banana")):
        data = json.loads(json.dumps(plan.to_dict()))
        assert MontagePlan.from_dict(data) == plan
    with pytest.raises(ValueError, match="not a montage plan"):
        MontagePlan.from_dict({"targets": []})


# --- plans by position (BioSemi 128, real file) ------------------------------


def test_prefixed_labels_find_their_layout_positions(biosemi_names: list[str], biosemi_plan: MontagePlan):
    """Exporters write BioSemi labels as 'EEG A1' ('EEG ' prefix, sometimes a '-REF' suffix): the layout lookup
    reads the electrode label, so the plan is the one of the bare labels (the demo's own BioSemi channel names)."""
    for spelling in ("EEG {}", "EEG {}-REF", "EEG-{}"):
        prefixed = [spelling.format(n) for n in biosemi_names]
        plan = plan_montage(prefixed, targets="standard_1020", positions="biosemi128")
        assert plan.method == biosemi_plan.method and plan.anode == biosemi_plan.anode, spelling
        assert plan.missing == biosemi_plan.missing == ()
    assert electrode_label("EEG A1") == "A1" and electrode_label("EEG C3-REF") == "C3"
    assert electrode_label("Fc5.") == "Fc5" and electrode_label("T8-P8") == "T8-P8"


def test_biosemi128_maps_standard_1020_by_position(biosemi_plan: MontagePlan, biosemi_names: list[str]):
    plan = biosemi_plan
    assert plan.targets == STANDARD_1020 and plan.missing == ()
    assert set(plan.method) == {"position"}
    assert len(set(plan.anode)) == 19 and set(plan.cathode) == {-1}
    assert max(plan.distance_mm) <= 12.0
    chosen = {t: plan.source_of(t) for t in plan.targets}
    # mne puts BioSemi A1 at the vertex, where Cz is by definition.
    pos = _mne_positions("biosemi128")
    assert max(pos, key=lambda n: pos[n][2]) == "A1"
    assert chosen["Cz"] == "A1" and plan.distance_mm[plan.targets.index("Cz")] < 0.1
    for t in LEFT:
        assert pos[chosen[t]][0] < -0.01, t
    for t in RIGHT:
        assert pos[chosen[t]][0] > 0.01, t
    for t in MIDLINE:
        assert abs(pos[chosen[t]][0]) < 1e-6, t
    for t in ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8"):
        assert pos[chosen[t]][1] > 0.02, t
    for t in ("O1", "O2", "P7", "P3", "Pz", "P4", "P8"):
        assert pos[chosen[t]][1] < -0.02, t
    unused = set(biosemi_names) - set(chosen.values())
    assert set(plan.unmapped) == unused and set(plan.unmapped_reason) == {"unused"}


def test_bids_electrodes_tsv_gives_same_mapping(biosemi_plan: MontagePlan, biosemi_names, biosemi_eeg_dir: Path):
    tsv = biosemi_eeg_dir / "sub-s01_space-CapTrak_electrodes.tsv"
    plan = plan_montage(biosemi_names, targets="standard_1020", positions=str(tsv))
    assert plan.anode == biosemi_plan.anode
    np.testing.assert_allclose(plan.distance_mm, biosemi_plan.distance_mm, atol=0.01)


def test_biosemi_a1_is_not_the_ear_electrode(biosemi_names: list[str]):
    plan = plan_montage(biosemi_names, targets=["Cz", "A1"], positions="biosemi128")
    assert plan.source_of("Cz") == "A1"
    assert plan.method[1] == "missing" and plan.missing == ("A1",)  # ear sites are not on the cap
    # By name, BioSemi 'A1' would be read as the ear electrode: why positions must be configured.
    assert plan_montage(biosemi_names, targets=["A1"]).method == ("name",)


def test_bad_electrode_falls_back_to_next_nearest(biosemi_plan: MontagePlan, biosemi_names: list[str]):
    nearest = biosemi_plan.source_of("F3")
    plan = plan_montage(biosemi_names, targets="standard_1020", positions="biosemi128", bad_channels=[nearest])
    layout, template = load_electrode_positions("biosemi128"), ten_five_template()
    taken = {plan.source_of(t) for t in plan.targets if t != "F3"}
    free = [n for n in layout.names if n != nearest and n not in taken]
    dist = arc_distance_mm(template.directions[[template.index_of("F3")]], layout.directions)[0]
    expected = min(free, key=lambda n: dist[layout.index_of(n)])
    assert plan.source_of("F3") == expected != nearest
    assert plan.distance_mm[plan.targets.index("F3")] > biosemi_plan.distance_mm[biosemi_plan.targets.index("F3")]
    assert nearest not in plan.unmapped and nearest not in {plan.source_of(t) for t in plan.targets}
    assert plan.missing == ()


def test_max_distance_leaves_far_sites_missing(biosemi_plan: MontagePlan, biosemi_names: list[str]):
    far = tuple(t for t, d in zip(biosemi_plan.targets, biosemi_plan.distance_mm) if d > 5.0)
    assert far  # BioSemi 128 has no electrode exactly at F3/F4/P3/P4
    plan = plan_montage(biosemi_names, targets="standard_1020", positions="biosemi128", max_distance_mm=5.0)
    assert plan.missing == far
    assert all(plan.ids[plan.targets.index(t)] == -1 for t in far)


def test_bipolar_targets_by_position(biosemi_plan: MontagePlan, biosemi_names: list[str]):
    plan = plan_montage(biosemi_names, targets="tuh_double_banana", positions="biosemi128")
    assert set(plan.method) == {"bipolar-derived"}
    row = dict(zip(biosemi_plan.targets, biosemi_plan.anode))
    for target, a, c in zip(plan.targets, plan.anode, plan.cathode):
        anode, cathode = target.split("-")
        assert (a, c) == (row[anode], row[cathode])


@pytest.mark.parametrize("cap", ["biosemi64", "easycap-M1"])
def test_named_cap_electrodes_map_onto_themselves(cap: str):
    # Caps whose electrodes carry 10-20 names must land on those same electrodes.
    names = list(_mne_positions(cap))
    plan = plan_montage(names, targets="standard_1020", positions=cap)
    assert [plan.source_of(t) for t in plan.targets] == list(STANDARD_1020)
    assert max(plan.distance_mm) < 2.0
