"""Importance-guided curriculum masking: counts, run caps, padding, curriculum effect, reproducibility."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.train.masking import (MaskConfig, complementary, curriculum_weight, information_score, limit_runs,
                                    sample_mask)

C, P = 19, 30
N = C * P
NO_CAP = 10**6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are small: one intra-op thread is as fast and stays fast on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _features(b: int, c: int = C, p: int = P, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, p, 5, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _has_run_longer(mask: torch.Tensor, max_run: int) -> bool:
    """Whether any sample has more than ``max_run`` consecutive True in channel-major token order."""
    flat = mask.reshape(mask.shape[0], -1).cpu().numpy()
    return bool(np.lib.stride_tricks.sliding_window_view(flat, max_run + 1, axis=1).all(-1).any())


def _limit_runs_seq(row: list[bool], max_run: int) -> list[bool]:
    out, run = [], 0
    for v in row:
        run = run + 1 if v else 0
        if run == max_run + 1:
            v, run = False, 0
        out.append(v)
    return out


def test_curriculum_weight_linear_and_clamped():
    cfg = MaskConfig()
    assert curriculum_weight(cfg, 0.0) == pytest.approx(0.2)
    assert curriculum_weight(cfg, 1.0) == pytest.approx(0.7)
    for t in (0.1, 0.25, 0.5, 0.9):
        assert curriculum_weight(cfg, t) == pytest.approx(0.2 + 0.5 * t)
    assert curriculum_weight(cfg, -3.0) == pytest.approx(0.2)
    assert curriculum_weight(cfg, 7.0) == pytest.approx(0.7)
    assert curriculum_weight(replace(cfg, weight_end=1.0), 1.0) == pytest.approx(1.0)


def test_information_score_hand_example():
    # patches × features (neural, clean, complexity, irregularity, mobility); clean and irregularity are
    # constant → contribute 0; NaN counts as 0. Normalized: neural [0, .5, 1], complexity [.6, 0, 1],
    # mobility [0, .5, 1] → info = .3·neural + .2·complexity + .1·mobility.
    f = torch.tensor([[1.0, 2, 3, 4, 5], [2, 2, math.nan, 4, 7], [3, 2, 5, 4, 9]])
    info = information_score(f[None, None], torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(info, torch.tensor([[[0.12, 0.20, 0.60]]]), atol=1e-6, rtol=0)

    # a padding channel with extreme/non-finite values changes nothing and scores 0
    pad = torch.tensor([[1e9, -1e9, math.inf, -math.inf, 1e9]] * 3)
    both = torch.stack([f, pad])[None]
    info2 = information_score(both, torch.tensor([[True, False]]))
    torch.testing.assert_close(info2[:, 0], info[:, 0], atol=1e-6, rtol=0)
    assert torch.all(info2[:, 1] == 0)
    # no valid channel at all → zeros, never NaN
    assert torch.all(information_score(both, torch.zeros(1, 2, dtype=torch.bool)) == 0)


def test_limit_runs_matches_sequential_rule():
    gen = _gen(5)
    for max_run, density in ((5, 0.9), (2, 0.7), (1, 0.5)):
        m = torch.rand(50, 200, generator=gen) < density
        got = limit_runs(m, max_run)
        want = torch.tensor([_limit_runs_seq(r, max_run) for r in m.tolist()])
        assert torch.equal(got, want)


@pytest.mark.parametrize("strategy", ["importance", "random"])
def test_exact_count_and_padding(strategy: str):
    b, c, p = 300, 7, 9
    gen = _gen(1)
    valid = torch.rand(b, c, generator=gen) < 0.7
    valid[:5] = False  # samples without any valid patch get no mask
    cfg = MaskConfig(strategy=strategy, ratio=0.37, keep_prob=0.0, max_run=NO_CAP)
    mask = sample_mask(_features(b, c, p), valid, cfg, 0.5, _gen(2))
    assert mask.shape == (b, c, p) and mask.dtype == torch.bool
    assert not mask[~valid].any()
    n_valid = valid.sum(1) * p
    want = torch.tensor([math.floor(0.37 * int(n)) for n in n_valid])
    assert torch.equal(mask.sum((1, 2)), want)
    assert not mask[:5].any()
    # with the defaults padding stays unmasked too
    mask = sample_mask(_features(b, c, p), valid, replace(cfg, keep_prob=0.1, max_run=5), 0.5, _gen(3))
    assert not mask[~valid].any()


@pytest.mark.parametrize("strategy", ["importance", "random"])
def test_no_run_longer_than_max_run(strategy: str):
    b = 200
    feats = _features(b)
    valid = torch.ones(b, C, dtype=torch.bool)
    for ratio, max_run in ((0.5, 5), (0.9, 5), (0.9, 2)):
        cfg = MaskConfig(strategy=strategy, ratio=ratio, keep_prob=0.0, max_run=max_run)
        uncapped = sample_mask(feats, valid, replace(cfg, max_run=NO_CAP), 1.0, _gen(4))
        assert _has_run_longer(uncapped, max_run)  # the cap has something to do
        assert not _has_run_longer(sample_mask(feats, valid, cfg, 1.0, _gen(4)), max_run)


def test_mean_ratio_matches_expectation():
    b = 2000
    feats = _features(b)
    valid = torch.ones(b, C, dtype=torch.bool)
    cfg = MaskConfig()
    k = math.floor(cfg.ratio * N)
    uncapped = sample_mask(feats, valid, replace(cfg, max_run=NO_CAP), 0.3, _gen(7))
    expected = k * (1 - cfg.keep_prob) / N
    frac = uncapped.float().mean().item()
    assert abs(frac - expected) / expected < 0.01
    # same seed, cap on: identical draws, then every 6th token of a run unmasked → a little under
    capped = sample_mask(feats, valid, cfg, 0.3, _gen(7))
    assert torch.equal(capped, limit_runs(uncapped.reshape(b, N), cfg.max_run).reshape(b, C, P))
    frac_capped = capped.float().mean().item()
    assert 0.95 * expected < frac_capped < expected - 0.002
    assert not _has_run_longer(capped, cfg.max_run)
    # keep_prob = 0 and no cap: exactly floor(ratio · n) per sample
    exact = sample_mask(feats, valid, replace(cfg, keep_prob=0.0, max_run=NO_CAP), 0.3, _gen(8))
    assert torch.all(exact.sum((1, 2)) == k)


def _quartile_frequencies(cfg: MaskConfig, progress: float, draws: int = 2000) -> tuple[float, float]:
    feats = _features(1, seed=11)
    valid = torch.ones(1, C, dtype=torch.bool)
    info = information_score(feats, valid).flatten()
    mask = sample_mask(feats.expand(draws, -1, -1, -1), valid.expand(draws, -1), cfg, progress, _gen(12))
    freq = mask.reshape(draws, N).float().mean(0)
    hi, lo = info >= info.quantile(0.75), info <= info.quantile(0.25)
    return freq[hi].mean().item(), freq[lo].mean().item()


def test_importance_masks_informative_patches_more():
    hi, lo = _quartile_frequencies(MaskConfig(), 1.0)
    assert hi - lo > 0.3  # ≈ 0.71 vs 0.20
    hi1, lo1 = _quartile_frequencies(MaskConfig(weight_end=1.0), 1.0)
    assert hi1 - lo1 > hi - lo + 0.1  # ≈ 0.82 vs 0.12
    hi_r, lo_r = _quartile_frequencies(MaskConfig(strategy="random"), 1.0)
    assert abs(hi_r - lo_r) < 0.02
    assert abs(hi_r - 0.45) < 0.02 and abs(lo_r - 0.45) < 0.02


def test_curriculum_weight_changes_behaviour():
    draws = 1000
    feats = _features(1, seed=13)
    valid = torch.ones(1, C, dtype=torch.bool)
    info = information_score(feats, valid).reshape(1, N).expand(draws, -1).flatten()

    def corr(progress: float) -> float:
        m = sample_mask(feats.expand(draws, -1, -1, -1), valid.expand(draws, -1), MaskConfig(), progress, _gen(14))
        return torch.corrcoef(torch.stack([info, m.reshape(-1).float()]))[0, 1].item()

    c0, c1 = corr(0.0), corr(1.0)  # ≈ 0.06 vs 0.40 (per-draw point-biserial correlation)
    assert c1 > c0 + 0.2
    assert c0 > 0  # even at w = 0.2 the draw leans towards informative patches


@pytest.mark.parametrize("strategy", ["importance", "random"])
def test_reproducible_from_generator(strategy: str):
    feats = _features(16)
    valid = torch.ones(16, C, dtype=torch.bool)
    cfg = MaskConfig(strategy=strategy)
    a = sample_mask(feats, valid, cfg, 0.4, _gen(21))
    assert torch.equal(a, sample_mask(feats, valid, cfg, 0.4, _gen(21)))
    assert not torch.equal(a, sample_mask(feats, valid, cfg, 0.4, _gen(22)))
    # resuming from a saved generator state reproduces the next draw
    g = _gen(23)
    sample_mask(feats, valid, cfg, 0.4, g)
    state = g.get_state()
    nxt = sample_mask(feats, valid, cfg, 0.4, g)
    g2 = torch.Generator()
    g2.set_state(state)
    assert torch.equal(nxt, sample_mask(feats, valid, cfg, 0.4, g2))


def test_complementary_partitions_valid_patches():
    b = 64
    valid = torch.rand(b, C, generator=_gen(31)) < 0.8
    mask = sample_mask(_features(b), valid, MaskConfig(), 0.5, _gen(32))
    comp = complementary(mask, valid)
    full = valid[:, :, None].expand(b, C, P)
    assert not (mask & comp).any()
    assert torch.equal(mask | comp, full)


def test_config_validation():
    with pytest.raises(ValueError):
        MaskConfig(strategy="block")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MaskConfig(ratio=1.5)
    with pytest.raises(ValueError):
        MaskConfig(max_run=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_rules():
    dev = torch.device("cuda")
    b = 256
    feats = _features(b).to(dev)
    valid = (torch.rand(b, C, generator=_gen(41)) < 0.8).to(dev)
    g = torch.Generator(device=dev).manual_seed(42)
    mask = sample_mask(feats, valid, MaskConfig(), 1.0, g)
    assert mask.device.type == "cuda"
    assert not mask[~valid].any()
    assert not _has_run_longer(mask, 5)
    g = torch.Generator(device=dev).manual_seed(42)
    assert torch.equal(mask, sample_mask(feats, valid, MaskConfig(), 1.0, g))
    exact = sample_mask(feats, valid, MaskConfig(keep_prob=0.0, max_run=NO_CAP), 1.0, g)
    want = torch.floor(valid.sum(1).double() * P * 0.5).long()
    assert torch.equal(exact.sum((1, 2)), want)
    assert np.isfinite(information_score(feats, valid).cpu().numpy()).all()
