"""Fine-tuning and evaluation on one downstream dataset, for one method and one seed.

Methods: `full` (pretrained backbone, all layers, layer-wise lr decay), `probe` (pretrained, frozen backbone,
linear head), `scratch` (the same architecture, random init), `ablation:<run>` (full fine-tuning of another
pretraining run); baselines that need no pretrained model: `logreg`, `raw_logreg`, `tangent_logreg`
(pipeline.train.classical) and braindecode's `eegnet`, `shallow_fbcsp`, `labram_scratch`, `cbramod_scratch`
(pipeline.train.deep_baselines, trained here by the same loop).

Every epoch the model is scored on the validation and test splits; the reported result is the test score at
the epoch with the best validation primary metric (balanced accuracy by default), so the test split never
chooses anything. Before a pretrained model is used, the leakage guard proves by content hash that no test
recording was in its pretraining corpus.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pipeline.config import (CLASSICAL_METHODS, DEEP_METHODS, FinetuneSection, LabelConfig, TrainConfig,
                             finetune_job_settings, to_dict)
from pipeline.data.windows import WindowBatches, WindowIndex, epoch_batches, recording_hashes
from pipeline.eval.metrics import task_metrics
from pipeline.models.backbone import Backbone
from pipeline.models.classifier import Classifier, freeze_report, layer_decay_groups
from pipeline.store.atomic import write_text_atomic
from pipeline.store.jsonl import read_records
from pipeline.store.tables import write_table
from pipeline.train.device import device_of, to_device, to_host
from pipeline.train.identity import shards_fingerprint
from pipeline.train.loop import StepResult, adamw, fit, make_accelerator
from pipeline.train.pretrain import load_pretrained_folder

log = logging.getLogger(__name__)


class LeakageError(ValueError):
    """A test recording was in the pretraining corpus; the message lists them."""


def check_leakage(pretrained_metrics: dict, test_index: WindowIndex, *, where: str) -> None:
    corpus = pretrained_metrics.get("corpus")
    if corpus is None:
        raise LeakageError(f"{where}: the pretrained model does not list its corpus; cannot prove there is no "
                           "overlap with the test split (pretrain with this version to record it)")
    seen = {c["content_sha256"]: c["recording"] for c in corpus}
    overlap = sorted(f"{rec} = pretraining's {seen[h]}" for h, rec in recording_hashes(test_index).items() if h in seen)
    if overlap:
        raise LeakageError(f"{where}: {len(overlap)} test recording(s) were in the pretraining corpus (same signal "
                           "content): " + "; ".join(overlap) + ". Exclude them from pretraining (splits.test) or "
                           "from this dataset's test split.")


@dataclass
class SplitData:
    index: WindowIndex
    y: np.ndarray  # class index per window (row of index.table)


def load_split(samples: Path, split: str, labels: LabelConfig) -> SplitData:
    try:
        index = WindowIndex.from_shard_dirs([samples], splits=[split])
    except ValueError:
        raise ValueError(f"{samples}: no {split} windows (configure the dataset's splits: official, test subjects, "
                         "val subjects or val_fraction)") from None
    names = index.table["label"].to_list()
    unknown = sorted({n for n in names if n not in labels.classes}, key=str)
    if unknown:
        raise ValueError(f"{samples}: {split} windows with labels {unknown} outside classes {list(labels.classes)}")
    return SplitData(index, np.array([labels.classes.index(n) for n in names], dtype=np.int64))


class LabelledBatches(Dataset):
    def __init__(self, data: WindowBatches, y: np.ndarray) -> None:
        self.data, self.y = data, torch.as_tensor(y)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        batch = self.data[i]
        batch["y"] = self.y[batch["window"]]
        return batch


def _all_windows(split: SplitData, batch_size: int, fields=("x", "ch")):
    rows = np.arange(len(split.index))
    return WindowBatches(split.index, [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)],
                         fields=fields)


@torch.no_grad()
def predict(model: Classifier, split: SplitData, batch_size: int) -> np.ndarray:
    """Scores per window: P(class 1) [n] for binary tasks, class probabilities [n, k] otherwise."""
    model.eval()
    out = []
    data = _all_windows(split, batch_size)
    device = device_of(model)
    for i in range(len(data)):
        b = to_device(data[i], device)
        logits = model(b["x"], b["ch"]).float()
        out.append(to_host(torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else logits.softmax(-1)).numpy())
    model.train()
    return np.concatenate(out)


def _task(labels: LabelConfig) -> str:
    return "binary" if len(labels.classes) == 2 else "multiclass"


def classification_step(model, batch: dict, *, task: str, class_weight: torch.Tensor | None,
                        label_smoothing: float) -> StepResult:
    """One fine-tuning loss: BCE (binary, pos_weight from the class weights) or label-smoothed CE. No host sync: the
    logged loss stays a device tensor until fit() logs the step."""
    logits = model(batch["x"], batch["ch"]).float()
    y = batch["y"]
    if task == "binary":
        pos_weight = (class_weight[1] / class_weight[0]).to(logits.device) if class_weight is not None else None
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), pos_weight=pos_weight)
    else:
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing,
                               weight=class_weight.to(logits.device) if class_weight is not None else None)
    return StepResult(loss, {"losses": {"loss": loss.detach()}})


def finetune(samples: str | Path, out: str | Path, section: FinetuneSection, labels: LabelConfig, *, method: str,
             seed: int, pretrained: str | Path | None, dataset: str = "") -> dict:
    """Run one (method, seed) on a dataset's labelled samples; write <out>/metrics.json and return it."""
    samples, out = Path(samples), Path(out)
    splits = {name: load_split(samples, name, labels) for name in ("train", "val", "test")}
    task = _task(labels)
    base = {"dataset": dataset or samples.parent.name, "method": method, "seed": seed, "task": task,
            "classes": list(labels.classes), "primary_metric": section.primary_metric,
            "n_train": len(splits["train"].y), "n_val": len(splits["val"].y), "n_test": len(splits["test"].y),
            "pretrained": None}
    if method in CLASSICAL_METHODS:
        from pipeline.train.classical import run_classical

        result = {**base, **run_classical(method, splits, labels, section, seed), "dataset": base["dataset"]}
        write_text_atomic(out / "metrics.json", json.dumps(result, indent=2))
        return result
    deep = method in DEEP_METHODS
    if pretrained is None and not deep:
        raise ValueError(f"method {method!r} needs a pretrained model (for `scratch`: its architecture)")
    model_pt, meta = load_pretrained_folder(pretrained) if not deep else (None, {})
    if method != "scratch" and not deep:
        pretrained_metrics = json.loads((Path(pretrained).parent / "metrics.json").read_text()) \
            if Path(pretrained).is_file() else json.loads((Path(pretrained) / "metrics.json").read_text())
        check_leakage(pretrained_metrics, splits["test"].index, where=f"{samples} ({method})")
        base["pretrained"] = str(pretrained)
        base["pretrained_fingerprint"] = meta["fingerprint"]

    n_batches = len(splits["train"].y) // section.batch_size
    if n_batches == 0:
        raise ValueError(f"{samples}: {len(splits['train'].y)} training windows, fewer than one batch "
                         f"({section.batch_size})")
    tc = TrainConfig(batch_size=section.batch_size, max_steps=section.epochs * n_batches, lr=section.lr,
                     min_lr_ratio=section.min_lr_ratio, weight_decay=section.weight_decay,
                     warmup_steps=section.warmup_epochs * n_batches, grad_clip=section.grad_clip, seed=seed,
                     mixed_precision=section.mixed_precision, checkpoint_every=n_batches, eval_every=n_batches,
                     log_every=max(1, n_batches // 4), num_workers=section.num_workers,
                     deterministic=section.deterministic)
    accelerator = make_accelerator(tc)  # seeds everything: the head's (and scratch backbone's) init differ by seed
    n_outputs = 1 if task == "binary" else len(labels.classes)
    if deep:
        from pipeline.train.deep_baselines import build_window_model

        shape = _all_windows(splits["train"], 1)[0]["x"].shape  # [1, C, P, T]
        model, architecture = build_window_model(method, n_chans=shape[1], n_times=shape[2] * shape[3],
                                                 n_outputs=n_outputs)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": section.deep_lr,
                   "weight_decay": section.weight_decay}]
    else:
        backbone = model_pt.backbone if method != "scratch" else Backbone(model_pt.config.backbone)
        model = Classifier(backbone, n_outputs, dropout=section.dropout)
        architecture = to_dict(model_pt.config.backbone)
        probe = method == "probe"
        groups = layer_decay_groups(model, lr=section.probe_lr if probe else section.lr,
                                    weight_decay=section.weight_decay, layer_decay=1.0 if probe else section.layer_decay,
                                    probe=probe)
    trainable, total = freeze_report(model)
    log.info("%s seed %d: %d/%d parameters trained, %d train / %d val / %d test windows", method, seed, trainable,
             total, len(splits["train"].y), len(splits["val"].y), len(splits["test"].y))
    counts = np.bincount(splits["train"].y, minlength=len(labels.classes)).astype(np.float64)
    weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), dtype=torch.float32) \
        if section.class_weights else None

    def train_step(m, batch) -> StepResult:
        return classification_step(m, batch, task=task, class_weight=weight, label_smoothing=section.label_smoothing)

    def make_data(epoch: int, first_step: int) -> LabelledBatches:
        batches = epoch_batches(splits["train"].index, batch_size=tc.batch_size, seed=seed, epoch=epoch,
                                buffer_chunks=tc.buffer_chunks)
        return LabelledBatches(WindowBatches(splits["train"].index, batches, rank=accelerator.process_index,
                                             world_size=accelerator.num_processes), splits["train"].y)

    best: dict = {}

    def evaluate(raw, step: int) -> dict:
        if not best:  # read here, not before fit(): a stale run's metrics.jsonl is gone by now
            best.update(_best_so_far(out / "metrics.jsonl", section.primary_metric))
        scores = {name: predict(raw, splits[name], tc.batch_size) for name in ("val", "test")}
        record = {"epoch": step // n_batches,
                  **{name: task_metrics(task, splits[name].y, scores[name]) for name in ("val", "test")}}
        value = record["val"][section.primary_metric]
        if best["value"] is None or value > best["value"]:
            best.update(value=value, epoch=record["epoch"])
            _write_predictions(out / "test_predictions.parquet", splits["test"], scores["test"], labels)
        return record

    fit(model, out, tc, accelerator, optimizer=adamw(model, tc, param_groups=groups), make_data=make_data,
        train_step=train_step, evaluate=evaluate,
        # the architecture too: `scratch` has no pretrained fingerprint, yet a changed backbone must retrain it
        state_extra={"method": method, "seed": seed, "section": finetune_job_settings(section, method, labels),
                     "labels": to_dict(labels),
                     "pretrained_fingerprint": base.get("pretrained_fingerprint"),
                     "backbone": architecture,
                     # the samples' content: a corrected training file rebuilt into the same folder retrains
                     "samples_fingerprint": shards_fingerprint([samples])})
    if not accelerator.is_main_process:
        return {}
    records = read_records(out / "metrics.jsonl")
    held = [r for r in records if r["kind"] == "heldout"]
    chosen = max(held, key=lambda r: (r["val"][section.primary_metric], -r["epoch"]))
    result = {**base, "best_epoch": chosen["epoch"], "epochs": section.epochs, "val": chosen["val"],
              "test": chosen["test"], "trainable_parameters": trainable}
    write_text_atomic(out / "metrics.json", json.dumps(result, indent=2))
    _plot_curves(records, out / "curves.png", section.primary_metric, f"{base['dataset']} · {method} · seed {seed}")
    return result


def _best_so_far(path: Path, metric: str) -> dict:
    """The best validation score already logged (a resumed run keeps comparing against it)."""
    best: dict = {"value": None, "epoch": None}
    for r in read_records(path):
        if r.get("kind") == "heldout" and (best["value"] is None or r["val"][metric] > best["value"]):
            best.update(value=r["val"][metric], epoch=r["epoch"])
    return best


def _write_predictions(path: Path, split: SplitData, scores: np.ndarray, labels: LabelConfig) -> None:
    table = split.index.table.select("recording", "subject", "start_s").with_columns(
        y=pl.Series([labels.classes[i] for i in split.y]))
    if scores.ndim == 1:
        table = table.with_columns(pl.Series(f"p_{labels.classes[1]}", scores))
    else:
        table = table.with_columns([pl.Series(f"p_{c}", scores[:, k]) for k, c in enumerate(labels.classes)])
    write_table(table.to_arrow(), path)


def _plot_curves(records: list[dict], path: Path, metric: str, title: str) -> None:
    from pipeline.eval.plots import plt

    train = [r for r in records if r["kind"] == "train"]
    held = [r for r in records if r["kind"] == "heldout"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot([r["step"] for r in train], [r["losses"]["loss"] for r in train])
    a.set(xlabel="step", ylabel="training loss", title="loss")
    for split in ("val", "test"):
        b.plot([r["epoch"] for r in held], [r[split][metric] for r in held], "o-", label=split)
    b.set(xlabel="epoch", ylabel=metric.replace("_", " "), title="selection metric (best val → reported test)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
