"""pipeline.signal: FIR design, exact streaming resample+filter, agreement with mne."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from scipy import signal

from pipeline.signal import (
    PreprocessSpec,
    StreamingPreprocessor,
    design_bandpass_notch,
    design_fir,
    notch_harmonics,
    plan_resample,
)


def _run(pre: StreamingPreprocessor, x: np.ndarray, sfreq: float, **kw) -> np.ndarray:
    """Concatenate the stream, checking the block contract on the way."""
    n_out = pre.output_length(n_samples=x.shape[1], sfreq_in=sfreq)
    blocks, expect = [], 0
    for start, block in pre.run(
        lambda a, b: x[:, a:b],
        n_samples=x.shape[1],
        n_channels=x.shape[0],
        sfreq_in=sfreq,
        **kw,
    ):
        assert start == expect and start % 200 == 0
        assert block.dtype == np.float32 and block.shape[0] == x.shape[0]
        assert block.flags.c_contiguous
        blocks.append(block)
        expect += block.shape[1]
    assert expect == n_out
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((x.shape[0], 0))


def _noise_with_offset(rng, n_ch: int, n: int) -> np.ndarray:
    """Brown-ish noise plus white noise plus a large DC offset, in µV."""
    walk = np.cumsum(rng.standard_normal((n_ch, n)), axis=1)
    x = 2.0 * walk + 10.0 * rng.standard_normal((n_ch, n)) + 800.0
    return x.astype(np.float32)


def _gain_db(taps: np.ndarray, freqs: np.ndarray, fs: float) -> np.ndarray:
    _, h = signal.freqz(taps, worN=freqs, fs=fs)
    return 20 * np.log10(np.abs(h) + 1e-300)


# --------------------------------------------------------------------- filters


def test_notch_harmonics_strictly_below_nyquist():
    assert notch_harmonics(60.0, 200.0) == (60.0,)
    assert notch_harmonics(50.0, 200.0) == (50.0,)  # 100 Hz is Nyquist: excluded
    assert notch_harmonics(50.0, 256.0) == (50.0, 100.0)
    assert notch_harmonics(60.0, 512.0) == (60.0, 120.0, 180.0, 240.0)


@pytest.mark.parametrize("mains", [60.0, 50.0])
def test_fir_response(mains):
    taps = design_bandpass_notch(
        sfreq=200.0, l_freq=0.1, h_freq=75.0, notch_freqs=notch_harmonics(mains, 200)
    )
    assert taps.size % 2 == 1 and np.array_equal(taps, taps[::-1])
    # mne's rule: 3.3 / min(l_trans=0.1, h_trans=18.75, notch 0.5) s at 200 Hz
    assert taps.size == 6601
    passband = np.abs(signal.freqz(taps, worN=np.arange(1.0, 40.01, 0.25), fs=200)[1])
    assert np.all(np.abs(passband - 1) < 0.01)
    assert _gain_db(taps, np.array([mains]), 200)[0] < -40
    # stop band starts at h_freq + h_trans = 93.75 Hz
    assert np.all(_gain_db(taps, np.arange(93.75, 100.01, 0.25), 200) < -40)
    assert abs(taps.sum()) < 1e-9  # DC fully removed


def test_fir_sides_can_be_disabled_and_notches_dropped():
    lp = design_fir(sfreq=200.0, l_freq=None, h_freq=40.0, notch_freqs=(60.0, 70.0))
    assert abs(lp.taps.sum() - 1) < 1e-3  # DC passes
    assert lp.notch_dropped == (60.0, 70.0)  # in the low-pass stop band (≥ 50 Hz)
    hp = design_fir(sfreq=200.0, l_freq=1.0, h_freq=None, notch_freqs=(60.0, 100.0))
    assert hp.notch_freqs == (60.0,) and hp.notch_dropped == (100.0,)
    assert _gain_db(hp.taps, np.array([60.0]), 200)[0] < -40
    assert np.all(_gain_db(hp.taps, np.array([5.0, 80.0, 95.0]), 200) > -0.1)
    # a notch in the transition band cannot be summed: it is convolved in
    casc = design_fir(sfreq=200.0, l_freq=1.0, h_freq=45.0, notch_freqs=(50.0,))
    assert casc.notch_cascaded == (50.0,)
    assert _gain_db(casc.taps, np.array([50.0]), 200)[0] < -40


def test_design_is_cached_and_read_only():
    kw = dict(sfreq=200.0, l_freq=0.1, h_freq=75.0, notch_freqs=(60.0,))
    a, b = design_bandpass_notch(**kw), design_bandpass_notch(**kw)
    assert a is b and not a.flags.writeable


# -------------------------------------------------------------------- resample


@pytest.mark.parametrize(("sfreq", "up", "down"), [(256.0, 25, 32), (160.0, 5, 4)])
def test_resample_sine_matches_analytic(sfreq, up, down):
    plan = plan_resample(sfreq_in=sfreq, sfreq_out=200.0)
    assert (plan.up, plan.down) == (up, down)
    n = int(sfreq * 20) + 7
    x = np.sin(2 * np.pi * 10 * np.arange(n) / sfreq).astype(np.float32)[None]
    n_out = plan.output_length(n)
    assert n_out == -(-n * up // down)
    y = plan.apply(x, k0=0, z0=0, z1=n_out)
    assert y.shape == (1, n_out) and y.dtype == np.float32
    ref = np.sin(2 * np.pi * 10 * np.arange(n_out) / 200.0)
    mid = slice(200, n_out - 200)
    assert np.max(np.abs(y[0, mid] - ref[mid])) < 1e-3


@pytest.mark.parametrize("sfreq", [256.0, 160.0, 173.61])
def test_resample_spans_are_exact(sfreq):
    plan = plan_resample(sfreq_in=sfreq, sfreq_out=200.0)
    x = _noise_with_offset(np.random.default_rng(3), 2, int(sfreq * 30) + 3)
    n_out = plan.output_length(x.shape[1])
    whole = plan.apply(x, k0=0, z0=0, z1=n_out)
    for span in (plan.up * 3, plan.up * 41):
        for z0 in range(0, n_out, span):
            z1 = min(z0 + span, n_out)
            k0, k1 = plan.input_span(z0, z1, x.shape[1])
            assert k0 % plan.down == 0
            part = plan.apply(x[:, k0:k1], k0=k0, z0=z0, z1=z1)
            # float32 rounding only (BLAS may order sums by batch position)
            np.testing.assert_allclose(part, whole[:, z0:z1], rtol=1e-6, atol=1e-6 * 800)


@pytest.mark.parametrize("sfreq", [256.0, 160.0, 1000.0, 128.0, 173.61])
@pytest.mark.parametrize("n", [1, 2, 9, 4001])
def test_frame_products_equal_resample_poly(sfreq, n):
    """The BLAS frame kernel computes resample_poly's sums (or is not used)."""
    plan = plan_resample(sfreq_in=sfreq, sfreq_out=200.0)
    assert (plan.kernel is None) == (sfreq == 173.61)  # 1061/921: frames too big
    x = _noise_with_offset(np.random.default_rng(8), 3, n)
    got = plan.apply(x, k0=0, z0=0, z1=plan.output_length(n))
    pad = "antireflect" if n > 1 else "edge"
    ref = signal.resample_poly(
        x.astype(np.float64), plan.up, plan.down, axis=-1,
        window=plan.taps.astype(np.float64), padtype=pad,
    )
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6 * np.abs(ref).max())


def test_resample_keeps_constants_exact():
    """Unit-DC polyphase branches: a DC offset leaves no ripple."""
    for sfreq in (256.0, 160.0):
        plan = plan_resample(sfreq_in=sfreq, sfreq_out=200.0)
        x = np.full((1, int(sfreq * 5)), 3000.0, dtype=np.float32)
        y = plan.apply(x, k0=0, z0=0, z1=plan.output_length(x.shape[1]))
        assert np.max(np.abs(y - 3000.0)) < 3000.0 * 1e-6


# ---------------------------------------------------------------------- stream


@pytest.mark.parametrize("sfreq", [256.0, 160.0, 200.0])
def test_streaming_equals_whole_file(sfreq):
    x = _noise_with_offset(np.random.default_rng(1), 3, int(sfreq * 151.37))
    # small FFT blocks (48 s) so several blocks and chunk boundaries interleave
    spec = dict(fft_size=16384)
    whole = _run(StreamingPreprocessor(PreprocessSpec(chunk_seconds=None, **spec)), x, sfreq)
    scale = np.abs(whole).max()
    for chunk in (0.7, 7.3, 61.7, 500.0):
        part = _run(StreamingPreprocessor(PreprocessSpec(chunk_seconds=chunk, **spec)), x, sfreq)
        assert np.max(np.abs(part - whole)) < 1e-4 * scale
    # the FFT size changes rounding only
    default = _run(StreamingPreprocessor(PreprocessSpec(chunk_seconds=13.0)), x, sfreq)
    assert np.max(np.abs(default - whole)) < 1e-4 * scale


@pytest.mark.parametrize("sfreq", [256.0, 160.0])
def test_stream_matches_direct_float64_reference(sfreq):
    """resample → odd-reflect pad → direct convolution, all in float64."""
    x = _noise_with_offset(np.random.default_rng(2), 2, int(sfreq * 90.3))
    pre = StreamingPreprocessor(PreprocessSpec(chunk_seconds=11.0, fft_size=16384))
    got = _run(pre, x, sfreq)
    plan, taps = pre.resample_plan(sfreq), pre.fir_design(sfreq).taps
    x64 = x.astype(np.float64) - x[:, :1]  # the DC response of the band-pass is 0
    z = signal.resample_poly(
        x64, plan.up, plan.down, axis=-1, window=plan.taps.astype(np.float64),
        padtype="antireflect",
    )
    m = taps.size // 2
    zp = np.concatenate(
        (2 * z[:, :1] - z[:, m:0:-1], z, 2 * z[:, -1:] - z[:, -2 : -m - 2 : -1]), axis=1
    )
    ref = signal.fftconvolve(zp, taps[None], mode="valid", axes=-1) * 0.01
    assert got.shape == ref.shape
    assert np.max(np.abs(got - ref)) < 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("seconds", [20.0, 5.0, 0.02, 1 / 256])
def test_short_recordings(seconds):
    x = _noise_with_offset(np.random.default_rng(4), 2, max(1, int(256 * seconds)))
    whole = _run(StreamingPreprocessor(PreprocessSpec(chunk_seconds=None)), x, 256.0)
    part = _run(StreamingPreprocessor(PreprocessSpec(chunk_seconds=1.0)), x, 256.0)
    assert np.all(np.isfinite(whole))
    np.testing.assert_allclose(part, whole, atol=1e-6)


def test_dc_offset_and_drift_make_no_step():
    """Odd reflection continues a constant or a linear trend: output ≈ 0."""
    for sfreq in (256.0, 160.0):
        t = np.arange(int(sfreq * 60)) / sfreq
        x = np.stack([np.full_like(t, 5000.0), -3000.0 + 40.0 * t]).astype(np.float32)
        y = _run(StreamingPreprocessor(PreprocessSpec(chunk_seconds=7.0)), x, sfreq)
        assert np.max(np.abs(y)) < 1e-3  # 0.1 µV after the /100 scaling


@pytest.mark.parametrize("sfreq", [256.0, 160.0, 200.0])
def test_sines_through_the_chain(sfreq):
    t = np.arange(int(sfreq * 120)) / sfreq
    pre = StreamingPreprocessor(PreprocessSpec(chunk_seconds=9.0))
    mid = slice(20 * 200, 100 * 200)  # away from the 16.5 s edge transients
    x10 = (50.0 * np.sin(2 * np.pi * 10 * t)).astype(np.float32)[None]
    y10 = _run(pre, x10, sfreq)[0]
    ref = 0.5 * np.sin(2 * np.pi * 10 * np.arange(y10.size) / 200.0)
    assert np.max(np.abs(y10[mid] - ref[mid])) < 1e-3 * 0.5
    x60 = (30.0 * np.sin(2 * np.pi * 60 * t)).astype(np.float32)[None]
    y60 = _run(pre, x60, sfreq)[0]
    assert np.max(np.abs(y60[mid])) < 0.3 * 10 ** (-40 / 20)  # notched by > 40 dB


def test_nonfinite_input_is_zeroed_and_flagged():
    sfreq = 256.0
    x = _noise_with_offset(np.random.default_rng(5), 2, int(sfreq * 30))
    x[1, int(sfreq * 10.2) : int(sfreq * 12.5)] = np.nan
    x[0, 5] = np.inf
    pre = StreamingPreprocessor(PreprocessSpec(chunk_seconds=4.0))
    acc = pre.quality_accumulator(n_samples=x.shape[1], n_channels=2, sfreq_in=sfreq)
    y = _run(pre, x, sfreq, quality=acc)
    assert np.all(np.isfinite(y))
    flags = acc.result()
    assert np.flatnonzero(flags.nan[1]).tolist() == [10, 11, 12]
    assert np.flatnonzero(flags.nan[0]).tolist() == [0]


def test_provenance_records_everything():
    pre = StreamingPreprocessor()
    d = pre.describe(sfreq_in=256.0, n_samples=256 * 3600)
    json.dumps(d)
    assert d["resample"]["up"] == 25 and d["resample"]["down"] == 32
    assert d["resample"]["edge_pad"].startswith("odd")
    assert d["fir"]["n_taps"] == 6601
    assert d["fir"]["l_trans_bandwidth"] == 0.1 and d["fir"]["h_trans_bandwidth"] == 18.75
    assert d["spec"]["notch"] == [60.0] and d["spec"]["scale"] == 0.01
    assert d["layout"]["n_out"] == 200 * 3600


# ------------------------------------------------------------------------ mne


def _mne_chain(x: np.ndarray, sfreq: float, notch: tuple[float, ...]) -> np.ndarray:
    mne = pytest.importorskip("mne")
    fir = dict(method="fir", phase="zero", fir_window="hamming", fir_design="firwin")
    with mne.utils.use_log_level("error"):
        y = mne.filter.filter_data(x.astype(np.float64), sfreq, 0.1, 75.0, **fir)
        y = mne.filter.notch_filter(y, sfreq, list(notch), **fir)
        y = mne.filter.resample(y, up=200.0, down=sfreq)
    return y * 0.01


def _min_corr(a: np.ndarray, b: np.ndarray, edge: int) -> float:
    a, b = a[:, edge : a.shape[1] - edge], b[:, edge : b.shape[1] - edge]
    return min(np.corrcoef(u, v)[0, 1] for u, v in zip(a, b))


def test_agrees_with_mne_chain_synthetic():
    sfreq, rng = 256.0, np.random.default_rng(6)
    n = int(sfreq * 120)
    t = np.arange(n) / sfreq
    pink = signal.lfilter([1.0], [1.0, -0.98], rng.standard_normal((4, n)), axis=1)
    x = (5 * pink + 20 * np.sin(2 * np.pi * 10 * t) + 30 * np.sin(2 * np.pi * 60 * t) + 900)
    x = x.astype(np.float32)
    ours = _run(StreamingPreprocessor(PreprocessSpec(chunk_seconds=17.0)), x, sfreq)
    ref = _mne_chain(x, sfreq, (60.0,))
    assert ref.shape == ours.shape
    assert _min_corr(ours, ref, edge=10 * 200) > 0.99


def test_agrees_with_mne_chain_real_recording(demo_corpus):
    mne = pytest.importorskip("mne")
    path = demo_corpus / "physionet" / "S001R02.edf"
    if not path.exists():
        pytest.skip(f"{path} not available")
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    sfreq = float(raw.info["sfreq"])  # 160 Hz, 64 channels, 1 min
    x = (raw.get_data() * 1e6).astype(np.float32)
    ours = _run(StreamingPreprocessor(PreprocessSpec(chunk_seconds=7.0)), x, sfreq)
    ref = _mne_chain(x, sfreq, (60.0,))
    assert ref.shape == ours.shape
    assert _min_corr(ours, ref, edge=5 * 200) > 0.99


# --------------------------------------------------------------------- memory


def _synthetic_reader(n_channels: int, sfreq: float):
    """read(start, stop) for an endless recording, generated on the fly."""
    period = int(sfreq * 61) + 7  # not a multiple of anything the stream uses
    base = _noise_with_offset(np.random.default_rng(7), n_channels, period)

    def read(start: int, stop: int) -> np.ndarray:
        return np.take(base, np.arange(start, stop) % period, axis=1)

    return read


def _traced_peak(hours: float) -> int:
    sfreq, n_ch = 256.0, 23
    n = int(hours * 3600 * sfreq)
    pre = StreamingPreprocessor(PreprocessSpec(chunk_seconds=60.0))
    read = _synthetic_reader(n_ch, sfreq)
    tracemalloc.start()
    try:
        for _, block in pre.run(read, n_samples=n, n_channels=n_ch, sfreq_in=sfreq):
            del block
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_length():
    short, long = _traced_peak(1.0), _traced_peak(4.0)
    assert long < 1.2 * short
    assert long < 64 * 2**20  # chunk- and block-sized buffers only


@pytest.mark.parametrize("numtaps, cutoff", [(101, 0.3), (1691, 75 / 128), (4001, 0.01), (3, 0.5)])
def test_lowpass_taps_are_scipy_firwin(numtaps: int, cutoff: float):
    """The windowed-sinc design the data stages use instead of importing scipy.signal (~0.6 s per process)."""
    from pipeline.signal.filters import lowpass_taps

    for window, np_window in (("hamming", np.hamming(numtaps)), (("kaiser", 6.5), np.kaiser(numtaps, 6.5))):
        np.testing.assert_allclose(lowpass_taps(numtaps, cutoff, np_window),
                                   signal.firwin(numtaps, cutoff, window=window), rtol=0, atol=1e-15)
