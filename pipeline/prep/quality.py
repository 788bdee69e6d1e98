"""The patch stage's quality section and its guards: what the amplitude/NaN rules dropped, per split and class;
classes the label source never names; validation or test splits left with one class.

A window lost silently looks like a smaller dataset; a one-class validation split makes model selection run
on a degenerate score (NaN AUROC). So drops are counted and warned about, and the two label problems stop the
stage with the fix in the message (`splits: {allow_single_class: true}` opts out of the second).
"""

from __future__ import annotations

from collections import Counter

from pipeline.config import LabelConfig, SplitConfig
from pipeline.errors import StageFailed


def window_quality(results: list[dict], rows: list[dict], *, labelled: bool) -> dict:
    """{"windows": {split: {class: kept}}, "dropped_amplitude_nan": {split: {class: n}}, "warnings": [...]} over a
    patch run's per-recording results and index rows."""
    kept = Counter((r["split"], r["label"] if labelled else None) for r in rows)
    dropped = Counter((s, c) for res in results for s, c in res.get("dropped", []))
    quality = {"windows": _nest(kept), "dropped_amplitude_nan": _nest(dropped), "warnings": []}
    if dropped:
        total = sum(dropped.values())
        parts = ", ".join(f"{s}{'/' + c if c else ''} {n} of {n + kept.get((s, c), 0)}"
                          for (s, c), n in sorted(dropped.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))))
        quality["warnings"].append(
            f"{total} window(s) dropped by the amplitude/NaN rules ({parts}); if large deflections are the signal, "
            "raise the dataset's `preprocess: {reject_uv: ...}`")
    return quality


def _nest(counts: Counter) -> dict:
    out: dict = {}
    for (split, cls), n in sorted(counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        out.setdefault(split, {})[cls if cls is not None else "all"] = n
    return out


def check_split_classes(quality: dict, splits: SplitConfig, *, where: str) -> str | None:
    """The refusal of a validation or test split holding one class, or None; with `splits.allow_single_class` a
    warning in `quality` instead."""
    for split in ("val", "test"):
        classes = {c: n for c, n in quality["windows"].get(split, {}).items() if n}
        if len(classes) != 1:
            continue
        (cls, n), = classes.items()
        why = ("validation is the last fraction of each training recording (`val_unit: time`), and trials sorted by "
               "class leave one class there; shuffle the trials in the files, or hold out subjects "
               "(`splits: {val: [...]}` or `val_unit: subject`)" if split == "val" and splits.val_unit == "time"
               else f"give the {split} split subjects with every class (`splits: {{{split}: [...]}}`)")
        message = (f"patch {where}: the {split} split holds only class {cls!r} ({n} windows), so its scores "
                   f"(AUROC, balanced accuracy) are degenerate; {why}; or set `splits: {{allow_single_class: true}}`")
        if not splits.allow_single_class:
            return message
        quality["warnings"].append(message)
    return None


def check_classes_found(meta: dict[str, dict], labels: LabelConfig, *, where: str) -> None:
    """Every configured class must be named by the label source (after `labels.map`); the error lists the labels
    the files hold."""
    if labels.mode == "recording":
        found = Counter(m.get("label") or "" for m in meta.values())
    else:
        found = Counter(e[2] for m in meta.values() for e in m.get("events", []))
    named = {labels.class_of(label) for label in found}
    missing = [c for c in labels.classes if c not in named and c != labels.background]
    if not missing:
        return
    shown = ", ".join(f"{label!r} ({n})" for label, n in found.most_common(20)) or "none"
    raise StageFailed(f"patch {where}: class(es) {missing} not found among the labels of its "
                      f"{'manifest' if labels.mode == 'recording' else 'events'} (labels found: {shown}); name the "
                      f"classes as the files do, or map them: `labels: {{map: {{<label in file>: <class>}}}}`")
