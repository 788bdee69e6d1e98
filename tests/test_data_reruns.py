"""Data changes rerun exactly what they must: a user file whose bytes change reruns its dataset's chain from ingest
(a touch reruns nothing), a deleted output is rebuilt by the next plain run, and forcing one dataset's ingest reaches
the tokenizer and pretraining only when that dataset is in the pretraining corpus.

The workflow tests are dry runs of the paper config's DAG marked done over stand-in files (tests/paper_dag.py) and
one real run on a copy of the finished tiny DAG; the library tests check pipeline.store.sources, the content
fingerprint and its hash cache."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from paper_dag import PAPER_METHODS, PaperDag
from pipeline.store import sources
from pipeline.store.sources import source_files, source_fingerprint
from workflow_helpers import TEST_RESULTS, Finished, nothing_to_do, planned_jobs, rule_counts, snakemake, tail

PAPER = "results/paper"  # config/config.yaml's results
N_SEEDS = 5


def _of(jobs: list[dict], rule: str, key: str = "dataset") -> set[str]:
    return {j["wildcards"][key] for j in jobs if j["rule"] == rule}


def _one_downstream_chain(jobs: list[dict], ds: str, *, ingest: bool = True) -> None:
    """`jobs` are one downstream-only dataset's chain: ingest (when its input changed) → standardize → preprocess →
    samples → its fine-tuning jobs → tables, and nothing of the tokenizer, pretraining or another dataset."""
    head = {"ingest": 1} if ingest else {}
    assert rule_counts(jobs) == {**head, "standardize": 1, "preprocess": 1, "samples": 1,
                             "finetune": len(PAPER_METHODS) * N_SEEDS, "tables": 1}, rule_counts(jobs)
    assert {j["wildcards"].get("dataset") for j in jobs if j["rule"] != "tables"} == {ds}


# ---------------------------------------------------------------------------------------------
# a changed file: its content, not its mtime


@pytest.mark.slow
@pytest.mark.xdist_group("paper_dag")
def test_a_changed_user_file_reruns_its_own_chain_and_a_touch_nothing(paper_dag: PaperDag, tmp_path: Path):
    """Before: user data were `ancient()` inputs, so a corrected file planned nothing ("Nothing to be done")."""
    dag = paper_dag.copy(tmp_path / "work")
    assert nothing_to_do(dag.run("all", "-n"))
    tuab = dag.workdir / "data" / "tuab" / "recording.edf"
    os.utime(tuab)  # touch: newer than every output, same bytes
    assert nothing_to_do(dag.run("all", "-n"))
    tuab.write_bytes(b"1")  # corrected
    jobs = planned_jobs(dag.run("all", "-n"))
    _one_downstream_chain(jobs, "tuab")
    assert "Params have changed" in next(j["reason"] for j in jobs if j["rule"] == "ingest")
    tuab.write_bytes(b"0")  # back to the bytes the outputs were made from, with a new mtime: nothing to do
    assert nothing_to_do(dag.run("all", "-n"))
    # an added file is a changed dataset too
    (dag.workdir / "data" / "shu_mi" / "more.edf").write_bytes(b"2")
    _one_downstream_chain(planned_jobs(dag.run("all", "-n")), "shu_mi")


@pytest.mark.slow
@pytest.mark.xdist_group("paper_dag")
def test_a_changed_pretraining_file_reruns_the_tokenizer_and_pretraining(paper_dag: PaperDag, tmp_path: Path):
    dag = paper_dag.copy(tmp_path / "work")
    (dag.workdir / "data" / "tueg" / "recording.edf").write_bytes(b"1")
    jobs = planned_jobs(dag.run("all", "-n"))
    counts = rule_counts(jobs)
    assert _of(jobs, "ingest") == {"tueg"} and _of(jobs, "preprocess") == {"tueg"}
    assert counts["train_tokenizer"] == 4 and counts["pretrain"] == 9  # the main tokenizer + 3 variants; 9 runs
    assert counts["finetune"] == 8 * len(PAPER_METHODS) * N_SEEDS - 8 * 7 * N_SEEDS  # all but the 7 baselines


# ---------------------------------------------------------------------------------------------
# a deleted output


@pytest.mark.slow
@pytest.mark.xdist_group("paper_dag")
def test_every_output_of_the_dag_is_a_target(paper_dag: PaperDag):
    """Snakemake 9 checks a job for missing output only when it is a target or a job depending on it must run, so
    `all` asks for every output (workflow/rules/common.smk all_outputs); this keeps that list equal to the DAG."""
    produced = {out for job in paper_dag.planned for out in job["output"]}
    # but the preprocessed stores, which a user may delete to free disk once shards and samples exist
    kept = {out for out in produced if not out.endswith("/preprocessed")}
    assert set(paper_dag.all_input) == kept, (set(paper_dag.all_input) ^ kept)
    assert len(produced - kept) == len({j["wildcards"]["dataset"] for j in paper_dag.planned if j["rule"] == "preprocess"})


@pytest.mark.slow
@pytest.mark.xdist_group("paper_dag")
def test_deleted_outputs_are_rebuilt_by_the_next_plain_run(paper_dag: PaperDag, tmp_path: Path):
    """Before: deleting fine-tuning folders under an up-to-date table.md gave "Nothing to be done"."""
    dag = paper_dag.copy(tmp_path / "work")
    for seed in (0, 3):
        shutil.rmtree(dag.workdir / PAPER / "finetune" / "tuab" / "full" / f"seed-{seed}")
    # a deleted preprocessed store (disk freed once shards exist) is not a reason to rerun anything
    shutil.rmtree(dag.workdir / PAPER / "tueg" / "preprocessed")
    jobs = planned_jobs(dag.run("all", "-n"))
    assert rule_counts(jobs) == {"finetune": 2, "tables": 1}
    assert {(j["wildcards"]["dataset"], j["wildcards"]["method"], j["wildcards"]["seed"])
            for j in jobs if j["rule"] == "finetune"} == {("tuab", "full", "0"), ("tuab", "full", "3")}
    # a deleted intermediate is rebuilt too, and what depends on it reruns (Snakemake compares mtimes)
    (dag.workdir / PAPER / "tuev" / "montage.parquet").unlink()
    jobs = planned_jobs(dag.run("all", "-n"))
    assert _of(jobs, "standardize") == {"tuev"} and "ingest" not in rule_counts(jobs)
    assert {(j["wildcards"]["dataset"], j["wildcards"]["method"]) for j in jobs if j["rule"] == "finetune"} == {
        *(("tuev", m) for m in PAPER_METHODS), ("tuab", "full")}


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_dag")
def test_a_deleted_fine_tuning_folder_is_rebuilt_for_real(finished: Finished):
    """The tiny DAG, run: the deleted seed's metrics and the tables come back, nothing else runs."""
    work = finished.copy("deleted-seed")
    seed = work / TEST_RESULTS / "finetune" / "demo_bids" / "logreg" / "seed-0"
    before = json.loads((seed / "metrics.json").read_text())
    shutil.rmtree(seed)
    dry = snakemake(work, finished.config, "all", "-n")
    assert rule_counts(planned_jobs(dry)) == {"finetune": 1, "tables": 1}, tail(dry)
    proc = snakemake(work, finished.config, "all")
    assert proc.returncode == 0, tail(proc)
    assert json.loads((seed / "metrics.json").read_text())["test"] == before["test"]  # same seed, same result
    assert nothing_to_do(snakemake(work, finished.config, "all", "-n"))


# ---------------------------------------------------------------------------------------------
# forcing one dataset's ingest


@pytest.mark.slow
@pytest.mark.xdist_group("paper_dag")
def test_forcing_one_datasets_ingest_reaches_pretraining_only_from_the_corpus(paper_dag: PaperDag):
    """`--forcerun ingest` names a rule, and Snakemake forces every job of it (dag.py `is_forced`): all nine ingests,
    TUEG's among them, so the tokenizers and every pretraining run. One dataset is forced by its own output file."""
    everything = planned_jobs(paper_dag.run("all", "-n", "--forcerun", "ingest"))
    assert len(_of(everything, "ingest")) == 9 and rule_counts(everything)["train_tokenizer"] == 4
    tuab = planned_jobs(paper_dag.run("all", "-n", "--forcerun", f"{PAPER}/tuab/manifest.parquet"))
    _one_downstream_chain(tuab, "tuab")
    tueg = planned_jobs(paper_dag.run("all", "-n", "--forcerun", f"{PAPER}/tueg/manifest.parquet"))
    assert _of(tueg, "ingest") == {"tueg"}
    assert rule_counts(tueg)["train_tokenizer"] == 4 and rule_counts(tueg)["pretrain"] == 9


# ---------------------------------------------------------------------------------------------
# the fingerprint and its cache (pipeline.store.sources)


def _tree(root: Path) -> Path:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.edf").write_bytes(b"aaaa")
    (root / "sub" / "b.edf").write_bytes(b"bbbb")
    (root / "sub" / "deep" / "c.tsv").write_text("onset\tduration\n")
    return root


def _age(root: Path, seconds: float = 60) -> None:
    """Date every file back (so the cache may keep it: files modified in the last RECENT_S are not cached)."""
    past = time.time() - seconds
    for f in source_files(root):
        os.utime(f.path, (past, past))


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The files the fingerprint reads (hashes)."""
    seen: list[str] = []
    real = sources.sha256_file

    def counting(path):
        seen.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(sources, "sha256_file", counting)
    return seen


def test_the_fingerprint_follows_content_not_mtimes(tmp_path: Path):
    root, cache = _tree(tmp_path / "data"), tmp_path / "hashes.json"
    first = source_fingerprint(root, cache=cache)
    for f in source_files(root):
        os.utime(f.path)
    assert source_fingerprint(root, cache=cache) == first  # touched
    (root / "sub" / "b.edf").write_bytes(b"bbbB")
    changed = source_fingerprint(root, cache=cache)
    assert changed != first
    (root / "sub" / "b.edf").write_bytes(b"bbbb")
    assert source_fingerprint(root, cache=cache) == first
    (root / "new.edf").write_bytes(b"")
    added = source_fingerprint(root, cache=cache)
    (root / "new.edf").unlink()
    (root / "a.edf").rename(root / "z.edf")
    renamed = source_fingerprint(root, cache=cache)
    assert len({first, changed, added, renamed}) == 4
    # a copy elsewhere (mtimes kept or not) is the same content
    assert source_fingerprint(shutil.copytree(root, tmp_path / "copy"), cache=tmp_path / "other.json") == renamed
    assert source_fingerprint(root / "z.edf", cache=cache) != source_fingerprint(root / "sub" / "b.edf", cache=cache)
    assert source_fingerprint(tmp_path / "absent", cache=cache) == ""


def test_unchanged_files_are_not_read_again(tmp_path: Path, reads: list[str]):
    root, cache = _tree(tmp_path / "data"), tmp_path / "hashes.json"
    _age(root)
    first = source_fingerprint(root, cache=cache)
    assert sorted(reads) == ["a.edf", "b.edf", "c.tsv"]
    reads.clear()
    assert source_fingerprint(root, cache=cache) == first and reads == []
    (root / "a.edf").write_bytes(b"longer")  # another size (and mtime): read again, alone
    source_fingerprint(root, cache=cache)
    assert reads == ["a.edf"]
    # the documented blind spot: an edit that keeps the size and the mtime is not seen
    stat = (root / "sub" / "b.edf").stat()
    (root / "sub" / "b.edf").write_bytes(b"BBBB")
    os.utime(root / "sub" / "b.edf", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _age(root / "a.edf")
    reads.clear()
    blind = source_fingerprint(root, cache=cache)
    assert reads == ["a.edf"]  # re-dated, so read; b.edf's size and mtime are those cached: not read
    cache.unlink()
    assert source_fingerprint(root, cache=cache) != blind  # without the cache the edit is seen


def test_recent_files_are_hashed_every_time(tmp_path: Path, reads: list[str]):
    """A file modified within RECENT_S of the hash is not cached: an edit in the same timestamp tick is not missed."""
    root, cache = _tree(tmp_path / "data"), tmp_path / "hashes.json"
    _age(root / "sub")
    source_fingerprint(root, cache=cache)
    reads.clear()
    source_fingerprint(root, cache=cache)
    assert reads == ["a.edf"]
    assert set(json.loads(cache.read_text())["files"]) == {os.path.realpath(p) for p in
                                                           (root / "sub" / "b.edf", root / "sub" / "deep" / "c.tsv")}


def test_a_damaged_cache_is_ignored_and_rewritten(tmp_path: Path):
    root, cache = _tree(tmp_path / "data"), tmp_path / "hashes.json"
    _age(root)
    good = source_fingerprint(root, cache=cache)
    for damage in ("{not json", json.dumps({"version": 0, "files": {}}), json.dumps([1, 2])):
        cache.write_text(damage)
        assert source_fingerprint(root, cache=cache) == good
        assert json.loads(cache.read_text())["version"] == sources.CACHE_VERSION
    assert not list(tmp_path.glob("hashes.json.tmp-*"))  # written by one rename


def test_links_are_followed_and_a_loop_is_walked_once(tmp_path: Path):
    root = _tree(tmp_path / "data")
    (root / "sub" / "deep" / "back").symlink_to(root, target_is_directory=True)  # a loop
    elsewhere = tmp_path / "elsewhere.edf"
    elsewhere.write_bytes(b"linked")
    (root / "linked.edf").symlink_to(elsewhere)
    names = [f.rel for f in source_files(root)]
    assert names == ["a.edf", "linked.edf", "sub/b.edf", "sub/deep/c.tsv"]
    before = source_fingerprint(root, cache=tmp_path / "hashes.json")
    elsewhere.write_bytes(b"LINKED")
    assert source_fingerprint(root, cache=tmp_path / "hashes.json") != before
