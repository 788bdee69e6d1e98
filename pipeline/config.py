"""Typed configuration: YAML (validated by `workflow/schemas/config.schema.yaml`) → frozen dataclasses.

A dataset entry inherits the global `preprocess` and `patch` sections and may override any key of
them. `job_settings` returns what one job reads (a stage's section of one dataset, one pretraining run without
the others, one fine-tuning method's keys without the lists of methods and seeds); it is the rules' params, the
stage's `--settings` JSON and the training runs' checkpoint identity, so a rule reruns when, and only when, a
setting its job reads changes. Model sections are typed overrides of the model presets: an unknown key is an
error naming the key, its section and the nearest valid name, before any job runs.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

import yaml

Role = Literal["pretrain", "downstream", "both"]
# auto/edf/bdf/bids: generic; the rest are dataset adapters reading a public release's layout (pipeline.io.adapters)
Format = Literal["auto", "edf", "bdf", "bids", "tuab", "tuev", "chbmit", "bciciv2a", "physionet_mi", "seedv", "shu_mi",
                 "mental_arithmetic", "epochs_fif", "trials_npz"]


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names it."""


# Code below the shards (importance features, the band-power baseline, fine-tuning, embed, the models' patch size)
# reads 1 s patches of 200 samples: these two settings exist to be explicit, and other values are refused.
SFREQ = 200.0
PATCH_LEN = 200

# Names that become folder names, wildcards and shell arguments (datasets, runs, ablations, demo wheels, the
# tokenizer): a letter or digit first (no hidden folders, no `..`, no option-like `-x`), then letters, digits,
# `_ . -`. Dataset files are meant to be shared, so a name is data from elsewhere: nothing that a shell, a path or
# a regex would read as syntax gets through. The schema holds the same pattern (a test keeps them equal).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


# Fine-tuning methods (pipeline.train.finetune): the schema's `finetune.methods` pattern is built from the same
# names (a test keeps them equal); `check_method` is what the config and the finetune CLI both validate with.
CLASSICAL_METHODS = ("logreg", "raw_logreg", "tangent_logreg")
DEEP_METHODS = ("eegnet", "shallow_fbcsp", "labram_scratch", "cbramod_scratch")
BASELINE_METHODS = CLASSICAL_METHODS + DEEP_METHODS
FINETUNE_METHODS = ("full", "probe", "scratch") + BASELINE_METHODS
ABLATION_PREFIX = "ablation:"
TOKENIZER_PREFIX = "tokenizer:"  # tokenizer:<variant>: the pretraining run on that tokenizer variant's codes
TOKENIZER_VARIANTS = ("ddrvq", "ddrvq_time", "ddrvq_freq", "labram", "neurorvq")


def check_method(method: Any, where: str) -> str:
    """`method` when it is a fine-tuning method (or `ablation:<run>` with a safe run name); ConfigError otherwise."""
    if isinstance(method, str) and method.startswith(ABLATION_PREFIX):
        check_name(method[len(ABLATION_PREFIX):], f"{where} ({method!r})")
        return method
    if isinstance(method, str) and method.startswith(TOKENIZER_PREFIX):
        variant = method[len(TOKENIZER_PREFIX):]
        if variant not in TOKENIZER_VARIANTS:
            raise ConfigError(f"{where}: {method!r} names no tokenizer variant; valid: "
                              + ", ".join(TOKENIZER_PREFIX + v for v in TOKENIZER_VARIANTS))
        return method
    if method not in FINETUNE_METHODS:
        close = difflib.get_close_matches(str(method), FINETUNE_METHODS, n=1)
        raise ConfigError(f"{where}: unknown fine-tuning method {method!r}"
                          + (f" (did you mean {close[0]!r}?)" if close else "")
                          + f"; valid: {', '.join(FINETUNE_METHODS)}, {ABLATION_PREFIX}<pretrain.ablations name>, "
                          f"{TOKENIZER_PREFIX}<tokenizer.variants name>")
    return method


def check_name(name: Any, where: str) -> str:
    """`name` when it is a safe name; ConfigError naming it and the rule otherwise."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: name {name!r} is not allowed — names start with a letter or digit and use only "
                          "letters, digits, '_', '.' and '-' (at most 64 characters); rename it")
    return name


@dataclass(frozen=True)
class MontageConfig:
    channels: str | tuple[str, ...] | None = "standard_1020"  # channel-set name, explicit list, or None = all
    positions: str | None = None  # mne montage name or electrodes.tsv: map cap electrodes by position
    max_distance_mm: float = 20.0


@dataclass(frozen=True)
class IngestConfig:
    subject_regex: str | None = None  # first group = subject id; BIDS uses its own entities
    min_duration_s: float | None = None  # shorter recordings are rejected; null = one window (patch.window_s)
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
    # A validation or test split with one class stops the patch stage (its scores are degenerate); true: warn only.
    allow_single_class: bool = False

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
    # a stage with fewer recordings to process runs them in-process, without starting a local cluster (whose
    # start-up costs more wall time than 2 workers save on a few recordings: docs/benchmarks.md, "Start-up")
    cluster_min_recordings: int = 16


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
    # datasets.<name>.finetune: this dataset's fine-tuning section (the top-level one updated with its keys);
    # None = the top-level section. Methods and seeds stay global: the table compares them across datasets.
    finetune: "FinetuneSection | None" = None


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
    micro_batch: int | None = None  # windows per device per forward (replaces grad_accum when set); lr: see loop.py
    max_steps: int = 200
    # Epoch-held schedules (the published recipe's): when set, max_steps / warmup_steps are derived from the corpus
    # at run time (steps per epoch = training windows // batch_size, as the published loaders drop the last batch).
    epochs: int | None = None
    warmup_epochs: int | None = None
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
    buffer_chunks: int = 8  # shuffle buffer, in chunks (per loader stream)
    # loader streams: chunks dealt to this many streams, each global batch a slice of every stream; a multiple of
    # the process count makes every process read only its own chunks (pipeline/data/windows.py); divides batch_size
    loader_streams: int = 1
    num_workers: int = 0  # DataLoader workers per process
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-reproducible resumes
    compile: bool = False  # torch.compile each transformer block (CUDA: fewer launches; first steps compile)


def with_epochs(tc: TrainConfig, n_windows: int, *, where: str = "train") -> TrainConfig:
    """`tc` with max_steps and warmup_steps derived from `epochs` / `warmup_epochs` over a corpus of `n_windows`
    training windows (unchanged when both are unset)."""
    if tc.epochs is None and tc.warmup_epochs is None:
        return tc
    per_epoch = n_windows // tc.batch_size
    if per_epoch < 1:
        raise ConfigError(f"{where}.epochs: {n_windows} training windows hold no batch of {tc.batch_size} "
                          f"(lower {where}.batch_size or use max_steps)")
    changes: dict[str, int] = {}
    if tc.epochs is not None:
        changes["max_steps"] = tc.epochs * per_epoch
    if tc.warmup_epochs is not None:
        changes["warmup_steps"] = tc.warmup_epochs * per_epoch
    return dataclasses.replace(tc, **changes)


class Overrides(collections.abc.Mapping):
    """A typed partial config: a field left null takes the preset's value (demo/paper/base size). As a mapping it
    holds only the fields that are set, so `preset(**overrides)` applies exactly what the user wrote.

    `derived` names the model fields that are not settings, and where their value comes from."""

    derived: ClassVar[Mapping[str, str]] = {}

    def __iter__(self):
        return (f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in dataclasses.fields(self)} or getattr(self, key) is None:
            raise KeyError(key)
        return getattr(self, key)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def merged(self, other: "Overrides") -> "Overrides":
        """These overrides with `other`'s set fields on top (nested overrides merged field by field)."""
        changes = {}
        for key, value in other.items():
            mine = getattr(self, key)
            changes[key] = mine.merged(value) if isinstance(value, Overrides) and mine is not None else value
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TokenizerModelSettings(Overrides):
    """tokenizer.model: overrides of pipeline.models.config.TokenizerConfig's preset (tokenizer.size)."""

    derived: ClassVar[Mapping[str, str]] = {
        "variant": "tokenizer.variant", "vocab_size": "the channel vocabulary (resources/channel_vocabulary)",
        "patch_size": "patch.patch_len", "max_patches": "the windows' patch count (patch.window_s)"}
    embed_dim: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_ratio: float | None = None
    qkv_bias: bool | None = None
    conv_channels: int | None = None
    decoder_dim: int | None = None
    decoder_depth: int | None = None
    decoder_heads: int | None = None
    codebook_size: int | None = None
    code_dim: int | None = None
    levels: int | None = None
    decay: float | None = None
    eps: float | None = None
    l2_normalize: bool | None = None
    kmeans_init: bool | None = None
    kmeans_iters: int | None = None
    dead_code_threshold: float | None = None
    commitment_weight: float | None = None
    time_weight: float | None = None
    amplitude_weight: float | None = None
    phase_weight: float | None = None
    signal_weight: float | None = None


@dataclass(frozen=True)
class BackboneSettings(Overrides):
    """pretrain.model.backbone: overrides of pipeline.models.backbone.BackboneConfig's preset (pretrain.size)."""

    derived: ClassVar[Mapping[str, str]] = {
        "vocab_size": "the channel vocabulary (resources/channel_vocabulary)", "patch_size": "patch.patch_len",
        "max_patches": "the windows' patch count (patch.window_s)"}
    embed_dim: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_ratio: float | None = None
    qkv_bias: bool | None = None
    conv_channels: int | None = None
    pos_init_std: float | None = None
    time_bias_max_slope: float | None = None


@dataclass(frozen=True)
class PretrainModelSettings(Overrides):
    """pretrain.model: overrides of pipeline.models.pretrain.PretrainConfig (and of its backbone)."""

    derived: ClassVar[Mapping[str, str]] = {
        "domains": "the tokenizer's codes (tokenizer.variant)", "levels": "the tokenizer's codes (tokenizer.model)",
        "codebook_size": "the tokenizer's codes (tokenizer.model.codebook_size)"}
    backbone: BackboneSettings | None = None
    level_weights: tuple[float, ...] | None = None
    hierarchical: bool | None = None
    symmetric: bool | None = None


@dataclass(frozen=True)
class TokenizerSection:
    name: str = "ddrvq-demo"  # output folder: <results>/tokenizer/<name>
    size: Literal["demo", "paper"] = "demo"
    variant: Literal["ddrvq", "ddrvq_time", "ddrvq_freq", "labram", "neurorvq"] = "ddrvq"  # TOKENIZER_VARIANTS
    model: TokenizerModelSettings = field(default_factory=TokenizerModelSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    heldout_split: str = "test"  # windows of these subjects are never trained on; evaluation uses them
    eval_windows: int = 32
    pretrained: str | None = None  # folder of a tokenizer trained elsewhere (model.safetensors): not retrained
    # Tokenizer ablations: each variant trains its own tokenizer <name>-<variant> (this section, that variant),
    # extracts its own codes and pretrains its own run tokenizer-<variant> (the main pretraining section);
    # finetune.methods "tokenizer:<variant>" fine-tunes it like `full`.
    variants: tuple[Literal["ddrvq", "ddrvq_time", "ddrvq_freq", "labram", "neurorvq"], ...] = ()

    def variant_name(self, variant: str) -> str:
        return f"{self.name}-{variant}"

    def variant_section(self, variant: str) -> "TokenizerSection":
        """The section that trains variant `variant`'s tokenizer (never a pretrained one: that is the main's)."""
        if variant not in self.variants:
            raise ConfigError(f"tokenizer.variants: no variant {variant!r}; configured: {list(self.variants)}")
        return dataclasses.replace(self, name=self.variant_name(variant), variant=variant, variants=(),
                                   pretrained=None)


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
class MaskSettings(Overrides):
    """An ablation's mask: overrides of the main run's pretrain.mask."""

    strategy: Literal["importance", "random"] | None = None
    ratio: float | None = None
    temperature: float | None = None
    weight_start: float | None = None
    weight_end: float | None = None
    keep_prob: float | None = None
    max_run: int | None = None
    feature_weights: tuple[float, ...] | None = None


@dataclass(frozen=True)
class AblationSettings:
    """pretrain.ablations.<name>: what this run changes in the main run's model and mask."""

    model: PretrainModelSettings = field(default_factory=PretrainModelSettings)
    mask: MaskSettings = field(default_factory=MaskSettings)


@dataclass(frozen=True)
class PretrainSection:
    name: str = "brainrvq-demo"  # output folder: <results>/pretrain/<name>
    size: Literal["demo", "base"] = "demo"
    # overrides of pipeline.models.pretrain.PretrainConfig (level_weights, hierarchical, symmetric) and of
    # its backbone (model: {backbone: {depth: 6}})
    model: PretrainModelSettings = field(default_factory=PretrainModelSettings)
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
    ablations: Mapping[str, AblationSettings] = field(default_factory=dict)

    def ablation(self, name: str) -> "PretrainSection":
        """The section of ablation run `name`: this one with its overrides, named `name`, without ablations."""
        if name not in self.ablations:
            raise ConfigError(f"pretrain.ablations: no ablation {name!r}; configured: {sorted(self.ablations)}")
        over = self.ablations[name]
        try:
            mask = dataclasses.replace(self.mask, **dict(over.mask))
        except ValueError as exc:
            raise ConfigError(f"pretrain.ablations.{name}.mask: {exc}") from None
        return dataclasses.replace(self, name=name, model=self.model.merged(over.model), mask=mask, ablations={})


@dataclass(frozen=True)
class FinetuneSection:
    """Downstream evaluation, per dataset × method × seed (pipeline.train.finetune)."""

    # full: pretrained, all layers (layer-wise lr decay); probe: pretrained, frozen backbone + linear head;
    # scratch: the same backbone randomly initialised; ablation:<name>: full fine-tuning of the pretraining ablation
    # <name> (pretrain.ablations). Baselines on the same samples, splits, seeds and selection rule:
    # logreg (log band powers), raw_logreg (the block-averaged raw window), tangent_logreg (pyriemann tangent space),
    # each + logistic regression with C from c_grid chosen on validation; eegnet, shallow_fbcsp (braindecode's
    # EEGNet and ShallowFBCSPNet trained from scratch with deep_lr).
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
    c_grid: tuple[float, ...] = (1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0)  # logistic regressions' C candidates
    raw_sfreq: float = 20.0  # raw_logreg: the window block-averaged to this rate (must divide 200 Hz)
    deep_lr: float = 1e-3  # eegnet / shallow_fbcsp: AdamW lr (no layer decay: nothing is pretrained)


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

    def finetune_for(self, dataset: str) -> FinetuneSection:
        """The fine-tuning section a dataset's jobs use: its own (datasets.<name>.finetune) or the top-level one."""
        return self.datasets[dataset].finetune or self.finetune

    def tokenizers(self) -> dict[str, TokenizerSection]:
        """Every tokenizer this config trains or uses, by folder name: the main one, then one per variant."""
        out = {self.tokenizer.name: self.tokenizer}
        out.update({self.tokenizer.variant_name(v): self.tokenizer.variant_section(v) for v in self.tokenizer.variants})
        return out

    def pretrain_runs(self) -> dict[str, str]:
        """Pretraining run → the tokenizer whose codes it learns: the main run and its ablations use the main
        tokenizer; run tokenizer-<variant> uses that variant's."""
        runs = {run: self.tokenizer.name for run in (self.pretrain.name, *self.pretrain.ablations)}
        runs.update({tokenizer_run(v): self.tokenizer.variant_name(v) for v in self.tokenizer.variants})
        return runs


def tokenizer_run(variant: str) -> str:
    """The pretraining run (and fine-tuning method `tokenizer:<variant>`'s model) of a tokenizer variant."""
    return f"tokenizer-{variant}"


# ---------------------------------------------------------------------------------------------
# generic mapping → dataclass conversion (strict: unknown keys are errors, naming where they are)


def nearest(name: str, names: Any) -> str | None:
    """The valid name closest to a misspelt one (None when nothing is close)."""
    close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_key_error(where: str, key: str, names: Any, derived: Mapping[str, str] | None = None) -> ConfigError:
    """`<where>: unknown key 'x' (did you mean 'y'?)` on the first line — what Snakemake shows first — and the
    allowed names on the next. A model field that is not a setting says where its value comes from."""
    if derived and key in derived:
        return ConfigError(f"{where}: {key!r} is not a setting — it comes from {derived[key]}")
    near = nearest(key, names)
    hint = f" (did you mean {near!r}?)" if near else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}\n  allowed in {where}: {', '.join(sorted(names))}")


def from_mapping(cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise unknown_key_error(where, unknown[0], names, getattr(cls, "derived", None))
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
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
        options = [a for a in args if a is not type(None)]
        if len(options) == 1 or (isinstance(value, Mapping) and any(dataclasses.is_dataclass(a) for a in options)):
            # one candidate type (or a section): its own error names the key at fault
            return _convert(next(a for a in options if len(options) == 1 or dataclasses.is_dataclass(a)), value, where)
        errors = []
        for arg in options:
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
        args = typing.get_args(tp)
        if not args or args[1] is Any:
            return dict(value)
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
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
    """JSON-ready dict of a config dataclass (tuples become lists; overrides hold only their set fields)."""
    return json.loads(json.dumps(_plain(obj)))


def _plain(obj: Any) -> Any:
    if isinstance(obj, Overrides):
        return {k: _plain(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


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


# Top-level keys; `resources` is read by the rule files (per-rule threads, memory, runtime, GPUs).
TOP_LEVEL = ("results", "cache", "datasets", "demo_corpus", "dask", "tokenizer", "pretrain", "finetune", "preprocess",
             "patch", "montage", "ingest", "dataset_files", "resources")
_DEFAULT_SECTIONS = {"preprocess": PreprocessConfig, "patch": PatchConfig, "montage": MontageConfig,
                     "ingest": IngestConfig}


def _fixed_values(ds_or_defaults: Any, where: str) -> None:
    """sfreq and patch_len are fixed by the code below the shards: other values are refused here, not deep in a job."""
    sfreq, patch_len = ds_or_defaults["preprocess"].sfreq, ds_or_defaults["patch"].patch_len
    if sfreq != SFREQ:
        raise ConfigError(f"{where}preprocess.sfreq: {sfreq:g} Hz is not supported — only {SFREQ:g}: the models, "
                          "importance features, band-power baseline and embed read 1 s patches of 200 samples")
    if patch_len != PATCH_LEN:
        raise ConfigError(f"{where}patch.patch_len: {patch_len} is not supported — only {PATCH_LEN} (1 s at "
                          f"{SFREQ:g} Hz), the models' patch size")


def _dataset_finetune(top: Mapping[str, Any] | None, own: Any, name: str) -> "FinetuneSection":
    where = f"datasets.{name}.finetune"
    if not isinstance(own, Mapping):
        raise ConfigError(f"{where}: expected a mapping of fine-tuning settings, got {own!r}")
    for key in ("methods", "seeds"):
        if key in own:
            raise ConfigError(f"{where}.{key}: {key} are the same for every dataset (the tables compare them); set "
                              f"them in the top-level finetune section")
    return from_mapping(FinetuneSection, _merged(top, own), where)


def parse_config(raw: Mapping[str, Any], *, base_dir: Path | None = None) -> PipelineConfig:
    """Build the typed config from an already-loaded YAML mapping (as Snakemake holds it)."""
    raw = merge_dataset_files(raw, base_dir=base_dir)
    raw.pop("dataset_files", None)
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise unknown_key_error("the config's top level", unknown[0], TOP_LEVEL)
    defaults = {k: raw.get(k) for k in _DEFAULT_SECTIONS}
    # the shared sections first, so that a typo there is reported where it was written
    _fixed_values({k: from_mapping(cls, defaults[k], k) for k, cls in _DEFAULT_SECTIONS.items()}, "")
    datasets = {}
    for name, entry in dict(raw.get("datasets") or {}).items():
        check_name(name, f"datasets.{name}")
        if not isinstance(entry, Mapping):
            raise ConfigError(f"datasets.{name}: expected a mapping, got {entry!r}")
        entry = dict(entry)
        for section in _DEFAULT_SECTIONS:
            entry[section] = _merged(defaults[section], entry.get(section))
        # A dataset's mains frequency is part of its identity; the notch uses it.
        if "mains" in entry:
            entry["preprocess"]["mains"] = entry.pop("mains")
        finetune = entry.pop("finetune", None)
        ds = from_mapping(DatasetConfig, {"name": name, **entry}, f"datasets.{name}")
        if finetune is not None:
            ds = dataclasses.replace(ds, finetune=_dataset_finetune(raw.get("finetune"), finetune, name))
        _fixed_values({"preprocess": ds.preprocess, "patch": ds.patch}, f"datasets.{name}.")
        _check_channels(ds.montage.channels, f"datasets.{name}.montage.channels")
        if ds.ingest.min_duration_s is None:  # null: a recording must hold at least one window
            ds = dataclasses.replace(ds, ingest=dataclasses.replace(ds.ingest, min_duration_s=ds.patch.window_s))
        datasets[name] = ds
    if not datasets:
        raise ConfigError("datasets: at least one dataset is required")
    for name in dict(raw.get("demo_corpus") or {}):
        check_name(name, f"demo_corpus.{name}")
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
    check_name(cfg.tokenizer.name, "tokenizer.name")
    check_name(cfg.pretrain.name, "pretrain.name")
    for run in cfg.pretrain.ablations:
        check_name(run, f"pretrain.ablations.{run}")
        cfg.pretrain.ablation(run)  # its mask must be valid too
    if cfg.tokenizer.variant in cfg.tokenizer.variants:
        raise ConfigError(f"tokenizer.variants: {cfg.tokenizer.variant!r} is the main tokenizer's variant "
                          "(tokenizer.variant); list only the other variants")
    runs = cfg.pretrain_runs()
    if len(runs) != 1 + len(cfg.pretrain.ablations) + len(cfg.tokenizer.variants):
        raise ConfigError(f"pretrain.ablations: a name collides with a tokenizer variant's run ({sorted(runs)})")
    for method in cfg.finetune.methods:
        if method.startswith("tokenizer:") and method.split(":", 1)[1] not in cfg.tokenizer.variants:
            raise ConfigError(f"finetune.methods: {method!r} fine-tunes tokenizer variant "
                              f"{method.split(':', 1)[1]!r}, which tokenizer.variants does not list "
                              f"(listed: {list(cfg.tokenizer.variants)})")
        check_method(method, "finetune.methods")
        run = method.split(":", 1)[1] if method.startswith(ABLATION_PREFIX) else None
        if run is not None and run not in cfg.pretrain.ablations:
            raise ConfigError(f"finetune.methods: {method!r} fine-tunes pretraining ablation {run!r}, which "
                              f"pretrain.ablations does not define (defined: {sorted(cfg.pretrain.ablations)})")
    return cfg


def _check_channels(channels: str | tuple[str, ...] | None, where: str) -> None:
    """montage.channels names a channel set or lists vocabulary channels: a typo fails at parse time (`snakemake -n`),
    not as a traceback inside standardize."""
    from pipeline.montage.channel_sets import channel_set_names
    from pipeline.montage.names import normalize_name
    from pipeline.montage.vocabulary import load_vocabulary

    if channels is None or channels == "all":
        return
    if isinstance(channels, str):
        if channels not in channel_set_names():
            hint = nearest(channels, channel_set_names())
            raise ConfigError(f"{where}: unknown channel set {channels!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                              + f"; sets: {', '.join(channel_set_names())}, or a list of channel names")
        return
    vocab = load_vocabulary()
    for entry in channels:
        if normalize_name(str(entry), vocabulary=vocab) is None:
            hint = nearest(str(entry), vocab.names)
            raise ConfigError(f"{where}: {entry!r} is not a channel of the vocabulary"
                              + (f" (did you mean {hint!r}?)" if hint else "")
                              + "; names: resources/channel_vocabulary.tsv (bipolar as 'Anode-Cathode')")


def check_schema(raw: Mapping[str, Any], schema_path: str | Path) -> None:
    """Validate against the JSON schema; the first error as one line: where, what, and the nearest valid name for an
    unknown key (instead of the schema dump a failed `snakemake.utils.validate` prints)."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(json.loads(json.dumps(raw, default=str))))
    if error is None:
        return
    where = ".".join(str(p) for p in error.absolute_path) or "the config's top level"
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - allowed)
        if extra and allowed:
            raise unknown_key_error(where, extra[0], allowed)
    raise ConfigError(f"{where}: {error.message}")


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
        "labels": ds.labels,  # the fine-tuning jobs' classes
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


# ---------------------------------------------------------------------------------------------
# per-job settings: what one job reads, no more — Snakemake's params (the rerun trigger), the stage's --settings
# and the training runs' checkpoint identity all come from here


# Baselines that need no pretrained model (pipeline.train.classical, pipeline.train.deep_baselines)

# What every trained fine-tuning method (full, probe, scratch, ablation:<run>) reads; the learning rates differ.
_FINETUNE_TRAINED = ("epochs", "batch_size", "weight_decay", "warmup_epochs", "min_lr_ratio", "class_weights",
                     "dropout", "grad_clip", "mixed_precision", "num_workers", "deterministic", "primary_metric")


def tokenizer_job_settings(section: TokenizerSection) -> dict[str, Any]:
    """What train_tokenizer reads of `tokenizer` (not `pretrained`: a tokenizer trained elsewhere replaces the job)."""
    out = to_dict(section)
    out.pop("pretrained")
    out.pop("variants")  # the other tokenizers' jobs
    return out


def pretrain_job_settings(section: PretrainSection, run: str | None = None) -> dict[str, Any]:
    """What pretraining run `run` (default: the main one) reads: its own section, ablation overrides applied, without
    the other runs (`ablations`) and without `codes` (an input path, passed as --codes)."""
    if run is not None and run != section.name:
        section = section.ablation(run)
    out = to_dict(section)
    out.pop("ablations")
    out.pop("codes")
    return out


def finetune_job_settings(section: FinetuneSection, method: str, labels: LabelConfig) -> dict[str, Any]:
    """What one fine-tuning job (method × seed on a dataset with these labels) reads of `finetune`: not the lists of
    methods and seeds (its wildcards), not another method's learning rate, nothing of training for logreg."""
    if method in CLASSICAL_METHODS:  # features + logistic regression: batch_size only sizes the feature pass
        keys: tuple[str, ...] = ("batch_size", "primary_metric", "c_grid") + (("raw_sfreq",) if method == "raw_logreg"
                                                                              else ())
    elif method in DEEP_METHODS:
        keys = _FINETUNE_TRAINED + ("deep_lr",) + (("label_smoothing",) if len(labels.classes) > 2 else ())
    else:
        keys = _FINETUNE_TRAINED + (("probe_lr",) if method == "probe" else ("lr", "layer_decay"))
        if len(labels.classes) > 2:  # binary tasks use a logistic loss without smoothing
            keys += ("label_smoothing",)
    full = to_dict(section)
    return {k: full[k] for k in sorted(keys)}


def job_settings(cfg: PipelineConfig, rule: str, *, dataset: str | None = None, run: str | None = None,
                 method: str | None = None, tokenizer: str | None = None) -> Any:
    """The JSON-ready settings job `rule` reads (wildcards as keywords): every rule's `params.settings` and the
    `--settings` its stage gets. Settings a job does not read are absent, so changing them reruns nothing."""
    if rule == "fetch_demo_corpus":
        return {k: to_dict(v) for k, v in cfg.demo_corpus.items()}
    if rule == "train_tokenizer":
        return tokenizer_job_settings(cfg.tokenizers()[tokenizer] if tokenizer else cfg.tokenizer)
    if rule == "pretrain":
        if run is not None and run.startswith("tokenizer-") and run in cfg.pretrain_runs():
            # a tokenizer variant's run: the main section (its codes differ: an input), under its own name
            return pretrain_job_settings(dataclasses.replace(cfg.pretrain, name=run))
        return pretrain_job_settings(cfg.pretrain, run)
    if dataset is None:
        raise ConfigError(f"job_settings: rule {rule!r} needs a dataset")
    ds = cfg.datasets[dataset]
    if rule == "finetune":
        if method is None:
            raise ConfigError("job_settings: rule 'finetune' needs a method")
        return finetune_job_settings(cfg.finetune_for(dataset), method, ds.labels)
    stage = {"standardize": "montage"}.get(rule, rule)
    return to_dict(stage_settings(ds, stage))


def job_settings_json(cfg: PipelineConfig, rule: str, **wildcards: Any) -> str:
    return json.dumps(job_settings(cfg, rule, **wildcards), sort_keys=True)
