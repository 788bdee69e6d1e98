"""Deep baselines from braindecode, trained from scratch as fine-tuning methods (pipeline.train.finetune).

    eegnet          braindecode.models.EEGNet (Lawhern et al. 2018)
    shallow_fbcsp   braindecode.models.ShallowFBCSPNet (Schirrmeister et al. 2017)
    labram_scratch  braindecode.models.Labram, randomly initialised (the architecture, not its pretraining)
    cbramod_scratch braindecode.models.CBraMod, randomly initialised

They see the same windows as the foundation model (x [B, C, P, 200] at 200 Hz, µV/100; the dataset's fixed channel
slots, padding zeroed) and go through the same loop, seeds, selection rule and metrics; `WindowNet` adapts the
(x, ch) call of the shared fine-tuning code to braindecode's [B, C, T] input.
"""

from __future__ import annotations

import logging
import sys
import types

import torch
from einops import rearrange
from torch import nn

log = logging.getLogger(__name__)

ARCHITECTURES = {"eegnet": "EEGNet", "shallow_fbcsp": "ShallowFBCSPNet", "labram_scratch": "Labram",
                 "cbramod_scratch": "CBraMod"}


def _torchaudio_stub(name: str) -> types.ModuleType:
    """A module whose every attribute is a class that refuses to be built (so braindecode's class bodies that
    subclass torchaudio transforms still define), naming the missing library."""
    module = types.ModuleType(name)

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)

        class Unavailable(nn.Module):
            def __init__(self, *args, **kwargs) -> None:
                raise RuntimeError(f"{name}.{attr} is unavailable: torchaudio's native library does not load "
                                   "against this torch build (install the torchaudio build matching torch)")

        return Unavailable

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    module.__path__ = []  # a package, so `import torchaudio.functional` resolves to the stubs below
    return module


def import_braindecode_models():
    """`braindecode.models`. braindecode imports torchaudio at package import (for filters and spectrogram layers
    none of the models used here need); PyPI's torchaudio wheel links CUDA libraries, so next to a CPU-only torch it
    fails to load. Then, and only then, torchaudio is replaced by stubs that fail when used, with a warning."""
    try:
        import torchaudio  # noqa: F401
    except OSError as exc:
        log.warning("torchaudio does not load (%s); braindecode's torchaudio-based layers are disabled", exc)
        for name in ("torchaudio", "torchaudio.functional", "torchaudio.transforms"):
            sys.modules[name] = _torchaudio_stub(name)
        sys.modules["torchaudio"].functional = sys.modules["torchaudio.functional"]  # type: ignore[attr-defined]
        sys.modules["torchaudio"].transforms = sys.modules["torchaudio.transforms"]  # type: ignore[attr-defined]
    import braindecode.models

    return braindecode.models


class WindowNet(nn.Module):
    """(x [B, C, P, T], ch [B, C]) → logits [B, n_outputs] through a braindecode model on [B, C, P·T].

    `slot_names`: for Labram, which looks up a position embedding per channel name. Trained from scratch, those
    embeddings are free parameters, so any fixed one-to-one map from the dataset's channel slots to Labram's
    canonical names is equivalent; the first C names are used (the slots' own names may be bipolar pairs that
    Labram's list does not hold)."""

    def __init__(self, net: nn.Module, slot_names: list[str] | None = None) -> None:
        super().__init__()
        self.net = net
        self.slot_names = slot_names

    def forward(self, x: torch.Tensor, ch: torch.Tensor) -> torch.Tensor:
        x = x * (ch >= 0)[:, :, None, None].to(x.dtype)  # padding / masked channel slots carry zeros
        x = rearrange(x, "b c p t -> b c (p t)")
        return self.net(x) if self.slot_names is None else self.net(x, ch_names=self.slot_names)


def build_window_model(method: str, *, n_chans: int, n_times: int, n_outputs: int) -> tuple[WindowNet, dict]:
    """The braindecode model of `method` for windows of n_chans × n_times samples, and its identity (for the
    checkpoint: a changed architecture must not resume an old run)."""
    if method not in ARCHITECTURES:
        raise ValueError(f"not a deep baseline: {method!r} (known: {sorted(ARCHITECTURES)})")
    models = import_braindecode_models()
    import braindecode

    name = ARCHITECTURES[method]
    net = getattr(models, name)(n_chans=n_chans, n_outputs=n_outputs, n_times=n_times)
    identity = {"architecture": f"braindecode.models.{name}", "braindecode": braindecode.__version__,
                "n_chans": n_chans, "n_times": n_times, "n_outputs": n_outputs}
    slot_names = None
    if name == "Labram":
        from braindecode.models.labram import LABRAM_CHANNEL_ORDER

        if n_chans > len(LABRAM_CHANNEL_ORDER):
            raise ValueError(f"labram_scratch: {n_chans} channels, more than Labram's {len(LABRAM_CHANNEL_ORDER)}")
        slot_names = list(LABRAM_CHANNEL_ORDER[:n_chans])
    return WindowNet(net, slot_names), identity
