"""Streaming preprocessing of one recording: resample → band-pass/notch → scale.

Order: rational polyphase resampling to ``sfreq_out`` first (so the long FIR
runs at the low rate), then one combined band-pass + notch FIR by FFT
overlap-save (:mod:`.blockfilter`), with the output scale folded into the
filter spectrum. The whole-file path is this same code with a single chunk.

Exactness against whole-file processing:
* resampling spans start on the resampler's span unit and read enough input
  on both sides, so every 200 Hz sample sees the inputs a whole-file call sees
  (and the same sequence of BLAS/FFT calls, so results come out bit-identical
  in practice; tests allow float32 rounding);
* FIR blocks sit on a grid fixed by the output length, each computed from
  exactly its padded segment;
* only the true file edges are padded (odd reflection).

Each channel's first sample is subtracted first (the filter's DC response to
it is added back at the end), so a large electrode offset costs no float32
precision. Non-finite input samples are set to that reference level, i.e. to
0 after the subtraction, which avoids a step the size of the offset; the
quality flags report them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from .blockfilter import EdgePaddedBlocks
from .fftfilter import OverlapSaveFir, next_pow2
from .filters import FirDesign, design_fir
from .quality import QualityAccumulator
from .resample import ResamplePlan, plan_resample

__all__ = ["PreprocessSpec", "StreamingPreprocessor"]

ReadFn = Callable[[int, int], np.ndarray]


@dataclass(frozen=True)
class PreprocessSpec:
    sfreq_out: float = 200.0
    l_freq: float | None = 0.1
    h_freq: float | None = 75.0
    notch: tuple[float, ...] = (60.0,)  # frequencies; those ≥ Nyquist are dropped
    scale: float = 0.01  # µV → µV/100
    # output seconds per read, rounded up to the resampler's span unit (≤ ~40 s);
    # None = whole file in one read
    chunk_seconds: float | None = 300.0
    l_trans: float | None = None  # None: mne's default rule
    h_trans: float | None = None
    notch_width: float | None = None  # None: f/200 per notch, like mne
    fft_size: int | None = None  # None: next power of two ≥ 8 × FIR length
    max_denominator: int = 1000  # for the rational resampling ratio

    def __post_init__(self) -> None:
        if float(self.sfreq_out) != round(self.sfreq_out) or self.sfreq_out <= 0:
            raise ValueError("sfreq_out must be a positive integer (1 s patches)")
        if self.chunk_seconds is not None and self.chunk_seconds <= 0:
            raise ValueError("chunk_seconds must be positive or None")
        if self.fft_size is not None and self.fft_size & (self.fft_size - 1):
            raise ValueError("fft_size must be a power of two")
        object.__setattr__(self, "notch", tuple(float(f) for f in self.notch))

    @property
    def samples_per_second(self) -> int:
        return int(round(self.sfreq_out))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["notch"] = list(self.notch)
        return d


@dataclass(frozen=True)
class _Layout:
    """Fixed geometry of one run (depends on the recording's length and rate)."""

    n_out: int
    chunk_out: int  # output samples resampled per read (multiple of span_unit)
    nfft: int
    block: int  # outputs per full FFT block (multiple of samples_per_second)
    half: int  # FIR half-length = edge pad length


class StreamingPreprocessor:
    """Applies a :class:`PreprocessSpec` to recordings read piecewise."""

    def __init__(self, spec: PreprocessSpec | None = None) -> None:
        self._spec = spec if spec is not None else PreprocessSpec()
        self._firs: dict[float, OverlapSaveFir] = {}

    @property
    def spec(self) -> PreprocessSpec:
        return self._spec

    def resample_plan(self, sfreq_in: float) -> ResamplePlan:
        return plan_resample(
            sfreq_in=float(sfreq_in),
            sfreq_out=float(self._spec.sfreq_out),
            max_denominator=self._spec.max_denominator,
        )

    def fir_design(self, sfreq_in: float) -> FirDesign:
        s = self._spec
        return design_fir(
            sfreq=self.resample_plan(sfreq_in).sfreq_out,
            l_freq=s.l_freq,
            h_freq=s.h_freq,
            notch_freqs=s.notch,
            l_trans=s.l_trans,
            h_trans=s.h_trans,
            notch_width=s.notch_width,
        )

    def output_length(self, *, n_samples: int, sfreq_in: float) -> int:
        return self.resample_plan(sfreq_in).output_length(n_samples)

    def quality_accumulator(
        self, *, n_samples: int, n_channels: int, sfreq_in: float, flat_uv: float = 0.5
    ) -> QualityAccumulator:
        """An accumulator sized and scaled for this run; pass it to :meth:`run`."""
        return QualityAccumulator(
            n_channels=n_channels,
            n_out=self.output_length(n_samples=n_samples, sfreq_in=sfreq_in),
            samples_per_second=self._spec.samples_per_second,
            scale=self._spec.scale,
            flat_uv=flat_uv,
        )

    def describe(self, *, sfreq_in: float, n_samples: int | None = None) -> dict:
        """Every parameter used for a recording at ``sfreq_in`` (provenance)."""
        d = {
            "spec": self._spec.to_dict(),
            "resample": self.resample_plan(sfreq_in).to_dict(),
            "fir": self.fir_design(sfreq_in).to_dict(),
            "order": ["offset_removal", "resample", "fir_bandpass_notch", "scale"],
            "offset_removal": "first sample per channel; DC response added back",
            "nonfinite": "set to the channel's first-sample level (0 after offset removal)",
            "edge_pad": "odd reflection (2*x0 - x[k]) at input rate and at output rate",
            "fir_method": "FFT overlap-save, float32, fixed block grid",
        }
        if n_samples is not None:
            d["layout"] = asdict(self._layout(n_samples=n_samples, sfreq_in=sfreq_in))
        return d

    def _fir(self, sfreq_in: float) -> OverlapSaveFir:
        fir = self._firs.get(sfreq_in)
        if fir is None:
            fir = OverlapSaveFir(self.fir_design(sfreq_in).taps, gain=self._spec.scale)
            self._firs[sfreq_in] = fir
        return fir

    def _layout(self, *, n_samples: int, sfreq_in: float) -> _Layout:
        s, plan = self._spec, self.resample_plan(sfreq_in)
        n_taps = self.fir_design(sfreq_in).n_taps
        sps = s.samples_per_second
        n_out = plan.output_length(n_samples)
        nfft = s.fft_size or next_pow2(8 * n_taps)
        block = (nfft - n_taps + 1) // sps * sps
        if block <= 0:
            raise ValueError(f"fft_size {nfft} too small for {n_taps} taps")
        if s.chunk_seconds is None:
            chunk_out = max(n_out, 1)
        else:
            unit = plan.span_unit  # keeps chunked results bit-identical to one chunk
            chunk_out = math.ceil(s.chunk_seconds * plan.sfreq_out / unit) * unit
        return _Layout(
            n_out=n_out, chunk_out=chunk_out, nfft=nfft, block=block, half=n_taps // 2
        )

    def run(
        self,
        read: ReadFn,
        *,
        n_samples: int,
        n_channels: int,
        sfreq_in: float,
        quality: QualityAccumulator | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(out_start, block)``: consecutive float32 ``[n_channels, m]``
        blocks covering output samples ``[0, n_out)``.

        ``read(start, stop)`` returns float32 µV ``[n_channels, stop − start]``.
        Every block starts on a whole output second. ``quality``, if given, is
        fed the raw non-finite positions and every output block.
        """
        plan = self.resample_plan(sfreq_in)
        fir = self._fir(sfreq_in)
        lay = self._layout(n_samples=n_samples, sfreq_in=sfreq_in)
        n_out = lay.n_out
        dc_gain = float(self.fir_design(sfreq_in).taps.sum()) * self._spec.scale
        if abs(dc_gain) < 1e-9:  # band-pass: the offset's response is 0 (up to rounding)
            dc_gain = 0.0

        blocks = EdgePaddedBlocks(fir, n_total=n_out, block=lay.block, nfft=lay.nfft)
        ref: np.ndarray | None = None  # per-channel offset: input sample 0
        for z0 in range(0, n_out, lay.chunk_out):
            z1 = min(z0 + lay.chunk_out, n_out)
            k0, k1 = plan.input_span(z0, z1, n_samples)
            raw = np.asarray(read(k0, k1))
            if raw.shape != (n_channels, k1 - k0):
                raise ValueError(
                    f"read({k0}, {k1}) gave shape {raw.shape}, "
                    f"expected {(n_channels, k1 - k0)}"
                )
            if ref is None:
                first = raw[:, :1]
                ref = np.where(np.isfinite(first), first, 0).astype(np.float32)
            x = self._clean(raw, ref, k0=k0, plan=plan, quality=quality)
            del raw
            blocks.push(plan.apply(x, k0=k0, z0=z0, z1=z1), last=z1 == n_out)
            del x
            for j0, y in blocks.ready():
                out = np.empty(y.shape, dtype=np.float32)
                if dc_gain:
                    np.add(y, ref * np.float32(dc_gain), out=out)
                else:
                    out[...] = y
                if quality is not None:
                    quality.add_output(j0, out)
                yield j0, out
        if blocks.emitted != n_out:
            raise AssertionError(f"emitted {blocks.emitted} of {n_out} samples")

    @staticmethod
    def _clean(
        raw: np.ndarray,
        ref: np.ndarray,
        *,
        k0: int,
        plan: ResamplePlan,
        quality: QualityAccumulator | None,
    ) -> np.ndarray:
        """float32 copy minus the reference level, non-finite samples zeroed."""
        x = np.subtract(raw, ref, dtype=np.float32)
        if np.isfinite(x.sum()):  # one reduction instead of a mask in the common case
            return x
        bad = ~np.isfinite(x)
        if quality is not None:
            ch, k = np.nonzero(bad)
            per_second = plan.down * quality.samples_per_second
            quality.add_nonfinite(ch, (k + k0) * plan.up // per_second)
        x[bad] = 0.0
        return x

