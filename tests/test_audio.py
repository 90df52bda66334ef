"""stemdb.audio: windowed reads, stem.mp4 streams and the other PyAV formats, codec facts, atomic writes, clear
errors, and decoding with no ffmpeg program anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from stemdb import audio, audio_facts
from stemdb.errors import AudioReadError

from .conftest import ENCODED, MUSDB, STEM_MP4, STEMS, import_or_skip

ROCK = MUSDB / "train" / "Music Delta - Rock"
FALCON = STEM_MP4 / "test" / "The Easton Ellises - Falcon 69.stem.mp4"
HENDRIX_VOCALS = MUSDB / "train" / "Music Delta - Hendrix" / "vocals.wav"  # the source of the encoded fixtures
VOCALS = ENCODED / "vocals"
ROOT = Path(__file__).resolve().parent.parent


def test_read_shape_and_dtype() -> None:
    a, sr = audio.read(ROCK / "vocals.wav")
    ref, _ = sf.read(str(ROCK / "vocals.wav"), dtype="float32", always_2d=True)
    assert sr == 44100 and a.shape == (2, 176400) and a.dtype == np.float32
    np.testing.assert_array_equal(a, ref.T)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_windowed_read_equals_slice(tmp_path: Path, fmt: str) -> None:
    full, sr = audio.read(ROCK / "drums.wav")
    p = audio.write(tmp_path / f"d.{fmt}", full, sr)
    win, _ = audio.read(p, start=12345, frames=44100)
    np.testing.assert_array_equal(win, full[:, 12345 : 12345 + 44100])
    tail, _ = audio.read(p, start=full.shape[1] - 10, frames=100)
    assert tail.shape == (2, 10)
    i16, _ = audio.read(p, start=500, frames=1000, dtype="int16")
    assert i16.dtype == np.int16
    np.testing.assert_array_equal(audio.to_float32(i16), full[:, 500:1500])


def test_info() -> None:
    i = audio.info(STEMS / "keys" / "maestro_chamber3_excerpt_2s_48k.wav")
    assert (i.sample_rate, i.channels, i.frames, i.subtype) == (48000, 1, 96000, "PCM_16")
    assert i.duration_s == pytest.approx(2.0)


def test_write_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    a = np.zeros((2, 100), dtype=np.float32)
    audio.write(tmp_path / "x.wav", a, 44100)
    assert [p.name for p in tmp_path.iterdir()] == ["x.wav"]
    with pytest.raises(Exception, match="channels, samples"):
        audio.write(tmp_path / "y.wav", np.zeros(10, dtype=np.float32), 44100)
    assert [p.name for p in tmp_path.iterdir()] == ["x.wav"]


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(AudioReadError, match="no such file"):
        audio.read(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioReadError, match="empty.wav.*0 bytes"):
        audio.read(tmp_path / "empty.wav")
    (tmp_path / "text.wav").write_text("hello")
    with pytest.raises(AudioReadError, match="text.wav"):
        audio.info(tmp_path / "text.wav")


def test_stem_mp4_streams_match_hq_decode() -> None:
    streams, sr = audio.read_stem_mp4(FALCON)
    assert streams.shape == (5, 2, 268288) and sr == 44100 and streams.dtype == np.float32
    assert audio.stem_mp4_stream_count(FALCON) == 5
    vocals, _ = audio.read(FALCON, stream=4, start=1000, frames=2000)
    np.testing.assert_array_equal(vocals, streams[4][:, 1000:3000])
    # the HQ fixture of the same track is the 2.0-6.0 s excerpt of this file: equal to 16-bit rounding
    hq, _ = audio.read(MUSDB / "test" / "The Easton Ellises - Falcon 69" / "vocals.wav")
    start = 2 * sr
    assert np.max(np.abs(hq - streams[4][:, start : start + hq.shape[1]])) < 2e-4
    info = audio.info(FALCON, stream=1)
    assert (info.channels, info.sample_rate, info.frames, info.codec, info.lossy) == (2, 44100, 268288, "aac", True)
    sub, _ = audio.read_stem_mp4(FALCON, streams=[4, 0])  # any subset, in the order asked
    np.testing.assert_array_equal(sub, streams[[4, 0]])
    with pytest.raises(AudioReadError, match=r"stem.mp4: stream=5 out of range \(the file has 5 audio streams\)"):
        audio.read(FALCON, stream=5)


@pytest.mark.ffmpeg
def test_stem_mp4_matches_the_stempeg_decode() -> None:
    """Same streams, same length, same sample positions as stempeg (the ffmpeg program) gave before PyAV.

    The values agree to 1.8e-7 (1-2 float32 steps near full scale), not bit for bit: the system's ffmpeg 5.1 build
    and the FFmpeg in the av wheel round the AAC synthesis differently (the av wheels of FFmpeg 6.1 and 8.1 agree
    with each other bit for bit); 58-194 of the 536,576 samples per stream land on another 16-bit step.
    """
    stempeg = import_or_skip("stempeg")
    ref, sr_ref = stempeg.read_stems(str(FALCON), dtype=np.float32, always_3d=True)  # (streams, samples, channels)
    ours, sr = audio.read_stem_mp4(FALCON)
    assert sr == sr_ref and ours.shape == np.transpose(ref, (0, 2, 1)).shape
    diff = np.abs(ours - np.transpose(ref, (0, 2, 1)))
    assert diff.max() < 1e-6
    assert np.corrcoef(ours[4, 0], ref[4, :, 0])[0, 1] > 0.999999  # no offset between the two


def _source() -> np.ndarray:
    return audio.read(HENDRIX_VOCALS)[0]


def _snr_db(x: np.ndarray, ref: np.ndarray) -> float:
    n = min(x.shape[1], ref.shape[1])
    err = x[:, :n] - ref[:, :n]
    return float(10 * np.log10(np.sum(ref[:, :n] ** 2) / max(np.sum(err**2), 1e-30)))


# file -> (codec, sample rate, decoded frames, frames of the source skipped at the start, lossy, min SNR dB)
ENCODES = {
    "hendrix_vocals_aac.m4a": ("aac", 44100, 177152, 0, True, 25.0),  # 752 frames of encoder padding at the end
    "hendrix_vocals_alac.m4a": ("alac", 44100, 176400, 0, False, None),  # lossless: bit for bit
    "hendrix_vocals.opus": ("opus", 48000, 192000, 0, True, 22.0),  # Opus decodes at 48 kHz
    "hendrix_vocals.webm": ("opus", 48000, 192000, 0, True, 22.0),
    "hendrix_vocals.wma": ("wmav2", 44100, 176128, 2048, True, 30.0),  # ASF carries no priming information
}


@pytest.mark.parametrize("name", sorted(ENCODES))
def test_encoded_fixtures_decode_in_process(name: str) -> None:
    """Each format decodes to the source's audio: right rate, channels, length within one codec frame, aligned."""
    codec, rate, frames, skipped, lossy, min_snr = ENCODES[name]
    a, info = audio.load(VOCALS / name)
    assert a.dtype == np.float32 and a.shape == (2, frames)
    assert (info.sample_rate, info.channels, info.frames, info.codec, info.lossy) == (rate, 2, frames, codec, lossy)
    assert abs(info.duration_s - 4.0) <= 2048 / rate  # the source is 4.0 s
    src = _source()
    if rate != 44100:
        src = soxr.resample(src.T, 44100, rate, quality="VHQ").T
    if min_snr is None:
        np.testing.assert_array_equal(a, src)
    else:
        assert _snr_db(a, src[:, skipped:]) > min_snr
        if skipped:
            assert _snr_db(a, src) < 0.0  # not aligned without the shift: the check above is not vacuous
    head = audio.info(VOCALS / name)  # header only: rate, channels, codec, bit rate; frames as the container says
    assert (head.sample_rate, head.channels, head.codec, head.lossy) == (rate, 2, codec, lossy)
    assert abs(head.frames - frames) <= 2048
    assert head.bitrate_kbps is not None and (head.bitrate_kbps < 140 if lossy else head.bitrate_kbps > 400)


@pytest.mark.parametrize("name", ["hendrix_vocals_aac.m4a", "hendrix_vocals_alac.m4a", "hendrix_vocals.webm",
                                  "hendrix_vocals.wma"])
def test_pyav_windows_are_exact_slices(name: str) -> None:
    full, sr = audio.read(VOCALS / name)
    for start, n in ((0, 100), (12345, 44100), (full.shape[1] - 10, 100), (full.shape[1] + 5, 10)):
        win, wsr = audio.read(VOCALS / name, start=start, frames=n)
        assert wsr == sr
        np.testing.assert_array_equal(win, full[:, start : start + n])
    i16, _ = audio.read(VOCALS / name, start=500, frames=1000, dtype="int16", channels_first=False)
    assert i16.dtype == np.int16 and i16.shape == (1000, 2)
    np.testing.assert_allclose(audio.to_float32(i16).T, full[:, 500:1500], atol=1 / 32768)


def test_opus_through_soundfile_and_pyav_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """``.opus`` goes to soundfile where libsndfile has Opus (faster windows); the PyAV path, used where it has not,
    gives the same frames and the same audio to the two Opus decoders' difference."""
    path = VOCALS / "hendrix_vocals.opus"
    assert not audio.uses_pyav(path) and audio._LIBSNDFILE_OPUS
    a, info = audio.load(path)
    monkeypatch.setattr(audio, "PYAV_SUFFIXES", audio.PYAV_SUFFIXES | {".opus"})
    assert audio.uses_pyav(path)
    b, info_av = audio.load(path)
    assert info.frames == info_av.frames == 192000 and info.codec == info_av.codec == "opus"
    assert np.max(np.abs(a - b)) < 5e-3


def test_codec_facts_of_soundfile_formats(tmp_path: Path) -> None:
    x, sr = audio.read(ROCK / "vocals.wav")
    i = audio.info(ROCK / "vocals.wav")
    assert (i.codec, i.lossy) == ("pcm_s16le", False)
    assert i.bitrate_kbps == pytest.approx(44100 * 2 * 16 / 1000, rel=1e-3)  # 1411.2 + the 44-byte header
    expected = {"f.flac": ("flac", False), "f.aiff": ("pcm_s16be", False), "f.ogg": ("vorbis", True),
                "f.mp3": ("mp3", True)}
    for name, (codec, lossy) in expected.items():
        subtype = {"f.ogg": "VORBIS", "f.mp3": "MPEG_LAYER_III"}.get(name, "PCM_16")
        p = audio.write(tmp_path / name, x, sr, subtype=subtype)
        for facts in (audio.info(p), audio.load(p)[1]):
            assert (facts.codec, facts.lossy) == (codec, lossy), name
            assert facts.bitrate_kbps == pytest.approx(p.stat().st_size * 8 / 4.0 / 1000)


def test_pyav_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "text.m4a").write_text("hello")
    with pytest.raises(AudioReadError, match=r"text.m4a: not readable as audio"):
        audio.load(tmp_path / "text.m4a")
    data = (VOCALS / "hendrix_vocals_aac.m4a").read_bytes()
    (tmp_path / "cut.m4a").write_bytes(data[: len(data) // 2])  # the index (moov) is written last: now missing
    with pytest.raises(AudioReadError, match=r"cut.m4a: not readable as audio"):
        audio.read(tmp_path / "cut.m4a")
    with pytest.raises(AudioReadError, match=r"hendrix_vocals.wma: stream=1 out of range"):
        audio.info(VOCALS / "hendrix_vocals.wma", stream=1)
    with pytest.raises(AudioReadError, match="no such file"):
        audio.load_streams(tmp_path / "missing.webm")


def test_decoding_needs_no_ffmpeg_program(tmp_path: Path) -> None:
    """In a process whose PATH holds no ffmpeg or ffprobe, every format decodes, and no ffmpeg-calling package was
    imported."""
    code = textwrap.dedent(f"""
        import shutil, sys
        from pathlib import Path
        from stemdb import audio
        assert shutil.which("ffmpeg") is None and shutil.which("ffprobe") is None
        streams, sr = audio.read_stem_mp4({str(FALCON)!r})
        assert streams.shape == (5, 2, 268288), streams.shape
        for p in sorted(Path({str(VOCALS)!r}).iterdir()):
            a, info = audio.load(p)
            assert a.shape[1] > 0.99 * 4.0 * info.sample_rate, p
        bad = [m for m in ("stempeg", "musdb", "museval", "ffmpeg", "audioread") if m in sys.modules]
        assert not bad, bad
        print("decoded", len(list(Path({str(VOCALS)!r}).iterdir())) + 1, "files")
    """)
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty folder: no programs at all
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "decoded 6 files" in r.stdout


def test_long_ogg_vorbis_write_does_not_crash(tmp_path: Path) -> None:
    """Regression: one libsndfile call with 60 s of stereo crashed libvorbis (stack overflow, SIGSEGV); write()
    hands it blocks. Run in a child process, so a crash fails this test instead of killing the session."""
    code = textwrap.dedent(f"""
        import numpy as np
        from stemdb import audio
        x = (np.random.default_rng(0).standard_normal((2, 44100 * 60)) * 0.1).astype(np.float32)
        p = audio.write({str(tmp_path / "long.ogg")!r}, x, 44100, subtype="VORBIS")
        print(audio.info(p).frames)
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout.split() == [str(44100 * 60)]


def test_soundfile_codec_table_agrees_with_ffmpeg() -> None:
    """The soundfile path's lossy table says what FFmpeg's codec descriptors say, for every codec it can name."""
    import av

    assert len(audio_facts.SF_KNOWN) >= 20
    for codec in sorted(audio_facts.SF_KNOWN):
        c = av.codec.Codec(codec, "r")
        assert c.lossy != c.lossless, codec
        assert (codec in audio_facts.SF_LOSSY) == bool(c.lossy), codec
