"""One linear-phase FIR that band-passes and notches the mains in a single pass.

The filter is a sum of Hamming-windowed low-pass prototypes, one per gain step
of the ideal 0/1 response: ``h = g_top·δ − Σ_t Δg_t·LP_t`` (Δg_t is the gain
change across transition t, g_top the gain at Nyquist). Each prototype's length
follows its own transition width (≈ 3.3·fs/width for Hamming, mne's rule), so
the total length is set by the narrowest transition only; cascading separate
filters by convolution would add their lengths. A notch that overlaps a
transition band cannot be summed without distorting it and is convolved in.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FirDesign",
    "design_bandpass_notch",
    "design_fir",
    "lowpass_taps",
    "notch_harmonics",
]

# Transition width of a Hamming-windowed sinc is ≈ 3.3·fs/N (mne's length factor).
HAMMING_LENGTH_FACTOR = 3.3
# mne.filter.notch_filter's default trans_bandwidth: 1 Hz in total, half on each side.
NOTCH_TRANS_BANDWIDTH = 1.0


def notch_harmonics(mains: float, sfreq: float) -> tuple[float, ...]:
    """Mains frequency and its multiples strictly below Nyquist of ``sfreq``."""
    if mains <= 0:
        raise ValueError(f"mains must be positive, got {mains}")
    nyquist = sfreq / 2.0
    out: list[float] = []
    k = 1
    while k * mains < nyquist:
        out.append(float(k * mains))
        k += 1
    return tuple(out)


@dataclass(frozen=True, eq=False)
class FirDesign:
    """A designed filter plus every parameter that shaped it (for provenance)."""

    taps: np.ndarray = field(repr=False)  # float64, odd length, symmetric, read-only
    sfreq: float
    l_freq: float | None
    h_freq: float | None
    l_trans: float | None
    h_trans: float | None
    notch_freqs: tuple[float, ...]  # summed into the response
    notch_widths: tuple[float, ...]  # stop-band width per summed notch
    notch_cascaded: tuple[float, ...]  # overlapped a transition band: convolved in
    notch_dropped: tuple[float, ...]  # at/above Nyquist or inside a stop band already

    @property
    def n_taps(self) -> int:
        return int(self.taps.size)

    @property
    def delay(self) -> int:
        """Group delay in samples (half the length)."""
        return (self.n_taps - 1) // 2

    def to_dict(self) -> dict:
        return {
            "kind": "fir_bandpass_notch",
            "design": "sum of hamming-windowed sinc low-passes (scipy.signal.firwin)",
            "window": "hamming",
            "phase": "zero (linear, delay compensated)",
            "sfreq": self.sfreq,
            "l_freq": self.l_freq,
            "h_freq": self.h_freq,
            "l_trans_bandwidth": self.l_trans,
            "h_trans_bandwidth": self.h_trans,
            "notch_freqs": list(self.notch_freqs),
            "notch_widths": list(self.notch_widths),
            "notch_trans_bandwidth": NOTCH_TRANS_BANDWIDTH,
            "notch_cascaded": list(self.notch_cascaded),
            "notch_dropped": list(self.notch_dropped),
            "n_taps": self.n_taps,
            "dc_gain": float(self.taps.sum()),
        }


def _odd_length(width: float, sfreq: float) -> int:
    n = int(round(HAMMING_LENGTH_FACTOR * sfreq / width))
    return n + 1 - n % 2


def lowpass_taps(numtaps: int, cutoff: float, window: np.ndarray) -> np.ndarray:
    """A windowed-sinc low-pass, `cutoff` as a fraction of Nyquist, scaled to unit DC gain: what
    ``scipy.signal.firwin(numtaps, cutoff, window=...)`` returns (tests/test_signal.py checks they agree).
    Written out because importing scipy.signal costs a stage process ~0.6 s, more than its preprocessing
    of a one-hour recording."""
    m = np.arange(numtaps) - (numtaps - 1) / 2
    h = cutoff * np.sinc(cutoff * m) * window
    return h / h.sum()


def _lowpass(cutoff: float, width: float, sfreq: float) -> np.ndarray:
    n = _odd_length(width, sfreq)
    return lowpass_taps(n, cutoff / (sfreq / 2), np.hamming(n))


def _centered_sum(parts: list[tuple[float, np.ndarray]], n: int) -> np.ndarray:
    h = np.zeros(n)
    for weight, p in parts:
        off = (n - p.size) // 2
        h[off : off + p.size] += weight * p
    return h


def _bandstop(lo_cut: float, hi_cut: float, width: float, sfreq: float) -> np.ndarray:
    low, high = _lowpass(lo_cut, width, sfreq), _lowpass(hi_cut, width, sfreq)
    delta = np.zeros(low.size)
    delta[low.size // 2] = 1.0
    return _centered_sum([(1.0, delta), (1.0, low), (-1.0, high)], low.size)


@functools.lru_cache(maxsize=64)
def design_fir(
    *,
    sfreq: float,
    l_freq: float | None,
    h_freq: float | None,
    notch_freqs: tuple[float, ...] = (),
    l_trans: float | None = None,
    h_trans: float | None = None,
    notch_width: float | None = None,
) -> FirDesign:
    """Design the combined band-pass + notch FIR (cached; taps are read-only).

    ``l_freq``/``h_freq`` = None disable that side. Transition widths default to
    mne's: ``min(max(0.25·l, 2), l)`` and ``min(max(0.25·h, 2), nyq − h)``.
    Each notch stops ``[f − w/2, f + w/2]`` (``w`` defaults to f/200, as in mne)
    with 0.5 Hz transitions on either side.
    """
    sfreq = float(sfreq)
    nyq = sfreq / 2.0
    parts: list[tuple[float, np.ndarray]] = []  # (−Δg, low-pass prototype)
    pass_lo, pass_hi = 0.0, nyq
    stop_lo, stop_hi = -np.inf, np.inf  # frequencies already in a stop band
    g_top = 1.0
    if l_freq is not None:
        if l_freq <= 0:
            raise ValueError(f"l_freq must be > 0, got {l_freq}")
        if l_trans is None:
            l_trans = min(max(0.25 * l_freq, 2.0), l_freq)
        if not 0 < l_trans <= l_freq:
            raise ValueError(f"l_trans must be in (0, l_freq], got {l_trans}")
        parts.append((-1.0, _lowpass(l_freq - l_trans / 2.0, l_trans, sfreq)))
        pass_lo, stop_lo = l_freq, l_freq - l_trans
    else:
        l_trans = None
    if h_freq is not None:
        if not 0 < h_freq < nyq:
            raise ValueError(f"h_freq must be in (0, {nyq}), got {h_freq}")
        if h_trans is None:
            h_trans = min(max(0.25 * h_freq, 2.0), nyq - h_freq)
        if not 0 < h_trans <= nyq - h_freq:
            raise ValueError(f"h_trans must be in (0, nyq − h_freq], got {h_trans}")
        parts.append((1.0, _lowpass(h_freq + h_trans / 2.0, h_trans, sfreq)))
        pass_hi, stop_hi, g_top = h_freq, h_freq + h_trans, 0.0
    else:
        h_trans = None
    if l_freq is not None and h_freq is not None and l_freq >= h_freq:
        raise ValueError(f"need l_freq < h_freq, got {l_freq} >= {h_freq}")

    tb = NOTCH_TRANS_BANDWIDTH / 2.0
    summed: list[float] = []
    widths: list[float] = []
    cascaded: list[tuple[float, float]] = []
    dropped: list[float] = []
    last_hi = -np.inf
    for f in sorted(float(f) for f in notch_freqs):
        w = f / 200.0 if notch_width is None else float(notch_width)
        lo_edge, hi_edge = f - w / 2.0 - tb, f + w / 2.0 + tb
        if f >= nyq or hi_edge >= nyq or lo_edge <= 0:
            dropped.append(f)  # no room for the band-stop; Nyquist is out of reach
        elif hi_edge <= stop_lo or lo_edge >= stop_hi:
            dropped.append(f)  # the band-pass already removes it
        elif lo_edge >= pass_lo and hi_edge <= pass_hi and lo_edge >= last_hi:
            parts.append((1.0, _lowpass(f - w / 2.0 - tb / 2.0, tb, sfreq)))
            parts.append((-1.0, _lowpass(f + w / 2.0 + tb / 2.0, tb, sfreq)))
            summed.append(f)
            widths.append(w)
            last_hi = hi_edge
        else:
            cascaded.append((f, w))

    n = max([p.size for _, p in parts], default=1)
    delta = np.zeros(n)
    delta[n // 2] = 1.0
    h = _centered_sum([(g_top, delta)] + parts, n)
    for f, w in cascaded:
        h = np.convolve(
            h, _bandstop(f - w / 2.0 - tb / 2.0, f + w / 2.0 + tb / 2.0, tb, sfreq)
        )
    h = 0.5 * (h + h[::-1])  # exact symmetry (linear phase) despite rounding
    h.setflags(write=False)
    return FirDesign(
        taps=h,
        sfreq=sfreq,
        l_freq=None if l_freq is None else float(l_freq),
        h_freq=None if h_freq is None else float(h_freq),
        l_trans=None if l_trans is None else float(l_trans),
        h_trans=None if h_trans is None else float(h_trans),
        notch_freqs=tuple(summed),
        notch_widths=tuple(widths),
        notch_cascaded=tuple(f for f, _ in cascaded),
        notch_dropped=tuple(dropped),
    )


def design_bandpass_notch(
    *,
    sfreq: float,
    l_freq: float | None,
    h_freq: float | None,
    notch_freqs: tuple[float, ...] | list[float] = (),
    l_trans: float | None = None,
    h_trans: float | None = None,
    notch_width: float | None = None,
) -> np.ndarray:
    """Taps (float64, odd length, symmetric, read-only) of :func:`design_fir`."""
    return design_fir(
        sfreq=float(sfreq),
        l_freq=l_freq,
        h_freq=h_freq,
        notch_freqs=tuple(float(f) for f in notch_freqs),
        l_trans=l_trans,
        h_trans=h_trans,
        notch_width=notch_width,
    ).taps
