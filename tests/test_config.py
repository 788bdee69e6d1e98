"""Config loading: the shipped configs parse, unknown keys and wrong types are named, stages get settings."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.config import (ConfigError, IngestConfig, PatchSettings, PreprocessConfig, load_config, load_settings,
                             parse_config, stage_settings_json)
from pipeline.stages.fetch_demo import extract_members, fetch_wheel
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
    assert tuab.ingest.min_duration_s == 10  # defaults to one window
    assert cfg.datasets["bciciv2a"].preprocess.mains == 50.0


def test_unknown_keys_and_wrong_types_are_named():
    base = {"datasets": {"x": {"path": "/data"}}}
    with pytest.raises(ConfigError, match=r"datasets.x.patch: unknown key\(s\) \['windows'\]"):
        parse_config({**base, "patch": {"windows": 3}})
    with pytest.raises(ConfigError, match=r"datasets.x.preprocess.l_freq: .*'low'"):
        parse_config({**base, "preprocess": {"l_freq": "low"}})
    with pytest.raises(ConfigError, match="at least one dataset"):
        parse_config({"datasets": {}})


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
