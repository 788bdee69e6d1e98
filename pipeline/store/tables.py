"""Parquet tables of the data contracts, with explicit schemas so empty tables keep their types."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.atomic import atomic_path

_list_str = pa.list_(pa.string())

MANIFEST_SCHEMA = pa.schema([
    ("recording", pa.string()),
    ("path", pa.string()),
    ("sha256", pa.string()),
    ("content_sha256", pa.string()),
    ("dataset", pa.string()),
    ("subject", pa.string()),
    ("session", pa.string()),
    ("task", pa.string()),
    ("run", pa.string()),
    ("format", pa.string()),
    ("reader", pa.string()),
    ("n_channels", pa.int32()),
    ("sfreq", pa.float64()),
    ("n_samples", pa.int64()),
    ("duration_s", pa.float64()),
    ("channel_names", _list_str),
    ("bad_channels", _list_str),
    ("dropped_channels", _list_str),
    ("mains", pa.float64()),
    ("official_split", pa.string()),  # the release's own split (train | test), "" when it has none
    ("label", pa.string()),  # recording-level label from the release, "" when labels are time-locked
    ("status", pa.string()),
    ("reason", pa.string()),
])

EVENTS_SCHEMA = pa.schema([
    ("recording", pa.string()),
    ("onset_s", pa.float64()),
    ("duration_s", pa.float64()),
    ("label", pa.string()),
    ("source", pa.string()),  # edf+ | bids | release (a dataset adapter's label files)
])

# standardize: the manifest plus the channel plan of each recording.
MONTAGE_SCHEMA = pa.schema(
    [f for f in MANIFEST_SCHEMA if f.name not in ("status", "reason")]
    + [
        ("targets", _list_str),
        ("channel_ids", pa.list_(pa.int32())),
        ("methods", _list_str),
        ("unmapped_channels", _list_str),
        ("missing_channels", _list_str),
        ("plan", pa.string()),  # MontagePlan as JSON
        ("status", pa.string()),
        ("reason", pa.string()),
    ]
)

PREPROCESS_SCHEMA = pa.schema([
    ("recording", pa.string()),
    ("subject", pa.string()),
    ("store", pa.string()),  # relative path of the recording's preprocessed zarr
    ("n_channels", pa.int32()),
    ("n_samples", pa.int64()),
    ("sfreq", pa.float64()),
    ("masked_channels", _list_str),
    ("bad_seconds", pa.int64()),
    ("nan_seconds", pa.int64()),
    ("status", pa.string()),
    ("reason", pa.string()),
])

INDEX_SCHEMA = pa.schema([
    ("shard", pa.string()),
    ("row", pa.int32()),
    ("recording", pa.string()),
    ("start_s", pa.float64()),
    ("label", pa.string()),
    ("subject", pa.string()),
    ("split", pa.string()),
])


def table_from_rows(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    rows = list(rows)
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


def write_table(table: pa.Table, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_rows(rows: Iterable[Mapping[str, Any]], schema: pa.Schema, path: str | Path) -> pa.Table:
    table = table_from_rows(rows, schema)
    write_table(table, path)
    return table


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    # ParquetFile, not pq.read_table: that goes through pyarrow.dataset, whose import (pandas with it) costs a
    # stage process ~0.2 s for a one-file table
    with pq.ParquetFile(path) as f:
        return f.read().to_pylist()
