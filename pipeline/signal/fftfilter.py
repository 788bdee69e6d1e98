"""Zero-phase FIR filtering of one block by FFT (the overlap-save step).

Each call filters a padded segment whose length is ``n_valid + n_taps − 1``
and returns exactly its ``n_valid`` fully-overlapped outputs; the segment is
zero-extended to a power-of-two FFT size. Because the FFT input is exactly the
segment (never extra samples that happen to be buffered), results do not
depend on how the caller chunked the signal.
"""

from __future__ import annotations

import numpy as np
from scipy import fft

__all__ = ["OverlapSaveFir", "next_pow2"]


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class OverlapSaveFir:
    """A symmetric FIR (times a gain) applied in float32 via rfft/irfft.

    One complex64 filter spectrum is kept per FFT size used.
    """

    def __init__(self, taps: np.ndarray, *, gain: float = 1.0) -> None:
        if taps.ndim != 1 or taps.size % 2 == 0:
            raise ValueError("taps must be 1-D with odd length")
        self._taps = np.asarray(taps, dtype=np.float64)
        self._gain = float(gain)
        self._spectra: dict[int, np.ndarray] = {}

    @property
    def n_taps(self) -> int:
        return int(self._taps.size)

    def spectrum(self, nfft: int) -> np.ndarray:
        h = self._spectra.get(nfft)
        if h is None:
            # Designed in float64, stored as complex64: the per-block multiply stays cheap.
            h = fft.rfft(self._taps * self._gain, n=nfft).astype(np.complex64)
            self._spectra[nfft] = h
        return h

    def filter_segment(self, seg: np.ndarray, *, nfft: int | None = None) -> np.ndarray:
        """Filter ``seg`` [..., n_valid + n_taps − 1] → float32 [..., n_valid]."""
        n_valid = seg.shape[-1] - self.n_taps + 1
        if n_valid <= 0:
            raise ValueError("segment shorter than the filter")
        if nfft is None:
            nfft = next_pow2(seg.shape[-1])
        if nfft < seg.shape[-1]:
            raise ValueError(f"nfft={nfft} < segment length {seg.shape[-1]}")
        spec = fft.rfft(seg, n=nfft, axis=-1, workers=1)
        spec *= self.spectrum(nfft)
        y = fft.irfft(spec, n=nfft, axis=-1, workers=1)
        # Circular convolution: outputs from index n_taps − 1 on are uncorrupted.
        return y[..., self.n_taps - 1 : self.n_taps - 1 + n_valid]
