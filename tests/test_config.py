"""Config loading: the shipped configs parse, unknown keys and wrong types are named, stages get settings."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.config import (BackboneSettings, ConfigError, FinetuneSection, IngestConfig, LabelConfig, PatchSettings,
                             PreprocessConfig, PretrainModelSettings, PretrainSection, TokenizerModelSettings,
                             TokenizerSection, check_schema, finetune_job_settings, job_settings, load_config,
                             load_settings, parse_config, stage_settings_json, to_dict)
from pipeline.prep.demo_corpus import extract_members, fetch_wheel
from pipeline.config import WheelSource


@pytest.mark.parametrize("name", ["demo.yaml", "config.yaml"])
def test_shipped_configs_validate_and_parse(repo_root: Path, name: str):
    raw = yaml.safe_load((repo_root / "config" / name).read_text())
    schema = yaml.safe_load((repo_root / "workflow" / "schemas" / "config.schema.yaml").read_text())
    jsonschema.validate(raw, schema)
    cfg = load_config(repo_root / "config" / name)
    assert cfg.datasets and all(ds.path for ds in cfg.datasets.values())


def test_dataset_overrides_and_inherited_defaults(repo_root: Path):
    cfg = load_config(repo_root / "config" / "config.yaml")
    tuab = cfg.datasets["tuab"]
    assert tuab.patch.window_s == 10 and tuab.patch.patch_len == 200  # own value, inherited value
    assert tuab.montage.channels == "tuh_double_banana"
    assert tuab.ingest.min_duration_s == 10  # null (not set): one window
    assert cfg.datasets["bciciv2a"].preprocess.mains == 50.0


def test_min_duration_zero_is_a_value_and_null_is_one_window():
    base = {"datasets": {"x": {"path": "/data", "patch": {"window_s": 4}}}}
    assert parse_config(base).datasets["x"].ingest.min_duration_s == 4
    assert parse_config({**base, "ingest": {"min_duration_s": None}}).datasets["x"].ingest.min_duration_s == 4
    assert parse_config({**base, "ingest": {"min_duration_s": 0}}).datasets["x"].ingest.min_duration_s == 0


def test_unknown_keys_and_wrong_types_are_named():
    base = {"datasets": {"x": {"path": "/data"}}}
    with pytest.raises(ConfigError, match=r"^patch: unknown key 'windows' \(did you mean 'window_s'\?\)\n"):
        parse_config({**base, "patch": {"windows": 3}})
    with pytest.raises(ConfigError, match=r"^datasets.x.patch: unknown key 'windows'"):
        parse_config({"datasets": {"x": {"path": "/data", "patch": {"windows": 3}}}})
    with pytest.raises(ConfigError, match=r"^preprocess.l_freq: .*'low'"):
        parse_config({**base, "preprocess": {"l_freq": "low"}})
    with pytest.raises(ConfigError, match="at least one dataset"):
        parse_config({"datasets": {}})
    with pytest.raises(ConfigError, match=r"^the config's top level: unknown key 'finetun' \(did you mean 'finetune'"):
        parse_config({**base, "finetun": {}})


def test_unknown_montage_channels_are_named_at_parse_time():
    """montage.channels is checked with the config (not a traceback inside standardize): a channel outside the
    vocabulary, and a misspelt channel-set name, each in one line naming the key and the nearest valid name."""
    def with_channels(channels):
        return {"datasets": {"band": {"path": "/data", "montage": {"channels": channels}}}}

    assert parse_config(with_channels(["AF7", "AF8", "FP1"])).datasets["band"].montage.channels == ("AF7", "AF8", "FP1")
    with pytest.raises(ConfigError, match=r"^datasets.band.montage.channels: 'AF77' is not a channel of the "
                                          r"vocabulary \(did you mean 'AF7'\?\)"):
        parse_config(with_channels(["AF7", "AF8", "AF77"]))
    with pytest.raises(ConfigError, match=r"^datasets.band.montage.channels: unknown channel set 'standard_1002' "
                                          r"\(did you mean 'standard_1020'\?\)"):
        parse_config(with_channels("standard_1002"))


@pytest.mark.parametrize("section, typo, where, nearest", [
    ({"tokenizer": {"model": {"codebok_size": 64}}}, "codebok_size", "tokenizer.model", "codebook_size"),
    ({"pretrain": {"model": {"backbone": {"embed_dm": 32}}}}, "embed_dm", "pretrain.model.backbone", "embed_dim"),
    ({"pretrain": {"model": {"level_weight": [1, 1, 1]}}}, "level_weight", "pretrain.model", "level_weights"),
    ({"pretrain": {"ablations": {"a": {"model": {"hierarchcal": False}}}}}, "hierarchcal", "pretrain.ablations.a.model",
     "hierarchical"),
    ({"pretrain": {"ablations": {"a": {"mask": {"stratgy": "random"}}}}}, "stratgy", "pretrain.ablations.a.mask",
     "strategy"),
])
def test_model_sections_are_typed_and_a_typo_names_key_section_and_nearest_name(section, typo, where, nearest):
    with pytest.raises(ConfigError) as err:
        parse_config({"datasets": {"x": {"path": "/data"}}, **section})
    assert str(err.value).splitlines()[0] == f"{where}: unknown key {typo!r} (did you mean {nearest!r}?)"


def test_model_overrides_are_typed_and_apply_only_what_is_set():
    cfg = parse_config({"datasets": {"x": {"path": "/data"}},
                        "tokenizer": {"model": {"codebook_size": 64}},
                        "pretrain": {"model": {"backbone": {"depth": 2}, "hierarchical": False},
                                     "ablations": {"deep": {"model": {"backbone": {"heads": 2}}}}}})
    assert cfg.tokenizer.model == TokenizerModelSettings(codebook_size=64)
    assert dict(cfg.tokenizer.model) == {"codebook_size": 64}  # a preset's other values stay the preset's
    assert dict(cfg.pretrain.model["backbone"]) == {"depth": 2}
    deep = cfg.pretrain.ablation("deep")  # nested overrides merge field by field
    assert deep.model == PretrainModelSettings(backbone=BackboneSettings(depth=2, heads=2), hierarchical=False)
    with pytest.raises(ConfigError, match=r"tokenizer.model.codebook_size: expected int, got 'many'"):
        parse_config({"datasets": {"x": {"path": "/data"}}, "tokenizer": {"model": {"codebook_size": "many"}}})
    with pytest.raises(ConfigError, match=r"'max_patches' is not a setting — it comes from the windows' patch count"):
        parse_config({"datasets": {"x": {"path": "/data"}}, "pretrain": {"model": {"backbone": {"max_patches": 9}}}})
    with pytest.raises(ConfigError, match=r"finetune.methods: 'ablation:nope' .* pretrain.ablations does not define"):
        parse_config({"datasets": {"x": {"path": "/data"}}, "finetune": {"methods": ["ablation:nope"]}})
    # the stage reads its --settings back into the same typed section
    assert load_settings(PretrainSection, json.dumps(to_dict(cfg.pretrain))) == cfg.pretrain


def test_model_settings_match_the_models_and_the_schema(repo_root: Path):
    """Every model field is a setting or named as derived; the schema's model sections list exactly the settings."""
    import dataclasses

    from pipeline.models.backbone import BackboneConfig
    from pipeline.models.config import TokenizerConfig
    from pipeline.models.pretrain import PretrainConfig

    schema = yaml.safe_load((repo_root / "workflow" / "schemas" / "config.schema.yaml").read_text())["$defs"]
    for settings, model, key in ((TokenizerModelSettings, TokenizerConfig, "tokenizer_model"),
                                 (BackboneSettings, BackboneConfig, "backbone"),
                                 (PretrainModelSettings, PretrainConfig, "pretrain_model")):
        names = {f.name for f in dataclasses.fields(settings)}
        assert names | set(settings.derived) == {f.name for f in dataclasses.fields(model)}, settings
        assert not names & set(settings.derived)
        assert set(schema[key]["properties"]) == names, key


@pytest.mark.parametrize("changes, where", [
    ({"preprocess": {"sfreq": 256}}, "preprocess.sfreq: 256 Hz is not supported"),
    ({"datasets": {"x": {"path": "/data", "patch": {"patch_len": 100}}}}, "datasets.x.patch.patch_len: 100 is not"),
])
def test_sampling_rate_and_patch_length_other_than_200_are_refused(changes, where):
    with pytest.raises(ConfigError, match="^" + where):
        parse_config({"datasets": {"x": {"path": "/data"}}, **changes})


def test_schema_errors_are_one_line_naming_the_key(repo_root: Path):
    schema = repo_root / "workflow" / "schemas" / "config.schema.yaml"
    raw = yaml.safe_load((repo_root / ".test" / "config.yaml").read_text())
    check_schema(raw, schema)
    with pytest.raises(ConfigError, match=r"^tokenizer.train.lr: -1 is less than or equal to the minimum of 0$"):
        check_schema({**raw, "tokenizer": {"train": {"lr": -1}}}, schema)
    with pytest.raises(ConfigError, match=r"^datasets.demo_bids: unknown key 'fromat' \(did you mean 'format'\?\)"):
        check_schema({**raw, "datasets": {"demo_bids": {"path": "x", "fromat": "edf"}}}, schema)


# ---------------------------------------------------------------------------------------------
# per-job settings


def test_job_settings_hold_what_the_job_reads(repo_root: Path):
    cfg = load_config(repo_root / "config" / "config.yaml")
    pretrain = job_settings(cfg, "pretrain", run="brainrvq-base")
    assert "ablations" not in pretrain and "codes" not in pretrain and pretrain["train"]["epochs"] == 20
    ablation = job_settings(cfg, "pretrain", run="flat-heads")
    assert ablation["name"] == "flat-heads" and ablation["model"] == {
        "hierarchical": False, "backbone": {"qkv_bias": False, "pos_init_std": 0.02, "time_bias_max_slope": 0.0}}
    assert "pretrained" not in job_settings(cfg, "train_tokenizer")
    full = job_settings(cfg, "finetune", dataset="tuab", method="full")
    probe = job_settings(cfg, "finetune", dataset="tuab", method="probe")
    logreg = job_settings(cfg, "finetune", dataset="tuab", method="logreg")
    assert {"methods", "seeds"}.isdisjoint(full) and "probe_lr" not in full and full["lr"] == 0.0005
    assert "lr" not in probe and "layer_decay" not in probe and probe["probe_lr"] == 0.005
    assert logreg == {"batch_size": 64, "primary_metric": "balanced_accuracy", "c_grid": list(cfg.finetune.c_grid)}
    assert job_settings(cfg, "finetune", dataset="tuab", method="raw_logreg") == {**logreg, "raw_sfreq": 20.0}
    eegnet = job_settings(cfg, "finetune", dataset="tuab", method="eegnet")
    assert eegnet["deep_lr"] == cfg.finetune.deep_lr and "lr" not in eegnet and "layer_decay" not in eegnet
    # label smoothing is read by multi-class cross-entropy only (TUAB is binary, TUEV has six classes)
    assert "label_smoothing" not in full
    assert "label_smoothing" in job_settings(cfg, "finetune", dataset="tuev", method="full")
    assert job_settings(cfg, "finetune", dataset="tuab", method="ablation:random-mask") == full
    assert job_settings(cfg, "standardize", dataset="tuab") == to_dict(cfg.datasets["tuab"].montage)
    # what the stage makes of it: the same keys, the rest left at their (unread) defaults
    assert finetune_job_settings(load_settings(FinetuneSection, json.dumps(probe)), "probe",
                                 cfg.datasets["tuab"].labels) == probe


def test_job_settings_ignore_what_the_job_does_not_read(repo_root: Path):
    """A new seed, method or ablation, another method's key, a tokenizer trained elsewhere: the other jobs' settings
    — their rerun trigger and their checkpoint identity — stay equal."""
    raw = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    before = parse_config(raw)
    after = parse_config({**raw, "finetune": {**raw["finetune"], "seeds": [0, 1, 2, 3, 4, 5], "probe_lr": 0.01,
                                              "methods": raw["finetune"]["methods"] + ["ablation:deep",
                                                                                       "tokenizer:neurorvq"]},
                          "pretrain": {**raw["pretrain"], "codes": "/shared/codes",
                                       "ablations": {**raw["pretrain"]["ablations"],
                                                     "deep": {"model": {"backbone": {"depth": 24}}}}},
                          "tokenizer": {**raw["tokenizer"], "pretrained": None,
                                        "variants": raw["tokenizer"]["variants"] + ["neurorvq"]}})
    for rule, kw in [("pretrain", {"run": "brainrvq-base"}), ("pretrain", {"run": "flat-heads"}),
                     ("train_tokenizer", {}), ("train_tokenizer", {"tokenizer": "ddrvq-base-labram"}),
                     ("pretrain", {"run": "tokenizer-labram"}), ("finetune", {"dataset": "tuev", "method": "full"}),
                     ("finetune", {"dataset": "tuev", "method": "ablation:flat-heads"}),
                     ("finetune", {"dataset": "tuab", "method": "logreg"})]:
        assert job_settings(before, rule, **kw) == job_settings(after, rule, **kw), (rule, kw)
    assert job_settings(before, "finetune", dataset="tuab", method="probe") != \
        job_settings(after, "finetune", dataset="tuab", method="probe")


def test_stage_settings_round_trip(repo_root: Path):
    cfg = load_config(repo_root / "config" / "demo.yaml")
    ds = cfg.datasets["demo_bids"]
    assert load_settings(PatchSettings, stage_settings_json(ds, "patch")) == PatchSettings(patch=ds.patch, splits=ds.splits)
    assert load_settings(PreprocessConfig, stage_settings_json(ds, "preprocess")) == ds.preprocess
    assert load_settings(IngestConfig, None) == IngestConfig()
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(IngestConfig, "{nope")


def test_fetch_reuses_a_hashed_wheel_and_extracts_only_members(tmp_path: Path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    whl = wheels / "eegdata-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("eegdata/data/a.edf", b"A")
        zf.writestr("eegdata/data/sub/b.edf", b"B")
        zf.writestr("eegdata/data/skip.fif", b"C")
        zf.writestr("eegdata/code.py", b"print()")
    import hashlib

    src = WheelSource(requirement="eegdata==1.0", sha256=hashlib.sha256(whl.read_bytes()).hexdigest(),
                      members=(("eegdata/data", "eeg"),), exclude=("*.fif",))
    assert fetch_wheel(src, wheels) == whl  # present with the right hash: no download
    files = extract_members(whl, src, tmp_path / "demo")
    assert sorted(files) == ["eeg/a.edf", "eeg/sub/b.edf"]
    assert (tmp_path / "demo" / "eeg" / "sub" / "b.edf").read_bytes() == b"B"
    assert json.dumps(files)


def test_conda_env_matches_pyproject(repo_root: Path):
    """envs/pipeline.yaml installs exactly the package's runtime and test requirements."""
    import tomllib

    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((repo_root / "envs" / "pipeline.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == wanted


def test_a_tokenizer_variant_is_the_main_section_with_its_variant(repo_root: Path):
    cfg = load_config(repo_root / "config" / "config.yaml")
    main, labram = job_settings(cfg, "train_tokenizer"), job_settings(cfg, "train_tokenizer", tokenizer="ddrvq-base-labram")
    assert {k for k in main if main[k] != labram[k]} == {"name", "variant"}
    assert (labram["name"], labram["variant"]) == ("ddrvq-base-labram", "labram")
    assert cfg.pretrain_runs()["tokenizer-labram"] == "ddrvq-base-labram"
    assert job_settings(cfg, "pretrain", run="tokenizer-labram") == {
        **job_settings(cfg, "pretrain", run="brainrvq-base"), "name": "tokenizer-labram"}
    raw = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    with pytest.raises(ConfigError, match="tokenizer variant 'neurorvq'"):
        parse_config({**raw, "finetune": {**raw["finetune"], "methods": ["tokenizer:neurorvq"]}})
    with pytest.raises(ConfigError, match="main tokenizer's variant"):
        parse_config({**raw, "tokenizer": {**raw["tokenizer"], "variants": ["ddrvq"]}})


def test_a_dataset_overrides_fine_tuning_settings_for_its_own_jobs_only(repo_root: Path):
    """datasets.<name>.finetune updates the top-level section for that dataset's jobs (their settings: the rerun
    trigger and what the stage trains with); the other datasets keep the top-level values. Methods and seeds are
    refused there (the tables compare them across datasets), and a misspelt key is named."""
    raw = yaml.safe_load((repo_root / "config" / "demo.yaml").read_text())
    base = job_settings(parse_config(raw), "finetune", dataset="demo_bids", method="full")
    raw["datasets"]["demo_bids"]["finetune"] = {"epochs": 3, "batch_size": 16, "class_weights": True}
    check_schema(raw, repo_root / "workflow" / "schemas" / "config.schema.yaml")
    cfg = parse_config(raw)
    own = job_settings(cfg, "finetune", dataset="demo_bids", method="full")
    assert (own["epochs"], own["batch_size"], own["class_weights"]) == (3, 16, True)
    assert {k: v for k, v in own.items() if k not in ("epochs", "batch_size", "class_weights")} == \
        {k: v for k, v in base.items() if k not in ("epochs", "batch_size", "class_weights")}
    assert cfg.finetune_for("demo_bids").lr == cfg.finetune.lr and cfg.finetune_for("demo_physionet") is cfg.finetune
    for bad, message in (({"seeds": [0]}, r"^datasets.demo_bids.finetune.seeds: seeds are the same for every dataset"),
                         ({"epoch": 3}, r"^datasets.demo_bids.finetune: unknown key 'epoch' \(did you mean 'epochs'")):
        raw["datasets"]["demo_bids"]["finetune"] = bad
        with pytest.raises(ConfigError, match=message):
            parse_config(raw)
    raw["datasets"]["demo_bids"]["finetune"] = {"epochs": 0}
    with pytest.raises(ConfigError, match=r"datasets.demo_bids.finetune.epochs"):
        check_schema(raw, repo_root / "workflow" / "schemas" / "config.schema.yaml")
