"""Named target channel sets (`resources/channel_sets.yaml`)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import yaml

from pipeline.montage.names import normalize_name
from pipeline.montage.vocabulary import Vocabulary, resources_dir

CHANNEL_SETS_FILE = "channel_sets.yaml"


def channel_set_names() -> tuple[str, ...]:
    """Names of the sets defined in the committed channel_sets.yaml."""
    return tuple(_channel_sets(resources_dir() / CHANNEL_SETS_FILE))


def load_channel_set(name_or_list: str | Iterable[str], *, vocabulary: Vocabulary | None = None) -> tuple[str, ...]:
    """Canonical channel names of a named set, or of an explicit list of names.

    A list is normalized entry by entry (`'FP1'` -> `'Fp1'`, `'T3-T5'` -> `'T7-P7'`);
    a name that is not in the vocabulary raises ValueError.
    """
    if isinstance(name_or_list, str):
        sets = _channel_sets(resources_dir() / CHANNEL_SETS_FILE)
        if name_or_list not in sets:
            raise ValueError(
                f"unknown channel set {name_or_list!r}; known sets: {', '.join(sets)} "
                f"(defined in {resources_dir() / CHANNEL_SETS_FILE}), or pass a list of channel names"
            )
        raw: Iterable[str] = sets[name_or_list]
        where = f"channel set {name_or_list!r}"
    else:
        raw = name_or_list
        where = "channel list"
    out = []
    for entry in raw:
        canonical = normalize_name(str(entry), vocabulary=vocabulary)
        if canonical is None:
            raise ValueError(
                f"{where}: {entry!r} is not a vocabulary channel; use a name from "
                f"{resources_dir() / 'channel_vocabulary.tsv'} (bipolar as 'Anode-Cathode')"
            )
        out.append(canonical)
    return tuple(out)


@lru_cache(maxsize=4)
def _channel_sets(path: Path) -> dict[str, tuple[str, ...]]:
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: expected a mapping of set name -> list of channel names")
    return {str(k): tuple(str(x) for x in v) for k, v in data.items()}
