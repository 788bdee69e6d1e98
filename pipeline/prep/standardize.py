"""Standardize: map each recording's channels onto the global vocabulary → montage.parquet.

One row per manifest row: the manifest's columns plus the channel plan (targets, vocabulary ids,
how each was built, source channels that map to nothing, targets that could not be built). A
recording none of whose channels maps is rejected; rejected manifest rows stay rejected.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import MontageConfig
from pipeline.montage.mapping import plan_montage
from pipeline.prep.report import finish_stage
from pipeline.store.tables import MONTAGE_SCHEMA, read_rows, write_rows


def standardize_row(row: dict, cfg: MontageConfig) -> dict:
    out = {**row, "targets": [], "channel_ids": [], "methods": [], "unmapped_channels": [], "missing_channels": []}
    if row["status"] != "ok":
        return out
    plan = plan_montage(row["channel_names"], targets=cfg.channels, positions=cfg.positions,
                        bad_channels=row["bad_channels"], max_distance_mm=cfg.max_distance_mm)
    out.update(
        targets=list(plan.targets),
        channel_ids=list(plan.ids),
        methods=list(plan.method),
        unmapped_channels=list(plan.unmapped),
        missing_channels=list(plan.missing),
        plan=json.dumps(plan.to_dict()),
    )
    if all(i < 0 for i in plan.ids):
        names = ", ".join(row["channel_names"][:12]) + (" …" if len(row["channel_names"]) > 12 else "")
        out.update(status="rejected",
                   reason=f"{row['path']}: no channel maps to the vocabulary's targets (channels: {names}); "
                          "check the dataset's montage settings (channels, positions)")
    return out


def standardize(manifest: str | Path, out: str | Path, cfg: MontageConfig = MontageConfig()) -> list[dict]:
    rows = [standardize_row(r, cfg) for r in read_rows(manifest)]
    write_rows(rows, MONTAGE_SCHEMA, out)
    finish_stage("standardize", rows, what=str(manifest))
    return rows
