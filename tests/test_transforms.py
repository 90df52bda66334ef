"""augment.transforms: every transform verified on real fixture audio (and pure tones / noise where a property is
easier to prove on them), determinism of draws and of apply, validation, config and recipe round trips."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import welch

import stemdb.measure
from augment.chain import CHAIN_ORDER, RECORD_FIELDS, StemAugment, from_config, neutral_record
from augment.transforms import (
    ChannelSwap,
    ChannelSwapParams,
    Gain,
    GainParams,
    InvalidParameterError,
    LoudnessNormalize,
    LoudnessParams,
    PitchParams,
    PitchShift,
    Polarity,
    PolarityParams,
    SpectralFilter,
    SpectralFilterParams,
    StretchParams,
    TimeStretch,
    filter_response_db,
)
from stemdb.audio import read
from stemdb.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
MUSDB = DATA / "musdb" / "train"
CONTRABASS = DATA / "stems" / "bass" / "tinysol_contrabass_A2_mf.wav"

FULL_CONFIG = {
    "polarity": {"p": 0.5},
    "gain": {"min_db": -3, "max_db": 3, "p": 1.0},
    "pitch": {"min_semitones": -2, "max_semitones": 2, "p": 0.5},
    "stretch": {"min_rate": 0.9, "max_rate": 1.1, "p": 0.5},
    "channel_swap": {"p": 0.5},
    "spectral_filter": {"min_gain_db": -6, "max_gain_db": 6, "p": 0.5},
    "loudness": {"min_lufs": -28, "max_lufs": -18, "p": 0.5},
}


@pytest.fixture(scope="module")
def rock_vocals() -> tuple[np.ndarray, int]:
    return read(MUSDB / "Music Delta - Rock" / "vocals.wav")


@pytest.fixture(scope="module")
def rock_bass() -> tuple[np.ndarray, int]:
    return read(MUSDB / "Music Delta - Rock" / "bass.wav")


def dominant_hz(audio: np.ndarray, sr: int, start_s: float, end_s: float) -> float:
    """Frequency of the strongest spectral peak of channel 0 between start_s and end_s (parabolic interpolation)."""
    seg = audio[0, int(start_s * sr) : int(end_s * sr)].astype(np.float64)
    n = 1 << 20
    mag = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n))
    k = int(np.argmax(mag[1:])) + 1
    a, b, c = np.log(mag[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / n


def sha(audio: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(audio).tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------- pitch, stretch


def test_pitch_octave_up_doubles_dominant_frequency_of_sustained_contrabass_note() -> None:
    audio, sr = read(CONTRABASS)
    f0 = dominant_hz(audio, sr, 0.5, 3.5)  # sustained part of the A2 note
    assert 100 < f0 < 240  # A2 (110 Hz) or its octave partial
    out = PitchShift().apply(audio, sr, PitchParams(pitch_semitones=12.0))
    assert out.shape == audio.shape and out.dtype == np.float32
    assert dominant_hz(out, sr, 0.5, 3.5) / f0 == pytest.approx(2.0, rel=0.01)


@pytest.mark.parametrize("semitones", [12.0, -12.0, 7.0])
def test_pitch_shift_moves_a_pure_tone_by_the_semitone_ratio(semitones: float) -> None:
    sr = 44100
    t = np.arange(2 * sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None]
    out = PitchShift().apply(tone, sr, PitchParams(pitch_semitones=semitones))
    assert dominant_hz(out, sr, 0.3, 1.7) == pytest.approx(440.0 * 2 ** (semitones / 12), rel=0.01)


@pytest.mark.parametrize("rate", [0.8, 1.1337, 1.25])
def test_time_stretch_changes_length_by_one_over_rate_and_keeps_pitch(rock_bass, rate: float) -> None:
    audio, sr = rock_bass
    out = TimeStretch().apply(audio, sr, StretchParams(stretch_rate=rate))
    assert out.shape[0] == audio.shape[0] and out.dtype == np.float32
    assert out.shape[1] == round(audio.shape[1] / rate)  # documented: no pad/crop inside
    t = np.arange(3 * sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 330.0 * t)).astype(np.float32)[None]
    stretched = TimeStretch().apply(tone, sr, StretchParams(stretch_rate=rate))
    assert dominant_hz(stretched, sr, 0.3, 1.9) == pytest.approx(330.0, rel=0.01)


def test_time_stretch_moves_events_to_time_over_rate_within_one_hop() -> None:
    sr, rate = 44100, 1.25
    clicks = np.zeros((1, 4 * sr), np.float32)
    positions = [int(0.5 * sr), int(1.5 * sr), int(3.0 * sr)]
    clicks[0, positions] = 1.0
    out = TimeStretch().apply(clicks, sr, StretchParams(stretch_rate=rate))
    hop = 0.025 * sr  # generous upper bound on Signalsmith's interval at 44.1 kHz
    env = np.abs(out[0])
    for pos in positions:
        lo, hi = int(pos / rate - 0.1 * sr), int(pos / rate + 0.1 * sr)
        found = lo + int(np.argmax(env[lo:hi]))
        assert abs(found - pos / rate) <= hop


def test_neutral_pitch_and_stretch_return_the_input_untouched(rock_bass) -> None:
    audio, sr = rock_bass
    assert PitchShift().apply(audio, sr, PitchParams()) is audio
    assert TimeStretch().apply(audio, sr, StretchParams()) is audio


# ---------------------------------------------------------------------------------------------------- simple ones


def test_channel_swap_swaps_left_and_right_and_leaves_mono(rock_vocals) -> None:
    audio, sr = rock_vocals
    out = ChannelSwap().apply(audio, sr, ChannelSwapParams(channel_swap=True))
    assert np.array_equal(out[0], audio[1]) and np.array_equal(out[1], audio[0])
    assert not np.array_equal(audio[0], audio[1])  # the check above could not pass by accident
    mono, msr = read(CONTRABASS)
    assert np.array_equal(ChannelSwap().apply(mono, msr, ChannelSwapParams(channel_swap=True)), mono)
    assert ChannelSwap().apply(audio, sr, ChannelSwapParams()) is audio


@pytest.mark.parametrize("gain_db", [-12.0, -3.3, -0.1, 0.7, 6.0, 13.37])
def test_gain_is_exact_in_db_to_the_last_bit(rock_vocals, gain_db: float) -> None:
    audio, sr = rock_vocals
    out = Gain().apply(audio, sr, GainParams(gain_db=gain_db))
    expected = audio * np.float32(10.0 ** (gain_db / 20.0))
    assert out.dtype == np.float32
    assert np.array_equal(out, expected)
    loud = stemdb.measure.integrated_loudness
    assert loud(out, sr) - loud(audio, sr) == pytest.approx(gain_db, abs=1e-3)


def test_polarity_negates(rock_vocals) -> None:
    audio, sr = rock_vocals
    out = Polarity().apply(audio, sr, PolarityParams(polarity=-1))
    assert np.array_equal(out, -audio) and np.any(audio != 0)
    assert Polarity().apply(audio, sr, PolarityParams(polarity=1)) is audio
    with pytest.raises(InvalidParameterError, match="polarity=2"):
        Polarity().apply(audio, sr, PolarityParams(polarity=2))


def test_transforms_do_not_modify_their_input(rock_vocals) -> None:
    audio, sr = rock_vocals
    before = audio.copy()
    StemAugment.from_config(FULL_CONFIG)(audio, sr, np.random.default_rng(3))
    chain = StemAugment.from_config({k: {**v, "p": 1.0} for k, v in FULL_CONFIG.items()})
    chain(audio, sr, np.random.default_rng(4))
    assert np.array_equal(audio, before)


# ---------------------------------------------------------------------------------------------------- loudness


@pytest.mark.parametrize(
    ("path", "target"),
    [
        (MUSDB / "Music Delta - Rock" / "vocals.wav", -23.0),
        (MUSDB / "Music Delta - Reggae" / "drums.wav", -14.5),
        (DATA / "stems" / "vocals" / "vocadito_1.wav", -30.0),
        (DATA / "stems" / "keys" / "maestro_chamber3_excerpt_2s_48k.wav", -18.0),
    ],
)
def test_loudness_normalize_lands_within_a_tenth_of_a_lu(path: Path, target: float) -> None:
    audio, sr = read(path)
    t = LoudnessNormalize(min_lufs=target, max_lufs=target, p=1.0)
    out, params = t(audio, sr, np.random.default_rng(0))
    assert params.loudness_target_lufs == target
    before = stemdb.measure.integrated_loudness(audio, sr)
    assert params.loudness_gain_db == pytest.approx(target - before)
    assert stemdb.measure.integrated_loudness(out, sr) == pytest.approx(target, abs=0.1)
    assert abs(before - target) > 1.0  # the fixture really needed a change


def test_loudness_rerender_from_recorded_gain_does_not_measure(rock_vocals, monkeypatch) -> None:
    audio, sr = rock_vocals
    t = LoudnessNormalize(min_lufs=-20, max_lufs=-20, p=1.0)
    out, params = t(audio, sr, np.random.default_rng(0))
    assert params.loudness_gain_db is not None

    def boom(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(stemdb.measure, "integrated_loudness", boom)
    assert np.array_equal(t.apply(audio, sr, params), out)
    assert np.array_equal(out, audio * np.float32(10.0 ** (params.loudness_gain_db / 20.0)))


def test_loudness_leaves_silent_audio_unchanged() -> None:
    silent, sr = read(MUSDB / "Music Delta - Zeppelin" / "vocals.wav")  # all zeros
    assert not np.any(silent)
    out, params = LoudnessNormalize(min_lufs=-20, max_lufs=-20, p=1.0)(silent, sr, np.random.default_rng(0))
    assert out is silent
    assert params == LoudnessParams(loudness_target_lufs=-20.0, loudness_gain_db=0.0)


# ---------------------------------------------------------------------------------------------------- spectral filter


@pytest.mark.parametrize(
    ("freq", "gain_db", "q"), [(1000.0, 6.0, 1.0), (3000.0, -9.0, 2.0), (250.0, 4.0, 0.7)]
)
def test_spectral_filter_moves_the_band_at_its_centre_by_its_gain(
    freq: float, gain_db: float, q: float
) -> None:
    sr = 44100
    noise = (0.1 * np.random.default_rng(5).standard_normal((2, 4 * sr))).astype(np.float32)
    out = SpectralFilter().apply(
        noise, sr, SpectralFilterParams(filter_freq_hz=freq, filter_gain_db=gain_db, filter_q=q)
    )
    assert out.shape == noise.shape and out.dtype == np.float32
    f, p_in = welch(noise, sr, nperseg=8192)
    _, p_out = welch(out, sr, nperseg=8192)
    change_db = 10 * np.log10(p_out.mean(0) / p_in.mean(0))
    centre = np.abs(np.log2(np.maximum(f, 1.0) / freq)) < 0.05
    assert change_db[centre].mean() == pytest.approx(gain_db, abs=0.3)
    far = (np.abs(np.log2(np.maximum(f, 1.0) / freq)) > 4) & (f > 20)
    assert np.abs(change_db[far]).max() < 0.3
    predicted = filter_response_db(f, freq, gain_db, q)
    band = (f > 50) & (f < 16000)
    assert np.abs(change_db[band] - predicted[band]).max() < 0.5


def test_spectral_filter_response_formula() -> None:
    # half the dB gain at +-BW/2 octaves, BW from 1/Q = 2 sinh(ln2/2 BW): Q = sqrt(2) is one octave exactly
    q = math.sqrt(2)
    f = np.array([0.0, 1000.0 / math.sqrt(2), 1000.0, 1000.0 * math.sqrt(2)])
    assert np.allclose(filter_response_db(f, 1000.0, 8.0, q), [0.0, 4.0, 8.0, 4.0])


def test_spectral_filter_on_real_audio_changes_only_around_its_centre(rock_vocals) -> None:
    audio, sr = rock_vocals
    params = SpectralFilterParams(filter_freq_hz=2000.0, filter_gain_db=-10.0, filter_q=1.5)
    out = SpectralFilter().apply(audio, sr, params)
    f, p_in = welch(audio, sr, nperseg=4096)
    _, p_out = welch(out, sr, nperseg=4096)
    change = 10 * np.log10(p_out.mean(0) / np.maximum(p_in.mean(0), 1e-20))
    assert change[np.argmin(np.abs(f - 2000))] == pytest.approx(-10.0, abs=1.0)
    assert abs(change[np.argmin(np.abs(f - 200))]) < 0.5


# ---------------------------------------------------------------------------------------------------- determinism


def _every_transform_applied() -> list[tuple[object, object]]:
    return [
        (Gain(), GainParams(gain_db=-4.2)),
        (LoudnessNormalize(), LoudnessParams(loudness_target_lufs=-21.0, loudness_gain_db=None)),
        (PitchShift(), PitchParams(pitch_semitones=-3.7)),
        (TimeStretch(), StretchParams(stretch_rate=1.13)),
        (ChannelSwap(), ChannelSwapParams(channel_swap=True)),
        (Polarity(), PolarityParams(polarity=-1)),
        (SpectralFilter(), SpectralFilterParams(filter_freq_hz=900.0, filter_gain_db=5.0, filter_q=1.2)),
    ]


def test_same_params_give_bit_identical_output_on_repeated_calls(rock_vocals) -> None:
    audio, sr = rock_vocals
    for transform, params in _every_transform_applied():
        first = transform.apply(audio, sr, params)
        assert not np.array_equal(first, audio) or first.shape != audio.shape, transform
        for _ in range(2):
            again = transform.apply(audio.copy(), sr, params)
            assert again.dtype == np.float32 and sha(again) == sha(first), transform


_SUBPROCESS = """
import hashlib, sys, numpy as np
from augment.chain import StemAugment
from stemdb.audio import read
audio, sr = read(sys.argv[1])
chain = StemAugment.from_config({k: {"p": 1.0} for k in ("pitch", "stretch", "spectral_filter", "loudness", "gain")})
out, params = chain(audio, sr, np.random.default_rng(11))
print(hashlib.sha256(out.tobytes()).hexdigest())
"""


def test_chain_output_is_identical_in_another_process(rock_vocals) -> None:
    audio, sr = rock_vocals
    chain = StemAugment.from_config(
        {k: {"p": 1.0} for k in ("pitch", "stretch", "spectral_filter", "loudness", "gain")}
    )
    out, _ = chain(audio, sr, np.random.default_rng(11))
    res = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS, str(MUSDB / "Music Delta - Rock" / "vocals.wav")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    assert res.stdout.strip() == sha(out)


def test_same_seed_gives_same_params_and_different_seeds_differ() -> None:
    chain = StemAugment.from_config(FULL_CONFIG)
    a = [chain.draw(np.random.default_rng(s)) for s in range(20)]
    b = [chain.draw(np.random.default_rng(s)) for s in range(20)]
    assert a == b
    assert len(set(a)) == 20


def test_rerender_from_the_recipe_record_is_bit_identical(rock_vocals) -> None:
    audio, sr = rock_vocals
    chain = StemAugment.from_config({k: {**v, "p": 1.0} for k, v in FULL_CONFIG.items()})
    out, params = chain(audio, sr, np.random.default_rng(2))
    record = chain.to_record(params)
    assert tuple(record) == RECORD_FIELDS
    assert record["loudness_gain_db"] is not None  # resolved: no measuring needed to re-render
    rebuilt = chain.params_from_record(record)
    assert rebuilt == params
    assert sha(chain.apply(audio, sr, rebuilt)) == sha(out)


def test_record_survives_a_parquet_round_trip_with_nulls(tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    chain = StemAugment.from_config({"loudness": {"p": 0.0}, "gain": {"p": 1.0}, "polarity": {"p": 1.0}})
    params = chain.draw(np.random.default_rng(0))
    record = chain.to_record(params)
    assert record["loudness_target_lufs"] is None
    pd.DataFrame([record, neutral_record()]).to_parquet(tmp_path / "r.parquet")
    rows = pd.read_parquet(tmp_path / "r.parquet").to_dict("records")
    assert chain.params_from_record(rows[0]) == params
    assert all(not p.applied for p in chain.params_from_record(rows[1]))


def test_changing_one_probability_does_not_shift_later_draws() -> None:
    base = {"gain": {"min_db": -6, "max_db": 6, "p": 0.5}, "polarity": {"p": 0.5}}
    for seed in range(10):
        with_all = StemAugment.from_config({"pitch": {"p": 1.0}, **base}).draw(np.random.default_rng(seed))
        with_none = StemAugment.from_config({"pitch": {"p": 0.0}, **base}).draw(np.random.default_rng(seed))
        assert with_all[1:] == with_none[1:]
        assert with_none[0] == PitchParams()


# ---------------------------------------------------------------------------------------------------- draws


def test_degenerate_ranges_pin_exact_values() -> None:
    chain = StemAugment(
        [
            PitchShift(min_semitones=1.3, max_semitones=1.3, p=1.0),
            TimeStretch(min_rate=0.87, max_rate=0.87, p=1.0),
            SpectralFilter(
                min_freq_hz=1234.5,
                max_freq_hz=1234.5,
                min_gain_db=-7.25,
                max_gain_db=-7.25,
                min_q=0.9,
                max_q=0.9,
                p=1.0,
            ),
            LoudnessNormalize(min_lufs=-19.5, max_lufs=-19.5, p=1.0),
            Gain(min_db=2.5, max_db=2.5, p=1.0),
            ChannelSwap(p=1.0),
            Polarity(p=1.0),
        ]
    )
    for seed in range(5):
        assert chain.draw(np.random.default_rng(seed)) == (
            PitchParams(1.3),
            StretchParams(0.87),
            SpectralFilterParams(1234.5, -7.25, 0.9),
            LoudnessParams(-19.5, None),
            GainParams(2.5),
            ChannelSwapParams(True),
            PolarityParams(-1),
        )


def test_p_zero_never_applies_and_draws_stay_in_range() -> None:
    never = StemAugment.from_config({k: {**v, "p": 0.0} for k, v in FULL_CONFIG.items()})
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert all(not p.applied for p in never.draw(rng))
    sometimes = StemAugment.from_config(FULL_CONFIG)
    draws = [sometimes.draw(rng) for _ in range(400)]
    idx = sometimes.names.index("pitch")
    pitches = [d[idx].pitch_semitones for d in draws if d[idx].applied]
    assert 120 < len(pitches) < 280  # p = 0.5
    assert all(-2 <= s <= 2 for s in pitches) and min(pitches) < -1.5 and max(pitches) > 1.5


@pytest.mark.parametrize(
    ("build", "name", "value"),
    [
        (lambda: Gain(min_db=3, max_db=-3), "min_db", "3"),
        (lambda: Gain(min_db=float("nan")), "min_db", "nan"),
        (lambda: Gain(p=1.5), "p", "1.5"),
        (lambda: Gain(p=-0.1), "p", "-0.1"),
        (lambda: LoudnessNormalize(max_lufs=5.0), "max_lufs", "5.0"),
        (lambda: PitchShift(min_semitones=-30), "min_semitones", "-30"),
        (lambda: PitchShift(max_semitones="2"), "max_semitones", "'2'"),
        (lambda: TimeStretch(min_rate=0.0), "min_rate", "0.0"),
        (lambda: TimeStretch(min_rate=1.2, max_rate=1.1), "min_rate", "1.2"),
        (lambda: ChannelSwap(p=True), "p", "True"),
        (lambda: Polarity(p=2), "p", "2"),
        (lambda: SpectralFilter(min_freq_hz=0.0), "min_freq_hz", "0.0"),
        (lambda: SpectralFilter(max_gain_db=60), "max_gain_db", "60"),
        (lambda: SpectralFilter(min_q=0.01), "min_q", "0.01"),
    ],
)
def test_invalid_parameters_raise_errors_naming_parameter_and_value(build, name: str, value: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        build()
    message = str(info.value)
    assert f"{name}={value}" in message
    assert info.value.key == name
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


def test_draw_requires_a_generator() -> None:
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        Gain().draw(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- config


def test_from_config_builds_in_the_fixed_order_whatever_the_key_order() -> None:
    chain = from_config(FULL_CONFIG)
    assert chain.names == CHAIN_ORDER
    assert chain.names == (
        "pitch",
        "stretch",
        "spectral_filter",
        "loudness",
        "gain",
        "channel_swap",
        "polarity",
    )
    reversed_keys = dict(reversed(list(FULL_CONFIG.items())))
    assert from_config(reversed_keys) == chain
    assert from_config(chain.config()) == chain
    gain = chain.transforms[chain.names.index("gain")]
    assert (gain.min_db, gain.max_db, gain.p) == (-3.0, 3.0, 1.0)
    assert len(from_config(None)) == 0 and len(from_config({})) == 0
    assert from_config({"polarity": None}).transforms == (Polarity(),)


def test_from_config_rejects_unknown_keys_by_name() -> None:
    with pytest.raises(InvalidParameterError, match="'reverb'") as info:
        from_config({"gain": {}, "reverb": {"p": 1.0}})
    assert info.value.key == "reverb"
    with pytest.raises(InvalidParameterError, match="'min_semitone'") as info:
        from_config({"pitch": {"min_semitone": -2}})
    assert info.value.key == "pitch.min_semitone"
    with pytest.raises(InvalidParameterError, match="max_rate=20") as info:
        from_config({"stretch": {"max_rate": 20}})
    assert info.value.key == "stretch.max_rate"
    with pytest.raises(InvalidParameterError, match="mapping"):
        from_config({"gain": 3})


def test_data_yaml_augment_section_builds(tmp_path) -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "data.yaml").read_text())
    for kind, mapping in config["remix"]["augment"].items():
        chain = from_config(mapping)
        assert set(chain.names) == set(mapping), kind


def test_chain_rejects_duplicate_kinds_and_mismatched_params(rock_vocals) -> None:
    audio, sr = rock_vocals
    with pytest.raises(InvalidParameterError, match="gain"):
        StemAugment([Gain(), Gain()])
    chain = StemAugment([Gain(), Polarity()])
    with pytest.raises(ValueError, match="1 params for 2 transforms"):
        chain.apply(audio, sr, (GainParams(),))
    with pytest.raises(TypeError, match="GainParams"):
        chain.apply(audio, sr, (PolarityParams(), PolarityParams()))
