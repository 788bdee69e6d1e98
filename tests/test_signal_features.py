"""pipeline.signal quality flags and per-patch importance features, on exact inputs."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.signal import (
    FEATURE_NAMES,
    PreprocessSpec,
    QualityAccumulator,
    StreamingPreprocessor,
    bad_seconds,
    channel_mask,
    patch_features,
)

# ---------------------------------------------------------------------- quality


def _stream_flags(x: np.ndarray, sfreq: float, **spec):
    pre = StreamingPreprocessor(PreprocessSpec(**spec))
    acc = pre.quality_accumulator(n_samples=x.shape[1], n_channels=x.shape[0], sfreq_in=sfreq)
    for _ in pre.run(
        lambda a, b: x[:, a:b],
        n_samples=x.shape[1],
        n_channels=x.shape[0],
        sfreq_in=sfreq,
        quality=acc,
    ):
        pass
    return acc.result()


def test_flat_and_nan_channels_are_masked():
    sfreq, rng = 256.0, np.random.default_rng(0)
    n = int(sfreq * 40.5)  # 40.5 s: last second is partial
    x = (20 * rng.standard_normal((4, n)) + 300).astype(np.float32)
    x[1] = 4321.0  # flat: constant at a DC offset
    x[2, : int(sfreq * 30)] = np.nan  # NaN for 30 of 40 s
    x[3, int(sfreq * 5) : int(sfreq * 6)] = np.nan  # one NaN second only
    flags = _stream_flags(x, sfreq, chunk_seconds=9.0)
    assert flags.n_seconds == 41 and not flags.last_complete
    assert flags.complete.sum() == 40
    assert flags.flat[1].all() and not flags.flat[0].any()
    assert flags.nan[2, :30].all() and not flags.nan[2, 31:].any()
    assert np.flatnonzero(flags.nan[3]).tolist() == [5]
    masked = channel_mask(flags, max_bad_fraction=0.5)
    assert masked.tolist() == [False, True, True, False]
    bad = bad_seconds(flags, masked, reject_uv=1e6)
    assert np.flatnonzero(bad).tolist() == [5]  # masked channels do not count


def test_amplitude_rejection_marks_exactly_the_spike_seconds():
    # 200 Hz input: no resampling, so spike positions map 1:1 to output seconds
    sfreq, rng = 200.0, np.random.default_rng(1)
    n = 200 * 60
    x = (10 * rng.standard_normal((3, n))).astype(np.float32)
    for ch, sec in [(0, 17), (2, 42)]:
        x[ch, sec * 200 + 100] += 2000.0  # 2 mV spike mid-second
    flags = _stream_flags(x, sfreq, chunk_seconds=7.0)
    masked = channel_mask(flags)
    assert not masked.any()
    # band-passed spike peaks near 2000 µV · scale; noise stays far below 500 µV
    assert flags.peak.dtype == np.float32 and flags.peak.max() > 10.0
    bad = bad_seconds(flags, masked, reject_uv=500.0)
    assert np.flatnonzero(bad).tolist() == [17, 42]
    # masking the spiking channel removes its seconds
    bad = bad_seconds(flags, np.array([True, False, False]), reject_uv=500.0)
    assert np.flatnonzero(bad).tolist() == [42]


def test_flat_threshold_is_in_microvolts():
    acc = QualityAccumulator(n_channels=2, n_out=400, scale=0.01, flat_uv=0.5)
    block = np.zeros((2, 400), dtype=np.float32)
    block[0, :200] = np.linspace(0, 0.4e-2, 200)  # 0.4 µV peak-to-peak: flat
    block[1, :200] = np.linspace(0, 0.6e-2, 200)  # 0.6 µV: not flat
    acc.add_output(0, block)
    flags = acc.result()
    assert flags.flat[:, 0].tolist() == [True, False]
    assert flags.flat[:, 1].all()
    np.testing.assert_allclose(flags.peak[:, 0], [0.4e-2, 0.6e-2], rtol=1e-6)


def test_accumulator_rejects_gaps_and_incomplete_runs():
    acc = QualityAccumulator(n_channels=1, n_out=450)
    with pytest.raises(ValueError):
        acc.add_output(200, np.zeros((1, 200), np.float32))
    acc.add_output(0, np.zeros((1, 200), np.float32))
    with pytest.raises(RuntimeError):
        acc.result()
    acc.add_output(200, np.zeros((1, 250), np.float32))  # ends the run mid-second
    assert acc.result().n_seconds == 3


# -------------------------------------------------------------------- features

N = np.arange(200)


def _sine(f: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * f * N / 200 + 0.3)).astype(np.float32)


def _feat(x: np.ndarray) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, patch_features(x).tolist()))


def test_feature_names_and_shape():
    assert FEATURE_NAMES == ("neural", "clean", "complexity", "irregularity", "mobility")
    x = np.random.default_rng(0).standard_normal((3, 7, 200)).astype(np.float32)
    f = patch_features(x)
    assert f.shape == (3, 7, 5) and f.dtype == np.float32
    np.testing.assert_allclose(f[1, 2], patch_features(x[1, 2]), rtol=1e-5)


def test_spectral_features_on_sines():
    f10 = _feat(_sine(10))
    assert f10["neural"] == pytest.approx(1, abs=1e-4)
    assert f10["clean"] == pytest.approx(1, abs=1e-4)
    f1 = _feat(_sine(1))
    assert f1["neural"] == pytest.approx(0, abs=1e-4)
    assert f1["clean"] == pytest.approx(0, abs=1e-4)
    f60 = _feat(_sine(60))
    assert f60["clean"] == pytest.approx(0, abs=1e-4)
    assert f60["neural"] == pytest.approx(0, abs=1e-4)


@pytest.mark.parametrize("f", [3.0, 10.0, 25.0, 60.0])
def test_hjorth_on_sines(f):
    # x = sin(ωn): Δx is a sine of amplitude 2·sin(ω/2), so
    # var(Δx)/var(x) = 2 − 2cos ω and mobility = 2·sin(π f / 200); Δ²x likewise,
    # hence complexity = 1. Finite windows add < 1 % of error.
    feat = _feat(_sine(f))
    omega = 2 * np.pi * f / 200
    assert feat["mobility"] == pytest.approx(np.sqrt(2 - 2 * np.cos(omega)), rel=1e-2)
    assert feat["complexity"] == pytest.approx(1.0, rel=2e-2)


def test_irregularity_white_noise_vs_sine():
    noise = np.random.default_rng(0).standard_normal((500, 200)).astype(np.float32)
    assert patch_features(noise)[:, 3].mean() > 0.6  # ≈ 0.73 for white noise
    assert _feat(_sine(5))["irregularity"] < 0.2


@pytest.mark.parametrize("level", [0.0, 3.0, -1e3])
def test_flat_patch_gives_finite_zeros(level):
    f = patch_features(np.full(200, level, dtype=np.float32))
    assert np.all(np.isfinite(f))
    np.testing.assert_allclose(f, 0.0, atol=1e-6)


def test_features_are_fast_enough():
    import time

    x = np.random.default_rng(0).standard_normal((20_000, 200)).astype(np.float32)
    patch_features(x[:100])
    t = time.process_time()
    patch_features(x)
    dt = time.process_time() - t
    # ~300-400k/s measured; the bound only catches per-patch Python loops
    assert x.shape[0] / dt > 25_000
