"""The quantizers under bf16 autocast (the paper config trains the tokenizer with mixed_precision bf16):
codebooks and EMA statistics are fp32 buffers, so the quantizer math runs in fp32 whatever the autocast."""

from __future__ import annotations

import torch

from pipeline.models.config import TokenizerConfig
from pipeline.models.rvq import ResidualVectorQuantizer
from pipeline.models.tokenizer import build_tokenizer


def test_tokenizer_trains_under_bf16_autocast_with_dead_code_restarts():
    # found by benchmarks/gpu_check.py --smoke: the dead-code restart wrote bf16 rows into the fp32 codebook
    # ("Index put requires the source and destination dtypes match") on the first restart
    torch.manual_seed(0)
    model = build_tokenizer(TokenizerConfig.demo(vocab_size=32, max_patches=8)).train()
    x, ch = torch.randn(2, 3, 4, 200), torch.arange(3).repeat(2, 1)
    for _ in range(3):  # step 1 is the k-means init; restarts run from step 2 (demo threshold 2.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, ch)
        out.loss.backward()
        assert torch.isfinite(out.loss)
    for name, buf in model.named_buffers():
        if buf.is_floating_point():
            assert buf.dtype == torch.float32, name


def test_code_search_is_the_same_under_autocast():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=32, codebook_size=512, levels=3).eval()
    x = torch.randn(4096, 32)
    plain = rvq.encode(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = rvq.encode(x)
        trained = rvq.train()(x).codes
    assert torch.equal(plain, cast)
    assert torch.equal(plain, trained)  # the training forward assigns before it updates the codebooks
