"""SEED-V (SJTU Emotion EEG Dataset, five emotions; Liu et al. 2021): 16 subjects × 3 sessions of film clips.

Layout: `EEG_raw/<subject>_<session>_<YYYYMMDD>.cnt` (e.g. `1_1_20180804.cnt`), Neuroscan CNT, 62 EEG channels
(plus M1/M2 mastoids and the HEO/VEO EOG pair, which the reader drops or the montage leaves out) at 1000 Hz.

Labels: each session shows 15 clips at fixed times; the release fixes, per session, the start and end second
of every trial and its emotion (0..4 = disgust, fear, sad, neutral, happy). The CNT files carry no such
events, so the table below is the label source. It is copied from the reference code of the paper's setup,
CBraMod `preprocessing/preprocessing_SEEDV.py` (`trials_of_sessions`, `labels_of_sessions`); several
independent public SEED-V loaders carry the same numbers under the release's names `start_second` /
`end_second` (the release's own README was not available to check against). Events are
(start, end − start, emotion) per trial.

Subject and session come from the file name; there is no official split. (The reference code splits the 15
trials of every session by index — trials 0-4 train, 5-9 validation, 10-14 test — see
config/datasets/seedv.yaml.)
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pipeline.io.adapters.layout import check_root, no_recordings
from pipeline.io.registry import register_adapter
from pipeline.io.source import SourceFile, recording_id

log = logging.getLogger(__name__)

LAYOUT = "EEG_raw/<subject>_<session>_<YYYYMMDD>.cnt (session 1..3)"
EMOTIONS = ("disgust", "fear", "sad", "neutral", "happy")  # label 0..4

# Per session: start and end second of the 15 trials, and each trial's emotion (index into EMOTIONS).
# Source: CBraMod preprocessing_SEEDV.py and other public SEED-V loaders (see the module docstring).
TRIAL_START_S: dict[str, tuple[int, ...]] = {
    "1": (30, 132, 287, 555, 773, 982, 1271, 1628, 1730, 2025, 2227, 2435, 2667, 2932, 3204),
    "2": (30, 299, 548, 646, 836, 1000, 1091, 1392, 1657, 1809, 1966, 2186, 2333, 2490, 2741),
    "3": (30, 353, 478, 674, 825, 908, 1200, 1346, 1451, 1711, 2055, 2307, 2457, 2726, 2888),
}
TRIAL_END_S: dict[str, tuple[int, ...]] = {
    "1": (102, 228, 524, 742, 920, 1240, 1568, 1697, 1994, 2166, 2401, 2607, 2901, 3172, 3359),
    "2": (267, 488, 614, 773, 967, 1059, 1331, 1622, 1777, 1908, 2153, 2302, 2428, 2709, 2817),
    "3": (321, 418, 643, 764, 877, 1147, 1284, 1418, 1679, 1996, 2275, 2425, 2664, 2857, 3066),
}
TRIAL_EMOTION: dict[str, tuple[int, ...]] = {
    "1": (4, 1, 3, 2, 0, 4, 1, 3, 2, 0, 4, 1, 3, 2, 0),
    "2": (2, 1, 3, 0, 4, 4, 0, 3, 2, 1, 3, 4, 1, 2, 0),
    "3": (2, 1, 3, 0, 4, 4, 0, 3, 2, 1, 3, 4, 1, 2, 0),
}

_NAME = re.compile(r"^(\d+)_([123])_(\d{8})\.cnt$", re.IGNORECASE)


def session_events(session: str) -> tuple[tuple[float, float, str], ...]:
    """The 15 (onset_s, duration_s, emotion) trials of session '1', '2' or '3'."""
    starts, ends, emotions = TRIAL_START_S[session], TRIAL_END_S[session], TRIAL_EMOTION[session]
    return tuple((float(s), float(e - s), EMOTIONS[k]) for s, e, k in zip(starts, ends, emotions))


@register_adapter("seedv")
def seedv(root: Path) -> list[SourceFile]:
    """One SourceFile per `<subject>_<session>_<date>.cnt`: subject, session, the session's 15 labelled trials.

    `.cnt` files whose name does not follow the release's pattern are skipped with a warning.
    """
    root = Path(root)
    if root.is_file():
        files, base = [root], root.parent
    else:
        base = check_root(root, "SEED-V", LAYOUT)
        files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() == ".cnt")
    out = []
    for cnt in files:
        m = _NAME.match(cnt.name)
        if m is None:
            log.warning("%s: not a SEED-V file name (<subject>_<session 1-3>_<YYYYMMDD>.cnt); skipped", cnt)
            continue
        subject, session = m[1], m[2]
        out.append(SourceFile(path=cnt, recording=recording_id(cnt, base), subject=subject, session=session,
                              task="emotion", events=session_events(session)))
    if not out:
        raise no_recordings(base, "SEED-V", LAYOUT)
    return out
