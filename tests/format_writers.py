"""Writers of small GDF 2.x and Neuroscan CNT files for tests (mne reads both formats but writes neither).

Both follow the published layouts field by field, so mne's readers parse them as they parse the real releases:
- GDF 2.10 (Schlögl, "GDF – A general dataformat for biosignals", v2.x): 256-byte fixed header, 256 bytes per
  channel stored field-major, int16 samples in data records, then the event table (mode 3: positions,
  types, channels, durations). The BCIC-IV-2a files are GDF 2.10 with int16 data and µV channels.
- Neuroscan CNT (SETUP/ELECTLOC/TEEG/EVENT2 structures as documented by Paul Bourke, "EEG file formats"):
  900-byte SETUP header, 75-byte ELECTLOC per channel, multiplexed int16/int32 samples, then the event table.
Each writer returns the values a reader should give back (the quantized data, in µV).
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

GDF_UV = 4275  # GDF physical-dimension code of µV (biosig units.csv)


def _field(text: str, size: int) -> bytes:
    raw = text.encode("latin-1")[:size]
    return raw + b"\x00" * (size - len(raw))


def _quantize(data: np.ndarray, digital_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel symmetric physical range; (digital int array, physical max per channel, quantized µV)."""
    peak = np.maximum(np.abs(data).max(axis=1), 1.0) * 1.05
    gain = peak / digital_max
    digital = np.clip(np.round(data / gain[:, None]), -digital_max, digital_max).astype(np.int64)
    return digital, peak, (digital * gain[:, None])


def write_gdf(path: Path, data_uv: np.ndarray, names: Sequence[str], sfreq: float, *,
              events: Sequence[tuple[int, int, int]] = (), record_samples: int | None = None,
              version: str = "GDF 2.10", unit_code: int = GDF_UV) -> np.ndarray:
    """Write data [channel, sample] (µV) as a GDF 2.x file with int16 samples; events are (sample, type,
    duration in samples), sample 0-based. Returns the quantized µV values a reader must give back."""
    data_uv = np.asarray(data_uv, dtype=float)
    n_ch, n = data_uv.shape
    record_samples = record_samples or int(sfreq)
    n_records = -(-n // record_samples)
    padded = np.zeros((n_ch, n_records * record_samples))
    padded[:, :n] = data_uv
    digital, peak, quantized = _quantize(padded, 32767)
    duration = Fraction(record_samples) / Fraction(sfreq).limit_denominator(10_000)

    head = bytearray(256)
    head[0:8] = _field(version, 8)
    head[8:74] = _field("X X", 66)  # patient id ("X" = unknown)
    head[88:152] = _field("test recording", 64)
    head[184:186] = struct.pack("<H", 1 + n_ch)  # header length in 256-byte blocks
    head[236:244] = struct.pack("<q", n_records)
    head[244:252] = struct.pack("<II", duration.numerator, duration.denominator)
    head[252:254] = struct.pack("<H", n_ch)

    def per_channel(fmt: str, values: Sequence) -> bytes:
        return b"".join(struct.pack(fmt, v) for v in values)

    channel = b"".join([
        b"".join(_field(name, 16) for name in names),
        _field("", 80 * n_ch),  # transducer type
        b"".join(_field("uV", 6) for _ in names),  # physical dimension (obsolete text form)
        per_channel("<H", [unit_code] * n_ch),
        per_channel("<d", -peak), per_channel("<d", peak),  # physical min / max
        per_channel("<d", [-32767.0] * n_ch), per_channel("<d", [32767.0] * n_ch),  # digital min / max
        _field("", 68 * n_ch),  # pre-filtering (obsolete text form)
        per_channel("<f", [100.0] * n_ch), per_channel("<f", [0.5] * n_ch), per_channel("<f", [50.0] * n_ch),
        per_channel("<i", [record_samples] * n_ch),
        per_channel("<i", [3] * n_ch),  # GDF type 3 = int16
        _field("", 12 * n_ch),  # sensor positions
        _field("", 20 * n_ch),  # impedance (v < 2.19) + reserved
    ])
    assert len(channel) == 256 * n_ch
    # Data records: per record, each channel's record_samples int16 in turn.
    records = digital.astype("<i2").reshape(n_ch, n_records, record_samples).transpose(1, 0, 2)
    ev = list(events)
    table = bytearray(struct.pack("<B", 3))  # mode 3: positions, types, channels, durations
    table += struct.pack("<I", len(ev))[:3] + struct.pack("<f", float(sfreq))
    table += per_channel("<I", [s + 1 for s, _, _ in ev])  # 1-based positions
    table += per_channel("<H", [t for _, t, _ in ev])
    table += per_channel("<H", [0] * len(ev))
    table += per_channel("<I", [d for _, _, d in ev])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(head) + channel + records.tobytes() + bytes(table))
    return quantized[:, :n]


def write_cnt(path: Path, data_uv: np.ndarray, names: Sequence[str], sfreq: int, *,
              events: Sequence[tuple[int, int]] = (), n_bytes: int = 4, resolution_uv: float = 0.05,
              eog: Sequence[str] = ("VEO", "HEO")) -> np.ndarray:
    """Write data [channel, sample] (µV) as a Neuroscan CNT with n_bytes-wide samples at `resolution_uv` µV per
    bit; events are (sample, stim type), sample 0-based. Returns the quantized µV values a reader must give back."""
    data_uv = np.asarray(data_uv, dtype=float)
    n_ch, n = data_uv.shape
    dtype = {2: "<i2", 4: "<i4"}[n_bytes]
    limit = np.iinfo(dtype).max
    digital = np.clip(np.round(data_uv / resolution_uv), -limit, limit).astype(np.int64)
    quantized = digital * resolution_uv
    data_start = 900 + 75 * n_ch
    event_pos = data_start + n * n_ch * n_bytes

    setup = bytearray(900)
    setup[0:20] = _field("Version 3.0", 20)
    setup[21:41] = _field("1", 20)  # patient id
    setup[121:141] = _field("test subject", 20)
    setup[143:145] = b"UR"  # sex, hand
    setup[205:225] = _field("session", 20)
    setup[225:235] = _field("08/04/18", 10)  # mm/dd/yy
    setup[235:247] = _field("10:00:00", 12)
    setup[370:372] = struct.pack("<H", n_ch)
    setup[376:378] = struct.pack("<H", int(sfreq))
    eog_idx = [names.index(e) if e in names else -1 for e in eog[:2]] + [-1] * (2 - len(eog[:2]))
    setup[402:406] = struct.pack("<hh", *eog_idx)
    setup[438:440] = b"\x01\x01"  # low-pass / high-pass filter toggles
    setup[864:868] = struct.pack("<i", n)
    setup[869:873] = struct.pack("<f", 0.1)  # low cut-off
    setup[875:879] = struct.pack("<f", 100.0)  # high cut-off
    setup[886:890] = struct.pack("<i", event_pos)
    setup[890:894] = struct.pack("<f", n / sfreq)
    setup[894:898] = struct.pack("<i", 1)  # channel offset: plain multiplexed samples

    electrodes = bytearray()
    for i, name in enumerate(names):
        loc = bytearray(75)
        loc[0:10] = _field(name, 10)
        angle = 2 * np.pi * i / n_ch  # 2-D positions on a circle (mne fits them to a sphere)
        loc[19:27] = struct.pack("<ff", 100 + 80 * np.cos(angle), 100 + 80 * np.sin(angle))
        loc[47:49] = struct.pack("<h", 0)  # baseline
        loc[59:63] = struct.pack("<f", 204.8)  # sensitivity: µV per bit = calib · sensitivity / 204.8
        loc[71:75] = struct.pack("<f", resolution_uv)  # calibration
        electrodes += loc
    samples = digital.T.astype(dtype).tobytes()  # multiplexed: all channels of sample 0, then sample 1, …
    ev = bytearray()
    for sample, stim in events:  # EVENT2; Offset = byte position just past the event's sample (mne's convention)
        offset = data_start + (sample + 1) * n_ch * n_bytes
        ev += struct.pack("<HBclhhfccc", stim, 0, b"\x00", offset, 0, 0, 0.0, b"\x00", b"\x00", b"\x00")
    teeg = struct.pack("<Bll", 2, len(ev), 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(setup) + bytes(electrodes) + samples + teeg + bytes(ev))
    return quantized
