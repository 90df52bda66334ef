"""Block-wise decoding and measurement (issue 18): the same results as the whole-array path, memory flat in length."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from stemdb import audio, ingest_stream, measure_stream, stem_cache
from stemdb.catalog import Catalog
from stemdb.config import IngestConfig
from stemdb.errors import AudioReadError
from stemdb.ingest import ingest_folder
from stemdb.measure import measure
from stemdb.measure_stream import PcmHash, measure_blocks

from .conftest import DATA, MUSDB

REPO = Path(__file__).resolve().parent.parent
STEREO = MUSDB / "train" / "Music Delta - Reggae" / "mixture.wav"
MONO = DATA / "stems" / "vocals" / "csd_en001b.wav"
FILE_48K = DATA / "stems" / "keys" / "maestro_chamber3_excerpt_2s_48k.wav"
ZEPPELIN_VOCALS = MUSDB / "train" / "Music Delta - Zeppelin" / "vocals.wav"
AAC = DATA / "encoded" / "vocals" / "hendrix_vocals_aac.m4a"
OPUS = DATA / "encoded" / "vocals" / "hendrix_vocals.opus"
BACKENDS = ["numpy", "numba"]


@pytest.mark.parametrize("path", [STEREO, MONO, FILE_48K, AAC, OPUS], ids=lambda p: p.name)
@pytest.mark.parametrize("block", [1000, 4410, 1 << 18])
def test_blocks_concatenate_to_the_whole_decode(path: Path, block: int) -> None:
    whole, _ = audio.load(path)
    parts = list(audio.blocks(path, block_frames=block))
    assert all(p.dtype == np.float32 and p.shape == (whole.shape[0], block) for p in parts[:-1])
    assert 0 < parts[-1].shape[1] <= block
    assert np.array_equal(np.concatenate(parts, axis=1), whole)


def test_blocks_of_a_truncated_wav_raise_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "cut.wav"
    p.write_bytes(STEREO.read_bytes()[:-5000])
    with pytest.raises(AudioReadError, match="truncated") as err:
        list(audio.blocks(p, block_frames=4096))
    assert "cut.wav" in str(err.value)


def _same(streamed, ref) -> None:  # noqa: ANN001
    m = streamed.measurements
    assert m.content_hash == ref.content_hash
    assert (m.peak_dbfs, m.clipping_ratio, m.silence_ratio, m.active) == \
        (ref.peak_dbfs, ref.clipping_ratio, ref.silence_ratio, ref.active)
    assert m.lufs == pytest.approx(ref.lufs, abs=1e-9) if np.isfinite(ref.lufs) else m.lufs == ref.lufs
    assert m.rms_dbfs == pytest.approx(ref.rms_dbfs, abs=1e-9)
    assert m.loudness_100ms.shape == ref.loudness_100ms.shape
    np.testing.assert_allclose(m.loudness_100ms, ref.loudness_100ms, rtol=1e-9, atol=0)
    assert (m.tempo_bpm, m.beats_s) == (ref.tempo_bpm, ref.beats_s)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", [STEREO, MONO, FILE_48K, ZEPPELIN_VOCALS, OPUS], ids=lambda p: p.name)
def test_streamed_measurement_equals_the_whole_array_one(path: Path, backend: str) -> None:
    a, info = audio.load(path)
    ref = measure(a, info.sample_rate, backend=backend, tempo=False)
    n = a.shape[1]
    # many small blocks; a block longer than the file; exactly one block; uneven splits
    for size in (1000, 44100, n + 12345, n):
        s = measure_blocks(audio.blocks(path, block_frames=size), info.sample_rate, a.shape[0], frames=n,
                           backend=backend, tempo=False)
        _same(s, ref)
        assert s.frames == n and s.excerpt_start == 0 and np.array_equal(s.excerpt, a)
    cuts = np.sort(np.random.default_rng(3).choice(np.arange(1, n), 9, replace=False))
    s = measure_blocks(np.split(a, cuts, axis=1), info.sample_rate, a.shape[0], backend=backend, tempo=False)
    _same(s, ref)  # no frame count known: the hash spills channel 0 as well


def test_streamed_tempo_equals_the_whole_array_tempo_below_the_excerpt_length() -> None:
    a, info = audio.load(STEREO)
    ref = measure(a, info.sample_rate)
    assert ref.tempo_bpm is not None
    _same(measure_blocks(audio.blocks(STEREO, block_frames=30000), info.sample_rate, 2, frames=a.shape[1]), ref)


def test_tempo_of_a_long_stem_comes_from_its_middle_excerpt() -> None:
    a, info = audio.load(STEREO)  # 4 s
    s = measure_blocks([a], info.sample_rate, 2, frames=a.shape[1], excerpt_s=2.0)
    start = (a.shape[1] - 2 * info.sample_rate) // 2
    assert s.excerpt_start == start and np.array_equal(s.excerpt, a[:, start : start + 2 * info.sample_rate])
    assert s.measurements.extra["excerpt_s"] == (start / info.sample_rate, start / info.sample_rate + 2.0)
    beats = s.measurements.beats_s
    assert beats and start / info.sample_rate <= beats[0] and beats[-1] <= start / info.sample_rate + 2.0
    assert s.measurements.content_hash == measure(a, info.sample_rate, tempo=False).content_hash


def test_nan_samples_and_a_wrong_frame_count_are_errors() -> None:
    a, info = audio.load(MONO)
    bad = a.copy()
    bad[0, 5000:5003] = np.nan
    with pytest.raises(ValueError, match="3 NaN/inf samples"):
        measure_blocks(np.split(bad, 4, axis=1), info.sample_rate, 1, tempo=False)
    with pytest.raises(ValueError, match="frames hashed"):
        measure_blocks([a], info.sample_rate, 1, frames=a.shape[1] + 1, tempo=False)
    with pytest.raises(ValueError, match="expected \\(2, frames\\)"):
        measure_blocks([a], info.sample_rate, 2, tempo=False)


def test_pcm_hash_streams_to_the_one_shot_digest() -> None:
    pcm = np.random.default_rng(1).integers(-32768, 32767, (3, 10007), dtype=np.int16)
    ref = measure(pcm.astype(np.float32) / 32768, 44100, tempo=False, channel_weights=(1, 1, 1)).content_hash
    for frames in (10007, None):
        h = PcmHash(44100, 3, frames)
        for part in np.array_split(pcm, 7, axis=1):
            h.write(part)
        assert h.hexdigest() == ref


def test_cache_file_written_in_blocks_is_byte_identical(tmp_path: Path) -> None:
    a, _ = audio.load(STEREO)
    ref = stem_cache.write_stem(tmp_path / "one", "x", a)
    w = stem_cache.Pcm16Writer(tmp_path / "two", 2, a.shape[1])
    for part in np.array_split(a, 5, axis=1):
        w.write(np.clip(np.rint(part * 32768), -32768, 32767).astype(np.int16))
    assert w.commit("x").read_bytes() == ref.read_bytes()
    assert stem_cache.write_stem_blocks(tmp_path / "four", "x", STEREO).read_bytes() == ref.read_bytes()
    w = stem_cache.Pcm16Writer(tmp_path / "three", 2, a.shape[1])
    w.write(np.zeros((2, 10), np.int16))
    with pytest.raises(Exception, match="10 frames written"):
        w.commit("y")
    assert list(stem_cache.cache_dir(tmp_path / "three").iterdir()) == []


@pytest.mark.parametrize("folder", ["stems", "encoded"])
def test_streamed_ingest_rows_equal_whole_array_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     folder: str) -> None:
    src = DATA / folder  # WAV (16-bit: cached) and PyAV formats (AAC, ALAC, Opus, WebM, WMA: no frame count)
    tables, caches = {}, {}
    for mode, min_s in (("whole", float("inf")), ("stream", 0.5)):
        monkeypatch.setattr(ingest_stream, "STREAM_MIN_S", min_s)
        cat = tmp_path / mode
        ingest_folder(src, layout="stems", catalog=cat, cfg=IngestConfig(workers=1, tempo=True, cache="int16"))
        tables[mode] = Catalog.open(cat).stems(include_duplicates=True).sort_values("key").reset_index(drop=True)
        caches[mode] = {p.name: p.read_bytes() for p in stem_cache.cache_dir(cat).glob("*")}
    whole, streamed = tables["whole"], tables["stream"]
    assert len(whole) == len(streamed) >= 5 and caches["whole"] == caches["stream"]
    np.testing.assert_allclose(streamed["lufs"].astype(float), whole["lufs"].astype(float), atol=1e-9, rtol=0)
    for col in whole.columns.drop(["lufs", "ingested_at"]):
        assert [repr(v) for v in streamed[col]] == [repr(v) for v in whole[col]], col


def test_streamed_ingest_flags_an_excerpt_and_rejects_bad_files(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src" / "vocals").mkdir(parents=True)
    (tmp_path / "src" / "vocals" / "a.wav").write_bytes(STEREO.read_bytes())
    (tmp_path / "src" / "vocals" / "cut.wav").write_bytes(STEREO.read_bytes()[:-5000])
    monkeypatch.setattr(ingest_stream, "STREAM_MIN_S", 1.0)
    monkeypatch.setattr(measure_stream, "EXCERPT_S", 2.0)
    r = ingest_folder(tmp_path / "src", layout="stems", catalog=tmp_path / "cat", cfg=IngestConfig(workers=1))
    assert (r.measured, r.rejected) == (1, 1), r.line()
    cat = Catalog.open(tmp_path / "cat")
    row = cat.stems().iloc[0]
    assert ingest_stream.EXCERPT_FLAG in list(row["flags"]) and row["frames"] == 176400
    assert min(row["beats"]) >= 1.0 and max(row["beats"]) <= 3.0
    assert "truncated" in cat.table("rejects").to_pandas()["reason"].iloc[0]


_RSS_CHILD = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    import numpy as np, soundfile as sf
    from stemdb import ingest_stream, measure_stream
    from stemdb.config import IngestConfig
    from stemdb.ingest import ingest_folder
    root, seconds, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    wav = root / "src" / "vocals" / "long.wav"
    wav.parent.mkdir(parents=True)
    rng = np.random.default_rng(5)
    t = np.arange(44100 * 5) / 44100
    with sf.SoundFile(str(wav), "w", 44100, 2, subtype="PCM_16") as f:  # written 5 s at a time
        for i in range(seconds // 5):
            tone = 0.3 * np.sin(2 * np.pi * (220 + 20 * i) * t) * (np.mod(t, 0.5) < 0.1)
            f.write((tone[:, None] + 0.05 * rng.standard_normal((t.size, 2))).astype(np.float32))
    ingest_stream.STREAM_MIN_S = 10.0 if mode == "stream" else float("inf")
    measure_stream.EXCERPT_S = 10.0
    r = ingest_folder(root / "src", layout="stems", catalog=root / "cat", cfg=IngestConfig(workers=1, tempo=False))
    assert r.measured == 1, r.line()
    wav.unlink()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


def _peak_rss_mb(tmp_path: Path, seconds: int, mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(tmp_path / f"{mode}{seconds}"), str(seconds), mode],
                         cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    return int(out.stdout.split()[-1]) / 1024


def test_peak_memory_of_a_streamed_ingest_does_not_grow_with_length(tmp_path: Path) -> None:
    """A 240 s stereo WAV against a 60 s one: the whole-array path grew by 336 MB here (434 -> 770 MB), the
    streamed one by 4 MB (352 -> 356 MB); the bound leaves room for allocator noise."""
    short, long_ = _peak_rss_mb(tmp_path, 60, "stream"), _peak_rss_mb(tmp_path, 240, "stream")
    assert long_ - short < 40.0, (short, long_)
