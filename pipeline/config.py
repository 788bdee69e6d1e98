"""Typed configuration: YAML (validated by `workflow/schemas/config.schema.yaml`) → frozen dataclasses.

A dataset entry inherits the global `preprocess` and `patch` sections and may override any key of
them; `resolve_dataset` returns the merged, typed view one stage needs. Stages receive their section
as JSON (`--settings`), so Snakemake's params — and therefore its rerun triggers — see exactly the
values the stage uses and nothing else.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

Role = Literal["pretrain", "downstream", "both"]
# auto/edf/bdf/bids: generic; the rest are dataset adapters reading a public release's layout (pipeline.io.adapters)
Format = Literal["auto", "edf", "bdf", "bids", "tuab", "tuev", "chbmit", "bciciv2a", "physionet_mi", "seedv", "shu_mi",
                 "mental_arithmetic", "epochs_fif", "trials_npz"]


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names it."""


@dataclass(frozen=True)
class MontageConfig:
    channels: str | tuple[str, ...] | None = "standard_1020"  # channel-set name, explicit list, or None = all
    positions: str | None = None  # mne montage name or electrodes.tsv: map cap electrodes by position
    max_distance_mm: float = 20.0


@dataclass(frozen=True)
class IngestConfig:
    subject_regex: str | None = None  # first group = subject id; BIDS uses its own entities
    min_duration_s: float = 0.0  # shorter recordings are rejected (set to the window length)
    honour_bids_status: bool = True  # channels.tsv status=bad → excluded


@dataclass(frozen=True)
class PreprocessConfig:
    sfreq: float = 200.0
    l_freq: float | None = 0.1
    h_freq: float | None = 75.0
    mains: float | None = 60.0  # notch at mains and its harmonics below Nyquist; None = no notch
    scale: float = 0.01  # µV → µV/100
    reject_uv: float = 1000.0  # a 1 s patch above this |amplitude| (µV) rejects its windows
    flat_uv: float = 0.5  # peak-to-peak below this (µV) in a second counts as flat
    max_bad_fraction: float = 0.5  # channel masked when flat/NaN in more than this share of seconds
    chunk_s: float = 600.0  # streaming chunk; memory is O(chunk × channels)


@dataclass(frozen=True)
class PatchConfig:
    window_s: float = 30.0
    stride_s: float | None = None  # None = window_s (no overlap)
    patch_len: int = 200
    dtype: Literal["float16", "float32"] = "float16"
    windows_per_shard: int = 256
    chunk_windows: int = 8  # zarr chunk along windows: a batch reads whole chunks
    compressor: Literal["none", "lz4", "zstd"] = "lz4"


@dataclass(frozen=True)
class SplitConfig:
    # Subject-independent splits: a release's official split wins (TUAB/TUEV train/eval, BCIC-IV-2a T/E
    # sessions); otherwise subjects listed here go to val/test, everyone else to train.
    val: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    # Validation carved from the training part: this fraction of the training subjects (unit "subject",
    # chosen by a hash of the subject id, so stable) or, when there are too few subjects (the demo's one),
    # the last fraction of each training recording's windows (unit "time").
    val_fraction: float = 0.0
    val_unit: Literal["subject", "time"] = "subject"
    official: bool = True  # use the release's own split where it has one (false: subjects as listed here only)

    def split_of(self, subject: str, official: str = "") -> str:
        if subject in self.test:
            return "test"
        if subject in self.val:
            return "val"
        return (official if self.official else "") or "train"


@dataclass(frozen=True)
class LabelConfig:
    """Which windows become labelled samples for fine-tuning, and their classes (config/datasets/*.yaml)."""

    mode: Literal["none", "recording", "events", "intervals", "spans"] = "none"
    classes: tuple[str, ...] = ()  # class order = class index; binary tasks list the negative class first
    map: Mapping[str, str] = field(default_factory=dict)  # release label → class; others must already be a class
    window_s: float | None = None  # the downstream window (None: the dataset's patch.window_s)
    offset_s: float = 0.0  # events: window starts at onset + offset_s
    background: str | None = None  # intervals: class of windows outside every interval (None: dropped)

    def class_of(self, label: str | None) -> str | None:
        if not label:
            return None
        label = self.map.get(label, label)
        return label if label in self.classes else None


@dataclass(frozen=True)
class DaskConfig:
    scheduler: str | None = None  # address of an existing dask.distributed scheduler
    n_workers: int = 2  # local cluster size when no scheduler is given; 1 = run in-process


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    path: str
    format: Format = "auto"
    role: Role = "pretrain"
    fetch: str | None = None  # "demo": produced by the fetch_demo_corpus rule
    description: str = ""
    montage: MontageConfig = field(default_factory=MontageConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)


@dataclass(frozen=True)
class WheelSource:
    requirement: str  # pip requirement, pinned with ==
    sha256: str
    members: tuple[tuple[str, str], ...]  # (path inside the wheel, path under the cache) — file or folder prefix
    exclude: tuple[str, ...] = ()  # glob patterns of members not to extract


# ---------------------------------------------------------------------------------------------
# torch stages


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 8  # global windows per optimizer step, whatever the number of processes
    grad_accum: int = 1  # micro-batches per step (memory); the global batch and the run stay the same
    max_steps: int = 200
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    warmup_steps: int = 20
    grad_clip: float = 3.0
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    checkpoint_every: int = 50
    eval_every: int = 50
    log_every: int = 5
    buffer_chunks: int = 8  # shuffle buffer, in chunks
    num_workers: int = 0  # DataLoader workers per process
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-reproducible resumes


@dataclass(frozen=True)
class TokenizerSection:
    name: str = "ddrvq-demo"  # output folder: <results>/tokenizer/<name>
    size: Literal["demo", "paper"] = "demo"
    variant: Literal["ddrvq", "ddrvq_time", "ddrvq_freq", "labram", "neurorvq"] = "ddrvq"
    model: Mapping[str, Any] = field(default_factory=dict)  # overrides of pipeline.models.config.TokenizerConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    heldout_split: str = "test"  # windows of these subjects are never trained on; evaluation uses them
    eval_windows: int = 32
    pretrained: str | None = None  # folder of a tokenizer trained elsewhere (model.safetensors): not retrained


@dataclass(frozen=True)
class MaskConfig:
    """Which patches pretraining hides (pipeline.train.masking); defaults = the public BrainRVQ code's."""

    strategy: Literal["importance", "random"] = "importance"
    ratio: float = 0.5  # patches drawn = floor(ratio · valid patches) per window
    temperature: float = 0.8  # softmax temperature on the z-scored score
    weight_start: float = 0.2  # curriculum: information weight w rises linearly over training…
    weight_end: float = 0.7  # …from weight_start to weight_end
    keep_prob: float = 0.1  # a drawn patch is left visible with this probability
    max_run: int = 5  # no run of consecutive masked tokens (channel-major) longer than this
    feature_weights: tuple[float, ...] = (0.30, 0.25, 0.20, 0.15, 0.10)  # neural, clean, complexity, irreg., mobility

    def __post_init__(self) -> None:
        if self.strategy not in ("importance", "random"):
            raise ValueError(f"strategy must be 'importance' or 'random', got {self.strategy!r}")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {self.ratio}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.keep_prob <= 1.0:
            raise ValueError(f"keep_prob must be in [0, 1], got {self.keep_prob}")
        if self.max_run < 1:
            raise ValueError(f"max_run must be >= 1, got {self.max_run}")


@dataclass(frozen=True)
class PretrainSection:
    name: str = "brainrvq-demo"  # output folder: <results>/pretrain/<name>
    size: Literal["demo", "base"] = "demo"
    # overrides of pipeline.models.pretrain.PretrainConfig (level_weights, hierarchical, symmetric) and of
    # its backbone (model: {backbone: {depth: 6}})
    model: Mapping[str, Any] = field(default_factory=dict)
    mask: MaskConfig = field(default_factory=MaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    heldout_split: str = "test"  # evaluated, never trained on
    eval_windows: int = 32
    # An existing code store to reuse (another checkout, a shared filesystem): <codes>/<dataset>/ as written by
    # extract-codes. null = this run's own <results>/codes/<tokenizer name>/. Its fingerprint must match the
    # tokenizer's.
    codes: str | None = None
    # Pretraining ablations, each a run <results>/pretrain/<name> with these overrides of `model` and `mask`
    # (e.g. random-mask: {mask: {strategy: random}}; flat-heads: {model: {hierarchical: false}}).
    ablations: Mapping[str, Any] = field(default_factory=dict)

    def ablation(self, name: str) -> "PretrainSection":
        """The section of ablation run `name`: this one with its overrides, named `name`, without ablations."""
        if name not in self.ablations:
            raise ConfigError(f"pretrain.ablations: no ablation {name!r}; configured: {sorted(self.ablations)}")
        over = dict(self.ablations[name])
        unknown = sorted(set(over) - {"model", "mask"})
        if unknown:
            raise ConfigError(f"pretrain.ablations.{name}: only model and mask can be overridden, not {unknown}")
        model = {**dict(self.model), **dict(over.get("model", {}))}
        mask = from_mapping(MaskConfig, {**to_dict(self.mask), **dict(over.get("mask", {}))},
                            f"pretrain.ablations.{name}.mask")
        return dataclasses.replace(self, name=name, model=model, mask=mask, ablations={})


@dataclass(frozen=True)
class FinetuneSection:
    """Downstream evaluation, per dataset × method × seed (pipeline.train.finetune)."""

    # full: pretrained, all layers (layer-wise lr decay); probe: pretrained, frozen backbone + linear head;
    # scratch: the same backbone randomly initialised; logreg: log band powers + logistic regression (a floor);
    # ablation:<name>: full fine-tuning of the pretraining ablation <name> (pretrain.ablations)
    methods: tuple[str, ...] = ("full", "probe", "scratch", "logreg")
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    probe_lr: float = 5e-3
    layer_decay: float = 0.65
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1  # multi-class CE only
    class_weights: bool = False  # inverse-frequency class weights in the loss
    dropout: float = 0.0
    grad_clip: float = 3.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    num_workers: int = 0
    deterministic: bool = False
    primary_metric: str = "balanced_accuracy"  # model selection on the validation split


@dataclass(frozen=True)
class PipelineConfig:
    results: str
    cache: str
    datasets: Mapping[str, DatasetConfig]
    demo_corpus: Mapping[str, WheelSource]
    dask: DaskConfig = field(default_factory=DaskConfig)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)


# ---------------------------------------------------------------------------------------------
# generic mapping → dataclass conversion (strict: unknown keys are errors, naming where they are)


def from_mapping(cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: must not be null")
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {args}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin in (Mapping, dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def to_dict(obj: Any) -> Any:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


# ---------------------------------------------------------------------------------------------
# the whole file


def _merged(base: Mapping[str, Any] | None, override: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**dict(base or {}), **dict(override or {})}


def merge_dataset_files(raw: Mapping[str, Any], *, base_dir: Path | None = None) -> dict[str, Any]:
    """`dataset_files: [config/datasets/tuab.yaml, …]` → their `datasets:` entries merged into `datasets`.

    An entry written in the config itself wins key by key over the file's (e.g. a local `path:`), so a
    dataset is a YAML entry shared by every config that lists it.
    """
    raw = dict(raw)
    datasets: dict[str, Any] = {}
    for name in raw.get("dataset_files") or []:
        # relative to base_dir (the workflow), else the current folder, else this repository
        candidates = [Path(name)] if Path(name).is_absolute() else [
            d / name for d in (base_dir, Path.cwd(), Path(__file__).resolve().parents[1]) if d is not None]
        path = next((c for c in candidates if c.is_file()), candidates[0])
        if not path.is_file():
            raise ConfigError(f"dataset_files: {name} does not exist (looked in {[str(c) for c in candidates]})")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, Mapping) or not isinstance(loaded.get("datasets"), Mapping):
            raise ConfigError(f"{path}: expected a top-level `datasets:` mapping")
        datasets.update(loaded["datasets"])
    for name, entry in dict(raw.get("datasets") or {}).items():
        datasets[name] = {**dict(datasets.get(name, {})), **dict(entry or {})}
    raw["datasets"] = datasets
    return raw


def parse_config(raw: Mapping[str, Any], *, base_dir: Path | None = None) -> PipelineConfig:
    """Build the typed config from an already-loaded YAML mapping (as Snakemake holds it)."""
    raw = merge_dataset_files(raw, base_dir=base_dir)
    raw.pop("dataset_files", None)
    defaults = {k: raw.get(k) for k in ("preprocess", "patch", "montage", "ingest")}
    datasets = {}
    for name, entry in dict(raw.get("datasets") or {}).items():
        entry = dict(entry)
        for section in ("preprocess", "patch", "montage", "ingest"):
            entry[section] = _merged(defaults[section], entry.get(section))
        # A dataset's mains frequency is part of its identity; the notch uses it.
        if "mains" in entry:
            entry["preprocess"]["mains"] = entry.pop("mains")
        ds = from_mapping(DatasetConfig, {"name": name, **entry}, f"datasets.{name}")
        if ds.ingest.min_duration_s == 0.0:
            ds = dataclasses.replace(ds, ingest=dataclasses.replace(ds.ingest, min_duration_s=ds.patch.window_s))
        datasets[name] = ds
    if not datasets:
        raise ConfigError("datasets: at least one dataset is required")
    wheels = {
        name: from_mapping(
            WheelSource,
            {**w, "members": [(m["from"], m["to"]) for m in w.get("members", [])]},
            f"demo_corpus.{name}",
        )
        for name, w in dict(raw.get("demo_corpus") or {}).items()
    }
    cfg = PipelineConfig(
        results=str(raw.get("results", "results")),
        cache=str(raw.get("cache", "resources/cache")),
        datasets=datasets,
        demo_corpus=wheels,
        dask=from_mapping(DaskConfig, raw.get("dask"), "dask"),
        tokenizer=from_mapping(TokenizerSection, raw.get("tokenizer"), "tokenizer"),
        pretrain=from_mapping(PretrainSection, raw.get("pretrain"), "pretrain"),
        finetune=from_mapping(FinetuneSection, raw.get("finetune"), "finetune"),
    )
    return cfg


def load_config(path: str | Path) -> PipelineConfig:
    path = Path(path)
    with path.open() as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a YAML mapping at top level")
    return parse_config(raw)


def load_settings(cls: type, text: str | None, where: str = "--settings") -> Any:
    """Parse a stage's `--settings` (JSON text, or @file) into its dataclass; empty = defaults."""
    if not text:
        return cls()
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc})") from None
    return from_mapping(cls, data, where)


@dataclass(frozen=True)
class PatchSettings:
    """What the patch stage needs: the patch section and the dataset's subject splits."""

    patch: PatchConfig = field(default_factory=PatchConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)  # mode none: tiled, unlabelled (pretraining)


def stage_settings(ds: DatasetConfig, stage: str) -> Any:
    """The typed settings one stage of one dataset runs with ("samples": the labelled downstream windows)."""
    by_stage = {
        "ingest": ds.ingest,
        "montage": ds.montage,
        "preprocess": ds.preprocess,
        "patch": PatchSettings(patch=ds.patch, splits=ds.splits),
    }
    if ds.labels.mode != "none":
        window = ds.labels.window_s or ds.patch.window_s
        # Chunks and shards keep about the pretraining windows' duration: 1 s samples in 4-window chunks would
        # make every batch decode dozens of tiny chunks.
        scale = max(1, int(round(ds.patch.window_s / window)))
        samples = dataclasses.replace(ds.patch, window_s=window, stride_s=None,
                                      chunk_windows=ds.patch.chunk_windows * scale,
                                      windows_per_shard=ds.patch.windows_per_shard * scale)
        by_stage["samples"] = PatchSettings(patch=samples, splits=ds.splits, labels=ds.labels)
    if stage not in by_stage:
        raise ConfigError(f"no settings for stage {stage!r}; known: {sorted(by_stage)}")
    return by_stage[stage]


def stage_settings_json(ds: DatasetConfig, stage: str) -> str:
    return json.dumps(to_dict(stage_settings(ds, stage)), sort_keys=True)
