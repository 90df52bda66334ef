"""Tests of train.gpu_augment: batched pitch shift, time stretch and in-batch remix.

Every behavioural check runs on CPU tensors; the same checks run on CUDA under ``-m gpu``.
"""

from __future__ import annotations

import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stemdb import audio
from train.gpu_augment import GpuAugment, in_batch_remix, pitch_shift, pitch_stretch, time_stretch
from train.vocoder import resample_2x

SR = 44100
DATA = Path(__file__).parent / "data"
CONTRABASS = DATA / "stems" / "bass" / "tinysol_contrabass_A2_mf.wav"

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


# ------------------------------------------------------------------------------------------------ helpers


def tone(freq: float, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def tone_freq(y: np.ndarray) -> float:
    """Frequency of the strongest partial: Hann window, 8x zero-padded FFT, parabolic peak on log magnitude."""
    n = len(y)
    spec = np.abs(np.fft.rfft(y * np.hanning(n), n=8 * n)) + 1e-12
    k = int(np.argmax(spec))
    a, b, c = np.log(spec[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / (8 * n)


def note_f0(y: np.ndarray, expected: float) -> float:
    """Median f0 over the sustained part (0.7-3.3 s) of a note: per 4096-sample frame, the peak (parabolic) of the
    normalised autocorrelation among periods within a factor 1.5 of ``expected``, so no octave errors."""
    seg = y[int(0.7 * SR) : int(3.3 * SR)].astype(np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(seg, 4096)[::1024]
    frames = (frames - frames.mean(axis=1, keepdims=True)) * np.hanning(4096)
    spec = np.fft.rfft(frames, n=8192, axis=1)
    window_acf = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(4096), n=8192)) ** 2)[:2048]
    acf = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :2048] / window_acf  # unbiased by the window (Boersma)
    acf /= acf[:, :1]
    lo, hi = int(SR / (expected * 1.5)), int(SR / (expected / 1.5)) + 1
    f0 = []
    for row in acf:
        k = lo + int(np.argmax(row[lo:hi]))
        a, b, c = row[k - 1 : k + 2]
        f0.append(SR / (k + 0.5 * (a - c) / (a - 2 * b + c)))
    return float(np.median(f0))


def rms_db(y: np.ndarray) -> float:
    return 20 * math.log10(float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) + 1e-20)


def rel_err_db(y: np.ndarray, ref: np.ndarray) -> float:
    return 10 * math.log10(float(np.sum((y - ref) ** 2)) / float(np.sum(ref**2)))


def stem(kind: str, name: str, seconds: float = 2.0) -> np.ndarray:
    y, sr = audio.read(DATA / "stems" / kind / name, frames=int(seconds * SR))
    assert sr == SR
    return y[0]


def musdb_stems(track: str = "Music Delta - Rock", seconds: float = 1.0) -> torch.Tensor:
    """(S=4, C=2, T) real stereo stems of one MUSDB-layout fixture track."""
    out = []
    for kind in ("vocals", "drums", "bass", "other"):
        y, _ = audio.read(DATA / "musdb" / "train" / track / f"{kind}.wav", frames=int(seconds * SR))
        out.append(torch.from_numpy(y))
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------ pitch


def test_pitch_octave_up_and_down_pure_tone(device: torch.device) -> None:
    x = torch.from_numpy(tone(440.0, 1.0)).to(device).expand(3, -1)
    y = pitch_shift(x, torch.tensor([12.0, -12.0, 7.0]))
    assert y.shape == x.shape and y.dtype == torch.float32 and y.device.type == device.type
    mid = slice(8192, -8192)
    y = y.cpu().numpy()
    assert tone_freq(y[0, mid]) == pytest.approx(880.0, rel=0.01)
    assert tone_freq(y[1, mid]) == pytest.approx(220.0, rel=0.01)
    assert tone_freq(y[2, mid]) == pytest.approx(440.0 * 2 ** (7 / 12), rel=0.01)
    # level kept within 2 dB (the phase vocoder loses about 1.2 dB at an octave, as librosa's does)
    for row in y:
        assert abs(rms_db(row[mid]) - rms_db(x[0].cpu().numpy())) < 2.0


def test_pitch_octave_on_real_contrabass_note(device: torch.device) -> None:
    y, sr = audio.read(CONTRABASS, frames=int(3.4 * SR))  # the sustained part is 0.7-3.3 s
    assert sr == SR
    base = note_f0(y[0], 110.0)
    assert base == pytest.approx(110.0, rel=0.02)  # an A2 as the file says: the estimator is sane
    x = torch.from_numpy(y).to(device).expand(2, -1)
    out = pitch_shift(x, torch.tensor([12.0, -12.0])).cpu().numpy()
    assert note_f0(out[0], 2 * base) == pytest.approx(2 * base, rel=0.01)
    assert note_f0(out[1], base / 2) == pytest.approx(base / 2, rel=0.01)


def test_pitch_up_suppresses_what_would_alias(device: torch.device) -> None:
    # 15 kHz up an octave is 30 kHz, above Nyquist: it must vanish, not fold back to 14.1 kHz
    x = torch.from_numpy(np.stack([tone(15000.0, 0.5), tone(8000.0, 0.5)])).to(device)
    y = pitch_shift(x, 12.0).cpu().numpy()
    mid = slice(4096, -4096)
    assert rms_db(y[0, mid]) - rms_db(x[0].cpu().numpy()) < -60.0
    assert tone_freq(y[1, mid]) == pytest.approx(16000.0, rel=0.01)


def test_pitch_shift_close_to_librosa_on_real_stems() -> None:
    for kind, name, floor_db in (
        ("bass", "musicdelta_britpop_electric_bass.wav", -50.0),
        ("drums", "musicdelta_britpop_drum_set.wav", -30.0),
    ):
        y = stem(kind, name)
        ours = pitch_shift(torch.from_numpy(y), 3.3).numpy()
        ref = librosa.effects.pitch_shift(
            y, sr=SR, n_steps=3.3, n_fft=2048, hop_length=512, res_type="soxr_hq"
        )
        assert rel_err_db(ours[:-4096], ref[:-4096]) < floor_db, name


def test_resampler_against_exact_band_limited_interpolation() -> None:
    """The 2x-domain resampler on a periodic band-limited signal vs its exact value at the fractional positions."""
    n = 2048
    rng = np.random.default_rng(0)
    white = np.zeros(n // 2 + 1, complex)
    white[1 : n // 4] = rng.normal(size=n // 4 - 1) + 1j * rng.normal(size=n // 4 - 1)
    seg = stem("vocals", "vocadito_1.wav", seconds=1.5)[SR : SR + n // 2].astype(np.float64)
    vocal = np.zeros(n // 2 + 1, complex)
    vocal[: n // 4] = np.fft.rfft(seg * np.hanning(n // 2))[: n // 4]
    for spectrum, floor_db in ((white, -38.0), (vocal, -55.0)):
        sig = np.fft.irfft(spectrum, n=n)
        for ratio in (0.891, 1.122):
            out_len = int(n * ratio / 2)
            got = resample_2x(
                torch.from_numpy(sig).float().view(1, 1, n),
                torch.tensor([ratio], dtype=torch.float64),
                out_len,
            )[0, 0].numpy()
            pos = 2 * np.arange(out_len) / ratio
            ok = (pos > 4) & (pos < n - 5)
            k = np.arange(1, n // 2)
            phasors = np.exp(2j * np.pi * np.outer(pos[ok], k) / n)
            exact = (spectrum[0].real + 2 * np.real(phasors @ spectrum[1 : n // 2])) / n
            assert rel_err_db(got[ok], exact) < floor_db, (floor_db, ratio)


# ------------------------------------------------------------------------------------------------ stretch


def test_stretch_changes_length_by_inverse_rate_and_keeps_frequency(device: torch.device) -> None:
    n = SR  # 1 s of a 1 kHz tone
    rates = torch.tensor([0.8, 1.25, 1.5, 0.6])
    x = torch.from_numpy(tone(1000.0, 1.0)).to(device).expand(4, -1)
    out_frames = 2 * n
    y = time_stretch(x, rates, out_frames=out_frames).cpu().numpy()
    assert y.shape == (4, out_frames)
    for row, r in zip(y, rates.tolist(), strict=True):
        extent = int(np.nonzero(np.abs(row) > 1e-3)[0][-1]) + 1
        assert abs(extent - n / r) <= 512, (r, extent, n / r)
        assert not np.any(row[round(n / r) :])  # exactly zero after round(T / rate)
        assert tone_freq(row[4096 : extent - 4096]) == pytest.approx(1000.0, rel=0.01)


def test_stretch_real_stem_length_and_pitch(device: torch.device) -> None:
    y, _ = audio.read(CONTRABASS)
    x = torch.from_numpy(y).to(device)  # (1, T): one item
    out = time_stretch(x, torch.tensor([0.8]), out_frames=2 * x.shape[-1]).cpu().numpy()[0]

    # the note's decay ends about 4 s in: its end moves to 4 / 0.8 = 5 s
    def end_of_sound(sig: np.ndarray) -> int:
        env = np.sqrt(np.convolve(sig.astype(np.float64) ** 2, np.ones(2048) / 2048, mode="same"))
        return int(np.nonzero(env > 10 ** (-60 / 20))[0][-1])

    assert abs(end_of_sound(out) - end_of_sound(y[0]) / 0.8) <= 2048
    assert note_f0(out, 110.0) == pytest.approx(note_f0(y[0], 110.0), rel=0.01)


def test_time_stretch_matches_librosa_phase_vocoder() -> None:
    y = stem("vocals", "musicdelta_beatles_female_singer.wav").astype(np.float64)
    for rate in (0.8, 1.25):
        ref = librosa.effects.time_stretch(y, rate=rate, n_fft=2048, hop_length=512)
        ours64 = time_stretch(torch.from_numpy(y), rate, out_frames=len(ref)).numpy()
        ours32 = time_stretch(torch.from_numpy(y).float(), rate, out_frames=len(ref)).numpy()
        body = slice(0, len(ref) - 2048)  # librosa renormalises the last partial frames; we let them fade
        assert np.max(np.abs(ours64[body] - ref[body])) < 1e-5
        assert np.max(np.abs(ours32[body] - ref[body])) < 2e-4


def test_zero_padding_keeps_level_of_slowed_tone_at_start(device: torch.device) -> None:
    x = torch.from_numpy(tone(440.0, 1.0)).to(device)
    y = time_stretch(x, 0.8, out_frames=SR).cpu().numpy()
    level_in = rms_db(x.cpu().numpy())
    for start in range(0, 4096, 1024):  # reflect padding is 13 dB too loud in the first 1024 samples
        assert abs(rms_db(y[start : start + 1024]) - level_in) < 1.0, start


# ------------------------------------------------------------------------------------------------ batching


def test_per_item_parameters_match_each_item_alone(device: torch.device) -> None:
    stems = musdb_stems(seconds=1.0).to(device)  # (4, 2, T): four real stereo items
    semis = torch.tensor([3.5, 0.0, -7.0, 0.0])
    rates = torch.tensor([1.0, 0.9, 1.2, 1.0])  # pitch only, stretch only, both, identity
    out_frames = 40000
    batch = pitch_stretch(stems, semis, rates, out_frames=out_frames)
    assert batch.shape == (4, 2, out_frames)
    for i in range(4):
        alone = pitch_stretch(stems[i : i + 1], semis[i : i + 1], rates[i : i + 1], out_frames=out_frames)
        torch.testing.assert_close(batch[i : i + 1], alone, atol=2e-5, rtol=0)
    assert torch.equal(batch[3], stems[3, :, :out_frames])  # identity item untouched in a busy batch
    assert not torch.allclose(batch[0], stems[0, :, :out_frames], atol=1e-2)  # the others did change


def test_identity_parameters_return_the_input_exactly(device: torch.device) -> None:
    x = musdb_stems(seconds=0.5)[:, 0].to(device)  # (4, T)
    n = x.shape[-1]
    assert torch.equal(time_stretch(x, torch.ones(4), out_frames=n), x)
    assert torch.equal(pitch_shift(x, torch.zeros(4)), x)
    assert torch.equal(time_stretch(x, 1.0, out_frames=n - 100), x[:, : n - 100])
    padded = time_stretch(x, 1.0, out_frames=n + 100)
    assert torch.equal(padded[:, :n], x) and not padded[:, n:].any()


def test_gpu_augment_module(device: torch.device) -> None:
    stems = torch.stack([musdb_stems("Music Delta - Rock", 0.5), musdb_stems("Music Delta - Reggae", 0.5)])
    stems = stems.to(device)  # (B=2, S=4, C=2, T)
    t = stems.shape[-1]
    pitch = torch.tensor([[0.0, 2.0, 0.0, -3.0], [0.0, 0.0, 0.0, 0.0]])
    rate = torch.tensor([[1.0, 1.0, 1.25, 1.1], [1.0, 1.0, 1.0, 1.0]])
    aug = GpuAugment()
    out, mix = aug(stems, pitch, rate, out_frames=t)
    assert out.shape == stems.shape and mix.shape == (2, 2, t)
    assert out.dtype == mix.dtype == torch.float32
    torch.testing.assert_close(mix, out.sum(1))
    assert torch.equal(out[0, 0], stems[0, 0]) and torch.equal(out[1], stems[1])  # untouched stems
    assert not out[0, 2, :, round(t / 1.25) :].any() and out[0, 2, :, : round(t / 1.25)].abs().max() > 0.01
    single = pitch_stretch(stems[0, 3:4], -3.0, 1.1, out_frames=t)
    torch.testing.assert_close(out[0, 3:4], single, atol=2e-5, rtol=0)


def test_dtypes_and_shapes_are_kept() -> None:
    x = musdb_stems(seconds=0.25)  # (4, 2, T) float32
    y64 = pitch_stretch(x.double(), torch.tensor([1.0, 0.0, 0.0, 2.0]), 1.1, out_frames=5000)
    assert y64.dtype == torch.float64 and y64.shape == (4, 2, 5000)
    y32 = pitch_stretch(x, torch.tensor([1.0, 0.0, 0.0, 2.0]), 1.1, out_frames=5000)
    torch.testing.assert_close(y64.float(), y32, atol=1e-4, rtol=0)
    ybf = pitch_shift(x.bfloat16(), 2.0)
    assert ybf.dtype == torch.bfloat16 and ybf.shape == x.shape
    mono = time_stretch(x[0, 0], 0.9, out_frames=1234)  # 1-D signal, scalar rate
    assert mono.shape == (1234,)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(min_value=1, max_value=3000),
    out_frames=st.integers(min_value=1, max_value=4000),
    rate=st.floats(min_value=0.5, max_value=2.0),
    semis=st.sampled_from([0.0, -5.0, 3.0]),
)
def test_length_arithmetic(n: int, out_frames: int, rate: float, semis: float) -> None:
    x = torch.from_numpy(np.random.default_rng(n).uniform(-0.5, 0.5, size=(2, n)).astype(np.float32))
    y = pitch_stretch(x, semis, rate, out_frames=out_frames)
    assert y.shape == (2, out_frames)
    assert torch.isfinite(y).all()
    assert not y[:, min(out_frames, round(n / rate)) :].any()  # nothing past the stretched length


# ------------------------------------------------------------------------------------------------ remix


def test_in_batch_remix_permutes_stems_within_groups(device: torch.device) -> None:
    b, s, c, t = 8, 4, 2, 16
    # every (item, stem) has a unique constant value, so its origin is readable
    ids = torch.arange(b * s, dtype=torch.float32).view(b, s, 1, 1).expand(b, s, c, t).to(device)
    gen = torch.Generator(device=device).manual_seed(7)
    out = in_batch_remix(ids, group_size=4, generator=gen)
    assert out.shape == ids.shape and out.device.type == device.type
    src = out[..., 0, 0].long().cpu()  # (B, S) origin id = item * S + stem
    assert torch.equal(src % s, torch.arange(s).expand(b, s))  # stem s comes from stem s
    for g in range(2):
        items = src[g * 4 : (g + 1) * 4] // s
        for k in range(s):  # a permutation of the group's items, per stem
            assert sorted(items[:, k].tolist()) == list(range(g * 4, (g + 1) * 4))
    assert not torch.equal(out, ids)  # 8 random permutations of 4: identity everywhere has p = 24**-8
    # stems are permuted independently: with 2 groups x 4 stems, all stems sharing one permutation has p = 24**-6
    items = (src // s).T  # (S, B)
    assert any(not torch.equal(items[k], items[0]) for k in range(1, s))


def test_in_batch_remix_is_deterministic_and_split_invariant(device: torch.device) -> None:
    s = musdb_stems(seconds=0.01)  # (4, 2, T)
    pairs = ([0, 1], [2, 3], [1, 2], [3, 0], [0, 2], [1, 3], [2, 0], [3, 1])
    stems = torch.stack([s[p] for p in pairs]).to(device)  # (B=8, S=2, C=2, T), all different

    def gen(seed: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(seed)

    a = in_batch_remix(stems, group_size=2, generator=gen(3))
    assert torch.equal(a, in_batch_remix(stems, group_size=2, generator=gen(3)))
    assert not torch.equal(a, in_batch_remix(stems, group_size=2, generator=gen(4)))
    # two "ranks" with 2 groups each, same generator state, offset by first_group: same as one device
    r0 = in_batch_remix(stems[:4], group_size=2, generator=gen(3), first_group=0)
    r1 = in_batch_remix(stems[4:], group_size=2, generator=gen(3), first_group=2)
    assert torch.equal(torch.cat([r0, r1]), a)
    assert torch.equal(in_batch_remix(stems, group_size=1, generator=gen(3)), stems)


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda x: time_stretch(x, torch.tensor([1.0, 0.0]), out_frames=100), "rate"),
        (lambda x: time_stretch(x, torch.tensor([1.0, -1.0]), out_frames=100), "rate"),
        (lambda x: time_stretch(x, torch.tensor([1.0, float("nan")]), out_frames=100), "rate"),
        (lambda x: time_stretch(x, torch.tensor([1.0, 1.0, 1.0]), out_frames=100), "rate"),
        (lambda x: time_stretch(x, 1.1, out_frames=0), "out_frames"),
        (lambda x: time_stretch(x, 1.1, out_frames=100, hop=2048), "hop"),
        (lambda x: time_stretch(x, 1.1, out_frames=100, n_fft=1001), "n_fft"),
        (lambda x: pitch_shift(x, torch.tensor([30.0, 0.0])), "semitones"),
        (lambda x: pitch_shift(x, torch.tensor([float("inf"), 0.0])), "semitones"),
        (lambda x: pitch_shift(x.long(), 1.0), "x"),
        (lambda x: pitch_shift(x[:, :0], 1.0), "x"),
        (lambda x: GpuAugment()(x, torch.zeros(2, 1), torch.ones(2, 1), out_frames=10), "stems"),
        (
            lambda x: GpuAugment()(x.view(2, 1, 1, -1), torch.zeros(2), torch.ones(2, 1), out_frames=10),
            "pitch",
        ),
        (
            lambda x: GpuAugment()(x.view(2, 1, 1, -1), torch.zeros(2, 1), torch.ones(1, 1), out_frames=10),
            "rate",
        ),
        (
            lambda x: GpuAugment()(x.view(2, 1, 1, -1), torch.zeros(2, 1), -torch.ones(2, 1), out_frames=10),
            "rate",
        ),
        (lambda x: in_batch_remix(x, group_size=2, generator=torch.Generator()), "stems"),
        (
            lambda x: in_batch_remix(x.view(2, 1, 1, -1), group_size=3, generator=torch.Generator()),
            "group_size",
        ),
        (
            lambda x: in_batch_remix(x.view(2, 1, 1, -1), group_size=0, generator=torch.Generator()),
            "group_size",
        ),
        (lambda x: in_batch_remix(x.view(2, 1, 1, -1), group_size=2, generator=None), "generator"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, word: str) -> None:
    x = torch.zeros(2, 1000)
    with pytest.raises(ValueError, match=rf"\b{word}\b"):
        call(x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu() -> None:
    stems = musdb_stems(seconds=1.0)
    semis = torch.tensor([2.0, 0.0, -3.0, 12.0])
    rates = torch.tensor([1.1, 0.9, 1.0, 1.0])
    cpu = pitch_stretch(stems, semis, rates, out_frames=40000)
    gpu = pitch_stretch(stems.cuda(), semis, rates, out_frames=40000)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
