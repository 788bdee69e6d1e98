"""Ingest: find recordings, validate them, hash them → manifest.parquet + events.parquet.

Every file found gets a manifest row; unusable ones are `rejected` with a reason that names the
file and the problem, and the stage goes on. It fails only when no recording is usable (or on the
first problem with --strict).
"""

from __future__ import annotations

import logging
from pathlib import Path


from pipeline.config import IngestConfig
from pipeline.io.discover import discover
from pipeline.io.readers import data_offset, open_recording
from pipeline.io.recording import RecordingError
from pipeline.io.source import SourceFile
from pipeline.prep.report import finish_stage
from pipeline.progress import Progress
from pipeline.store.fingerprint import file_hashes
from pipeline.store.tables import EVENTS_SCHEMA, MANIFEST_SCHEMA, write_rows

log = logging.getLogger(__name__)


def source_row(src: SourceFile, dataset: str) -> dict:
    return {
        "recording": src.recording,
        "path": str(src.path.resolve()),
        "dataset": dataset,
        "subject": src.subject,
        "session": src.session,
        "task": src.task,
        "run": src.run,
        "bad_channels": list(src.bad_channels),
        "dropped_channels": [],
        "channel_names": [],
        "mains": src.mains,
        "official_split": src.split,
        "label": src.label,
    }


def read_into(row: dict, src: SourceFile, cfg: IngestConfig) -> list[dict]:
    """Fill `row` from the file's header and return its events; raise RecordingError when unusable.

    The row keeps what was learnt before a problem was found, so a rejected row still says as much
    as possible about the file.
    """
    row["sha256"], row["content_sha256"] = file_hashes(src.path, data_offset(src.path))
    rec = open_recording(src.path)
    info = rec.info
    row.update(
        format=info.format,
        reader=info.reader,
        n_channels=len(info.channel_names),
        sfreq=info.sfreq,
        n_samples=info.n_samples,
        duration_s=info.duration_s,
        channel_names=list(info.channel_names),
        dropped_channels=list(info.dropped),
    )
    notes = list(info.notes) + list(src.sidecar_notes)
    if info.dropped:
        notes.append(f"{len(info.dropped)} channel(s) at other sampling rates dropped: {', '.join(info.dropped)}")
    unknown_bad = sorted(set(src.bad_channels) - set(info.channel_names))
    if unknown_bad:
        notes.append(f"channels.tsv marks unknown channels bad: {unknown_bad}")
    row["reason"] = "; ".join(notes)
    if cfg.min_duration_s is not None and info.duration_s < cfg.min_duration_s:
        raise RecordingError(
            f"{src.path}: recording is {info.duration_s:.1f} s, shorter than one window ({cfg.min_duration_s:g} s)"
        )
    if not set(info.channel_names) - set(src.bad_channels):
        raise RecordingError(f"{src.path}: every channel is marked bad in channels.tsv")
    # BIDS events.tsv / a release's label files are the curated source; EDF+ annotations are used where there is none.
    if src.events:
        source = "bids" if src.path.name.endswith(("_eeg.edf", "_eeg.bdf")) else "release"
        events = [(o, d, t, source) for o, d, t in src.events]
    else:
        events = [(o, d, t, "edf+") for o, d, t in info.annotations]
    return [
        {"recording": src.recording, "onset_s": o, "duration_s": d, "label": t, "source": s} for o, d, t, s in events
    ]


def ingest(source: str | Path, out: str | Path, *, dataset: str | None = None, fmt: str = "auto",
           cfg: IngestConfig = IngestConfig(), strict: bool = False) -> list[dict]:
    source, out = Path(source), Path(out)
    dataset = dataset or (source.stem if source.is_file() else source.name)
    files = discover(source, fmt=fmt, subject_regex=cfg.subject_regex, honour_bids_status=cfg.honour_bids_status)
    rows, events = [], []
    seen_content: dict[str, str] = {}
    progress = Progress(f"ingest {dataset}", len(files), unit="file")
    for src in files:
        row = source_row(src, dataset)
        try:
            ev = read_into(row, src, cfg)
            first = seen_content.get(row["content_sha256"])
            if first is not None:
                raise RecordingError(f"{src.path}: duplicate of {first} (identical signal data)")
            seen_content[row["content_sha256"]] = str(src.path)
            row["status"] = "ok"
            events.extend(ev)
        except (RecordingError, OSError, ValueError) as exc:
            if strict:
                raise
            row.update(status="rejected", reason=str(exc))
            log.warning("rejected %s", exc)
        rows.append(row)
        progress.update(len(rows))
    write_rows(rows, MANIFEST_SCHEMA, out / "manifest.parquet")
    write_rows(events, EVENTS_SCHEMA, out / "events.parquet")
    finish_stage("ingest", rows, what=f"{source}")
    return rows
