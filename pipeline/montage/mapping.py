"""Montage plans: which source channel(s) build each target channel.

A plan is computed once per recording layout from channel names (and optionally
electrode positions), stored in manifests via `to_dict`, and applied to data
with `MontagePlan.apply`. Nothing is guessed: a target that cannot be built
exactly is reported in `missing`, a source that serves no target in `unmapped`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.montage.assign import assign_nearest
from pipeline.montage.channel_sets import load_channel_set
from pipeline.montage.names import ResolvedName, resolve_name
from pipeline.montage.positions import arc_distance_mm, load_electrode_positions, ten_five_template
from pipeline.montage.vocabulary import Vocabulary, load_vocabulary

PLAN_FORMAT = "montage-plan/1"
METHODS = ("name", "alias", "position", "bipolar-derived", "bipolar-source", "missing")
# Why a (good) source channel is in `unmapped`:
UNMAPPED_REASONS = (
    "unknown-name",  # its name is not a vocabulary channel (ECG, 'EEG T1-REF', ...)
    "duplicate",     # an earlier source channel already has the same canonical name
    "not-targeted",  # a vocabulary channel, but not among the requested targets
    "no-position",   # positions mode: the electrode has no position in the layout
    "unused",        # positions mode: not the nearest free electrode of any target
)


@dataclass(frozen=True, kw_only=True)
class MontagePlan:
    """Per-target recipe: `anode` row minus `cathode` row (if any) of the source data."""

    sources: tuple[str, ...]              # source channel names, in data row order
    targets: tuple[str, ...]              # output channel names (canonical), in output order
    ids: tuple[int, ...]                  # vocabulary id per target, -1 where it could not be built
    anode: tuple[int, ...]                # source row per target, -1 if missing
    cathode: tuple[int, ...]              # source row subtracted (derived bipolar), else -1
    method: tuple[str, ...]               # one of METHODS per target
    distance_mm: tuple[float | None, ...]  # positions mode: scalp distance target site -> electrode
    unmapped: tuple[str, ...]             # source channels that build nothing (never guessed)
    unmapped_reason: tuple[str, ...]      # one of UNMAPPED_REASONS per unmapped channel
    missing: tuple[str, ...]              # targets that could not be built
    positions: str | None = None          # layout used to read sources as electrodes, if any
    position_template: str | None = None  # mne 10-05 template the target sites came from

    def __post_init__(self) -> None:
        n = len(self.targets)
        for name in ("ids", "anode", "cathode", "method", "distance_mm"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"MontagePlan.{name} has {len(getattr(self, name))} entries for {n} targets")
        if len(self.unmapped_reason) != len(self.unmapped):
            raise ValueError("MontagePlan.unmapped_reason must give one reason per unmapped channel")
        bad_methods = sorted(set(self.method) - set(METHODS))
        if bad_methods:
            raise ValueError(f"MontagePlan: unknown methods {bad_methods}; expected {METHODS}")
        for target, a, c in zip(self.targets, self.anode, self.cathode):
            if not (-1 <= a < len(self.sources) and -1 <= c < len(self.sources)) or (c >= 0 > a):
                raise ValueError(
                    f"MontagePlan: target {target!r} has invalid source rows ({a}, {c}) for {len(self.sources)} sources"
                )
        built_missing = tuple(t for t, m in zip(self.targets, self.method) if m == "missing")
        if built_missing != self.missing:
            raise ValueError(f"MontagePlan.missing {self.missing} disagrees with the 'missing' methods {built_missing}")

    def source_of(self, target: str) -> str | None:
        """Source channel name feeding `target` ('Anode-Cathode' for derived bipolar), or None."""
        k = self.targets.index(target)
        if self.anode[k] < 0:
            return None
        if self.cathode[k] < 0:
            return self.sources[self.anode[k]]
        return f"{self.sources[self.anode[k]]}-{self.sources[self.cathode[k]]}"

    def apply(self, data: np.ndarray) -> np.ndarray:
        """[n_sources, n_samples] -> [n_targets, n_samples] float32; missing targets are zeros."""
        x = np.asarray(data)
        if x.ndim != 2 or x.shape[0] != len(self.sources):
            raise ValueError(
                f"MontagePlan.apply expects data of shape [{len(self.sources)} sources, n_samples], got {x.shape}; "
                "plan and data must come from the same channel list"
            )
        anode, cathode = np.asarray(self.anode, dtype=int), np.asarray(self.cathode, dtype=int)
        out = np.zeros((len(self.targets), x.shape[1]), dtype=np.float32)
        single = (anode >= 0) & (cathode < 0)
        derived = cathode >= 0
        out[single] = x[anode[single]]
        out[derived] = x[anode[derived]] - x[cathode[derived]]  # subtract before the float32 cast
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (lists, None for absent distances)."""
        out: dict[str, Any] = {"format": PLAN_FORMAT}
        out.update({k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MontagePlan:
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"not a montage plan: format {data.get('format')!r}, expected {PLAN_FORMAT!r}")
        values = {k: v for k, v in data.items() if k != "format"}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"montage plan has unknown fields {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def plan_montage(
    channel_names: Sequence[str],
    *,
    targets: Sequence[str] | str | None,
    positions: str | Path | None = None,
    bad_channels: Collection[str] = (),
    max_distance_mm: float = 20.0,
    vocabulary: Vocabulary | None = None,
) -> MontagePlan:
    """Plan how to build `targets` from a recording's channels.

    targets: None or "all" keeps every source channel with a vocabulary name
        (source order, first of duplicates wins); another string is a channel
        set from resources/channel_sets.yaml; a list is normalized entry by
        entry ('FP1' -> 'Fp1'). A target outside the vocabulary raises ValueError.
    By name (positions=None): a referential target is the source whose name
        normalizes to it; a bipolar target 'A-B' is a source of that bipolar
        name if present, else derived as source A minus source B. Caveat: raw
        names are read as 10-20 names, so a BioSemi 'A1' would be the ear A1;
        configure `positions` for cap layouts with their own naming.
    By position (positions = an mne montage name such as 'biosemi128', or a
        BIDS *_electrodes.tsv): source names are only looked up in that layout,
        never read as 10-20 names. Each target site takes the nearest free good
        electrode, closest pairs first, so no electrode serves two sites
        (exact ties go to the earlier target, then the earlier source row);
        distances are scalp arcs after both layouts are fitted to a sphere
        (see pipeline.montage.positions for the frame and the 10-05 site
        template). Sites farther than `max_distance_mm` from any free
        electrode are missing; the ear/mastoid references have no cap site.
    bad_channels: source names never used and not reported as unmapped (by
        name they also match on the normalized name, e.g. 'FP1' for 'EEG FP1-REF').
    """
    vocab = vocabulary if vocabulary is not None else load_vocabulary()
    sources = tuple(str(c) for c in channel_names)
    wanted = _resolve_targets(targets, vocab)
    if positions is None:
        resolved = [resolve_name(s, vocabulary=vocab) for s in sources]
        bad = _bad_by_name(sources, resolved, bad_channels, vocab)
        return _plan_by_name(sources, resolved, bad, wanted, vocab)
    if wanted is None:
        raise ValueError(
            "plan_montage with positions needs explicit targets (a channel-set name such as "
            "'standard_1020' or a list); electrodes are never named after their nearest site wholesale"
        )
    bad = [s in set(bad_channels) for s in sources]
    return _plan_by_position(sources, bad, wanted, vocab, positions=positions, max_distance_mm=max_distance_mm)


def _resolve_targets(targets: Sequence[str] | str | None, vocab: Vocabulary) -> tuple[str, ...] | None:
    if targets is None or targets == "all":
        return None
    names = load_channel_set(targets, vocabulary=vocab)
    if not names:
        raise ValueError("plan_montage: targets is empty; pass None/'all' to keep every vocabulary channel")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"plan_montage: target {name!r} is listed twice")
        seen.add(name)
    return names


def _bad_by_name(
    sources: tuple[str, ...], resolved: list[ResolvedName | None], bad_channels: Collection[str], vocab: Vocabulary
) -> list[bool]:
    raw = set(bad_channels)
    canonical = {r.name for r in (resolve_name(b, vocabulary=vocab) for b in raw) if r}
    return [s in raw or (r is not None and r.name in canonical) for s, r in zip(sources, resolved)]


class _Builder:
    """Accumulates per-target rows of a plan."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.rows: list[tuple[str, int, int, int, str, float | None]] = []

    def add(self, target: str, method: str, anode: int = -1, cathode: int = -1, distance: float | None = None) -> None:
        vid = -1 if method == "missing" else self.vocab.id_of(target)
        self.rows.append((target, vid, anode, cathode, method, distance))

    def used_rows(self) -> set[int]:
        return {row for r in self.rows for row in (r[2], r[3]) if row >= 0}

    def plan(self, sources: tuple[str, ...], unmapped: list[tuple[str, str]], **extra: str | None) -> MontagePlan:
        cols = list(zip(*self.rows)) if self.rows else [()] * 6
        return MontagePlan(
            sources=sources,
            targets=tuple(cols[0]),
            ids=tuple(cols[1]),
            anode=tuple(cols[2]),
            cathode=tuple(cols[3]),
            method=tuple(cols[4]),
            distance_mm=tuple(cols[5]),
            unmapped=tuple(name for name, _ in unmapped),
            unmapped_reason=tuple(reason for _, reason in unmapped),
            missing=tuple(r[0] for r in self.rows if r[4] == "missing"),
            **extra,
        )


def _plan_by_name(
    sources: tuple[str, ...],
    resolved: list[ResolvedName | None],
    bad: list[bool],
    wanted: tuple[str, ...] | None,
    vocab: Vocabulary,
) -> MontagePlan:
    first: dict[str, int] = {}  # canonical name -> first good source row
    for i, r in enumerate(resolved):
        if r is not None and not bad[i]:
            first.setdefault(r.name, i)

    def single_method(i: int) -> str:
        r = resolved[i]
        assert r is not None
        return "bipolar-source" if r.bipolar else ("alias" if r.via_alias else "name")

    builder = _Builder(vocab)
    used: set[int] = set()
    if wanted is None:
        for name, i in first.items():
            builder.add(name, single_method(i), anode=i)
            used.add(i)
    else:
        for target in wanted:
            if target in first:
                builder.add(target, single_method(first[target]), anode=first[target])
                used.add(first[target])
            elif vocab.kind_of(target) == "bipolar" and all(s in first for s in target.split("-")):
                a, c = (first[s] for s in target.split("-"))
                builder.add(target, "bipolar-derived", anode=a, cathode=c)
                used.update((a, c))
            else:
                builder.add(target, "missing")

    unmapped = []
    for i, (source, r) in enumerate(zip(sources, resolved)):
        if bad[i] or i in used:
            continue
        reason = "unknown-name" if r is None else ("duplicate" if first[r.name] != i else "not-targeted")
        unmapped.append((source, reason))
    return builder.plan(sources, unmapped)


def _plan_by_position(
    sources: tuple[str, ...],
    bad: list[bool],
    wanted: tuple[str, ...],
    vocab: Vocabulary,
    *,
    positions: str | Path,
    max_distance_mm: float,
) -> MontagePlan:
    layout = load_electrode_positions(positions)
    template = ten_five_template()

    # Electrodes: good source channels that have a position in the layout.
    unmapped: list[tuple[int, str]] = []  # (source row, reason)
    electrodes: list[int] = []  # source rows
    electrode_rows: list[int] = []  # matching layout rows
    for i, source in enumerate(sources):
        row = None if bad[i] else layout.index_of(source)
        if row is not None:
            electrodes.append(i)
            electrode_rows.append(row)
        elif not bad[i]:
            unmapped.append((i, "no-position"))

    # Target sites: every referential site a target needs, once.
    sites = list(dict.fromkeys(s for t in wanted for s in (t.split("-") if vocab.kind_of(t) == "bipolar" else [t])))
    placed = [s for s in sites if template.index_of(s) is not None]
    site_dirs = template.directions[[template.index_of(s) for s in placed]].reshape(-1, 3)
    distance = arc_distance_mm(site_dirs, layout.directions[electrode_rows].reshape(-1, 3))
    chosen = assign_nearest(distance, max_distance_mm=max_distance_mm)
    site_source = {s: (electrodes[c[0]], c[1]) for s, c in zip(placed, chosen) if c is not None}

    builder = _Builder(vocab)
    for target in wanted:
        if vocab.kind_of(target) != "bipolar":
            if target in site_source:
                i, d = site_source[target]
                builder.add(target, "position", anode=i, distance=round(d, 3))
            else:
                builder.add(target, "missing")
            continue
        a, c = target.split("-")
        if a in site_source and c in site_source:
            d = max(site_source[a][1], site_source[c][1])  # the worse of the two placements
            rows = (site_source[a][0], site_source[c][0])
            builder.add(target, "bipolar-derived", anode=rows[0], cathode=rows[1], distance=round(d, 3))
        else:
            builder.add(target, "missing")

    used = builder.used_rows()  # a site placed for a bipolar target that failed serves nothing
    unmapped += [(i, "unused") for i in electrodes if i not in used]
    listed = [(sources[i], reason) for i, reason in sorted(unmapped)]
    return builder.plan(sources, listed, positions=str(positions), position_template=template.source)
