"""embed: features from your own EDF files — one pretrained-encoder embedding per window → parquet.

    python -m pipeline embed <EDF file or folder> --model results/demo/pretrain/<name> --out features.parquet \\
        [--config config/demo.yaml --dataset demo_physionet] [--window-s 30] [--batch-windows 16]

Runs ingest → standardize → preprocess → patch in one process, in a temporary work folder (kept with
--keep-work, where a rerun reuses what is up to date), then runs the pretrained backbone over every
clean window (eval mode, nothing masked) and mean-pools its output over the valid tokens (channels that
exist and are not masked, all patches). Settings: those of `--dataset` in `--config` (montage, ingest,
preprocess, patch sections, as the workflow resolves them), else the defaults (standard 10-20 channels,
PreprocessConfig(), PatchConfig(window_s=--window-s)). The notch uses a recording's own mains frequency
where it states one (BIDS PowerLineFrequency), else --mains, else the configured one.

Output: one row per window — recording, source_path, subject, start_s, window_s, n_channels_valid and
`embedding` (fixed-size list<float32>); the file's metadata holds the model fingerprint, the settings
and the rejected recordings with their reasons. Rejected recordings are reported and skipped; the
command fails (exit 1) only when no window at all was embedded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import (ConfigError, IngestConfig, MontageConfig, PatchConfig, PatchSettings, PreprocessConfig,
                             load_config, to_dict)
from pipeline.stages.common import StageFailed, finish_stage
from pipeline.store.atomic import atomic_path

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 30.0
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="EDF/BDF file, folder of them, or BIDS root")
    parser.add_argument("--model", required=True, help="pretrain folder (model.safetensors) or a .safetensors file")
    parser.add_argument("--out", required=True, help="parquet file to write")
    parser.add_argument("--config", default=None,
                        help=f"pipeline config whose --dataset settings to use (default: {DEFAULT_CONFIG.name})")
    parser.add_argument("--dataset", default=None, help="dataset of --config whose settings to use")
    parser.add_argument("--window-s", type=float, default=None,
                        help=f"window length in seconds (default: the dataset's, else {DEFAULT_WINDOW_S:g})")
    parser.add_argument("--mains", type=float, default=None,
                        help="mains frequency (Hz) to notch where a recording does not state its own")
    parser.add_argument("--format", default="auto", help="auto | edf | bdf | bids | a dataset adapter")
    parser.add_argument("--batch-windows", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--device", default="auto", help="torch device (auto: cuda when available, else cpu)")
    parser.add_argument("--keep-work", default=None, help="work folder to keep (default: a temporary one)")


@dataclass(frozen=True)
class EmbedSettings:
    """The data-plane settings embed runs with (one dataset's sections, or the defaults)."""

    ingest: IngestConfig = field(default_factory=lambda: IngestConfig(min_duration_s=DEFAULT_WINDOW_S))
    montage: MontageConfig = field(default_factory=MontageConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    dataset: str | None = None

    @classmethod
    def resolve(cls, *, config: str | Path | None = None, dataset: str | None = None,
                window_s: float | None = None, mains: float | None = None) -> "EmbedSettings":
        """`load_config(config).datasets[dataset]`'s sections, else defaults; --window-s / --mains override."""
        if config is not None and dataset is None:
            names = sorted(load_config(config).datasets)
            raise ConfigError(f"--config {config}: name the dataset whose settings to use with --dataset "
                              f"(one of {names})")
        if dataset is not None:
            cfg = load_config(config or DEFAULT_CONFIG)
            if dataset not in cfg.datasets:
                raise ConfigError(f"--dataset {dataset!r} is not in {config or DEFAULT_CONFIG}; "
                                  f"configured: {sorted(cfg.datasets)}")
            ds = cfg.datasets[dataset]
            out = cls(ingest=ds.ingest, montage=ds.montage, preprocess=ds.preprocess, patch=ds.patch, dataset=dataset)
        else:
            out = cls()
        if window_s is not None:
            patch = dataclasses.replace(out.patch, window_s=float(window_s), stride_s=None)
            out = dataclasses.replace(out, patch=patch)
        if window_s is not None or dataset is None:
            # as parse_config does: a recording shorter than one window is rejected at ingest
            out = dataclasses.replace(out, ingest=dataclasses.replace(out.ingest, min_duration_s=out.patch.window_s))
        if mains is not None:
            out = dataclasses.replace(out, preprocess=dataclasses.replace(out.preprocess, mains=float(mains)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "ingest": to_dict(self.ingest), "montage": to_dict(self.montage),
                "preprocess": to_dict(self.preprocess), "patch": to_dict(self.patch)}


# ---------------------------------------------------------------------------------------------
# data plane: the four stages into a work folder


def _preprocess_by_mains(montage: Path, out: Path, cfg: PreprocessConfig) -> tuple[list[dict], dict[str, float | None]]:
    """preprocess(), with each recording notched at its own mains frequency where it states one.

    Returns (the preprocess table, mains used per recording)."""
    from pipeline.stages.preprocess import preprocess
    from pipeline.store.tables import MONTAGE_SCHEMA, PREPROCESS_SCHEMA, read_rows, write_rows

    rows = read_rows(montage)
    groups: dict[float | None, list[dict]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok":
            groups[r.get("mains") or cfg.mains].append(r)
    used = {r["recording"]: m for m, group in groups.items() for r in group}
    if len(groups) <= 1:
        mains = next(iter(groups), cfg.mains)
        return preprocess(montage, out, dataclasses.replace(cfg, mains=mains)), used
    table = []
    for i, (mains, group) in enumerate(sorted(groups.items(), key=lambda kv: kv[0] or 0.0)):
        log.info("preprocess: %d recording(s) with mains %s Hz", len(group), mains)
        part = montage.with_name(f"{montage.stem}-mains-{i}.parquet")
        write_rows(group, MONTAGE_SCHEMA, part)
        try:
            table += preprocess(part, out, dataclasses.replace(cfg, mains=mains))
        except StageFailed:  # all of this group rejected; the others may still be fine
            table += read_rows(out / "recordings.parquet")
    table += [{"recording": r["recording"], "subject": r["subject"], "status": "rejected", "reason": r["reason"]}
              for r in rows if r["status"] != "ok"]
    write_rows(table, PREPROCESS_SCHEMA, out / "recordings.parquet")
    finish_stage("preprocess", table, what=str(montage))
    return table, used


@dataclass
class PreparedData:
    shards: Path
    manifest: list[dict]
    rejected: list[dict]  # {"recording", "source_path", "stage", "reason"}
    notes: list[dict]  # accepted recordings with something to say (e.g. windows dropped for amplitude)
    mains: dict[str, float | None]


def _rejections(stage_tables: list[tuple[str, list[dict]]], paths: dict[str, str]) -> list[dict]:
    """Each rejected recording once, at the first stage that rejected it."""
    seen: set[str] = set()
    out = []
    for stage, rows in stage_tables:
        for r in rows:
            if r.get("status") == "rejected" and r["recording"] not in seen:
                seen.add(r["recording"])
                out.append({"recording": r["recording"], "source_path": paths.get(r["recording"], ""),
                            "stage": stage, "reason": r.get("reason") or ""})
    return out


def prepare(source: str | Path, work: str | Path, settings: EmbedSettings, *, fmt: str = "auto") -> PreparedData:
    """ingest → standardize → preprocess → patch of `source` into `work`; raises StageFailed when nothing is left."""
    from pipeline.stages.ingest import ingest
    from pipeline.stages.patch import patch
    from pipeline.stages.standardize import standardize

    work = Path(work)
    tables: list[tuple[str, list[dict]]] = []
    paths: dict[str, str] = {}

    def failed(exc: StageFailed) -> StageFailed:
        earlier = _rejections(tables, paths)
        more = "".join(f"\n  rejected at {r['stage']}: {r['reason']}" for r in earlier)
        return StageFailed(f"no window to embed: {exc}{more}")

    try:
        log.info("embed 1/4: ingest %s", source)
        manifest = ingest(source, work, dataset=settings.dataset, fmt=fmt, cfg=settings.ingest)
        paths = {r["recording"]: r["path"] for r in manifest}
        tables.append(("ingest", manifest))
        log.info("embed 2/4: standardize")
        montage = standardize(work / "manifest.parquet", work / "montage.parquet", settings.montage)
        tables.append(("standardize", montage))
        log.info("embed 3/4: preprocess")
        pre, mains = _preprocess_by_mains(work / "montage.parquet", work / "preprocessed", settings.preprocess)
        tables.append(("preprocess", pre))
        log.info("embed 4/4: patch into %g s windows", settings.patch.window_s)
        summary = patch(work / "preprocessed", work / "shards", PatchSettings(patch=settings.patch), ingested=work)
        tables.append(("patch", summary))
    except StageFailed as exc:
        raise failed(exc) from None
    except FileNotFoundError as exc:
        raise StageFailed(str(exc)) from None
    notes = [{"recording": r["recording"], "source_path": paths.get(r["recording"], ""), "note": r["reason"]}
             for r in summary if r["status"] == "ok" and r.get("reason") and r["reason"] != "reused"]
    return PreparedData(work / "shards", manifest, _rejections(tables, paths), notes, mains)


# ---------------------------------------------------------------------------------------------
# model plane: backbone over every window, mean-pooled


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_backbone(model: str | Path):
    """(backbone in eval mode, fingerprint, safetensors metadata) of a pretrained model, checked on load
    (pipeline.store.model_file): a file of the wrong kind, altered or truncated is one line naming it."""
    from pipeline.train.pretrain import load_pretrained_folder

    try:
        pretrained, meta = load_pretrained_folder(model)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise StageFailed(f"--model {model}: {exc}") from None
    return pretrained.backbone.eval(), meta["fingerprint"], meta  # the fingerprint: verified on load


def embed_windows(backbone, shards: Path, *, batch_windows: int = 16, device: str = "auto") -> tuple[pa.Table, Any]:
    """(index of the windows: recording, subject, start_s, n_channels_valid; embeddings float32 [N, D])."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from pipeline.data.windows import WindowBatches, WindowIndex
    from pipeline.models.classifier import pool_valid
    from pipeline.store.zarr_store import open_shard
    from pipeline.train.device import place, to_device, to_host

    index = WindowIndex.from_shard_dirs([shards])
    table = index.table.sort(["recording", "start_s"], maintain_order=True)
    index = WindowIndex(table)
    n = len(index)
    n_patches, patch_len = open_shard(table["shard_path"][0]).x.shape[2:]
    cfg = backbone.config
    if n_patches > cfg.max_patches:
        raise StageFailed(f"a window has {n_patches} patches but the model takes at most {cfg.max_patches}; "
                          f"use a shorter --window-s (≤ {cfg.max_patches * patch_len / 200:g} s at 200 Hz)")
    if patch_len != cfg.patch_size:
        raise StageFailed(f"patches of {patch_len} samples, but the model was trained on {cfg.patch_size}")
    dev = _device(device)
    backbone = place(backbone, dev)
    batches = [np.arange(i, min(i + batch_windows, n)) for i in range(0, n, batch_windows)]
    data = WindowBatches(index, batches, fields=("x", "ch"))
    out = np.zeros((n, cfg.embed_dim), dtype=np.float32)
    n_valid = np.zeros(n, dtype=np.int32)
    with torch.inference_mode(), tqdm(total=n, desc="embed", unit="window", disable=None) as bar:
        for i in range(len(data)):
            batch = data[i]
            x, ch = to_device((batch["x"], batch["ch"]), dev)
            pooled = pool_valid(backbone(x, ch), ch)
            rows = batch["window"].numpy()
            out[rows] = to_host(pooled.float()).numpy()
            n_valid[rows] = (batch["ch"] >= 0).sum(1).numpy()
            bar.update(len(rows))
    meta = pa.table({"recording": pa.array(table["recording"].to_list(), pa.string()),
                     "subject": pa.array(table["subject"].to_list(), pa.string()),
                     "start_s": pa.array(table["start_s"].to_list(), pa.float64()),
                     "n_channels_valid": pa.array(n_valid, pa.int32())})
    return meta, out


def embedding_table(index: pa.Table, embeddings: Any, *, paths: dict[str, str], window_s: float,
                    metadata: dict[str, Any]) -> pa.Table:
    n, dim = embeddings.shape
    flat = pa.array(embeddings.reshape(-1), type=pa.float32())
    return pa.table({
        "recording": index["recording"],
        "source_path": pa.array([paths.get(r, "") for r in index["recording"].to_pylist()], pa.string()),
        "subject": index["subject"],
        "start_s": index["start_s"],
        "window_s": pa.array([float(window_s)] * n, pa.float64()),
        "n_channels_valid": index["n_channels_valid"],
        "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
    }).replace_schema_metadata({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})


def report_rejections(rejected: list[dict], notes: list[dict]) -> None:
    for r in rejected:
        log.warning("rejected %s at %s: %s", r["recording"], r["stage"], r["reason"])
    for r in notes:
        log.info("%s: %s", r["recording"], r["note"])


def embed(source: str | Path, model: str | Path, out: str | Path, *, settings: EmbedSettings | None = None,
          fmt: str = "auto", batch_windows: int = 16, device: str = "auto",
          keep_work: str | Path | None = None) -> pa.Table:
    """Embed every clean window of the recordings in `source` with the pretrained `model` → `out` (parquet).

    Returns the written table (its schema metadata: model_fingerprint, settings, rejected). Raises
    StageFailed when no window could be embedded."""
    settings = settings or EmbedSettings()
    weights = Path(model) / "model.safetensors" if Path(model).is_dir() else Path(model)
    if not weights.is_file():  # fail fast, before the data work (and without importing torch)
        raise StageFailed(f"--model {model}: no pretrained model at {weights} (run pretrain first)")
    backbone, fingerprint, meta = load_backbone(weights)  # checked before the data work: a bad file fails first
    with tempfile.TemporaryDirectory(prefix="embed-") if keep_work is None else _kept(keep_work) as work:
        log.info("embed: work folder %s", work)
        data = prepare(source, work, settings, fmt=fmt)
        report_rejections(data.rejected, data.notes)
        index, vectors = embed_windows(backbone, data.shards, batch_windows=batch_windows, device=device)
    if len(vectors) == 0:
        raise StageFailed(f"{source}: no window was embedded")
    paths = {r["recording"]: r["path"] for r in data.manifest}
    metadata = {
        "model_fingerprint": fingerprint,
        "model": str(model),
        "tokenizer_fingerprint": meta.get("tokenizer_fingerprint", ""),
        "model_config": meta.get("config", "{}"),
        "embedding_dim": str(vectors.shape[1]),
        "pooling": "mean over valid tokens (channels with ch >= 0, all patches); eval mode, no mask",
        "settings": {**settings.to_dict(), "format": fmt, "mains_by_recording": data.mains},
        "source": str(source),
        "rejected": data.rejected,
    }
    table = embedding_table(index, vectors, paths=paths, window_s=settings.patch.window_s, metadata=metadata)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    log.info("embed: %d windows of %d recording(s) → %s (%d-d, model %s)", table.num_rows,
             len(set(table["recording"].to_pylist())), out, vectors.shape[1], fingerprint)
    return table


class _kept:
    """Context manager yielding a kept work folder (created if needed) as a str, like TemporaryDirectory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        return str(self.path)

    def __exit__(self, *exc: object) -> None:
        return None


def main(args: argparse.Namespace) -> None:
    import sys

    settings = EmbedSettings.resolve(config=args.config, dataset=args.dataset, window_s=args.window_s,
                                     mains=args.mains)
    table = embed(args.source, args.model, args.out, settings=settings, fmt=args.format,
                  batch_windows=args.batch_windows, device=args.device, keep_work=args.keep_work)
    rejected = json.loads(table.schema.metadata[b"rejected"])
    for r in rejected:
        print(f"rejected {r['recording']} ({r['stage']}): {r['reason']}", file=sys.stderr)
    print(f"{table.num_rows} windows embedded → {args.out}"
          + (f"; {len(rejected)} recording(s) rejected" if rejected else ""))
