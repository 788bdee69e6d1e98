"""Per-second, per-channel quality flags, accumulated while streaming.

Seconds are 1 s patches of the output aligned to output sample 0. ``peak`` and
``flat`` come from the final (scaled) output; ``nan`` from the raw input samples
whose time falls in that output second. Thresholds are given in µV and
converted with the output scale, so callers never deal with µV/100.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["QualityAccumulator", "QualityFlags", "bad_seconds", "channel_mask"]


@dataclass(frozen=True, eq=False)
class QualityFlags:
    peak: np.ndarray = field(repr=False)  # float32 [ch, seconds], max |x|, output units
    flat: np.ndarray = field(repr=False)  # bool [ch, seconds], peak-to-peak < flat_uv
    nan: np.ndarray = field(repr=False)  # bool [ch, seconds], non-finite raw input
    n_out: int  # output samples covered; the last second is partial if not a multiple
    samples_per_second: int
    scale: float  # output units per µV
    flat_uv: float

    @property
    def n_seconds(self) -> int:
        return int(self.peak.shape[1])

    @property
    def last_complete(self) -> bool:
        """False when the last second holds fewer than samples_per_second samples."""
        return self.n_out % self.samples_per_second == 0

    @property
    def complete(self) -> np.ndarray:
        """bool [seconds]: second holds a full patch."""
        c = np.ones(self.n_seconds, dtype=bool)
        if self.n_seconds and not self.last_complete:
            c[-1] = False
        return c

    def to_dict(self) -> dict:
        return {
            "kind": "quality_flags",
            "n_out": self.n_out,
            "n_seconds": self.n_seconds,
            "samples_per_second": self.samples_per_second,
            "last_complete": self.last_complete,
            "scale": self.scale,
            "flat_uv": self.flat_uv,
            "peak_units": "output (uV * scale)",
        }


class QualityAccumulator:
    """Collects flags block by block; memory is O(channels × seconds)."""

    def __init__(
        self,
        *,
        n_channels: int,
        n_out: int,
        samples_per_second: int = 200,
        scale: float = 0.01,
        flat_uv: float = 0.5,
    ) -> None:
        self.samples_per_second = int(samples_per_second)
        self._n_out = int(n_out)
        self._scale = float(scale)
        self._flat_uv = float(flat_uv)
        self._flat_thr = np.float32(flat_uv * scale)
        n_sec = -(-self._n_out // self.samples_per_second)
        self._peak = np.zeros((n_channels, n_sec), dtype=np.float32)
        self._flat = np.zeros((n_channels, n_sec), dtype=bool)
        self._nan = np.zeros((n_channels, n_sec), dtype=bool)
        self._covered = 0  # output samples seen, in order

    def add_nonfinite(self, channels: np.ndarray, seconds: np.ndarray) -> None:
        """Mark raw non-finite samples (any order, repeats allowed)."""
        seconds = np.minimum(seconds, self._nan.shape[1] - 1)
        self._nan[channels, seconds] = True

    def add_output(self, out_start: int, block: np.ndarray) -> None:
        """Feed the next output block; it must start on a whole second."""
        sps = self.samples_per_second
        if out_start != self._covered or out_start % sps:
            raise ValueError(
                f"blocks must be consecutive and second-aligned: got {out_start}, "
                f"expected {self._covered}"
            )
        m = block.shape[1]
        if m % sps and out_start + m != self._n_out:
            raise ValueError("only the last block may end inside a second")
        s0 = out_start // sps
        n_full = m // sps
        if n_full:
            self._put(s0, block[:, : n_full * sps].reshape(block.shape[0], n_full, sps))
        if m % sps:
            self._put(s0 + n_full, block[:, n_full * sps :][:, None, :])
        self._covered += m

    def _put(self, s0: int, patches: np.ndarray) -> None:
        hi, lo = patches.max(axis=-1), patches.min(axis=-1)
        s1 = s0 + patches.shape[1]
        np.maximum(hi, -lo, out=self._peak[:, s0:s1])
        np.less(hi - lo, self._flat_thr, out=self._flat[:, s0:s1])

    def result(self) -> QualityFlags:
        if self._covered != self._n_out:
            raise RuntimeError(f"saw {self._covered} of {self._n_out} output samples")
        return QualityFlags(
            peak=self._peak,
            flat=self._flat,
            nan=self._nan,
            n_out=self._n_out,
            samples_per_second=self.samples_per_second,
            scale=self._scale,
            flat_uv=self._flat_uv,
        )


def channel_mask(flags: QualityFlags, *, max_bad_fraction: float = 0.5) -> np.ndarray:
    """bool [ch]: True = masked (flat or non-finite in > max_bad_fraction of seconds).

    The fraction counts complete seconds only, unless there are none.
    """
    bad = flags.flat | flags.nan
    keep = flags.complete
    if keep.any():
        bad = bad[:, keep]
    if bad.shape[1] == 0:
        return np.zeros(bad.shape[0], dtype=bool)
    return bad.mean(axis=1) > max_bad_fraction


def bad_seconds(
    flags: QualityFlags, masked: np.ndarray, *, reject_uv: float
) -> np.ndarray:
    """bool [seconds]: an unmasked channel exceeds ``reject_uv`` (µV, compared
    after applying the output scale) or has non-finite raw input."""
    use = ~np.asarray(masked, dtype=bool)
    thr = np.float32(reject_uv * flags.scale)
    loud = (flags.peak[use] > thr).any(axis=0)
    return loud | flags.nan[use].any(axis=0)
