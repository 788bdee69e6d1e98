"""Raw recording channel names -> canonical vocabulary names.

Only exact rules are applied (prefix/suffix stripping, case, old 10-20 names);
anything that does not land on a vocabulary name is None, never a guess.
Handled spellings, e.g.:
    'EEG FP1-REF' -> 'Fp1'     TUH referential ('-REF', '-LE', '-AR', ...)
    'EEG T3-LE'   -> 'T7'      old 10-20 names via OLD_1020_ALIASES
    'Fc5.'        -> 'FC5'     PhysioNet pads names with dots
    'EEG-Fz'      -> 'Fz'      BCI IV 2a
    'FP1-F7'      -> 'Fp1-F7'  bipolar, only if the pair is in the vocabulary
    'T8-P8-1'     -> 'T8-P8'   mne's '-N' suffix on duplicated names
    'EEG EKG1-REF', 'STI 014', 'EDF Annotations' -> None
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.montage.sites import OLD_1020_ALIASES, bipolar_name
from pipeline.montage.vocabulary import Vocabulary, load_vocabulary

# Suffix tokens that name a *reference*, not a second electrode: TUH's REF
# (common reference), LE (linked ears), AR/AVG/AV/CAR (average reference), and
# ear/mastoid references as in sleep/clinical exports ('C3-A2', 'C4-M1').
# 'X-Y' with Y not listed here is read as a bipolar derivation.
REFERENCE_TOKENS: frozenset[str] = frozenset({"REF", "LE", "AR", "AVG", "AV", "CAR", "A1", "A2", "M1", "M2"})

# Channel-type prefixes. EEG prefixes are stripped; the others mark a
# non-EEG channel even when the rest looks like a site ('EOG Fp1').
EEG_PREFIXES: tuple[str, ...] = ("EEG",)
NON_EEG_PREFIXES: tuple[str, ...] = (
    "ECG", "EKG", "EMG", "EOG", "RESP", "MISC", "STI", "STIM", "TRIG", "PHOTIC", "SPO2", "STATUS",
)

_SEP = r"[\s\-_:]+"
_EEG_PREFIX = re.compile(rf"^(?:{'|'.join(EEG_PREFIXES)}){_SEP}(?P<rest>.+)$", re.IGNORECASE)
_NON_EEG = re.compile(rf"^(?:{'|'.join(NON_EEG_PREFIXES)})(?:\d*)(?:{_SEP}|$)", re.IGNORECASE)
_ALIASES = {old.upper(): new for old, new in OLD_1020_ALIASES.items()}


@dataclass(frozen=True)
class ResolvedName:
    """A raw channel name resolved against the vocabulary."""

    name: str                  # canonical vocabulary name
    bipolar: bool              # True for 'Anode-Cathode' channels
    anode: str                 # the site itself for referential channels
    cathode: str | None        # None for referential channels
    via_alias: bool            # an old 10-20 name (T3..T6) was translated


def normalize_name(raw: str, *, vocabulary: Vocabulary | None = None) -> str | None:
    """Canonical vocabulary name for a raw channel name, or None if it has none."""
    resolved = resolve_name(raw, vocabulary=vocabulary)
    return resolved.name if resolved else None


def resolve_name(raw: str, *, vocabulary: Vocabulary | None = None) -> ResolvedName | None:
    """Like `normalize_name`, but also says how the name was read."""
    vocab = vocabulary if vocabulary is not None else load_vocabulary()
    text = re.sub(r"\s+", " ", raw).strip().rstrip(".").strip()
    if not text or _NON_EEG.match(text):
        return None
    prefixed = _EEG_PREFIX.match(text)
    if prefixed:
        text = prefixed["rest"]
    parts = [p.strip() for p in text.split("-")]
    if len(parts) >= 3 and parts[-1].isdigit():
        parts = parts[:-1]  # mne de-duplicates repeated names as 'NAME-0', 'NAME-1'
    if len(parts) == 1:
        site = _site(parts[0], vocab)
        return ResolvedName(site[0], False, site[0], None, site[1]) if site else None
    if len(parts) != 2:
        return None
    first, second = (_site(p, vocab) for p in parts)
    if first and second:
        pair = bipolar_name(first[0], second[0])
        if vocab.contains(pair) and vocab.kind_of(pair) == "bipolar":
            return ResolvedName(pair, True, first[0], second[0], first[1] or second[1])
    if first and parts[1].upper() in REFERENCE_TOKENS:
        # An ear/mastoid site referenced to another ear/mastoid ('A1-A2') is not a site channel.
        if second and vocab.kind_of(first[0]) == "reference":
            return None
        return ResolvedName(first[0], False, first[0], None, first[1])
    return None


def electrode_label(raw: str) -> str:
    """A raw channel name as the electrode label a layout would list: exporters' 'EEG ' prefix and a reference
    suffix dropped ('EEG A1' -> 'A1', 'EEG C3-REF' -> 'C3', 'Fc5.' -> 'Fc5'); anything else unchanged."""
    text = re.sub(r"\s+", " ", raw).strip().rstrip(".").strip()
    prefixed = _EEG_PREFIX.match(text)
    if prefixed:
        text = prefixed["rest"].strip()
    head, sep, tail = text.rpartition("-")
    if sep and head and tail.strip().upper() in REFERENCE_TOKENS:
        text = head.strip()
    return text


def _site(token: str, vocab: Vocabulary) -> tuple[str, bool] | None:
    """(canonical referential site, via_alias) for one electrode token, or None."""
    upper = token.upper()
    alias = _ALIASES.get(upper)
    name = vocab.canonical_case(alias if alias else upper)
    if name is None or vocab.kind_of(name) == "bipolar":
        return None
    return name, alias is not None
