"""Rational polyphase resampling as small matrix products; same maths as upfirdn.

Output ``j = Σ_k h[j·down − k·up + half] · x[k]`` (what ``resample_poly``
computes). The pattern repeats every ``up`` outputs / ``down`` inputs, so with
frames of ``G·down`` inputs → ``G·up`` outputs every output frame is a sum of
``J`` (usually 3) products of consecutive input frames with fixed weight
matrices. That is ~3× the multiply-adds of upfirdn's direct loop, but BLAS does
them ~8× faster per operation (measured, 23 ch, 256 → 200 Hz, one
recording-hour: 0.30 CPU-s in resample_poly, 0.12 CPU-s here).

Products are issued as stacked matmuls whose single products stay below
2^18 multiply-adds: OpenBLAS runs those on the calling thread, so no CPU time
is spent in extra threads whatever OPENBLAS_NUM_THREADS says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["FrameKernel"]

_FRAME_TARGET = 32  # inputs/outputs per frame worth a BLAS call
_MAX_FRAME = 256  # beyond this the weights get big and mostly zero: use upfirdn
_MAX_MACS_PER_CALL = 200_000  # OpenBLAS stays single-threaded below 65536·4


@dataclass(frozen=True, eq=False)
class FrameKernel:
    up: int
    down: int
    group: int  # base periods per frame
    pre: int  # input frames before an output frame's own one
    weights: np.ndarray = field(repr=False)  # float32 [J, frame_in, frame_out]

    @property
    def frame_in(self) -> int:
        return self.group * self.down

    @property
    def frame_out(self) -> int:
        return self.group * self.up

    @property
    def n_mats(self) -> int:
        return int(self.weights.shape[0])

    @property
    def batch(self) -> int:
        """Output frames per sgemm call."""
        return max(1, _MAX_MACS_PER_CALL // (self.frame_in * self.frame_out))

    @classmethod
    def build(cls, taps: np.ndarray, *, up: int, down: int) -> FrameKernel | None:
        """Kernel for ``taps`` (anti-alias FIR at the up-sampled rate, already
        including the ×up gain), or None when frames would be too large."""
        group = max(1, -(-_FRAME_TARGET // max(up, down)))
        fin, fout = group * down, group * up
        if max(fin, fout) > _MAX_FRAME:
            return None
        half = (taps.size - 1) // 2
        reach = -(-half // up)  # input samples a single output looks either side
        pre = -(-reach // fin)
        n_mats = pre + 1 + -(-(reach + 1) // fin)
        # W[i, c, jj] = taps[jj·down − ((i − pre)·fin + c)·up + half]
        i = np.arange(n_mats)[:, None, None]
        c = np.arange(fin)[None, :, None]
        jj = np.arange(fout)[None, None, :]
        idx = jj * down - ((i - pre) * fin + c) * up + half
        ok = (idx >= 0) & (idx < taps.size)
        w = np.where(ok, taps[np.clip(idx, 0, taps.size - 1)], 0.0)
        # each output phase must see every tap of its polyphase branch exactly once
        phase = (np.arange(fout) * down + half) % up
        branch = np.array([np.arange(p, taps.size, up).size for p in phase])
        if not np.array_equal(ok.sum(axis=(0, 1)), branch):
            raise AssertionError("frame kernel does not cover the filter")
        weights = w.astype(np.float32)
        weights.setflags(write=False)
        return cls(up=up, down=down, group=group, pre=pre, weights=weights)

    def input_length(self, n_frames: int) -> int:
        """Input samples needed for ``n_frames`` output frames."""
        return (n_frames + self.n_mats - 1) * self.frame_in

    def apply(self, xp: np.ndarray, n_frames: int) -> np.ndarray:
        """``xp [ch, input_length(n_frames)]`` → float32 ``[ch, n_frames·frame_out]``.

        ``xp[:, pre·frame_in]`` is the input sample at the first output's time.
        """
        ch, fin, fout = xp.shape[0], self.frame_in, self.frame_out
        frames = xp[:, : self.input_length(n_frames)].reshape(ch, -1, fin)
        out = np.empty((ch, n_frames, fout), dtype=np.float32)
        n_main = n_frames // self.batch * self.batch
        for lo, hi, stacked in ((0, n_main, True), (n_main, n_frames, False)):
            if hi == lo:
                continue
            # full batches: one sgemm per batch; the remainder: one per channel
            shape = (ch, -1, self.batch, fin) if stacked else (ch, hi - lo, fin)
            dst = out[:, lo:hi].reshape(shape[:-1] + (fout,))
            for i in range(self.n_mats):
                src = frames[:, lo + i : hi + i].reshape(shape)
                if i == 0:
                    np.matmul(src, self.weights[i], out=dst)
                else:
                    dst += np.matmul(src, self.weights[i])
        return out.reshape(ch, n_frames * fout)
