"""stemdb.measure on the real fixtures: BS.1770-4 loudness against pyloudnorm, silence, clipping, hashes, tempo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from stemdb import audio
from stemdb.measure import (
    Measurements,
    active_regions,
    content_hash,
    integrated_loudness,
    k_weighting_sos,
    measure,
)

from .conftest import DATA, MUSDB, STEM_MP4

WAV_FIXTURES = sorted(DATA.rglob("*.wav"))
STEM_MP4_FILE = next(STEM_MP4.rglob("*.stem.mp4"))
ZEPPELIN_VOCALS = MUSDB / "train" / "Music Delta - Zeppelin" / "vocals.wav"
FILE_48K = DATA / "stems" / "keys" / "maestro_chamber3_excerpt_2s_48k.wav"
RATES = (22050, 44100, 48000, 96000)

try:
    import numba  # noqa: F401

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba comes with librosa
    HAVE_NUMBA = False
BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing"))]


def _pyloudnorm(x: np.ndarray, sr: int) -> float:
    return float(pyloudnorm.Meter(sr).integrated_loudness(x.T.astype(np.float64)))


def _sine(freq: float, sr: int, seconds: float, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t))[np.newaxis, :].astype(np.float32)


@pytest.fixture(scope="module")
def stem_mp4_streams() -> list[tuple[np.ndarray, int]]:
    return [audio.read(STEM_MP4_FILE, stream=i) for i in range(5)]


# ---------------------------------------------------------------------------------------------------------------
# loudness


def test_fixture_set_covers_the_required_cases() -> None:
    assert len(WAV_FIXTURES) >= 40
    assert ZEPPELIN_VOCALS in WAV_FIXTURES and FILE_48K in WAV_FIXTURES
    assert audio.info(FILE_48K).sample_rate == 48000
    assert any(audio.info(p).channels == 1 for p in WAV_FIXTURES)


@pytest.mark.parametrize("path", WAV_FIXTURES, ids=lambda p: str(p.relative_to(DATA)))
def test_lufs_within_0p1_of_pyloudnorm_on_every_wav_fixture(path: Path) -> None:
    x, sr = audio.read(path)
    ours = integrated_loudness(x, sr)
    ref = _pyloudnorm(x, sr)
    if path == ZEPPELIN_VOCALS:
        assert ours == float("-inf") and ref == float("-inf")
    else:
        assert np.isfinite(ours)
        assert abs(ours - ref) < 0.1, (path, ours, ref)


@pytest.mark.parametrize("stream", range(5))
def test_lufs_within_0p1_of_pyloudnorm_on_stem_mp4_streams(stem_mp4_streams, stream: int) -> None:  # noqa: ANN001
    x, sr = stem_mp4_streams[stream]
    assert x.shape[0] == 2 and x.shape[1] % 4410 != 0  # not a whole number of hops: exercises the last block
    assert abs(integrated_loudness(x, sr) - _pyloudnorm(x, sr)) < 0.1


@pytest.mark.parametrize("sr", RATES)
def test_reference_997hz_sine_reads_minus_3p01_lufs(sr: int) -> None:
    # BS.1770-4: a 0 dBFS 997 Hz sine on one channel (L, C or R) reads -3.01 LKFS.
    assert integrated_loudness(_sine(997.0, sr, 5.0), sr) == pytest.approx(-3.01, abs=0.1)


def test_filters_at_48k_are_the_standards_coefficients() -> None:
    sos = k_weighting_sos(48000)
    np.testing.assert_allclose(
        sos[0],
        [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
        rtol=1e-12,
    )
    np.testing.assert_allclose(sos[1], [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621], rtol=1e-12)
    assert not np.allclose(k_weighting_sos(44100), sos)  # re-derived per rate, not reused


@pytest.mark.parametrize("sr", RATES)
def test_lufs_matches_pyloudnorm_at_other_sample_rates(sr: int) -> None:
    x, src = audio.read(MUSDB / "train" / "Music Delta - Rock" / "mixture.wav")
    y = np.ascontiguousarray(soxr.resample(x.T, src, sr).T, dtype=np.float32)
    assert abs(integrated_loudness(y, sr) - _pyloudnorm(y, sr)) < 0.1


def test_gain_of_6db_raises_lufs_by_6() -> None:
    x, sr = audio.read(MUSDB / "train" / "Music Delta - Reggae" / "other.wav")  # quiet, with silent gaps
    base = integrated_loudness(x, sr)
    louder = integrated_loudness(x * np.float32(10 ** (6 / 20)), sr)
    assert louder - base == pytest.approx(6.0, abs=0.01)


def test_mono_is_one_channel_and_stereo_copies_add_3db() -> None:
    x, sr = audio.read(DATA / "stems" / "vocals" / "csd_en001b.wav")
    assert x.shape[0] == 1
    mono = integrated_loudness(x, sr)
    assert integrated_loudness(x[0], sr) == mono  # 1-D input is one channel
    assert integrated_loudness(np.vstack([x, x]), sr) - mono == pytest.approx(10 * np.log10(2), abs=1e-6)


def test_too_short_or_silent_is_minus_inf() -> None:
    x, sr = audio.read(MUSDB / "train" / "Music Delta - Rock" / "vocals.wav")
    assert integrated_loudness(x[:, : int(0.39 * sr)], sr) == float("-inf")
    assert np.isfinite(integrated_loudness(x[:, : int(0.41 * sr)], sr))
    assert integrated_loudness(np.zeros((2, sr), np.float32), sr) == float("-inf")
    assert integrated_loudness(_sine(997.0, sr, 2.0, amplitude=10 ** (-75 / 20)), sr) == float(
        "-inf"
    )  # < -70


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")
def test_backends_agree_on_every_fixture() -> None:
    for path in WAV_FIXTURES:
        x, sr = audio.read(path)
        a = measure(x, sr, tempo=False, backend="numba")
        b = measure(x, sr, tempo=False, backend="numpy")
        assert a.extra["backend"] == "numba" and b.extra["backend"] == "numpy"
        for name in ("lufs", "peak_dbfs", "rms_dbfs"):
            va, vb = getattr(a, name), getattr(b, name)
            assert va == vb if not np.isfinite(vb) else abs(va - vb) < 1e-9, (path, name, va, vb)
        assert (a.silence_ratio, a.clipping_ratio, a.active, a.content_hash) == (
            b.silence_ratio,
            b.clipping_ratio,
            b.active,
            b.content_hash,
        )


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_backends_agree_on_odd_lengths_and_channel_counts(channels: int) -> None:
    # The compiled loop cuts a lone channel in two halves run side by side: any length, with or without a last
    # block that runs past the end, and any short length must give the scipy result.
    x, sr = audio.read(DATA / "stems" / "other" / "sorohanro_solo_trumpet_06.wav")
    x = np.vstack([x, x[:, ::-1], -x][:channels])
    for frames in (
        int(0.4 * sr),
        8 * 4410 - 1,
        8 * 4410 + 2300,
        9 * 4410 + 2000,
        20 * 4410 + 2205,
        x.shape[1],
    ):
        y = x[:, :frames]
        fast = integrated_loudness(y, sr, backend="numba")
        assert fast == pytest.approx(integrated_loudness(y, sr, backend="numpy"), abs=1e-9), frames
        assert abs(fast - _pyloudnorm(y, sr)) < 0.1
    y22 = np.ascontiguousarray(soxr.resample(x.T, sr, 22050).T, dtype=np.float32)
    assert integrated_loudness(y22, 22050, backend="numba") == pytest.approx(
        integrated_loudness(y22, 22050, backend="numpy"), abs=1e-9
    )
    y11 = np.ascontiguousarray(soxr.resample(x.T, sr, 11025).T, dtype=np.float32)  # 1102.5-sample hops
    assert integrated_loudness(y11, 11025, backend="numba") == pytest.approx(
        integrated_loudness(y11, 11025, backend="numpy"), abs=1e-9
    )


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")
def test_trailing_silence_backends_agree() -> None:
    # Regression: after the audio stops the filter state decays towards subnormal numbers, which the numba kernel
    # flushes to zero (subnormals made it 2x slower on stems that end in silence); results must not move.
    x, sr = audio.read(DATA / "stems" / "bass" / "musicdelta_britpop_electric_bass.wav")
    padded = np.concatenate([x, np.zeros((1, 20 * sr), np.float32)], axis=1)
    fast = integrated_loudness(padded, sr, backend="numba")
    assert fast == pytest.approx(integrated_loudness(padded, sr, backend="numpy"), abs=1e-9)
    assert abs(fast - _pyloudnorm(padded, sr)) < 0.1
    assert (
        abs(fast - integrated_loudness(x, sr)) < 0.2
    )  # only the 3 blocks across the edge can pass the gates


# ---------------------------------------------------------------------------------------------------------------
# silence, activity, clipping, levels


@pytest.mark.parametrize("backend", BACKENDS)
def test_zeppelin_all_zero_vocals_are_silent(backend: str) -> None:
    x, sr = audio.read(ZEPPELIN_VOCALS)
    assert not x.any()
    m = measure(x, sr, tempo=True, backend=backend)
    assert m.silence_ratio == 1.0
    assert m.active == []
    assert m.lufs == m.peak_dbfs == m.rms_dbfs == float("-inf")
    assert m.tempo_bpm is None and m.beats_s == []
    rec = m.as_record()
    assert rec["lufs"] is None and rec["peak_dbfs"] is None and rec["rms_dbfs"] is None
    assert rec["silence_ratio"] == 1.0 and rec["active"] == []


def _reference_regions(x: np.ndarray, sr: int, threshold_db: float, window_s: float) -> tuple[list, float]:
    """Plain loop over windows: the definition, written independently of the module."""
    win = int(round(window_s * sr))
    regions: list[list[float]] = []
    silent = 0
    for start in range(0, x.shape[1], win):
        seg = x[:, start : start + win].astype(np.float64)
        rms_db = 10 * np.log10(np.mean(seg**2)) if np.any(seg) else -np.inf
        end = min(start + win, x.shape[1])
        if rms_db > threshold_db:
            if regions and regions[-1][1] == start / sr:
                regions[-1][1] = end / sr
            else:
                regions.append([start / sr, end / sr])
        else:
            silent += end - start
    return [tuple(r) for r in regions], silent / x.shape[1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "path",
    [
        MUSDB / "train" / "Music Delta - Reggae" / "other.wav",
        DATA / "stems" / "drums" / "render_gmd_funk_groove1_avl_blackpearl.wav",
        FILE_48K,
    ],
    ids=["reggae-other", "funk-drums", "48k-keys"],
)
def test_silence_ratio_and_active_regions_follow_the_window_rms(path: Path, backend: str) -> None:
    x, sr = audio.read(path)
    expected_regions, expected_silence = _reference_regions(x, sr, -45.0, 0.1)
    assert 0.0 < expected_silence < 1.0 and len(expected_regions) >= 2  # a fixture with gaps
    m = measure(x, sr, silence_db=-45.0, window_s=0.1, tempo=False, backend=backend)
    assert m.silence_ratio == pytest.approx(expected_silence, abs=1e-12)
    assert len(m.active) == len(expected_regions)
    np.testing.assert_allclose(np.asarray(m.active), np.asarray(expected_regions), rtol=0, atol=1e-12)
    assert active_regions(x, sr, threshold_db=-45.0, window_s=0.1) == m.active


def test_active_regions_thresholds_and_gap_merging() -> None:
    sr = 8000
    x = np.zeros((2, sr * 3), np.float32)
    x[1, 800:1600] = 0.1  # 0.1-0.2 s, right channel only: -23 dBFS over both channels
    x[0, 2400:4000] = 0.01  # 0.3-0.5 s: -43 dBFS over both channels
    assert active_regions(x, sr, threshold_db=-45.0) == [(0.1, 0.2), (0.3, 0.5)]
    assert active_regions(x, sr, threshold_db=-40.0) == [(0.1, 0.2)]
    assert active_regions(x, sr, threshold_db=-45.0, min_gap_s=0.1) == [(0.1, 0.2), (0.3, 0.5)]  # gap == 0.1
    assert active_regions(x, sr, threshold_db=-45.0, min_gap_s=0.11) == [(0.1, 0.5)]
    x[:, -100:] = 0.5  # a loud last, partial window: the region ends at the end of the audio
    assert active_regions(x, sr, threshold_db=-45.0, window_s=0.3)[-1] == pytest.approx((2.7, 3.0))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3000),
    window=st.integers(1, 400),
    min_gap=st.integers(0, 800),
)
def test_regions_and_silence_ratio_are_consistent(seed: int, n: int, window: int, min_gap: int) -> None:
    sr = 1000
    rng = np.random.default_rng(seed)
    gate = np.repeat(rng.random(n // 50 + 1) < 0.5, 50)[:n]  # on/off stretches of 50 ms
    x = (rng.standard_normal((2, n)) * 0.1 * gate).astype(np.float32)
    m = measure(x, sr, window_s=window / sr, tempo=False, min_gap_s=min_gap / sr)
    plain = active_regions(x, sr, window_s=window / sr)
    duration = n / sr
    for regions in (m.active, plain):
        assert all(0.0 <= a < b <= duration for a, b in regions)
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(regions, regions[1:], strict=False))  # sorted, apart
    assert sum(b - a for a, b in plain) == pytest.approx((1.0 - m.silence_ratio) * duration, abs=1e-9)
    assert all(
        a2 - b1 >= min_gap / sr - 1e-12 for (_, b1), (a2, _) in zip(m.active, m.active[1:], strict=False)
    )
    for a, b in plain:  # merging only closes gaps: every plain region lies inside one merged region
        assert any(ma <= a and b <= mb for ma, mb in m.active)


@pytest.mark.parametrize("backend", BACKENDS)
def test_clipping_ratio_counts_samples_at_or_above_the_level(backend: str) -> None:
    x, sr = audio.read(MUSDB / "train" / "Music Delta - Hendrix" / "mixture.wav")
    assert measure(x, sr, tempo=False, backend=backend).clipping_ratio == 0.0
    hot = np.clip(x * np.float32(4.0), -1.0, 1.0)
    expected = np.count_nonzero(np.abs(hot) >= np.float32(0.999)) / hot.size
    assert 0.0 < expected < 0.5
    m = measure(hot, sr, tempo=False, backend=backend)
    assert m.clipping_ratio == expected
    assert m.peak_dbfs == 0.0
    lower = measure(hot, sr, tempo=False, clip_level=0.5, backend=backend).clipping_ratio
    assert lower == np.count_nonzero(np.abs(hot) >= 0.5) / hot.size > expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_peak_and_rms_levels(backend: str) -> None:
    x, sr = audio.read(MUSDB / "test" / "The Easton Ellises - Falcon 69" / "drums.wav")
    m = measure(x, sr, tempo=False, backend=backend)
    x64 = x.astype(np.float64)
    assert m.peak_dbfs == pytest.approx(20 * np.log10(np.abs(x64).max()), abs=1e-9)
    assert m.rms_dbfs == pytest.approx(10 * np.log10(np.mean(x64**2)), abs=1e-9)
    sine = measure(_sine(1000.0, 48000, 1.0), 48000, tempo=False, backend=backend)
    assert sine.rms_dbfs == pytest.approx(-3.0103, abs=1e-3) and sine.peak_dbfs == pytest.approx(
        0.0, abs=1e-6
    )


def test_measure_lufs_equals_integrated_loudness() -> None:
    x, sr = audio.read(FILE_48K)
    m = measure(x, sr, tempo=False)
    assert isinstance(m, Measurements)
    assert m.lufs == integrated_loudness(x, sr)
    assert m.content_hash == content_hash(x, sr)


# ---------------------------------------------------------------------------------------------------------------
# content hash


def test_hash_equal_for_wav_and_flac_and_changes_with_one_lsb(tmp_path: Path) -> None:
    x, sr = audio.read(MUSDB / "train" / "Music Delta - Rock" / "bass.wav")
    wav = audio.write(tmp_path / "a.wav", x, sr)
    flac = audio.write(tmp_path / "renamed copy.flac", x, sr)
    assert wav.read_bytes() != flac.read_bytes()
    xw, srw = audio.read(wav)
    xf, srf = audio.read(flac)
    h = content_hash(xw, srw)
    assert len(h) == 32 and int(h, 16) >= 0
    assert content_hash(xf, srf) == h == content_hash(x, sr)
    assert measure(xf, srf, tempo=False).content_hash == h
    assert content_hash(audio.read(wav, dtype="int16")[0], srw) == h  # int16 PCM hashes as it is

    changed = xw.copy()
    changed[1, 12345] += np.float32(1 / 32768)  # one LSB in one sample
    assert content_hash(changed, srw) != h
    assert measure(changed, srw, tempo=False).content_hash != h


def test_hash_depends_on_rate_and_layout() -> None:
    x, sr = audio.read(DATA / "stems" / "vocals" / "csd_en001b.wav")
    h = content_hash(x, sr)
    assert content_hash(x, 48000) != h
    assert x.shape[1] % 2 == 0
    assert content_hash(x.reshape(2, -1), sr) != h  # same samples, same bytes, other channel layout
    assert content_hash(np.clip(x * 4, -1, 1), sr) == content_hash(x * 4, sr)  # clipped to int16 either way


# ---------------------------------------------------------------------------------------------------------------
# tempo


def test_tempo_of_a_120_bpm_click_track() -> None:
    sr = 44100
    x = np.zeros((1, sr * 8), np.float32)
    click = (np.hanning(200) * 0.8).astype(np.float32)
    for beat_s in np.arange(0.0, 8.0, 0.5):
        x[0, int(beat_s * sr) : int(beat_s * sr) + 200] = click
    m = measure(x, sr, tempo=True)
    assert m.tempo_bpm == pytest.approx(120.0, rel=0.05)
    assert np.median(np.diff(m.beats_s)) == pytest.approx(0.5, abs=0.03)
    assert all(0.0 <= t < 8.0 for t in m.beats_s)
    off = measure(x, sr, tempo=False)
    assert off.tempo_bpm is None and off.beats_s == []
    assert off.lufs == m.lufs and off.content_hash == m.content_hash


# ---------------------------------------------------------------------------------------------------------------
# validation and edge cases


def test_empty_audio_measures_as_silence() -> None:
    m = measure(np.zeros((2, 0), np.float32), 44100, tempo=True)
    assert m.silence_ratio == 1.0 and m.active == [] and m.clipping_ratio == 0.0
    assert m.lufs == m.peak_dbfs == m.rms_dbfs == float("-inf")
    assert m.content_hash != measure(np.zeros((1, 0), np.float32), 44100, tempo=False).content_hash


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"window_s": 0.0}, "window_s"),
        ({"clip_level": -1.0}, "clip_level"),
        ({"silence_db": float("nan")}, "silence_db"),
        ({"min_gap_s": -0.1}, "min_gap_s"),
        ({"backend": "cuda"}, "backend"),
        ({"channel_weights": (1.0,)}, "channel_weights"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        measure(np.zeros((2, 4410), np.float32), 44100, tempo=False, **kwargs)


def test_bad_inputs_raise() -> None:
    ok = np.zeros((1, 44100), np.float32)
    with pytest.raises(ValueError, match="sample_rate"):
        integrated_loudness(ok, 0)
    with pytest.raises(ValueError, match="sample_rate"):
        content_hash(ok, 44100.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        measure(np.zeros((1, 2, 3), np.float32), 44100)
    with pytest.raises(ValueError, match="dtype"):
        integrated_loudness(np.zeros((1, 44100), np.int32), 44100)
    with pytest.raises(ValueError, match="channel"):
        integrated_loudness(np.zeros((6, 44100), np.float32), 44100)
    assert integrated_loudness(np.zeros((6, 44100), np.float32), 44100, channel_weights=(1,) * 6) == float(
        "-inf"
    )
    bad = ok.copy()
    bad[0, 100] = np.nan
    with pytest.raises(ValueError, match="1 NaN/inf"):
        measure(bad, 44100, tempo=False)
    assert np.isnan(integrated_loudness(bad, 44100))
