"""Global channel vocabulary: one stable integer id per canonical channel name.

The committed `resources/channel_vocabulary.tsv` is the source of truth; models
embed channels by these ids, so ids are append-only forever.
`build_vocabulary_rows()` regenerates the file and a test checks they agree.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pipeline.montage.sites import (
    CHBMIT_BIPOLAR,
    OLD_1020_ALIASES,
    REFERENCE_SITES,
    STANDARD_1020,
    TUH_DOUBLE_BANANA,
    bipolar_name,
)

VOCABULARY_FILE = "channel_vocabulary.tsv"
KINDS = ("1020", "1010", "1005", "reference", "bipolar")

# A 10-10 site is a position on the 10 % grid: one of the 10-10 row prefixes
# followed by a number or 'z'. Everything else in the 10-05 montage (AFp*, AFF*,
# FFC*, ..., the 'h' half positions, OI*) lies on the 5 % grid only.
_TEN_TEN = re.compile(r"^(Fp|AF|F|FT|FC|T|C|TP|CP|P|PO|O|I)(\d+|z)$")


def resources_dir() -> Path:
    """The repository's `resources/` folder (the package lives in `<repo>/pipeline/`)."""
    return Path(__file__).resolve().parents[2] / "resources"


def _ten_five_montage_names() -> list[str]:
    """Electrode names of mne's 10-05 template, in the montage file's order."""
    import mne

    builtin = mne.channels.get_builtin_montages()
    # mne 1.13 renamed standard_1005 to colin27_1005 (the old name warns).
    name = "colin27_1005" if "colin27_1005" in builtin else "standard_1005"
    return list(mne.channels.make_standard_montage(name).ch_names)


def build_vocabulary_rows() -> list[tuple[int, str, str]]:
    """Rows `(id, name, kind)` of the channel vocabulary, in id order.

    Order (fixed, because ids must never change once published):
    1. the 19 classic 10-20 sites in `STANDARD_1020` order (kind 1020);
    2. the other 10-10 grid sites, then the remaining 10-05 sites (kinds 1010,
       1005), each in mne's 10-05 montage file order (front to back, left to
       right); old names T3/T4/T5/T6 and the ear/mastoid sites are skipped here;
    3. the ear/mastoid references A1 A2 M1 M2 (kind reference);
    4. bipolar pairs: the TUH double banana, then the CHB-MIT set, deduplicated.
    New channels must be appended after the last row, never inserted.
    """
    montage = _ten_five_montage_names()
    missing = [s for s in STANDARD_1020 if s not in montage]
    if missing:
        raise RuntimeError(f"mne's 10-05 montage lacks 10-20 sites {missing}; check the mne version")
    skip = set(STANDARD_1020) | set(REFERENCE_SITES) | set(OLD_1020_ALIASES)
    rest = [n for n in montage if n not in skip]
    named: list[tuple[str, str]] = [(n, "1020") for n in STANDARD_1020]
    named += [(n, "1010") for n in rest if _TEN_TEN.match(n)]
    named += [(n, "1005") for n in rest if not _TEN_TEN.match(n)]
    named += [(n, "reference") for n in REFERENCE_SITES]
    pairs = dict.fromkeys(bipolar_name(a, c) for a, c in TUH_DOUBLE_BANANA + CHBMIT_BIPOLAR)
    named += [(n, "bipolar") for n in pairs]
    return [(i, name, kind) for i, (name, kind) in enumerate(named)]


def write_vocabulary(path: Path | None = None) -> Path:
    """Regenerate the vocabulary TSV (default: the committed resource file)."""
    path = Path(path) if path is not None else resources_dir() / VOCABULARY_FILE
    lines = ["id\tname\tkind"] + [f"{i}\t{n}\t{k}" for i, n, k in build_vocabulary_rows()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class Vocabulary:
    """Canonical channel names; a name's id is its position in `names`."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    _ids: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)
    _casefold: dict[str, str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.kinds):
            raise ValueError(f"vocabulary has {len(self.names)} names but {len(self.kinds)} kinds")
        ids: dict[str, int] = {}
        folded: dict[str, str] = {}
        for i, (name, kind) in enumerate(zip(self.names, self.kinds)):
            if kind not in KINDS:
                raise ValueError(f"vocabulary entry {name!r} has unknown kind {kind!r}; expected one of {KINDS}")
            if name in ids:
                raise ValueError(f"vocabulary lists {name!r} twice (ids {ids[name]} and {i})")
            if name.upper() in folded:
                raise ValueError(f"vocabulary names {folded[name.upper()]!r} and {name!r} differ only in case")
            ids[name] = i
            folded[name.upper()] = name
        object.__setattr__(self, "_ids", ids)
        object.__setattr__(self, "_casefold", folded)

    def __len__(self) -> int:
        return len(self.names)

    def contains(self, name: str) -> bool:
        """Whether `name` is a canonical vocabulary name (exact case)."""
        return name in self._ids

    def id_of(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            hint = self._casefold.get(name.upper())
            fix = f"did you mean {hint!r}? " if hint else ""
            raise KeyError(
                f"channel {name!r} is not in the vocabulary; {fix}"
                "normalize raw names with pipeline.montage.normalize_name first"
            ) from None

    def name_of(self, id_: int) -> str:
        if not 0 <= id_ < len(self.names):
            raise KeyError(f"vocabulary id {id_} out of range 0..{len(self.names) - 1}")
        return self.names[id_]

    def kind_of(self, name: str) -> str:
        return self.kinds[self.id_of(name)]

    def canonical_case(self, name: str) -> str | None:
        """The vocabulary name equal to `name` ignoring case, or None."""
        return self._casefold.get(name.upper())


def load_vocabulary(path: Path | str | None = None) -> Vocabulary:
    """Read a vocabulary TSV (default: the committed `resources/channel_vocabulary.tsv`)."""
    if path is None or Path(path).resolve() == resources_dir() / VOCABULARY_FILE:
        return _default_vocabulary()  # parsed once per process
    return _read_vocabulary(Path(path))


@lru_cache(maxsize=1)
def _default_vocabulary() -> Vocabulary:
    return _read_vocabulary(resources_dir() / VOCABULARY_FILE)


def _read_vocabulary(path: Path) -> Vocabulary:
    if not path.is_file():
        raise FileNotFoundError(
            f"channel vocabulary {path} not found; regenerate it with "
            "`python -m pipeline.montage.vocabulary`"
        )
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or set(rows[0]) != {"id", "name", "kind"}:
        raise ValueError(f"{path}: expected a TSV with columns id, name, kind")
    for expected, row in enumerate(rows):
        if int(row["id"]) != expected:
            raise ValueError(
                f"{path}: row for {row['name']!r} has id {row['id']}, expected {expected} (ids must be 0..n-1 in order)"
            )
    return Vocabulary(names=tuple(r["name"] for r in rows), kinds=tuple(r["kind"] for r in rows))


if __name__ == "__main__":
    print(f"wrote {write_vocabulary()}")
