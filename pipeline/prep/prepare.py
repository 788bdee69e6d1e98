"""prepare(): ingest → standardize → preprocess → patch of a source, in one process, into a work folder.

The same library calls the workflow's stage modules make, one after the other, with one dataset's settings
(`PrepareSettings.resolve`): what `embed` runs before the encoder, and what a test compares with the
workflow's shards.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import (ConfigError, IngestConfig, MontageConfig, PatchConfig, PatchSettings, PreprocessConfig,
                             SplitConfig, load_config, to_dict)
from pipeline.errors import StageFailed
from pipeline.prep.ingest import ingest
from pipeline.prep.preprocess import mains_for, preprocess
from pipeline.prep.shards import patch
from pipeline.prep.standardize import standardize

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 30.0
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"


@dataclass(frozen=True)
class PrepareSettings:
    """The data-plane settings of one in-process prepare() (embed's): one dataset's sections, or the defaults."""

    ingest: IngestConfig = field(default_factory=lambda: IngestConfig(min_duration_s=DEFAULT_WINDOW_S))
    montage: MontageConfig = field(default_factory=MontageConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)  # the index's split column, as the workflow's
    dataset: str | None = None

    @classmethod
    def resolve(cls, *, config: str | Path | None = None, dataset: str | None = None,
                window_s: float | None = None, mains: float | None = None,
                reject_uv: float | None = None) -> "PrepareSettings":
        """`load_config(config).datasets[dataset]`'s sections, else defaults; --window-s / --mains / --reject-uv
        override."""
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
            out = cls(ingest=ds.ingest, montage=ds.montage, preprocess=ds.preprocess, patch=ds.patch, splits=ds.splits,
                      dataset=dataset)
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
        if reject_uv is not None:
            out = dataclasses.replace(out, preprocess=dataclasses.replace(out.preprocess, reject_uv=float(reject_uv)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "ingest": to_dict(self.ingest), "montage": to_dict(self.montage),
                "preprocess": to_dict(self.preprocess), "patch": to_dict(self.patch), "splits": to_dict(self.splits)}


@dataclass
class PreparedData:
    shards: Path
    manifest: list[dict]
    rejected: list[dict]  # {"recording", "source_path", "stage", "reason"}
    notes: list[dict]  # accepted recordings with something to say (e.g. windows dropped for amplitude)
    mains: dict[str, float | None]  # line frequency notched per recording (pipeline.prep.preprocess.mains_for)


def rejections(stage_tables: list[tuple[str, list[dict]]], paths: dict[str, str]) -> list[dict]:
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


def no_window_hint(quality_json: Path, settings: PrepareSettings) -> str:
    """When no window passed the amplitude/NaN rules: how many were rejected, and which option to change."""
    if not quality_json.is_file():
        return ""
    quality = json.loads(quality_json.read_text())
    dropped = sum(n for per_class in quality["dropped_amplitude_nan"].values() for n in per_class.values())
    kept = sum(n for per_class in quality["windows"].values() for n in per_class.values())
    if kept or not dropped:
        return ""
    uv, window = settings.preprocess.reject_uv, settings.patch.window_s
    shorter = f" or --window-s {max(1, int(window // 3)):d}" if window > 1 else ""
    return (f"; no window passed: {dropped} of {dropped} rejected by the {uv:g} µV amplitude (and NaN) rule — one bad "
            f"second rejects its whole {window:g} s window; try --reject-uv {2 * uv:g}{shorter}")


def prepare(source: str | Path, work: str | Path, settings: PrepareSettings, *, fmt: str = "auto") -> PreparedData:
    """ingest → standardize → preprocess → patch of `source` into `work`; raises StageFailed when nothing is left."""
    work = Path(work)
    tables: list[tuple[str, list[dict]]] = []
    paths: dict[str, str] = {}

    def failed(exc: StageFailed) -> StageFailed:
        earlier = rejections(tables, paths)
        more = "".join(f"\n  rejected at {r['stage']}: {r['reason']}" for r in earlier)
        return StageFailed(f"nothing left to prepare: {exc}{more}")

    try:
        log.info("prepare 1/4: ingest %s", source)
        manifest = ingest(source, work, dataset=settings.dataset, fmt=fmt, cfg=settings.ingest)
        paths = {r["recording"]: r["path"] for r in manifest}
        tables.append(("ingest", manifest))
        log.info("prepare 2/4: standardize")
        montage = standardize(work / "manifest.parquet", work / "montage.parquet", settings.montage)
        tables.append(("standardize", montage))
        log.info("prepare 3/4: preprocess")
        pre = preprocess(work / "montage.parquet", work / "preprocessed", settings.preprocess)
        mains = {r["recording"]: mains_for(r, settings.preprocess)[0] for r in montage if r["status"] == "ok"}
        tables.append(("preprocess", pre))
        log.info("prepare 4/4: patch into %g s windows", settings.patch.window_s)
        patch_settings = PatchSettings(patch=settings.patch, splits=settings.splits)
        try:
            summary = patch(work / "preprocessed", work / "shards", patch_settings, ingested=work)
        except StageFailed as exc:
            raise StageFailed(f"{exc}{no_window_hint(work / 'shards' / 'quality.json', settings)}") from None
        tables.append(("patch", summary))
    except StageFailed as exc:
        raise failed(exc) from None
    except FileNotFoundError as exc:
        raise StageFailed(str(exc)) from None
    notes = [{"recording": r["recording"], "source_path": paths.get(r["recording"], ""), "note": r["reason"]}
             for r in summary if r["status"] == "ok" and r.get("reason") and r["reason"] != "reused"]
    return PreparedData(work / "shards", manifest, rejections(tables, paths), notes, mains)
