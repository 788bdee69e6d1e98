"""Zero-phase FIR over a signal that arrives piece by piece, on a fixed block grid.

The signal is extended by odd reflection (``2·x0 − x[k]``, scipy filtfilt's
'odd' padding) by half the FIR length at its true start and end only, so a DC
offset or a linear trend makes no step. Output blocks sit on a grid fixed by
the signal length alone (``block`` samples apart, the last one shorter), and
each block's FFT input is exactly its padded segment: how the signal was split
into pieces changes when a block is computed, never what it computes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .fftfilter import OverlapSaveFir, next_pow2

__all__ = ["EdgePaddedBlocks"]


class EdgePaddedBlocks:
    """Feed consecutive pieces with :meth:`push`, collect blocks from :meth:`ready`.

    Holds at most one FFT block plus one piece plus the FIR length of signal.
    """

    def __init__(self, fir: OverlapSaveFir, *, n_total: int, block: int, nfft: int) -> None:
        if block <= 0 or nfft < block + fir.n_taps - 1:
            raise ValueError(f"block {block} does not fit nfft {nfft} with {fir.n_taps} taps")
        self._fir = fir
        self._n = int(n_total)
        self._block = int(block)
        self._nfft = int(nfft)
        self._half = fir.n_taps // 2
        self._buf: np.ndarray | None = None  # padded signal from index _start on
        self._start = 0
        self._left = self._right = False  # edge pads added
        self._next = 0  # next output sample to emit

    @property
    def emitted(self) -> int:
        return self._next

    def push(self, piece: np.ndarray, *, last: bool) -> None:
        """Append the next samples ``[ch, m]``; ``last`` marks the end of the signal."""
        buf = piece if self._buf is None else np.concatenate((self._buf, piece), axis=1)
        half = self._half
        if not self._left:
            if buf.shape[1] > half:
                buf = np.concatenate((_odd_left(buf, half), buf), axis=1)
            elif last:  # shorter than the pad: reflect repeatedly, both sides at once
                width = ((0, 0), (half, half))
                if buf.shape[1] == 1:
                    buf = np.pad(buf, width, mode="edge")
                else:
                    buf = np.pad(buf, width, mode="reflect", reflect_type="odd")
                self._right = True
            else:
                self._buf = buf  # wait for enough samples to reflect
                return
            self._start, self._left = -half, True
        if last and not self._right:
            buf = np.concatenate((buf, _odd_right(buf, half)), axis=1)
            self._right = True
        self._buf = buf

    def ready(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, y)`` for every block computable from what was pushed.

        ``y`` is float32 ``[ch, m]`` and may be a view into a scratch array.
        """
        half = self._half
        while self._left and self._next < self._n:
            j0, end = self._next, self._start + self._buf.shape[1]
            if j0 + self._block <= self._n and j0 + self._block + half <= end:
                n_valid, nfft = self._block, self._nfft
            elif self._right and self._n - j0 < self._block:
                n_valid = self._n - j0
                nfft = next_pow2(n_valid + 2 * half)
            else:
                return
            seg = self._buf[:, j0 - half - self._start : j0 + n_valid + half - self._start]
            y = self._fir.filter_segment(seg, nfft=nfft)
            self._next = j0 + n_valid
            cut = self._next - half - self._start  # keep only what later blocks need
            self._buf, self._start = self._buf[:, cut:], self._start + cut
            yield j0, y


def _odd_left(z: np.ndarray, n: int) -> np.ndarray:
    """``2·z[0] − z[n..1]``: the n samples before index 0, odd-reflected."""
    return 2 * z[:, :1] - z[:, n:0:-1]


def _odd_right(z: np.ndarray, n: int) -> np.ndarray:
    """``2·z[-1] − z[-2..-n-1]``: the n samples after the end, odd-reflected."""
    return 2 * z[:, -1:] - z[:, -2 : -n - 2 : -1]
