"""Dataset adapters: one function per public release layout, `root → list[SourceFile]`.

An adapter reads the release's own label sources (folder names, `.rec` files, seizure summaries, true-label
`.mat` files, run types, trial tables) and returns one SourceFile per recording, with

- `subject` (and `session`/`run` where the release has them),
- `split` = the official split ("train" | "test") where the release defines one, else "",
- `label` = a recording-level label where the release labels whole recordings, else "",
- `events` = (onset_s, duration_s, label) tuples where labels are time-locked (cues, seizures, events).

Labels are the release's class names mapped to readable strings (e.g. TUEV 1..6 → "spsw", …). Which
windows become samples, and the class order, is configured per dataset (`labels:` in config/datasets/).
Adapters register into `pipeline.io.registry` (ADAPTERS by format name; a release's own file format, such
as SHU-MI's `.mat` or BCIC-IV-2a's GDF labels, into READERS by suffix) when this package is imported;
recordings are opened by `pipeline.io.readers.open_recording`.
"""

from __future__ import annotations

from pipeline.io.adapters import bciciv2a, chbmit, eegmat, physionet_mi, seedv, shu_mi, tuab, tuev, user  # noqa: F401
from pipeline.io.registry import ADAPTERS  # noqa: F401  (re-exported: the table the imports above fill)
