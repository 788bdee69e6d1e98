"""Tests of pipeline.models: EMA residual vector quantizers and the tokenizers (tiny configs)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models import (
    VARIANTS,
    ResidualVectorQuantizer,
    TokenizerConfig,
    VectorQuantizer,
    build_tokenizer,
    load_tokenizer,
)

# --------------------------------------------------------------------------- helpers


def tiny_config(variant: str = "ddrvq", **overrides) -> TokenizerConfig:
    base = dict(
        vocab_size=32,
        max_patches=8,
        embed_dim=32,
        depth=1,
        heads=4,
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=4,
        codebook_size=64,
        code_dim=16,
        kmeans_iters=3,
    )
    return TokenizerConfig.demo(variant, **{**base, **overrides})


def eeg_like(windows: int, channels: int, patches: int, *, seed: int = 0) -> torch.Tensor:
    """Sums of sinusoids (1–30 Hz) + noise at the µV/100 scale: [B, C, P, 200]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(patches * 200) / 200.0
    freqs = torch.rand(windows, channels, 3, 1, generator=g) * 29 + 1
    amps = torch.rand(windows, channels, 3, 1, generator=g) * 0.5 + 0.1
    phases = torch.rand(windows, channels, 3, 1, generator=g) * 2 * math.pi
    x = (amps * torch.sin(2 * math.pi * freqs * t + phases)).sum(2)
    x = x + 0.05 * torch.randn(x.shape, generator=g)
    return x.reshape(windows, channels, patches, 200)


def clustered(n: int, centers: int, dim: int, *, spread: float = 0.05, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mu = F.normalize(torch.randn(centers, dim, generator=g), dim=-1)
    idx = torch.randint(0, centers, (n,), generator=g)
    return mu[idx] + spread * torch.randn(n, dim, generator=g)


# --------------------------------------------------------------------------- quantizers


@pytest.mark.parametrize("l2", [True, False])
def test_rvq_forward_equals_decode_of_encode_in_eval(l2: bool) -> None:
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=8, codebook_size=32, levels=3, l2_normalize=l2, kmeans_init=True)
    x = torch.randn(4, 50, 8) * 2
    rvq.train()
    rvq(x)  # k-means init + one EMA step
    rvq.eval()
    res = rvq(x)
    codes = rvq.encode(x)
    assert codes.shape == (4, 50, 3) and codes.dtype == torch.long
    assert torch.equal(res.codes, codes)
    assert torch.equal(res.quantized, rvq.decode(codes))  # bit for bit
    assert res.usage.shape == (3,) and res.perplexity.shape == (3,)
    assert res.commit_loss.ndim == 0


def test_rvq_residual_definition() -> None:
    """Level k quantizes l2norm(r_k) with r_1 = z and r_{k+1} = r_k - e_k."""
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=4, codebook_size=16, levels=2)
    z = torch.randn(10, 4) * 3
    codes = rvq.encode(z)
    e1 = rvq.layers[0].codebook[codes[:, 0]]
    expected1 = (F.normalize(z, dim=-1) @ rvq.layers[0].codebook.T).argmax(-1)
    expected2 = (F.normalize(z - e1, dim=-1) @ rvq.layers[1].codebook.T).argmax(-1)
    assert torch.equal(codes[:, 0], expected1)
    assert torch.equal(codes[:, 1], expected2)


def test_ema_update_matches_hand_computation() -> None:
    eps = 1e-5
    vq = VectorQuantizer(dim=2, codebook_size=2, decay=0.5, eps=eps, l2_normalize=False)
    vq.init_codebook_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # cluster_size = 1, embed_sum = codebook
    x = torch.tensor([[2.0, 0.0], [0.9, 0.1], [0.0, 3.0]])
    vq.train()
    res = vq(x)
    assert res.codes.tolist() == [0, 0, 1]  # nearest by Euclidean distance, before the update
    # counts = [2, 1]; sums = [[2.9, 0.1], [0, 3]]
    cluster = torch.tensor([0.5 * 1 + 0.5 * 2, 0.5 * 1 + 0.5 * 1])  # [1.5, 1.0]
    embed_sum = torch.tensor([[0.5 * 1 + 0.5 * 2.9, 0.5 * 0 + 0.5 * 0.1], [0.0, 0.5 * 1 + 0.5 * 3]])
    n = cluster.sum()
    smoothed = (cluster + eps) / (n + 2 * eps) * n
    assert torch.allclose(vq.cluster_size, cluster)
    assert torch.allclose(vq.embed_sum, embed_sum)
    assert torch.allclose(vq.codebook, embed_sum / smoothed[:, None])
    assert torch.allclose(vq.codebook, torch.tensor([[1.3, 1 / 30], [0.0, 2.0]]), atol=1e-4)
    # commitment: mse(x, q) with q the pre-update codewords
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(res.commit_loss, F.mse_loss(x, q))
    # usage / perplexity of the batch histogram [2, 1]
    p = torch.tensor([2 / 3, 1 / 3])
    assert torch.allclose(res.usage, torch.tensor(1.0))
    assert torch.allclose(res.perplexity, torch.exp(-(p * p.log()).sum()))


def test_no_ema_update_in_eval_mode() -> None:
    vq = VectorQuantizer(dim=4, codebook_size=8)
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq.eval()
    vq(torch.randn(20, 4))
    for k, v in vq.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("l2", [True, False])
def test_kmeans_init_beats_random_init(l2: bool) -> None:
    x = clustered(2000, 8, 16, seed=7)  # 8 tight clusters, 32 codes (seed ≠ the global seed below)

    def error(kmeans_init: bool) -> float:
        torch.manual_seed(0)
        # decay = 1 freezes the EMA, so the codebook after the first training
        # forward is exactly the initial one (k-means or random)
        vq = VectorQuantizer(dim=16, codebook_size=32, decay=1.0, l2_normalize=l2, kmeans_init=kmeans_init)
        vq.train()
        vq(x)
        vq.eval()
        target = F.normalize(x, dim=-1) if l2 else x
        return F.mse_loss(vq.decode(vq.encode(x)), target).item()

    with_kmeans, random = error(True), error(False)
    assert with_kmeans < 0.2 * random, (with_kmeans, random)
    assert with_kmeans < 2 * 0.05**2  # ≈ the cluster noise floor


def test_kmeans_init_is_deterministic_under_seed() -> None:
    x = clustered(500, 8, 8)
    books = []
    for _ in range(2):
        torch.manual_seed(123)
        vq = VectorQuantizer(dim=8, codebook_size=32, kmeans_init=True)
        vq.train()
        vq(x)
        books.append(vq.codebook.clone())
    assert torch.equal(books[0], books[1])


def _has_duplicate_rows(t: torch.Tensor) -> bool:
    same = (t[:, None] == t[None]).all(-1)
    return bool((same.sum(1) > 1).any())


def test_kmeans_init_with_fewer_rows_than_codes_leaves_no_duplicates() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=8, codebook_size=64, kmeans_init=True, dead_code_threshold=0.01)
    vq.train()
    vq(clustered(40, 5, 8, seed=3))  # 40 rows < 64 codes
    assert not _has_duplicate_rows(vq.codebook)
    assert (vq.cluster_size[40:] == 0).all()  # unfitted codes wait for the restart
    vq(clustered(40, 5, 8, seed=4))  # next batch: the 24 empty codes are revived from it
    assert not _has_duplicate_rows(vq.codebook)
    assert (vq.cluster_size >= 0.01 * 0.99).all()


def test_dead_code_restart_revives_unused_codes() -> None:
    torch.manual_seed(0)
    k = 16
    vq = VectorQuantizer(dim=8, codebook_size=k, decay=0.9, dead_code_threshold=0.5)
    # code 0 points at the data, every other code away from it: only code 0 is ever picked
    g = torch.Generator().manual_seed(1)
    center = F.normalize(torch.randn(8, generator=g), dim=0)
    x = center + 0.15 * torch.randn(500, 8, generator=g)
    book = -center + 0.01 * torch.randn(k, 8, generator=g)
    book[0] = center
    counts = torch.zeros(k)
    counts[0] = 100.0
    vq.init_codebook_(book, cluster_size=counts)  # codes 1.. have EMA count 0 < threshold
    vq.eval()
    assert vq(x).usage.item() == pytest.approx(1 / k)
    vq.train()
    first = vq(x)  # codes assigned before the restart...
    assert first.usage.item() == pytest.approx(1 / k)
    vq.eval()
    after = vq(x)  # ...and after it
    assert after.usage.item() * k >= 8
    assert (vq.cluster_size[1:] == 0.5).all()


def test_straight_through_gradient_reaches_the_input() -> None:
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=8, codebook_size=32, levels=3)
    x = torch.randn(40, 8, requires_grad=True)
    res = rvq(x)
    (res.quantized * torch.randn_like(res.quantized)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_straight_through_gradient_reaches_the_encoder() -> None:
    torch.manual_seed(0)
    cfg = tiny_config("ddrvq", commitment_weight=0.0)  # loss = reconstruction only
    model = build_tokenizer(cfg)
    x, ch = eeg_like(2, 3, 4), torch.tensor([[0, 1, 2], [3, 4, 5]])
    model(x, ch).loss.backward()
    for name in ("frontend.net.0.weight", "encoder.blocks.0.attn.qkv.weight", "heads.time.0.weight", "heads.freq.0.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- tokenizers


def _trained_once(cfg: TokenizerConfig):
    """A tokenizer after one training forward (k-means init of every level) on a
    batch with more tokens than codes (fewer would leave duplicate codewords,
    whose exact ties make codes arbitrary)."""
    torch.manual_seed(0)
    model = build_tokenizer(cfg)
    model.train()
    model(eeg_like(8, 6, 5, seed=100), torch.arange(6).repeat(8, 1))  # 240 tokens > 64 codes
    return model.eval()


def test_codes_do_not_depend_on_batch_size() -> None:
    x = eeg_like(5, 6, 4, seed=1)
    ch = torch.arange(6).repeat(5, 1)
    ch[2, 4:] = -1
    ch[3, 1] = -1
    model = _trained_once(tiny_config("ddrvq"))
    full = model.encode(x, ch)
    for i in range(5):
        assert torch.equal(model.encode(x[i : i + 1], ch[i : i + 1]), full[i : i + 1]), i


def test_padding_channels_do_not_change_codes() -> None:
    x = eeg_like(2, 4, 5, seed=2)
    ch = torch.tensor([[3, 7, 1, 0], [2, 5, 9, 11]])
    model = _trained_once(tiny_config("ddrvq"))
    codes = model.encode(x, ch)
    garbage = torch.full((2, 3, 5, 200), float("nan"))
    x_pad = torch.cat([x[:, :2], garbage[:, :1], x[:, 2:], garbage[:, 1:]], dim=1)  # pads inside and at the end
    ch_pad = torch.cat([ch[:, :2], torch.full((2, 1), -1), ch[:, 2:], torch.full((2, 2), -1)], dim=1)
    codes_pad = model.encode(x_pad, ch_pad)
    keep = ch_pad[0] >= 0
    assert torch.equal(codes_pad[:, keep], codes)
    assert (codes_pad[:, ~keep] == -1).all()
    out = model(x_pad, ch_pad)  # losses stay finite with NaN in the padding
    assert torch.isfinite(out.loss)
    assert torch.equal(out.codes[:, keep], codes)


def test_fully_padded_window_is_harmless() -> None:
    torch.manual_seed(0)
    model = build_tokenizer(tiny_config("ddrvq"))
    x = eeg_like(2, 3, 4)
    ch = torch.tensor([[-1, -1, -1], [0, 1, 2]])
    out = model(x, ch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert (out.codes[0] == -1).all() and (out.codes[1] >= 0).all()
    model.eval()
    assert torch.equal(model.encode(x, ch)[1:], model.encode(x[1:], ch[1:]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_forward_backward_and_code_shape(variant: str) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(variant)
    model = build_tokenizer(cfg)
    x = eeg_like(2, 3, 4)
    ch = torch.tensor([[0, 1, -1], [2, 3, 4]])
    out = model(x, ch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("encoder."))
    s, lv = cfg.code_shape
    assert out.codes.shape == (2, 3, 4, s, lv) and out.codes.dtype == torch.long
    assert out.usage.shape == (s, lv) and out.perplexity.shape == (s, lv)
    assert (out.codes[0, 2] == -1).all() and (out.codes[:, :2] >= 0).all()
    assert "loss" in out.losses and all(v.ndim == 0 for v in out.losses.values())
    model.eval()
    codes = model.encode(x, ch)
    assert codes.shape == out.codes.shape
    eval_out = model(x, ch)  # eval forward quantizes exactly like encode → decode
    assert torch.equal(eval_out.codes, codes)
    decoded = model.decode(codes, ch)
    for name, pred in decoded.items():
        assert torch.allclose(pred, eval_out.reconstruction.predictions[name], atol=1e-5), name
    rec = model.reconstruct(x, ch)
    assert rec.waveform is not None and rec.waveform.shape == x.shape
    assert set(rec.targets) <= set(rec.predictions)
    assert model.training is False


def test_demo_ddrvq_training_lowers_reconstruction_loss() -> None:
    torch.manual_seed(0)
    cfg = TokenizerConfig.demo("ddrvq", vocab_size=32, max_patches=8)
    model = build_tokenizer(cfg)
    x = eeg_like(2, 4, 4, seed=3)
    ch = torch.tensor([[0, 1, 2, 3], [4, 5, 6, -1]])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def recon(out) -> float:
        return sum(out.losses[k].item() for k in ("time", "amplitude", "phase"))

    history = []
    for _ in range(25):
        out = model(x, ch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append(recon(out))
    assert sum(history[-5:]) / 5 < 0.8 * sum(history[:3]) / 3, history


def test_config_round_trip_and_checkpoint() -> None:
    for cfg in (TokenizerConfig.paper(), TokenizerConfig.demo("neurorvq"), tiny_config("labram")):
        d = cfg.to_dict()
        assert TokenizerConfig.from_dict(json.loads(json.dumps(d))) == cfg
    with pytest.raises(ValueError):
        TokenizerConfig.from_dict({**TokenizerConfig().to_dict(), "bogus": 1})
    with pytest.raises(ValueError):
        TokenizerConfig(codebook_size=40000)  # codes are stored as int16
    with pytest.raises(ValueError):
        TokenizerConfig(variant="labram", levels=3)
    assert TokenizerConfig.paper("labram").levels == 1 and TokenizerConfig.paper("neurorvq").levels == 8
    assert TokenizerConfig.paper().bits_per_patch == 2 * 3 * 13

    x, ch = eeg_like(1, 3, 4), torch.tensor([[0, 1, 2]])
    model = _trained_once(tiny_config("ddrvq"))
    clone = load_tokenizer(model.to_checkpoint()).eval()
    assert torch.equal(clone.encode(x, ch), model.encode(x, ch))


def test_input_validation() -> None:
    model = build_tokenizer(tiny_config())
    with pytest.raises(ValueError):
        model.encode(torch.zeros(1, 2, 9, 200), torch.zeros(1, 2, dtype=torch.long))  # > max_patches
    with pytest.raises(ValueError):
        model.encode(torch.zeros(1, 2, 3, 200), torch.tensor([[0, 32]]))  # id ≥ vocab_size
    with pytest.raises(ValueError):
        model.encode(torch.zeros(1, 2, 3, 100), torch.zeros(1, 2, dtype=torch.long))


# --------------------------------------------------------------------------- distributed


def _ddp_worker(rank: int, world: int, init_file: str, x: torch.Tensor, out_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        rvq = ResidualVectorQuantizer(dim=8, codebook_size=16, levels=2, kmeans_init=True, decay=0.9)
        rvq.train()
        part = x.chunk(world)[rank]
        for _ in range(3):
            rvq(part)
        if rank == 0:
            torch.save(rvq.state_dict(), out_file)
    finally:
        dist.destroy_process_group()


def test_distributed_ema_matches_single_process(tmp_path, monkeypatch) -> None:
    import torch.multiprocessing as mp

    x = clustered(600, 12, 8, spread=0.2)
    torch.manual_seed(0)
    single = ResidualVectorQuantizer(dim=8, codebook_size=16, levels=2, kmeans_init=True, decay=0.9)
    single.train()
    for _ in range(3):
        single(x)
    out_file = str(tmp_path / "state.pt")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), x, out_file), nprocs=2, join=True)
    state = torch.load(out_file)
    for key, value in single.state_dict().items():
        assert torch.allclose(state[key].float(), value.float(), atol=1e-5), key
