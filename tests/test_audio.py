"""stemdb.audio: windowed reads, stem.mp4 streams, atomic writes, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemdb import audio
from stemdb.errors import AudioReadError

from .conftest import MUSDB, STEM_MP4, STEMS, requires_ffmpeg

ROCK = MUSDB / "train" / "Music Delta - Rock"


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


@requires_ffmpeg
def test_stem_mp4_streams_match_hq_decode() -> None:
    path = STEM_MP4 / "test" / "The Easton Ellises - Falcon 69.stem.mp4"
    streams, sr = audio.read_stem_mp4(path)
    assert streams.shape[0] == 5 and streams.shape[1] == 2 and sr == 44100
    assert audio.stem_mp4_stream_count(path) == 5
    vocals, _ = audio.read(path, stream=4, start=1000, frames=2000)
    np.testing.assert_array_equal(vocals, streams[4][:, 1000:3000])
    # the HQ fixture of the same track is the 2.0-6.0 s excerpt of this file: equal to 16-bit rounding
    hq, _ = audio.read(MUSDB / "test" / "The Easton Ellises - Falcon 69" / "vocals.wav")
    start = 2 * sr
    assert np.max(np.abs(hq - streams[4][:, start : start + hq.shape[1]])) < 2e-4
    info = audio.info(path, stream=1)
    assert info.channels == 2 and info.sample_rate == 44100
