"""The EDF/BDF header fields the readers need, and ranges of data records read with plain file reads.

edfio parses and validates the header; this module only reads samples. edfio's lazy loader maps
the whole data section into memory, and every page touched stays in the process's resident set
until the file is closed — 1.3 GiB at the end of a 24-hour 23-channel recording
(benchmarks/preprocess.py). Reading each chunk's records with `readinto` keeps memory at one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

_ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")


def read_head(path: Path) -> bytes:
    """The fixed 256-byte header."""
    with Path(path).open("rb") as fh:
        return fh.read(256)


def header_int(path: Path, lo: int, hi: int) -> int:
    return int(read_head(path)[lo:hi].decode("ascii").strip())


def header_bytes(path: Path) -> bytes:
    """The fixed header plus the signal headers: 256 × (number of signals + 1) bytes."""
    with Path(path).open("rb") as fh:
        head = fh.read(256)
        return head + fh.read(256 * int(head[252:256].decode("ascii").strip()))


def edf_format(path: Path) -> str:
    """edf | edf+c | edf+d | bdf | bdf+c | bdf+d, from the first byte and the reserved field."""
    head = read_head(path)
    kind = "bdf" if head[:1] == b"\xff" else "edf"
    reserved = head[192:236].decode("ascii", "replace").strip().upper()
    if reserved.startswith(("EDF+C", "BDF+C")):
        return kind + "+c"
    if reserved.startswith(("EDF+D", "BDF+D")):
        return kind + "+d"
    return kind


def header_data_offset(path: Path) -> int:
    """The header's 'bytes in header' field (where the first data record starts); 0 when it is no number."""
    try:
        return int(read_head(path)[184:192].decode("ascii").strip())
    except ValueError:
        return 0


@dataclass(frozen=True)
class RecordLayout:
    path: Path
    header_bytes: int
    n_records: int
    bytes_per_sample: int  # 2 (EDF) or 3 (BDF)
    labels: tuple[str, ...]  # every signal in file order, annotation signals included
    samples_per_record: tuple[int, ...]

    @classmethod
    def from_header(cls, path: str | Path, n_records: int) -> "RecordLayout":
        """`n_records` comes from the validated header (edfio), which handles the −1 'unknown' case."""
        path = Path(path)
        with path.open("rb") as fh:
            head = fh.read(256)
            ns = int(head[252:256].decode("ascii").strip())
            signal_header = fh.read(256 * ns)
        labels = tuple(signal_header[i * 16:(i + 1) * 16].decode("latin-1").strip() for i in range(ns))
        spr_at = 216 * ns
        spr = tuple(int(signal_header[spr_at + i * 8: spr_at + (i + 1) * 8].decode("ascii").strip()) for i in range(ns))
        return cls(path=path, header_bytes=int(head[184:192].decode("ascii").strip()), n_records=n_records,
                   bytes_per_sample=3 if head[:1] == b"\xff" else 2, labels=labels, samples_per_record=spr)

    @property
    def signal_positions(self) -> tuple[int, ...]:
        """File positions of the ordinary (non-annotation) signals, in edfio's `signals` order."""
        return tuple(i for i, lab in enumerate(self.labels) if lab not in _ANNOTATION_LABELS)

    @property
    def record_bytes(self) -> int:
        return sum(self.samples_per_record) * self.bytes_per_sample

    def read_digital(self, positions: list[int], start: int, stop: int) -> np.ndarray:
        """Digital samples [len(positions), stop - start] of signals at `positions` (all at one rate)."""
        spr = self.samples_per_record[positions[0]]
        r0, r1 = start // spr, -(-stop // spr)
        raw = np.empty((r1 - r0) * self.record_bytes, dtype=np.uint8)
        with self.path.open("rb") as fh:
            fh.seek(self.header_bytes + r0 * self.record_bytes)
            got = fh.readinto(memoryview(raw))
        if got != raw.size:
            raise ValueError(f"{self.path}: data ends early (records {r0}–{r1} of {self.n_records})")
        records = raw.reshape(r1 - r0, self.record_bytes)
        offsets = np.concatenate([[0], np.cumsum(self.samples_per_record)]) * self.bytes_per_sample
        out = np.empty((len(positions), (r1 - r0) * spr), dtype=np.int32)
        for row, pos in enumerate(positions):
            block = records[:, offsets[pos]:offsets[pos + 1]]
            out[row] = _decode(np.ascontiguousarray(block).reshape(-1), self.bytes_per_sample)
        first = start - r0 * spr
        return out[:, first:first + (stop - start)]


def _decode(buf: np.ndarray, bytes_per_sample: int) -> np.ndarray:
    if bytes_per_sample == 2:
        return buf.view("<i2")
    b = buf.reshape(-1, 3).astype(np.int32)  # 24-bit little-endian, two's complement
    value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    return np.where(value >= 1 << 23, value - (1 << 24), value)
