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
        out.update(status="rejected", reason=_no_target_reason(row, plan))
    return out


def _short(names, n: int = 12) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (" …" if len(names) > n else "")


def _no_target_reason(row: dict, plan) -> str:
    """Why nothing maps, with the fix: vocabulary channels outside the target set need `montage.channels`."""
    off = [n for n, why in zip(plan.unmapped, plan.unmapped_reason) if why == "not-targeted"]
    if off:
        return (f"{row['path']}: none of its channels is among the dataset's {len(plan.targets)} target channels "
                f"({_short(plan.targets, 6)}); {_short(off)} are known channels outside that set: add "
                f"`montage: {{channels: [{', '.join(off)}]}}` to the dataset's entry")
    return (f"{row['path']}: no channel maps to the targets (channels: {_short(row['channel_names'])}): none is a "
            "known 10-20/10-10 name; rename them in the file, or for position labels (A1..D32) set "
            "`montage: {positions: <mne montage>}`")


# Unmapped reasons a user should hear about (`unused`/`duplicate` are the expected rest of a dense cap).
_LOST = ("unknown-name", "not-targeted", "no-position")


def montage_quality(rows: list[dict]) -> dict:
    """Per recording, the source channels dropped (with why) and the targets padded; one warning per distinct
    (dropped, padded) pattern with its recording count, so a large corpus logs a few lines, not thousands."""
    recordings, patterns = {}, {}
    for r in rows:
        if r["status"] != "ok":
            continue
        plan = json.loads(r["plan"])
        dropped = {n: why for n, why in zip(plan["unmapped"], plan["unmapped_reason"]) if why in _LOST}
        padded = list(r["missing_channels"])
        if dropped or padded:
            recordings[r["recording"]] = {"dropped": dropped, "padded": padded}
            key = (tuple(sorted(dropped.items())), tuple(padded))
            patterns.setdefault(key, []).append(r["recording"])
    warnings = []
    for (dropped, padded), recs in patterns.items():
        what = []
        if dropped:
            # many: counted by reason, a few names each (a 64-channel cap read for the 19 standard sites drops 45;
            # every name is in the summary's `recordings`)
            by_why = {}
            for n, why in dropped:
                by_why.setdefault(why, []).append(n)
            listed = (", ".join(f"{n} ({why})" for n, why in dropped) if len(dropped) <= 6 else
                      "; ".join(f"{len(names)} {why}: {_short(names, 6)}" for why, names in by_why.items()))
            what.append(f"channels dropped: {listed}")
        if padded:
            what.append(f"targets padded (no source, zero + masked): {', '.join(padded)}")
        hint = "; map them with `montage: {channels: [...]}` or an alias" if dropped else ""
        warnings.append(f"{len(recs)} recording(s) ({_short(recs, 3)}): {'; '.join(what)}{hint}")
    return {"recordings": recordings, "warnings": warnings}


def standardize(manifest: str | Path, out: str | Path, cfg: MontageConfig = MontageConfig()) -> list[dict]:
    rows = [standardize_row(r, cfg) for r in read_rows(manifest)]
    write_rows(rows, MONTAGE_SCHEMA, out)
    finish_stage("standardize", rows, what=str(manifest), quality=montage_quality(rows),
                 quality_path=Path(out).with_name(Path(out).stem + "_quality.json"))
    return rows
