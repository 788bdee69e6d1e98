"""Shared fixtures. The demo corpus is real EEG fetched from pinned PyPI wheels (see config/demo.yaml);
it is fetched once into the git-ignored cache and reused by every test session."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from pipeline.config import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def demo_corpus() -> Path:
    """Root of the extracted demo EEG: physionet/S001R02.edf, pylossless/ (BIDS), synthetic/."""
    from pipeline.prep.demo_corpus import fetch_demo

    cfg = load_config(ROOT / "config" / "demo.yaml")
    cache = ROOT / cfg.cache
    stamp = cache / "demo" / "fetched.json"
    cache.mkdir(parents=True, exist_ok=True)
    # pytest-xdist workers each open this fixture: one fetches, the others wait for it and reuse its files
    with (cache / ".demo-fetch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.is_file():
            fetch_demo(cfg.demo_corpus, cache)
    return stamp.parent


@pytest.fixture(scope="session")
def finished(demo_corpus: Path, tmp_path_factory):
    """The tiny DAG (.test/config.yaml) run to the end once per session, shared by test_workflow.py and
    test_operations.py (tests that change it work on copies: Finished.copy)."""
    from workflow_helpers import finish_workdir

    return finish_workdir(tmp_path_factory.mktemp("tiny-dag"))


@pytest.fixture(scope="session")
def physionet_edf(demo_corpus: Path) -> Path:
    return demo_corpus / "physionet" / "S001R02.edf"


@pytest.fixture(scope="session")
def bids_root(demo_corpus: Path) -> Path:
    return demo_corpus / "pylossless"


# The order pytest-xdist hands out work (make test: --dist loadgroup --no-loadscope-reorder, so this order and not
# the groups' sizes decides). A worker holds the unit it runs plus the next one or two, so: the demo pretraining test
# (≈3 min on one core) to one worker, the tiny-DAG group (the longest unit, ≈5 min) to the other, then one quick
# test — the one that waits behind the demo test — and only then the other long groups, which the first worker to
# drain picks up (before, a size-sorted queue left a group of tests waiting behind the demo test while the other
# worker idled).
LONGEST_FIRST = ("test_pretrain.py::test_demo_pretraining", "test_operations.py", "test_config.py::test_shipped",
                 "test_slurm.py", "test_workflow.py::test_paper_config", "test_workflow.py::test_dag_runs")


def pytest_configure(config):
    # SLURM tests pass their cluster's SLURM_CONF explicitly; everything else gets one that fails fast
    os.environ.setdefault("SLURM_CONF", str(ROOT / "tests" / "no-controller.slurm.conf"))
    if not os.environ.get("PYTEST_XDIST_WORKER") and "not slow" not in (config.option.markexpr or ""):
        # The session's first step (the controller, once): SLURM's and Chromium's Debian packages download and
        # install in the background while the first tests run (tests/system_packages.py)
        from system_packages import start_prefetch

        start_prefetch(ROOT / "resources" / "cache" / "apt-prefetch.log")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # two workers on two cores: one torch thread each (two each oversubscribe the cores and spin)
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        return next((i for i, key in enumerate(LONGEST_FIRST) if key in item.nodeid), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the collection order within each rank


@pytest.fixture
def one_torch_thread():
    """One torch thread, as under `make test`'s workers, for tests whose thresholds were measured there: a second
    thread changes the order of the float sums, so a training run's numbers differ from one run to the other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    # Tests run on 2 cores; keep BLAS/FFT from oversubscribing when dask workers run in parallel.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


def build_demo_shards(demo_corpus: Path, root: Path, *, window_s: float, chunk_windows: int) -> list[Path]:
    """Shards of the real demo EEG: BIDS s01 (train) / s02 (test), and PhysioNet (train)."""
    from pipeline.prep.demo_corpus import demo_shards

    return demo_shards(demo_corpus, root, window_s=window_s, chunk_windows=chunk_windows, min_duration_s=10,
                       bids_test=("s02",))


@pytest.fixture(scope="session")
def demo_shards(demo_corpus: Path, tmp_path_factory) -> list[Path]:
    """The demo EEG at 10 s windows (short windows keep model tests fast)."""
    return build_demo_shards(demo_corpus, tmp_path_factory.mktemp("demo_shards"), window_s=10, chunk_windows=8)


from paper_dag import paper_dag  # noqa: E402,F401  (session fixture: the paper config's DAG, marked done)
