"""Tokenizer models: EMA residual vector quantizers and the DD-RVQ / LaBraM / NeuroRVQ tokenizers."""

from .config import VARIANTS, TokenizerConfig
from .rvq import ResidualVectorQuantizer, RVQResult, VectorQuantizer, VQResult
from .tokenizer import (
    DDRVQTokenizer,
    NeuroRVQTokenizer,
    Reconstruction,
    TokenizerOutput,
    build_tokenizer,
    load_tokenizer,
)

__all__ = [
    "VARIANTS",
    "TokenizerConfig",
    "VectorQuantizer",
    "ResidualVectorQuantizer",
    "VQResult",
    "RVQResult",
    "DDRVQTokenizer",
    "NeuroRVQTokenizer",
    "Reconstruction",
    "TokenizerOutput",
    "build_tokenizer",
    "load_tokenizer",
]
