"""Rational (polyphase) resampling of spans of a long recording, exactly.

Polyphase resampling (``scipy.signal.resample_poly``'s maths) maps input
sample ``k`` to output time ``k·up/down``. A span that starts at a multiple of
``down`` therefore produces output samples on the global output grid, and with
enough extra input on both sides every requested output sample sees exactly
the inputs the whole-file call would see. Only the true file edges are
extended, by odd reflection (``2·x0 − x[k]``) so a DC offset makes no step.

The arithmetic runs as small BLAS products (:mod:`.polyphase`) when the
up/down pair allows it, else through ``resample_poly`` itself; both compute the
same sums.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from .filters import lowpass_taps
from .polyphase import FrameKernel

__all__ = ["ResamplePlan", "plan_resample"]

# Anti-alias low-pass: scipy's default design shape (Kaiser-windowed sinc, cutoff
# at the lower Nyquist) but β = 6.5 with 13 zero crossings per side instead of
# β = 5 with 10. The default ripples by 1.8e-3 in the pass band (a 10 Hz sine
# comes out 0.14 % too large), above our 1e-3 target; this keeps the same
# transition width with 3.2e-4 ripple and -69 dB (vs -55 dB) stop band, for
# 30 % more multiply-adds (~15 % of the whole chain).
_KAISER_BETA = 6.5
_HALF_LEN_PER_RATE = 13
EDGE_PAD = "antireflect"  # upfirdn's name for odd reflection about the edge sample


@dataclass(frozen=True, eq=False)
class ResamplePlan:
    sfreq_in: float
    sfreq_target: float
    up: int
    down: int
    taps: np.ndarray | None = field(repr=False)  # float32 anti-alias FIR; None = identity
    kernel: FrameKernel | None = field(default=None, repr=False)  # BLAS path if set

    @property
    def identity(self) -> bool:
        return self.up == self.down == 1

    @property
    def sfreq_out(self) -> float:
        """Actual output rate (differs from target only for non-rational inputs)."""
        return self.sfreq_in * self.up / self.down

    @property
    def margin(self) -> int:
        """Input samples each side that a span needs beyond its nominal range."""
        if self.identity:
            return 0
        half = (self.taps.size - 1) // 2  # at the up-sampled rate
        return -(-half // self.up) + 1

    @property
    def span_unit(self) -> int:
        """Spans starting on multiples of this many outputs issue the same BLAS
        calls on the same data as a whole-file call, hence identical results."""
        if self.identity:
            return 1
        if self.kernel is not None:
            return self.kernel.batch * self.kernel.frame_out
        return self.up

    def output_length(self, n_in: int) -> int:
        """``ceil(n_in·up/down)``, what resample_poly returns."""
        return -(-n_in * self.up // self.down)

    def input_span(self, z0: int, z1: int, n_in: int) -> tuple[int, int]:
        """Input range ``[k0, k1)`` to read for output samples ``[z0, z1)``.

        ``z0`` must be a multiple of ``up`` (or 0); ``k0`` is a multiple of
        ``down`` so the span's outputs fall on the global output grid.
        """
        if self.identity:
            return z0, z1
        if z0 % self.up:
            raise ValueError(f"span start {z0} is not a multiple of up={self.up}")
        if self.kernel is not None:
            s, length = self._frame_window(z0, z1)
            return max(0, s), min(n_in, s + length)
        k0 = z0 // self.up * self.down - -(-self.margin // self.down) * self.down
        k1 = -(-z1 * self.down // self.up) + self.margin
        return max(0, k0), min(n_in, k1)

    def _frame_window(self, z0: int, z1: int) -> tuple[int, int]:
        """Input start and length the frame kernel reads for outputs [z0, z1)."""
        k = self.kernel
        n_frames = -(-(z1 - z0) // k.frame_out)
        start = z0 // self.up * self.down - k.pre * k.frame_in
        return start, k.input_length(n_frames)

    def apply(self, x: np.ndarray, *, k0: int, z0: int, z1: int) -> np.ndarray:
        """Output samples ``[z0, z1)`` from ``x`` = input ``[k0, k0 + x.shape[-1])``.

        Whatever lies beyond ``x`` is taken as its odd reflection, which only
        matters (and is only right) at the true file edges.
        """
        if self.identity:
            return x[..., z0 - k0 : z1 - k0]
        if self.kernel is not None:
            start, length = self._frame_window(z0, z1)
            xp = _odd_window(x, start - k0, length)
            y = self.kernel.apply(xp, -(-(z1 - z0) // self.kernel.frame_out))
            return y[:, : z1 - z0]
        # upfirdn cannot reflect a single sample (it crashes); both mean "hold it"
        from scipy import signal  # only here: the BLAS path above needs no scipy.signal (~0.6 s to import)

        pad = EDGE_PAD if x.shape[-1] > 1 else "edge"
        y = signal.resample_poly(
            x, self.up, self.down, axis=-1, window=self.taps, padtype=pad
        )
        off = k0 * self.up // self.down
        return y[..., z0 - off : z1 - off]

    def to_dict(self) -> dict:
        return {
            "kind": "resample_poly",
            "sfreq_in": self.sfreq_in,
            "sfreq_target": self.sfreq_target,
            "sfreq_out": self.sfreq_out,
            "up": self.up,
            "down": self.down,
            "anti_alias": None
            if self.identity
            else {
                "design": "scipy.signal.firwin, cutoff 1/max(up, down) of Nyquist",
                "window": ["kaiser", _KAISER_BETA],
                "half_len_per_rate": _HALF_LEN_PER_RATE,
                "polyphase_branches": "each scaled to unit DC gain",
                "n_taps": int(self.taps.size),
            },
            "edge_pad": None if self.identity else "odd reflection (antireflect)",
            "engine": None
            if self.identity
            else (
                "scipy.signal.resample_poly"
                if self.kernel is None
                else {
                    "kind": "polyphase frame products (BLAS sgemm)",
                    "frame_in": self.kernel.frame_in,
                    "frame_out": self.kernel.frame_out,
                    "n_mats": self.kernel.n_mats,
                }
            ),
        }


def _unit_dc_phases(h: np.ndarray, up: int) -> np.ndarray:
    """Rescale each polyphase branch ``h[r::up]`` to DC gain exactly 1 (after
    resample_poly's ×up).

    A windowed sinc's branches sum to 1 only approximately (±6.5e-4 for 5/4,
    ±8e-5 for 25/32), so a DC level, e.g. an electrode offset drifting by
    1000 µV, would come out as a ripple at multiples of ``fs_out/up`` (8 Hz for
    256 → 200, 40 Hz for 160 → 200) of up to ~0.6 µV. Normalised branches map
    any constant to the same constant; the response elsewhere moves by < 1e-3.
    """
    h = h.copy()
    for r in range(up):
        h[r::up] /= up * h[r::up].sum()
    return h


@functools.lru_cache(maxsize=32)
def plan_resample(
    *, sfreq_in: float, sfreq_out: float, max_denominator: int = 1000
) -> ResamplePlan:
    """Rational up/down with ``Fraction(out/in).limit_denominator(max_denominator)``."""
    if sfreq_in <= 0 or sfreq_out <= 0:
        raise ValueError(f"rates must be positive, got {sfreq_in}, {sfreq_out}")
    ratio = (Fraction(sfreq_out) / Fraction(sfreq_in)).limit_denominator(
        max_denominator
    )
    up, down = ratio.numerator, ratio.denominator
    taps, kernel = None, None
    if not up == down == 1:
        half = _HALF_LEN_PER_RATE * max(up, down)
        taps = _unit_dc_phases(
            lowpass_taps(2 * half + 1, 1.0 / max(up, down), np.kaiser(2 * half + 1, _KAISER_BETA)),
            up,
        )
        kernel = FrameKernel.build(taps * up, up=up, down=down)
        taps = taps.astype(np.float32)
        taps.setflags(write=False)
    assert math.gcd(up, down) == 1
    return ResamplePlan(
        sfreq_in=float(sfreq_in),
        sfreq_target=float(sfreq_out),
        up=up,
        down=down,
        taps=taps,
        kernel=kernel,
    )


def _odd_window(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """``x[:, start:start + length]``, odd-reflecting x where that leaves it."""
    n = x.shape[-1]
    if start >= 0 and start + length <= n:
        return x[:, start : start + length]
    left, right = max(0, -start), max(0, start + length - n)
    width = ((0, 0), (left, right))
    if n == 1:
        xp = np.pad(x, width, mode="edge")
    else:
        xp = np.pad(x, width, mode="reflect", reflect_type="odd")
    return xp[:, start + left : start + left + length]
