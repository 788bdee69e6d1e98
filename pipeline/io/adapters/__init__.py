"""Dataset adapters: one function per public release layout, `root → list[SourceFile]`.

An adapter reads the release's own label sources (folder names, `.rec` files, seizure summaries, true-label
`.mat` files, run types, trial tables) and returns one SourceFile per recording, with

- `subject` (and `session`/`run` where the release has them),
- `split` = the official split ("train" | "test") where the release defines one, else "",
- `label` = a recording-level label where the release labels whole recordings, else "",
- `events` = (onset_s, duration_s, label) tuples where labels are time-locked (cues, seizures, events).

Labels are the release's class names mapped to readable strings (e.g. TUEV 1..6 → "spsw", …). Which
windows become samples, and the class order, is configured per dataset (`labels:` in config/datasets/).
Recordings themselves are opened by `pipeline.io.edf.open_recording`, which dispatches on the suffix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pipeline.io.discover import SourceFile

Adapter = Callable[[Path], list[SourceFile]]

ADAPTERS: dict[str, Adapter] = {}


def register(name: str) -> Callable[[Adapter], Adapter]:
    def wrap(fn: Adapter) -> Adapter:
        ADAPTERS[name] = fn
        return fn

    return wrap


from pipeline.io.adapters import chbmit, eegmat, physionet_mi, tuab, tuev  # noqa: E402,F401  (registration)
from pipeline.io.adapters import bciciv2a, seedv, shu_mi, user  # noqa: E402,F401  (registration)
