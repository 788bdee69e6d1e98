"""JSON-lines files (training metrics): read with a line that cannot be parsed named, rewritten atomically.

An append-only log killed mid-write ends in a torn last line; reading it drops that line with a warning naming the
file (the record being written when the writer died, which a resumed run writes again). A line that cannot be parsed
anywhere else is damage, not a kill: `JsonlError` names the file and the line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable

from pipeline.store.atomic import write_text_atomic

log = logging.getLogger(__name__)


class JsonlError(ValueError):
    """A JSON-lines file with a damaged line; the message names the file and the line."""


def read_records(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file ([] when it does not exist); a torn last line is dropped with a warning."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines) and not text.endswith("\n"):
                log.warning("%s: line %d is cut short (a writer killed mid-line?); dropped", path, number)
                break
            raise JsonlError(f"{path}: line {number} is not valid JSON ({exc.msg} at column {exc.colno}); "
                             "the file is damaged — delete the line or the file and rerun") from None
    return records


def rewrite(path: str | Path, records: Iterable[dict]) -> None:
    """Replace the file's content with `records` in one rename (a kill leaves the old or the new file, whole)."""
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
