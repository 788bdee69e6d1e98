"""Hostile and damaged inputs (issue 13): names that would be shell or path syntax, paths with spaces and shell
metacharacters, crafted archives, crafted or damaged model files, partial copies of stores, relocated checkouts.
Each test is a probe that failed before its fix."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.config import NAME_PATTERN, ConfigError, check_schema, parse_config
from workflow_helpers import ROOT, make_workdir, output, snakemake, tiny_config, write_config

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
HOSTILE = "x;touch INJECTED;#"


def _first_line(proc) -> str:
    return next((line for line in output(proc).splitlines() if line.strip()), "")


# ---------------------------------------------------------------------------------------------
# names and quoting


@pytest.mark.parametrize("where", ["datasets", "pretrain.ablations", "demo_corpus"])
def test_a_hostile_name_is_refused_naming_it(where: str):
    cfg = tiny_config()
    section = cfg
    for key in where.split("."):
        section = section.setdefault(key, {})
    first = next(iter(section.values())) if section else {}
    section[HOSTILE] = first
    with pytest.raises(ConfigError, match=r"x;touch INJECTED;#") as err:
        parse_config(cfg)
    assert str(err.value).startswith(f"{where}.{HOSTILE}: name ")
    with pytest.raises(ConfigError, match="does not match"):  # the schema holds the same rule
        check_schema(cfg, SCHEMA)


@pytest.mark.parametrize("name", ["..", ".hidden", "-rf", "a/b", "a b", "$(id)", "x" * 65, "é"])
def test_names_that_are_path_or_option_syntax_are_refused(name: str):
    cfg = tiny_config()
    cfg["tokenizer"]["name"] = name
    with pytest.raises(ConfigError, match=r"tokenizer\.name: name "):
        parse_config(cfg)


def test_the_schema_and_the_parser_share_the_name_pattern():
    schema = yaml.safe_load(SCHEMA.read_text())
    props = schema["properties"]
    assert props["datasets"]["propertyNames"]["pattern"] == NAME_PATTERN
    assert props["demo_corpus"]["propertyNames"]["pattern"] == NAME_PATTERN
    assert props["pretrain"]["properties"]["ablations"]["propertyNames"]["pattern"] == NAME_PATTERN
    assert props["tokenizer"]["properties"]["name"]["pattern"] == NAME_PATTERN
    assert props["pretrain"]["properties"]["name"]["pattern"] == NAME_PATTERN


def test_the_dry_run_refuses_a_hostile_dataset_name_first(tmp_path: Path):
    cfg = tiny_config()
    cfg["datasets"][HOSTILE] = cfg["datasets"].pop("demo_physionet")
    config = write_config(tmp_path / "hostile.yaml", cfg)
    work = make_workdir(tmp_path / "work")
    proc = snakemake(work, config, "all", "-n", timeout=120)
    assert proc.returncode != 0
    assert _first_line(proc).startswith(f"config error: datasets.{HOSTILE}: name '{HOSTILE}' is not allowed")
    assert not (work / "INJECTED").exists()


def _shell_commands(proc) -> list[list[str]]:
    return [shlex.split(line.split("Shell command: ", 1)[1]) for line in output(proc).splitlines()
            if line.startswith("Shell command: ") and line != "Shell command: None"]


@pytest.mark.slow
def test_paths_with_spaces_and_shell_syntax_stay_one_argument(tmp_path: Path):
    """Every path that reaches a shell is quoted: a results folder, a cache and a dataset folder with spaces and
    `$(...)` in their names run ingest → standardize for real, and every planned command splits into the
    arguments the rule meant (a command's `--out` is one word) — before, `> {log}` split at the space."""
    work = make_workdir(tmp_path / "work dir")
    raw = work / "raw $(touch INJECTED) data"
    raw.mkdir()
    (raw / "S001R02.edf").symlink_to((ROOT / "resources/cache/demo/physionet/S001R02.edf").resolve())
    cfg = tiny_config()
    cfg["results"] = "my results/$(touch INJECTED)"
    cfg["cache"] = "resources/cache"
    cfg["datasets"]["demo_physionet"]["path"] = raw.name
    config = write_config(tmp_path / "spaces.yaml", cfg)
    target = f"{cfg['results']}/demo_physionet/montage.parquet"

    plan = snakemake(work, config, "all", "-n", "-p", timeout=180)
    assert plan.returncode == 0, output(plan)[-3000:]
    commands = _shell_commands(plan)
    assert len(commands) > 10
    for argv in commands:
        assert argv[0].endswith("python"), argv
        assert argv[-2] == "2>&1" or argv[-1] == "2>&1", argv
        log = argv[argv.index(">") + 1]
        assert log.startswith(f"{cfg['results']}/logs/") and log.endswith(".log"), argv
        if "--out" in argv:
            assert argv[argv.index("--out") + 1].startswith(cfg["results"] + "/"), argv

    proc = snakemake(work, config, target, timeout=300)
    assert proc.returncode == 0, output(proc)[-3000:]
    assert (work / target).is_file()
    assert not list(work.rglob("INJECTED")) and not (ROOT / "INJECTED").exists()


# ---------------------------------------------------------------------------------------------
# the demo fetcher: archives confined to the cache, wheels with a wrong hash deleted


def _wheel(path: Path, members: dict[str, bytes]) -> str:
    import hashlib
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source(sha: str, members, requirement: str = "evilpkg==1.0"):
    from pipeline.config import WheelSource

    return WheelSource(requirement=requirement, sha256=sha, members=tuple(members))


def test_an_archive_member_that_climbs_out_of_the_cache_is_refused(tmp_path: Path):
    from pipeline.stages.common import StageFailed
    from pipeline.stages.fetch_demo import fetch_demo

    cache = tmp_path / "a" / "b" / "cache"
    (cache / "wheels").mkdir(parents=True)
    sha = _wheel(cache / "wheels" / "evilpkg-1.0-py3-none-any.whl",
                 {"evilpkg/data/ok.edf": b"fine", "evilpkg/data/../../../../../escaped.txt": b"pwned"})
    with pytest.raises(StageFailed, match=r"member 'evilpkg/data/\.\./\.\./\.\./\.\./\.\./escaped\.txt'.*outside"):
        fetch_demo({"evil": _source(sha, [("evilpkg/data", "evil")])}, cache)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (cache / "demo" / "fetched.json").exists()


@pytest.mark.parametrize("to, why", [("/tmp/sec13-evil", "absolute path"), ("../../outside", "outside the cache")])
def test_a_to_outside_the_cache_is_refused_before_extracting(tmp_path: Path, to: str, why: str):
    from pipeline.stages.common import StageFailed
    from pipeline.stages.fetch_demo import fetch_demo

    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    sha = _wheel(cache / "wheels" / "evilpkg-1.0-py3-none-any.whl", {"evilpkg/data/ok.edf": b"fine"})
    with pytest.raises(StageFailed, match=f"`to: {to}`.*{why}"):
        fetch_demo({"evil": _source(sha, [("evilpkg/data", to)])}, cache)
    assert not list(tmp_path.rglob("ok.edf")) and not Path("/tmp/sec13-evil").exists()


def test_a_confined_archive_extracts_and_lists_its_files(tmp_path: Path):
    import json

    from pipeline.stages.fetch_demo import fetch_demo

    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    sha = _wheel(cache / "wheels" / "evilpkg-1.0-py3-none-any.whl",
                 {"evilpkg/data/sub/ok.edf": b"fine", "evilpkg/data/x/../y.edf": b"inside"})
    stamp = fetch_demo({"good": _source(sha, [("evilpkg/data", "good")])}, cache)
    files = json.loads(stamp.read_text())["good"]["files"]
    assert sorted(files) == ["good/sub/ok.edf", "good/y.edf"]
    assert (cache / "demo" / "good" / "y.edf").read_bytes() == b"inside"


def test_a_wheel_with_the_wrong_hash_is_deleted(tmp_path: Path, monkeypatch):
    """A cached file of the pinned version with another hash, and the file an index serves instead of the pinned
    one: neither is used, neither stays in the cache."""
    import subprocess

    from pipeline.stages import fetch_demo as fd
    from pipeline.stages.common import StageFailed

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    good = _wheel(tmp_path / "good.whl", {"evilpkg/data/ok.edf": b"fine"})
    _wheel(wheels / "evilpkg-1.0-py3-none-any.whl", {"evilpkg/data/ok.edf": b"tampered"})
    _wheel(wheels / "evilpkg-2.0-py3-none-any.whl", {"evilpkg/data/ok.edf": b"another version, kept"})

    def fake_pip(cmd, **kwargs):  # the index serves a tampered file under the pinned name
        _wheel(wheels / "evilpkg-1.0-py3-none-any.whl", {"evilpkg/data/ok.edf": b"served tampered"})
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fd.subprocess, "run", fake_pip)
    with pytest.raises(StageFailed, match=r"evilpkg==1\.0: downloaded wheel\(s\) have sha256 .*deleted"):
        fd.fetch_wheel(_source(good, []), wheels)
    assert sorted(p.name for p in wheels.iterdir()) == ["evilpkg-2.0-py3-none-any.whl"]
