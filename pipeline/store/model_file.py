"""Published model files: one writer (`publish`) and one reader (`load`) for every stage.

A model file is a safetensors file whose metadata holds `kind` (tokenizer | pretrain), the model's `config` (JSON)
and its `fingerprint` (pipeline.store.fingerprint.weights_fingerprint: sha256 of config and every weight byte),
plus what the publisher adds (a pretrained model: the tokenizer fingerprint of its codes).

Model files are shared (a tokenizer on a cluster filesystem, a pretrained model sent to a collaborator), so a file
is data from elsewhere and `load` trusts nothing in it before checking it, cheapest first, every failure one line
(`ModelFileError`) naming the file, what is wrong and the fix:
  1. a readable safetensors header (a truncated copy or another format fails here, before any tensor is read);
  2. the kind asked for (a pretrained model given as a tokenizer names both kinds);
  3. the config: JSON, the model config's keys and each value's type;
  4. bounds before any allocation: every integer in the config is at most the largest tensor dimension of the file
     (or its tensor count), then the model is built on torch's meta device (no memory) and its parameter names and
     shapes must equal the file's, which safetensors lists without reading the weights — a `codebook_size` of
     50 000 000 in a file of 64-code codebooks is refused without allocating 12.8 GB;
  5. the fingerprint recomputed from config + weights must equal the recorded one (a forged or altered file fails).
Only then is the real model built and the weights loaded (strict).

Files are written with the process umask (0644 by default; safetensors alone creates them 0600).
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.store.atomic import atomic_path
from pipeline.store.fingerprint import weights_fingerprint

FILE_NAME = "model.safetensors"
KINDS = ("tokenizer", "pretrain")


class ModelFileError(ValueError):
    """A model file that cannot be used; the message is one line naming the file and what is wrong."""


@dataclass(frozen=True)
class ModelFile:
    """What a checked model file holds (no weights)."""

    path: Path
    kind: str
    config: Any  # the typed model config (TokenizerConfig, PretrainConfig)
    config_dict: dict[str, Any]
    fingerprint: str
    metadata: dict[str, str]
    shapes: dict[str, tuple[int, ...]]


# ---------------------------------------------------------------------------------------------
# kinds: how a config is typed and a model built (imported lazily: the data plane never imports torch)


def _builders(kind: str) -> tuple[type, Callable[[dict], Any], Callable[[Any], Any]]:
    """(config class, dict → config, config → model) of a kind."""
    if kind == "tokenizer":
        from pipeline.models.config import TokenizerConfig
        from pipeline.models.tokenizer import build_tokenizer

        return TokenizerConfig, TokenizerConfig.from_dict, build_tokenizer
    if kind == "pretrain":
        from pipeline.models.pretrain import PretrainConfig, PretrainModel

        return PretrainConfig, PretrainConfig.from_dict, PretrainModel
    raise ValueError(f"unknown model kind {kind!r}; kinds: {KINDS}")


def model_path(path: str | Path) -> Path:
    """A model folder's model.safetensors, or the file itself."""
    path = Path(path)
    return path / FILE_NAME if path.is_dir() else path


# ---------------------------------------------------------------------------------------------
# writing


def _umask_mode() -> int:
    """0o666 less the process umask: the mode `open()` would give a new file."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (and set it back at once)
    os.umask(mask)
    return 0o666 & ~mask


def publish(model, path: str | Path, *, kind: str, config: dict[str, Any], extra: dict[str, str] | None = None) -> str:
    """Write `model`'s weights and buffers to `path` (a folder: its model.safetensors) atomically, with its kind,
    config and fingerprint in the metadata; returns the fingerprint."""
    from safetensors.torch import save_file

    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; kinds: {KINDS}")
    reserved = {"kind", "config", "fingerprint"} & set(extra or {})
    if reserved:
        raise ValueError(f"publish: extra metadata may not set {sorted(reserved)}")
    path = Path(path)
    path = path / FILE_NAME if path.suffix != ".safetensors" else path
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    fingerprint = weights_fingerprint(config, tensors)
    metadata = {**(extra or {}), "kind": kind, "config": json.dumps(config), "fingerprint": fingerprint}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, _umask_mode())
    return fingerprint


# ---------------------------------------------------------------------------------------------
# checking (no weights read)


def _check_types(cls: type, data: Any, where: str) -> None:
    """Each value of a config mapping has its field's type (ints are not floats' strings, bools are not ints)."""
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, tp = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(tp):
            _check_types(tp, value, f"{where}.{f.name}")
            continue
        origin = typing.get_origin(tp)
        if origin is tuple:
            args = [a for a in typing.get_args(tp) if a is not Ellipsis]
            if not isinstance(value, list) or not all(_is(v, args[0]) for v in value):
                raise TypeError(f"{where}.{f.name}: expected a list of {args[0].__name__}, got {value!r}")
        elif not _is(value, tp):
            raise TypeError(f"{where}.{f.name}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _is(value: Any, tp: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True  # a type this check does not know: the config class's own checks decide


def _ints(data: Any, where: str) -> typing.Iterator[tuple[str, int]]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _ints(v, f"{where}.{k}" if where else k)
    elif isinstance(data, int) and not isinstance(data, bool):
        yield where, data


def inspect(path: str | Path, kind: str) -> ModelFile:
    """Check a model file without reading its weights (steps 1–4 of the module docstring)."""
    import torch
    from safetensors import safe_open

    path = model_path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no {kind} model file (run the stage that publishes it first)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            shapes = {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types (SafetensorError, OSError, …)
        raise ModelFileError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                             "the copy may be truncated — copy it again or re-publish it") from None
    found = metadata.get("kind")
    if found != kind:
        what = f"a {found} model file" if found in KINDS else (
            f"a file of kind {found!r}" if found else "a file without a kind tag (not a published model file of this "
                                                      "pipeline, or one published before kinds were recorded)")
        raise ModelFileError(f"{path}: {what}, but a {kind} model file is needed here — pass the {kind}'s folder")
    cls, from_dict, build = _builders(kind)
    try:
        config_dict = json.loads(metadata["config"])
        _check_types(cls, config_dict, "config")
        config = from_dict(config_dict)
    except KeyError as exc:
        raise ModelFileError(f"{path}: its metadata has no {exc.args[0]!r}; re-publish the model") from None
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: metadata config is invalid ({str(exc).splitlines()[0]}); "
                             "the file was altered or is not from this pipeline — re-publish it") from None
    if not isinstance(metadata.get("fingerprint"), str) or not metadata["fingerprint"]:
        raise ModelFileError(f"{path}: its metadata has no fingerprint; re-publish the model")
    # Bounds before building: sizes that the weights cannot back are refused before any module exists.
    bound = max([len(shapes), *(d for s in shapes.values() for d in s)] or [0])
    for where, value in _ints(config_dict, "config"):
        if value > bound:
            raise ModelFileError(f"{path}: metadata {where} = {value} is larger than any dimension of the file's "
                                 f"weights (at most {bound}); the file was altered — re-publish it")
    with torch.device("meta"):  # shapes only: no memory behind any tensor
        expected = {k: tuple(v.shape) for k, v in build(config).state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or unexpected:
        name = (missing or unexpected)[0]
        raise ModelFileError(f"{path}: weights do not match its config ({len(missing)} missing, {len(unexpected)} "
                             f"unexpected, e.g. {name!r}); the file was altered or is not a {kind} of this pipeline")
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise ModelFileError(f"{path}: tensor {name!r} has shape {list(shapes[name])} but its config implies "
                                 f"{list(shape)}; the file was altered — re-publish it")
    return ModelFile(path, kind, config, config_dict, metadata["fingerprint"], metadata, shapes)


def _verified_tensors(info: ModelFile) -> dict:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(info.path))
    except Exception as exc:
        raise ModelFileError(f"{info.path}: weights unreadable ({str(exc).splitlines()[0]}); copy it again") from None
    actual = weights_fingerprint(info.config_dict, tensors)
    if actual != info.fingerprint:
        raise ModelFileError(f"{info.path}: recorded fingerprint {info.fingerprint} does not match its config and "
                             f"weights ({actual}); the file was altered or forged — re-publish it")
    return tensors


def verified_fingerprint(path: str | Path, kind: str) -> ModelFile:
    """The checked file's description, its fingerprint recomputed from config + weights (no model built)."""
    info = inspect(path, kind)
    _verified_tensors(info)
    return info


def load(path: str | Path, kind: str):
    """(model, ModelFile) of a published model file, every check of the module docstring passed."""
    info = inspect(path, kind)
    tensors = _verified_tensors(info)
    _, _, build = _builders(kind)
    model = build(info.config)
    model.load_state_dict(tensors, strict=True)
    return model, info
