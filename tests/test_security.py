"""Hostile and damaged inputs (issue 13): names that would be shell or path syntax, paths with spaces and shell
metacharacters, crafted archives, crafted or damaged model files, partial copies of stores, relocated checkouts.
Each test is a probe that failed before its fix."""

from __future__ import annotations

import re
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
    from pipeline.errors import StageFailed
    from pipeline.prep.demo_corpus import fetch_demo

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
    from pipeline.errors import StageFailed
    from pipeline.prep.demo_corpus import fetch_demo

    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    sha = _wheel(cache / "wheels" / "evilpkg-1.0-py3-none-any.whl", {"evilpkg/data/ok.edf": b"fine"})
    with pytest.raises(StageFailed, match=f"`to: {to}`.*{why}"):
        fetch_demo({"evil": _source(sha, [("evilpkg/data", to)])}, cache)
    assert not list(tmp_path.rglob("ok.edf")) and not Path("/tmp/sec13-evil").exists()


def test_a_confined_archive_extracts_and_lists_its_files(tmp_path: Path):
    import json

    from pipeline.prep.demo_corpus import fetch_demo

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

    from pipeline.prep import demo_corpus as fd
    from pipeline.errors import StageFailed

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


# ---------------------------------------------------------------------------------------------
# model files: crafted or damaged files fail in one line naming the file, before anything is allocated


def _tiny_tokenizer():
    import torch

    from pipeline.models.config import TokenizerConfig
    from pipeline.models.tokenizer import build_tokenizer

    torch.manual_seed(0)
    cfg = TokenizerConfig.demo("ddrvq", codebook_size=64)
    return build_tokenizer(cfg), cfg.to_dict()


def _tiny_pretrain():
    import torch

    from pipeline.models.backbone import BackboneConfig
    from pipeline.models.pretrain import PretrainConfig, PretrainModel

    torch.manual_seed(0)
    cfg = PretrainConfig(backbone=BackboneConfig.demo(embed_dim=32, depth=1, heads=4), codebook_size=16)
    return PretrainModel(cfg), cfg.to_dict()


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[str, Path]:
    from pipeline.store import model_file

    root = tmp_path_factory.mktemp("published")
    model, cfg = _tiny_tokenizer()
    model_file.publish(model, root / "tokenizer", kind="tokenizer", config=cfg)
    model, cfg = _tiny_pretrain()
    model_file.publish(model, root / "pretrain", kind="pretrain", config=cfg, extra={"tokenizer_fingerprint": "t"})
    return {"tokenizer": root / "tokenizer" / "model.safetensors", "pretrain": root / "pretrain" / "model.safetensors"}


def _crafted(src: Path, dst: Path, *, config: dict | None = None, raw_config: str | None = None, **metadata) -> Path:
    """A copy of model file `src` with its metadata changed (weights untouched)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
    if config is not None:
        meta["config"] = json.dumps({**json.loads(meta["config"]), **config})
    if raw_config is not None:
        meta["config"] = raw_config
    meta.update(metadata)
    meta = {k: v for k, v in meta.items() if v is not None}
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(load_file(str(src)), str(dst), metadata=meta)
    return dst


def _refused(path: Path, kind: str, match: str, load=None) -> str:
    from pipeline.store import model_file

    with pytest.raises(model_file.ModelFileError) as err:
        (load or model_file.load)(path, kind)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    assert re.search(match, message), message
    return message


def test_a_published_model_file_loads_and_is_readable_by_the_team(published):
    import os
    import stat

    from pipeline.store import model_file

    for kind, path in published.items():
        model, info = model_file.load(path, kind)
        assert info.kind == kind and len(info.fingerprint) == 16
        mask = os.umask(0o022)
        os.umask(mask)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # 0644 under the usual umask, not 0600


def test_a_huge_size_is_refused_before_any_allocation(published, tmp_path: Path):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    path = _crafted(published["tokenizer"], tmp_path / "huge.safetensors", config={"vocab_size": 50_000_000})
    _refused(path, "tokenizer", r"config\.vocab_size = 50000000 is larger than any dimension of the file's weights")
    path = _crafted(published["pretrain"], tmp_path / "huge-pt.safetensors", config={"codebook_size": 50_000_000})
    _refused(path, "pretrain", r"codebook_size = 50000000 is larger than any dimension")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing like 12.8 GB


def test_a_size_within_bounds_that_the_weights_do_not_have_is_refused(published, tmp_path: Path):
    path = _crafted(published["tokenizer"], tmp_path / "small.safetensors", config={"codebook_size": 32})
    _refused(path, "tokenizer", r"tensor '.*' has shape \[64, .*\] but its config implies \[32, ")
    path = _crafted(published["pretrain"], tmp_path / "deeper.safetensors",
                    config={"backbone": {"embed_dim": 32, "depth": 2, "heads": 4, "vocab_size": 512,
                                         "patch_size": 200, "max_patches": 64, "mlp_ratio": 4.0, "qkv_bias": True,
                                         "conv_channels": 8, "pos_init_std": 0.3, "time_bias_max_slope": 2.0}})
    _refused(path, "pretrain", r"weights do not match its config \(\d+ missing, 0 unexpected")


@pytest.mark.parametrize("change, match", [
    ({"codebook_size": "64"}, r"config\.codebook_size: expected int, got '64'"),
    ({"l2_normalize": 1}, r"config\.l2_normalize: expected bool, got 1"),
    ({"depth": 2.5}, r"config\.depth: expected int, got 2\.5"),
    ({"codebok_size": 64}, r"unknown TokenizerConfig keys"),
])
def test_a_wrong_type_in_the_config_is_one_line(published, tmp_path: Path, change, match):
    path = _crafted(published["tokenizer"], tmp_path / "typed.safetensors", config=change)
    _refused(path, "tokenizer", r"metadata config is invalid \(" + match)


def test_a_config_that_is_not_json_is_one_line(published, tmp_path: Path):
    path = _crafted(published["tokenizer"], tmp_path / "json.safetensors", raw_config="{not json")
    _refused(path, "tokenizer", r"metadata config is invalid")


@pytest.mark.parametrize("keep", [0, 5, 100, 0.5, -1])
def test_a_truncated_or_foreign_file_is_one_line(published, tmp_path: Path, keep):
    data = published["tokenizer"].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep if keep >= 0 else len(data) - 1])
    _refused(path, "tokenizer", r"not a readable safetensors file .*copy it again or re-publish it")
    path.write_bytes(b"\xff" * 8 + b"{}")  # a header length of 2^64 - 1
    _refused(path, "tokenizer", r"not a readable safetensors file")


def test_a_forged_fingerprint_is_refused(published, tmp_path: Path):
    from pipeline.store import model_file

    for kind, src in published.items():
        path = _crafted(src, tmp_path / f"forged-{kind}.safetensors", fingerprint="deadbeefdeadbeef")
        _refused(path, kind, r"recorded fingerprint deadbeefdeadbeef does not match its config and weights")
        _refused(path, kind, r"recorded fingerprint deadbeef", load=model_file.verified_fingerprint)


def test_altered_weights_under_a_true_looking_fingerprint_are_refused(published, tmp_path: Path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(published["tokenizer"]), framework="pt") as fh:
        meta = dict(fh.metadata())
    tensors = load_file(str(published["tokenizer"]))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1
    save_file(tensors, str(tmp_path / "altered.safetensors"), metadata=meta)
    _refused(tmp_path / "altered.safetensors", "tokenizer", r"does not match its config and weights")


def test_a_file_of_the_wrong_kind_names_both_kinds(published, tmp_path: Path):
    _refused(published["pretrain"], "tokenizer", r"a pretrain model file, but a tokenizer model file is needed")
    _refused(published["tokenizer"], "pretrain", r"a tokenizer model file, but a pretrain model file is needed")
    untagged = _crafted(published["tokenizer"], tmp_path / "untagged.safetensors", kind=None)
    _refused(untagged, "tokenizer", r"a file without a kind tag")


def test_the_stages_refuse_a_forged_tokenizer_in_one_line(published, tmp_path: Path, demo_shards):
    """extract-codes and pretraining's tokenizer check run the module's checks: rc 1, `error: <file>: …`."""
    import subprocess
    import sys

    folder = tmp_path / "forged"
    _crafted(published["tokenizer"], folder / "model.safetensors", fingerprint="deadbeefdeadbeef")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "extract-codes", str(demo_shards[1]), "--tokenizer",
                           str(folder), "--out", str(tmp_path / "codes")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {folder / 'model.safetensors'}: recorded "
                                                           "fingerprint deadbeefdeadbeef does not match")
    assert not (tmp_path / "codes").exists()
    from pipeline.stages.pretrain import tokenizer_fingerprint
    from pipeline.store.model_file import ModelFileError

    with pytest.raises(ModelFileError, match="deadbeefdeadbeef does not match"):
        tokenizer_fingerprint(folder)


def test_embed_and_fine_tuning_refuse_a_forged_model_before_the_data_work(published, tmp_path: Path):
    from pipeline.errors import StageFailed
    from pipeline.embedding import embed
    from pipeline.train.pretrain import load_pretrained_folder
    from pipeline.store.model_file import ModelFileError

    forged = _crafted(published["pretrain"], tmp_path / "forged" / "model.safetensors", fingerprint="deadbeefdeadbeef")
    # the source does not exist: the model must be refused before anything reads it
    with pytest.raises(StageFailed, match=r"--model .*: .*recorded fingerprint deadbeefdeadbeef does not match"):
        embed(tmp_path / "no-such-recordings", forged.parent, tmp_path / "out.parquet")
    with pytest.raises(ModelFileError, match="deadbeefdeadbeef"):
        load_pretrained_folder(forged.parent)
    truncated = tmp_path / "cut" / "model.safetensors"
    truncated.parent.mkdir()
    truncated.write_bytes(published["pretrain"].read_bytes()[:1000])
    with pytest.raises(StageFailed, match=r"not a readable safetensors file"):
        embed(tmp_path / "no-such-recordings", truncated.parent, tmp_path / "out.parquet")


# ---------------------------------------------------------------------------------------------
# partial copies: a store missing files is rebuilt (or refused), never read as zeros


@pytest.fixture()
def physionet_store(demo_corpus: Path, tmp_path: Path) -> Path:
    from pipeline.config import IngestConfig, MontageConfig, PreprocessConfig
    from pipeline.prep.ingest import ingest
    from pipeline.prep.preprocess import preprocess
    from pipeline.prep.standardize import standardize

    d = tmp_path / "physionet"
    ingest(demo_corpus / "physionet", d, cfg=IngestConfig(min_duration_s=10))
    standardize(d / "manifest.parquet", d / "montage.parquet", MontageConfig())
    preprocess(d / "montage.parquet", d / "preprocessed", PreprocessConfig(mains=None, l_freq=1.0))
    return d


def _patch(d: Path, out: str):
    from pipeline.config import PatchConfig, PatchSettings
    from pipeline.prep.shards import patch

    patch(d / "preprocessed", d / out, PatchSettings(patch=PatchConfig(window_s=10, chunk_windows=4)))
    return d / out


def _windows(shards: Path):
    import numpy as np

    from pipeline.store.zarr_store import open_shard

    return np.concatenate([open_shard(p).x[...] for p in sorted(shards.glob("*/part-*.zarr"))])


def _signal_chunks(store: Path) -> list[Path]:
    return sorted(p for p in (store / "signal").rglob("*") if p.is_file() and p.name != "zarr.json")


def test_a_partial_copy_of_a_preprocessed_store_is_rebuilt_not_read_as_zeros(physionet_store: Path, caplog):
    import numpy as np

    from pipeline.config import PreprocessConfig
    from pipeline.prep.preprocess import preprocess

    d = physionet_store
    reference = _windows(_patch(d, "shards-before"))
    store = next((d / "preprocessed").glob("*.zarr"))
    chunks = _signal_chunks(store)
    assert len(chunks) >= 2
    for chunk in chunks[1:]:  # a partial rsync: all but the first signal chunk lost
        chunk.unlink()
    with pytest.raises(Exception, match=r"preprocessed store is incomplete \(\d+ of \d+ file\(s\) missing"):
        _patch(d, "shards-partial")  # patch refuses the partial store instead of writing zero windows
    with caplog.at_level("WARNING"):
        preprocess(d / "montage.parquet", d / "preprocessed", PreprocessConfig(mains=None, l_freq=1.0))
    assert any("is incomplete, rebuilding it" in r.getMessage() and store.name in r.getMessage()
               for r in caplog.records)
    assert len(_signal_chunks(store)) == len(chunks)
    after = _windows(_patch(d, "shards-after"))
    np.testing.assert_array_equal(after, reference)
    assert not np.any(np.all(after.reshape(len(after), -1) == 0, axis=1))  # no all-zero window


def test_partial_shard_folders_are_rebuilt(physionet_store: Path, caplog):
    import numpy as np

    d = physionet_store
    shards = _patch(d, "shards")
    reference = _windows(shards)
    part = next(shards.glob("*/part-*.zarr"))
    victim = sorted(p for p in (part / "x").rglob("*") if p.is_file() and p.name != "zarr.json")[-1]
    victim.write_bytes(victim.read_bytes()[:10])  # truncated by an interrupted copy
    with caplog.at_level("WARNING"):
        _patch(d, "shards")
    assert any("shards of" in r.getMessage() and "of another size" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(_windows(shards), reference)


# ---------------------------------------------------------------------------------------------
# atomic publishing: temporaries per writer, folder swaps, metrics logs


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_live_writers_temporary_survives_another_writer(tmp_path: Path):
    import subprocess

    from pipeline.store.atomic import _HOST, atomic_path, remove_stale, write_text_atomic

    target = tmp_path / "out.json"
    # a concurrent writer in this process: the second writer must not delete the first one's temporary
    with atomic_path(target) as first:
        first.write_text("first")
        write_text_atomic(target, "second")
    assert target.read_text() == "first"
    # another live process's temporary stays; a dead writer's goes (this host's, or an old name without host)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        live = tmp_path / f"out.json.tmp-{_HOST}-{sleeper.pid}-0123abcd"
        dead = tmp_path / f"out.json.tmp-{_HOST}-{_dead_pid()}-0123abcd"
        legacy = tmp_path / f"out.json.tmp-{_dead_pid()}-89abcdef"
        other_host = tmp_path / "out.json.tmp-elsewhere-1-0123abcd"
        for p in (live, dead, legacy, other_host):
            p.write_text("x")
        (tmp_path / "out.json.tmp-dir").mkdir()  # not a temporary name of ours: never touched
        remove_stale(target)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["out.json", live.name, other_host.name, "out.json.tmp-dir"])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_replacing_a_folder_never_leaves_the_path_missing(tmp_path: Path, monkeypatch):
    import os

    from pipeline.store import atomic

    target = tmp_path / "store"
    with atomic.atomic_path(target, directory=True) as tmp:
        (tmp / "a").write_text("old")
    seen_missing = []
    real_replace = os.replace

    def watched(src, dst, *args, **kwargs):  # after every rename: is the published path there?
        real_replace(src, dst, *args, **kwargs)
        seen_missing.append(not target.is_dir())

    monkeypatch.setattr(os, "replace", watched)
    for i in range(3):
        with atomic.atomic_path(target, directory=True) as tmp:
            (tmp / "a").write_text(f"new {i}")
        assert (target / "a").read_text() == f"new {i}"
    assert not any(seen_missing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # the old folder is gone, no temporaries


def test_a_torn_metrics_line_is_dropped_and_a_damaged_one_named(tmp_path: Path, caplog):
    from pipeline.store.jsonl import JsonlError
    from pipeline.train.metrics import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')  # killed mid-append
    inode = path.stat().st_ino
    with caplog.at_level("WARNING"):
        log = MetricsLog(path, resume_from_step=2)
    assert any(str(path) in r.getMessage() and "line 3 is cut short" in r.getMessage() for r in caplog.records)
    assert log.read() == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    assert path.stat().st_ino != inode  # rewritten by a rename, not in place
    path.write_text('{"step": 1}\n{"step": 2,, }\n{"step": 3}\n')
    with pytest.raises(JsonlError, match=rf"^{re.escape(str(path))}: line 2 is not valid JSON"):
        MetricsLog(path, resume_from_step=3)


# ---------------------------------------------------------------------------------------------
# relocation: a finished project moved elsewhere (checkout, venv, workdir) plans nothing


def _moved_venv(dst: Path) -> Path:
    """An interpreter at another path running the same environment (what moving or re-creating the venv gives):
    dst/bin/python with its own pyvenv.cfg, the site-packages linked."""
    import os
    import sys
    import sysconfig

    prefix = Path(sys.prefix)
    site = Path(sysconfig.get_paths()["purelib"])
    (dst / "bin").mkdir(parents=True)
    (dst / "pyvenv.cfg").write_text((prefix / "pyvenv.cfg").read_text())
    (dst / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    (dst / site.relative_to(prefix)).parent.mkdir(parents=True)
    (dst / site.relative_to(prefix)).symlink_to(site, target_is_directory=True)
    return dst / "bin" / "python"


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_dag")  # the worker that holds the finished DAG (test_operations.py)
def test_a_moved_checkout_venv_and_workdir_plan_nothing(finished, tmp_path: Path):
    """Params hold what changes results, not where the project lives: the finished tiny DAG, its checkout and its
    interpreter copied under another path (with a space) dry-run to nothing — before, 18 jobs (the interpreter
    path was in the torch rules' params, the checkout path in the tables' inputs)."""
    import shutil
    import subprocess

    from workflow_helpers import copy_workdir, nothing_to_do, planned_jobs

    moved = tmp_path / "moved project"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for rel in listed:
        if (ROOT / rel).is_file():
            (moved / "checkout" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, moved / "checkout" / rel)
    work = copy_workdir(finished.workdir, moved / "work")
    python = _moved_venv(moved / "venv")
    assert subprocess.run([str(python), "-c", "import sys, snakemake; print(sys.executable)"], capture_output=True,
                          text=True, check=True).stdout.strip() == str(python)
    proc = subprocess.run([str(python), "-m", "snakemake", "--snakefile", str(moved / "checkout" / "Snakefile"),
                           "--directory", str(work), "--cores", "2", "all", "-n", "--configfile",
                           str(moved / "checkout" / ".test" / "config.yaml")],
                          capture_output=True, text=True, cwd=moved / "checkout", timeout=300)
    assert nothing_to_do(proc), [(j["rule"], j["reason"]) for j in planned_jobs(proc)] or output(proc)[-3000:]
