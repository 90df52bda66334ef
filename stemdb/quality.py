"""Per-stem quality measures: bandwidth, codec facts, bleed, near-duplicate fingerprints, key and fake stereo.

Every measure is a pure function of one decoded stem, ``(channels, samples)`` float32 full scale ±1.0, and its
sample rate in Hz, so ingest can compute them from the array it already decoded for :mod:`stemdb.measure`
(:func:`assess` runs them all and shares the downmix and the resampling). Nothing here reads files; codec facts
come from the header values :func:`stemdb.audio.info` / :func:`stemdb.audio.load` return. docs/quality.md says
what each measure is, how it is computed, what it can and cannot see, and the figures measured on real audio.

Analysis rates: bandwidth reads the long-term spectrum at the file's own rate; bleed works on a mono downmix
resampled to 22050 Hz; the near-duplicate fingerprint and the key on the same downmix at 11025 Hz, so a copy
resampled to another rate is analysed on the same time and frequency grid as its original.

The near-duplicate :class:`Fingerprint` has two parts: a fixed-length MinHash sketch (64 ``uint32`` values and
the time of the landmark behind each, 512 bytes) that is bucketed to find candidate pairs in a large catalogue
(:func:`candidate_pairs`), and a coarse 4-band loudness envelope (about 43 bytes per second of audio) that
verifies a candidate (:func:`compare_fingerprints`). :meth:`Fingerprint.to_bytes` gives one binary value for a
Parquet column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

#: Rate (Hz) of the mono downmix the bleed score reads.
BLEED_RATE: int = 22050
#: Rate (Hz) of the mono downmix the fingerprint and the key read.
ANALYSIS_RATE: int = 11025

# --------------------------------------------------------------------------------------------------------------
# codec facts from the container


#: libsndfile subtypes (and the ``"AAC"`` of ``.stem.mp4`` streams) that are lossy codecs, with a short codec name.
LOSSY_SUBTYPES: dict[str, str] = {
    "MPEG_LAYER_I": "mp1",
    "MPEG_LAYER_II": "mp2",
    "MPEG_LAYER_III": "mp3",
    "VORBIS": "vorbis",
    "OPUS": "opus",
    "AAC": "aac",
    "GSM610": "gsm",
    "IMA_ADPCM": "adpcm",
    "MS_ADPCM": "adpcm",
    "VOX_ADPCM": "adpcm",
    "G721_32": "g721",
    "G723_24": "g723",
    "G723_40": "g723",
    "NMS_ADPCM_16": "adpcm",
    "NMS_ADPCM_24": "adpcm",
    "NMS_ADPCM_32": "adpcm",
    "ULAW": "ulaw",
    "ALAW": "alaw",
}


@dataclass(frozen=True)
class CodecInfo:
    """What a file's header says about its coding.

    Attributes:
        codec: short codec name (``"pcm_16"``, ``"flac"``, ``"mp3"``, ``"vorbis"``, ``"aac"``, ...), lower case.
        lossy: True for a lossy codec (MP3, Vorbis, Opus, AAC, ADPCM, mu-law, ...).
        bitrate_kbps: the file's mean bit rate, ``bytes * 8 / duration_s / 1000`` (kbit/s), when both are known;
            it counts tags and cover art too, so it reads high for short files with large tags.
    """

    codec: str
    lossy: bool
    bitrate_kbps: float | None


def codec_info(format: str, subtype: str, *, bytes: int | None = None, duration_s: float | None = None) -> CodecInfo:
    """Codec name, lossy flag and mean bit rate from header values (``AudioInfo.format`` / ``.subtype``).

    Args:
        format: container name as libsndfile spells it (``"WAV"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``, ``"MP4"``).
        subtype: codec/sample format (``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``, ``"MPEG_LAYER_III"``, ``"AAC"``).
        bytes: file size in bytes, for the bit rate.
        duration_s: duration in seconds, for the bit rate.

    Raises:
        ValueError: ``bytes`` negative or ``duration_s`` not a finite number >= 0.
    """
    if bytes is not None and bytes < 0:
        raise ValueError(f"bytes={bytes} is negative")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration_s={duration_s} must be a finite number >= 0")
    sub = (subtype or "").upper()
    fmt = (format or "").upper()
    if sub in LOSSY_SUBTYPES:
        codec, lossy = LOSSY_SUBTYPES[sub], True
    elif fmt == "FLAC":
        codec, lossy = "flac", False
    elif sub.startswith("ALAC"):
        codec, lossy = "alac", False
    else:
        codec, lossy = (sub.lower() or fmt.lower() or "unknown"), False
    rate = None
    if bytes is not None and duration_s:
        rate = bytes * 8.0 / duration_s / 1000.0
    return CodecInfo(codec=codec, lossy=lossy, bitrate_kbps=rate)


# --------------------------------------------------------------------------------------------------------------
# effective bandwidth


@dataclass(frozen=True)
class Bandwidth:
    """The effective bandwidth of a stem.

    Attributes:
        hz: the frequency (Hz) above which the long-term spectrum falls away: the edge of a steep cut-off when
            there is one, else the highest frequency whose long-term level stands 10 dB above the level of 16-bit
            quantisation noise. ``0.0`` for digital silence.
        cutoff: True when the edge is a steep cut-off (a drop of at least 20 dB within 1.5 kHz that stays down
            to the top of the band), as lossy encoders' low-pass filters and resamplers leave.
        drop_db: how far the level falls across that cut-off (dB); ``0.0`` when there is none.
    """

    hz: float
    cutoff: bool
    drop_db: float


#: Smallest frequency (Hz) at which a drop counts as a cut-off (below it, instruments fall steeply on their own).
CUTOFF_MIN_HZ: float = 3000.0
_BW_SMOOTH_HZ = 200.0  # running median over the long-term spectrum
_BW_WIN_HZ = 1000.0  # level windows below and above a candidate edge
_BW_GUARD_HZ = 500.0  # transition band skipped between them
_BW_DROP_DB = 20.0  # minimum drop across a cut-off
_BW_STAY_DB = 15.0  # everything above the cut-off stays at least this far below the level under it
_BW_MARGIN_DB = 10.0  # content stands this far above the floor


def bandwidth(audio: np.ndarray, sample_rate: int) -> Bandwidth:
    """Effective bandwidth (Hz) of a stem from its long-term average spectrum.

    The channels are averaged, cut into non-overlapping Hann frames of about 46 ms (2048 samples at 44.1 or 48
    kHz), and the frames' power spectra averaged into the long-term spectrum (dB per bin, smoothed by a 200 Hz
    running median). Content is what stands at least 10 dB above the level of 16-bit quantisation noise (white,
    variance ``q^2 / 12`` with ``q = 2^-15``), a fixed reference, so the answer does not depend on what fills the
    top of the band. A cut-off is the lowest frequency >= :data:`CUTOFF_MIN_HZ` where content drops at least
    20 dB from the 1 kHz below to the 1 kHz above (after a 500 Hz transition) and stays at least 15 dB down all
    the way to Nyquist; the bandwidth is then the last frequency of the transition within 10 dB of the level
    under it. Without a cut-off it is the highest frequency with content. Quiet stems lose high-frequency
    content under the fixed reference sooner, so compare bandwidths of stems at similar levels.

    Args:
        audio: ``(channels, samples)`` float array, full scale ±1.0.
        sample_rate: Hz.

    Returns:
        :class:`Bandwidth`.

    Raises:
        ValueError: bad shape or rate, or non-finite samples.
    """
    x = _check_audio(audio)
    rate = _check_rate(sample_rate)
    return _bandwidth_mono(_downmix(x), rate)


def _bandwidth_mono(mono: np.ndarray, rate: int) -> Bandwidth:
    from scipy.ndimage import median_filter

    n_fft = 1 << max(8, int(round(math.log2(0.046 * rate))))
    if mono.size < n_fft or not np.any(mono):
        return Bandwidth(0.0, False, 0.0)
    k = mono.size // n_fft
    win = _hann(n_fft)
    power = _power_frames(mono[: k * n_fft], n_fft, n_fft).mean(axis=1, dtype=np.float64)
    # dB re the per-bin power of a full-scale sine (so the numbers read like dBFS per bin)
    scale = (win.sum() / 2.0) ** 2
    level = 10.0 * np.log10(power / scale + 1e-30)
    df = rate / n_fft
    smooth = median_filter(level, size=_odd(_BW_SMOOTH_HZ / df), mode="nearest")
    freqs = np.arange(smooth.size) * df
    # 16-bit quantisation noise (variance q^2/12, q = 2^-15) per bin on the same scale
    q16 = 10.0 * np.log10(((2.0**-15) ** 2 / 12.0) * float(np.sum(win**2)) / scale)
    threshold = q16 + _BW_MARGIN_DB
    cut = _find_cutoff(smooth, freqs, df, threshold)
    if cut is not None:
        return cut
    above = np.nonzero(smooth >= threshold)[0]
    return Bandwidth(float(freqs[above[-1]]) if above.size else 0.0, False, 0.0)


def _find_cutoff(level: np.ndarray, freqs: np.ndarray, df: float, threshold: float) -> Bandwidth | None:
    from scipy.ndimage import median_filter

    nw = max(2, int(round(_BW_WIN_HZ / df)))
    ng = max(1, int(round(_BW_GUARD_HZ / df)))
    n = level.size
    lo = max(nw, int(np.searchsorted(freqs, CUTOFF_MIN_HZ)))
    hi = n - ng - nw
    if hi <= lo:
        return None
    # median of the nw bins below i (centre i - nw/2) and of the nw bins from i + ng
    med = median_filter(level, size=nw | 1, mode="nearest")
    idx = np.arange(lo, hi)
    below = med[idx - nw // 2 - 1]
    above = med[idx + ng + nw // 2]
    rest = np.maximum.accumulate(med[::-1])[::-1]  # the highest smoothed level from each bin up to Nyquist
    ok = (below - above >= _BW_DROP_DB) & (below - rest[idx + ng] >= _BW_STAY_DB) & (below >= threshold)
    hits = np.nonzero(ok)[0]
    if not hits.size:
        return None
    i0 = int(idx[hits[0]])
    ref = float(below[hits[0]])
    seg = np.arange(i0 - nw // 2, min(n, i0 + ng + nw))
    inside = seg[level[seg] >= ref - _BW_MARGIN_DB]
    edge = int(inside[-1]) if inside.size else i0
    return Bandwidth(float(freqs[edge]), True, float(ref - above[hits[0]]))


# --------------------------------------------------------------------------------------------------------------
# bleed


#: Median raw bleed value (dB) of clean stems per kind in the reference set (the eight train-pool multitracks,
#: docs/quality.md); :func:`bleed_score` subtracts it so 0 dB means "as dense as a typical clean stem of its kind".
BLEED_REFERENCE_DB: dict[str, float] = {
    "vocals": -58.4,
    "bass": -74.8,
    "drums": -43.8,
    "other": -34.5,
}
#: Reference used for a kind without its own entry (keys, guitar, user kinds, or ``kind=None``): the median over
#: all 31 non-silent train-pool stems of the four kinds.
BLEED_REFERENCE_DEFAULT_DB: float = -50.5
#: Share of time-frequency cells counted as the stem's "weak" cells.
BLEED_WEAK_SHARE: float = 0.3
#: Drums are read below this frequency (Hz): cymbals fill the band above it in a clean drum stem.
BLEED_DRUMS_MAX_HZ: float = 2000.0
_BLEED_NFFT = 1024
_BLEED_HOP = 512
_BLEED_MELS = 48
_BLEED_FMIN = 30.0


def bleed_score(audio: np.ndarray, sample_rate: int, *, kind: str | None = None) -> float:
    """How much content a stem carries in the time-frequency cells its own source leaves empty (dB; higher = more).

    An isolated source is sparse: most of its mel spectrogram cells are nearly empty (gaps between notes and
    phrases, bands the instrument does not reach). Another source mixed in fills them. The raw value is the energy
    of the weakest 30 % of cells as a share of all the energy (dB), from a 48-band mel power spectrogram
    (30 Hz - 11 kHz, 46 ms frames, 23 ms hop) of the mono downmix at 22050 Hz; drums are read below 2 kHz only.
    The score is the raw value minus :data:`BLEED_REFERENCE_DB` for the stem's kind, so 0 dB is a typical clean
    stem of that kind and scores of different kinds can share one threshold.

    It cannot tell bleed from other dense content: reverb tails, room noise, a noisy or lossy recording (codec
    noise fills empty cells too) and naturally dense parts (distorted guitars, cymbals, pads) all raise it; a
    bleed confined to cells the stem already fills (a vocal bleeding into a vocal) does not. Figures are in
    docs/quality.md.

    Args:
        audio: ``(channels, samples)`` float array, full scale ±1.0.
        sample_rate: Hz.
        kind: the stem's kind (``"vocals"``, ``"drums"``, ``"bass"``, ``"other"``, ...); chooses the band and the
            reference.

    Returns:
        the score in dB; NaN for digital silence or audio shorter than one 46 ms frame.

    Raises:
        ValueError: bad shape or rate, or non-finite samples.
    """
    x = _check_audio(audio)
    rate = _check_rate(sample_rate)
    return _bleed_mono(_resample(_downmix(x), rate, BLEED_RATE), kind)


def _bleed_mono(mono22: np.ndarray, kind: str | None) -> float:
    if mono22.size < _BLEED_NFFT or not np.any(mono22):
        return float("nan")
    power = _power_frames(mono22, _BLEED_NFFT, _BLEED_HOP)
    mel_fb, centres = _bleed_mel()
    mel = mel_fb @ power
    if kind == "drums":
        mel = mel[centres < BLEED_DRUMS_MAX_HZ]
    cells = np.sort(mel, axis=None)
    total = float(cells.sum(dtype=np.float64))
    if total <= 0.0:
        return float("nan")
    weak = float(cells[: int(cells.size * BLEED_WEAK_SHARE)].sum(dtype=np.float64))
    raw = 10.0 * math.log10(weak / total + 1e-15)
    return raw - BLEED_REFERENCE_DB.get(kind or "", BLEED_REFERENCE_DEFAULT_DB)


@lru_cache(maxsize=1)
def _bleed_mel() -> tuple[np.ndarray, np.ndarray]:
    import librosa

    fb = librosa.filters.mel(sr=BLEED_RATE, n_fft=_BLEED_NFFT, n_mels=_BLEED_MELS, fmin=_BLEED_FMIN,
                             fmax=BLEED_RATE / 2).astype(np.float32)
    centres = librosa.mel_frequencies(n_mels=_BLEED_MELS + 2, fmin=_BLEED_FMIN, fmax=BLEED_RATE / 2)[1:-1]
    return fb, centres


# --------------------------------------------------------------------------------------------------------------
# key


#: Krumhansl-Kessler probe-tone profiles (Krumhansl 1990), tonic first.
KK_MAJOR: tuple[float, ...] = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KK_MINOR: tuple[float, ...] = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
#: Pitch-class names used in key strings (``"C# minor"``).
PITCH_CLASSES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_KEY_NFFT = 4096
_KEY_HOP = 2048


@dataclass(frozen=True)
class KeyEstimate:
    """A key estimate.

    Attributes:
        key: ``"<pitch class> major|minor"`` (e.g. ``"A minor"``); ``None`` for silence.
        confidence: how far the winning key's correlation stands above the runner-up's, in [0, 1]; near 0 the
            estimate is a coin toss between two keys (on the fixture stems every estimate with confidence >= 0.012
            moved exactly with a +2 semitone shift; the two that did not had 0.001 and 0.011).
        strength: Pearson correlation of the stem's chroma with the winning key profile, in [-1, 1].
        tonic: pitch class of the tonic, 0 = C .. 11 = B; ``-1`` for silence.
        mode: ``"major"`` or ``"minor"``; ``""`` for silence.
    """

    key: str | None
    confidence: float
    strength: float
    tonic: int
    mode: str


def estimate_key(audio: np.ndarray, sample_rate: int) -> KeyEstimate:
    """Key and confidence of a stem from its chroma (Krumhansl-Schmuckler key finding).

    The mono downmix at 11025 Hz is cut into 372 ms frames (hop 186 ms); librosa's STFT chroma (12 pitch classes,
    A = 440 Hz, no tuning estimate) of each frame is summed as magnitudes (square roots of the chroma energies),
    and the sum is correlated with the 24 rotations of the Krumhansl-Kessler major and minor profiles. The best
    correlation is the key; its lead over the second best is the confidence. Tuning is not estimated: on the
    fixture stems a tuning estimate made the answer less stable (docs/quality.md).

    Args:
        audio: ``(channels, samples)`` float array, full scale ±1.0.
        sample_rate: Hz.

    Raises:
        ValueError: bad shape or rate, or non-finite samples.
    """
    x = _check_audio(audio)
    rate = _check_rate(sample_rate)
    return _key_mono(_mono11(_resample(_downmix(x), rate, BLEED_RATE)))


_NO_KEY = KeyEstimate(None, 0.0, 0.0, -1, "")


def _key_mono(mono11: np.ndarray) -> KeyEstimate:
    import librosa

    if mono11.size < _KEY_NFFT or not np.any(mono11):
        return _NO_KEY
    power = _power_frames(mono11, _KEY_NFFT, _KEY_HOP)
    chroma = librosa.feature.chroma_stft(S=power, sr=ANALYSIS_RATE, n_fft=_KEY_NFFT, tuning=0.0, norm=None)
    profile = np.sqrt(np.maximum(chroma, 0.0)).sum(axis=1)
    if not np.any(profile > 0) or np.ptp(profile) == 0:
        return _NO_KEY
    scores = _key_scores(profile)
    order = np.argsort(scores)
    best = int(order[-1])
    mode = "major" if best < 12 else "minor"
    tonic = best % 12
    margin = float(np.clip(scores[best] - scores[order[-2]], 0.0, 1.0))
    return KeyEstimate(f"{PITCH_CLASSES[tonic]} {mode}", margin, float(scores[best]), tonic, mode)


def _key_scores(chroma: np.ndarray) -> np.ndarray:
    """Pearson correlation of a 12-bin chroma with the 12 major then the 12 minor key profiles, ``(24,)``."""
    c = chroma - chroma.mean()
    out = np.empty(24)
    for m, prof in enumerate((KK_MAJOR, KK_MINOR)):
        p = np.asarray(prof) - np.mean(prof)
        for t in range(12):
            r = np.roll(p, t)
            out[12 * m + t] = float(c @ r / (np.linalg.norm(c) * np.linalg.norm(r)))
    return out


# --------------------------------------------------------------------------------------------------------------
# fake stereo


#: Residual level (dB) under which two channels count as the same signal.
FAKE_STEREO_DB: float = -40.0


def stereo_difference_db(audio: np.ndarray) -> float:
    """How different the channels are: the residual of the best gain fit between them, dB (``-inf`` = identical).

    For each pair of channels (a, b) the smaller of ``min_g ||b - g a||^2 / ||b||^2`` and the same with a and b
    swapped, in dB; the largest over the pairs. The gain may be negative, so a polarity-inverted copy counts as
    the same signal. Only the same samples at the same time are compared: a delayed copy (Haas-style pseudo
    stereo) or a decorrelation filter reads as different.

    Args:
        audio: ``(channels, samples)`` float array.

    Returns:
        dB; NaN for mono audio or when a channel is digital silence.

    Raises:
        ValueError: bad shape, or non-finite samples.
    """
    x = _check_audio(audio)
    if x.shape[0] < 2:
        return float("nan")
    worst = -math.inf
    for i in range(x.shape[0]):
        for j in range(i + 1, x.shape[0]):
            ea, eb, ab = _dots(x[i], x[j])
            if ea == 0.0 or eb == 0.0:
                return float("nan")
            # residual of b after the least-squares fit g a (and of a after g' b), as a share of its energy
            share = max(0.0, min(1.0 - ab * ab / (ea * eb), 1.0))
            worst = max(worst, 10.0 * math.log10(share) if share > 0 else -math.inf)
    return worst


def _dots(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 16) -> tuple[float, float, float]:
    """``(a.a, b.b, a.b)`` summed in float64 over float32 chunks (no float64 copy of a whole channel)."""
    ea = eb = ab = 0.0
    for s in range(0, a.size, chunk):
        ca, cb = a[s: s + chunk], b[s: s + chunk]
        ea += float(np.dot(ca, ca))
        eb += float(np.dot(cb, cb))
        ab += float(np.dot(ca, cb))
    return ea, eb, ab


def is_fake_stereo(audio: np.ndarray, *, threshold_db: float = FAKE_STEREO_DB) -> bool:
    """True when a file with two or more channels carries the same signal in each (up to gain and polarity).

    See :func:`stereo_difference_db`; mono audio and a file with a silent channel are not fake stereo.

    Raises:
        ValueError: bad shape, non-finite samples, or ``threshold_db`` not finite.
    """
    if not math.isfinite(threshold_db):
        raise ValueError(f"threshold_db={threshold_db} must be finite")
    d = stereo_difference_db(audio)
    return bool(not math.isnan(d) and d <= threshold_db)


# --------------------------------------------------------------------------------------------------------------
# near-duplicate fingerprint


#: MinHash slots in a sketch.
SKETCH_SLOTS: int = 64
_FP_NFFT = 512  # 46 ms at 11025 Hz
_FP_HOP = 256  # landmarks are picked on 4 grids of this hop, shifted by a quarter hop each
_FP_SHIFTS = 4
_FP_FINE = _FP_HOP // _FP_SHIFTS  # 64 samples = 5.8 ms: the time unit of landmark times
_FP_PEAK_BINS = 15  # peak neighbourhood: 15 bins (323 Hz) x 11 frames (255 ms)
_FP_PEAK_FRAMES = 11
_FP_MIN_BIN = 3  # ignore peaks below 65 Hz
_FP_DEPTH_DB = 50.0  # peaks within this of the loud level (99.5th percentile)
_FP_FAN = 3  # each anchor pairs with its next 3 peaks
_FP_MAX_DT = 32  # frames (0.74 s)
_FP_MAX_DF = 31  # bins (667 Hz)
_ENV_BLOCK = 16  # fine frames per envelope value (93 ms)
_ENV_BANDS_HZ = (50.0, 200.0, 800.0, 2500.0, 5000.0)
_ENV_STEP_DB = 0.25
_ENV_FLOOR_DB = 40.0
_FP_MAGIC = b"SDBF1"


def _minhash_constants() -> tuple[np.ndarray, np.ndarray]:
    # fixed constants for the multiply-shift hash family; a local Generator seeded by a constant (no global state)
    rng = np.random.default_rng(0x5D_B0_F1)
    a = rng.integers(1, 2**62, SKETCH_SLOTS, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**62, SKETCH_SLOTS, dtype=np.uint64)
    return a, b


_HASH_A, _HASH_B = _minhash_constants()


@dataclass(frozen=True, eq=False)
class Fingerprint:
    """A stem's near-duplicate fingerprint.

    Attributes:
        minhash: ``(64,)`` uint32: for each of 64 hash functions, the smallest hash over the stem's set of
            landmark keys (pairs of spectral peaks: both frequencies and their time distance). Two stems share a
            slot value about as often as the Jaccard similarity of their key sets.
        times: ``(64,)`` uint32: the time of the landmark behind each slot (its first occurrence), in 5.8 ms
            units (64 samples at 11025 Hz); a true copy has its shared slots at one consistent time offset.
        envelope: ``(4, blocks)`` uint8: loudness per 93 ms block in the bands 50-200, 200-800, 800-2500 and
            2500-5000 Hz, in 0.25 dB steps up from 63.75 dB below each band's maximum.
        duration_s: the audio's duration (seconds).
        landmarks: how many distinct landmark keys the stem has.
    """

    minhash: np.ndarray
    times: np.ndarray
    envelope: np.ndarray
    duration_s: float
    landmarks: int

    def to_bytes(self) -> bytes:
        """One binary value for a Parquet column: header, 512 bytes of sketch, 4 x blocks bytes of envelope."""
        head = _FP_MAGIC + np.array([self.envelope.shape[1], self.landmarks], "<u4").tobytes()
        return (head + np.array([self.duration_s], "<f8").tobytes() + self.minhash.astype("<u4").tobytes()
                + self.times.astype("<u4").tobytes() + np.ascontiguousarray(self.envelope, np.uint8).tobytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> Fingerprint:
        """Inverse of :meth:`to_bytes`.

        Raises:
            ValueError: not a stemdb fingerprint, or truncated.
        """
        n5 = len(_FP_MAGIC)
        if len(data) < n5 + 16 + 8 * SKETCH_SLOTS or data[:n5] != _FP_MAGIC:
            raise ValueError(f"not a stemdb fingerprint ({len(data)} bytes, header {data[:n5]!r})")
        blocks, landmarks = (int(v) for v in np.frombuffer(data, "<u4", 2, n5))
        duration = float(np.frombuffer(data, "<f8", 1, n5 + 8)[0])
        off = n5 + 16
        need = off + 8 * SKETCH_SLOTS + 4 * blocks
        if len(data) != need:
            raise ValueError(f"fingerprint of {blocks} envelope blocks needs {need} bytes, got {len(data)}")
        minhash = np.frombuffer(data, "<u4", SKETCH_SLOTS, off).astype(np.uint32)
        times = np.frombuffer(data, "<u4", SKETCH_SLOTS, off + 4 * SKETCH_SLOTS).astype(np.uint32)
        env = np.frombuffer(data, np.uint8, 4 * blocks, off + 8 * SKETCH_SLOTS).reshape(4, blocks).copy()
        return cls(minhash, times, env, duration, landmarks)


@dataclass(frozen=True)
class FingerprintMatch:
    """How two fingerprints agree.

    Attributes:
        aligned: sketch slots (of 64) whose values agree at one common time offset.
        offset_s: that offset, seconds: the time in ``a`` minus the time in ``b`` of the shared landmarks.
        coverage: the overlap at that offset as a share of the longer stem's duration, in [0, 1].
        envelope_r: the lowest, over the 4 bands, correlation of the two loudness envelopes on the overlap.
    """

    aligned: int
    offset_s: float
    coverage: float
    envelope_r: float


#: Default decision thresholds of :func:`is_near_duplicate` (docs/quality.md gives the figures behind them).
MIN_ALIGNED: int = 5
MIN_COVERAGE: float = 0.5
MIN_ENVELOPE_R: float = 0.85


def fingerprint(audio: np.ndarray, sample_rate: int) -> Fingerprint | None:
    """The near-duplicate fingerprint of a stem; ``None`` when it has no landmarks (silence, under 0.1 s).

    Landmarks follow the classic spectral-peak-pair scheme (Wang 2003): on the mono downmix at 11025 Hz, a 512-
    point STFT (46 ms) in dB; peaks are cells that are the maximum of their 323 Hz x 255 ms neighbourhood, within
    50 dB of the loud level and 10 dB above 16-bit noise; each peak pairs with its next three peaks within 0.74 s
    and 667 Hz, and a pair's key is (first frequency, frequency step, time step). Peak times move by a frame when
    the audio is trimmed by a fraction of the 23 ms hop, which would change most keys, so peaks are picked on four
    grids offset by a quarter hop each and the key sets are joined: a copy trimmed anywhere finds its own grid among
    the four. The set of keys is reduced to a 64-slot MinHash; the 4-band envelope verifies candidates.

    Args:
        audio: ``(channels, samples)`` float array, full scale ±1.0.
        sample_rate: Hz.

    Raises:
        ValueError: bad shape or rate, or non-finite samples.
    """
    x = _check_audio(audio)
    rate = _check_rate(sample_rate)
    return _fingerprint_mono(_mono11(_resample(_downmix(x), rate, BLEED_RATE)), x.shape[1] / rate)


def _fingerprint_mono(mono11: np.ndarray, duration_s: float) -> Fingerprint | None:
    if mono11.size < _FP_NFFT + _FP_HOP or not np.any(mono11):
        return None
    win = _hann(_FP_NFFT)
    power = _power_frames(mono11, _FP_NFFT, _FP_FINE)
    db = 10.0 * np.log10(power + 1e-12)
    q16 = 10.0 * np.log10(((2.0**-15) ** 2 / 12.0) * float(np.sum(win**2)))
    floor = max(float(np.percentile(db, 99.5)) - _FP_DEPTH_DB, q16 + 10.0)
    keys, times = [], []
    for s in range(_FP_SHIFTS):
        k, t = _landmarks(db[:, s::_FP_SHIFTS], floor)
        keys.append(k)
        times.append(t * _FP_SHIFTS + s)
    key = np.concatenate(keys)
    if not key.size:
        return None
    tim = np.concatenate(times)
    order = np.lexsort((tim, key))
    key, tim = key[order], tim[order]
    first = np.r_[0, np.nonzero(np.diff(key))[0] + 1]
    ukey, utime = key[first], tim[first]
    slots = np.empty(SKETCH_SLOTS, np.uint32)
    stimes = np.empty(SKETCH_SLOTS, np.uint32)
    for i in range(SKETCH_SLOTS):  # one hash function at a time keeps memory at one key-set's size
        h = (ukey * _HASH_A[i] + _HASH_B[i]) >> np.uint64(32)
        j = int(np.argmin(h))
        slots[i] = h[j]
        stimes[i] = min(int(utime[j]), 2**32 - 1)
    return Fingerprint(slots, stimes, _envelope(power), float(duration_s), int(ukey.size))


def _landmarks(db: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Peak-pair keys and anchor times (frames of this grid) of one ``(bins, frames)`` dB spectrogram."""
    from scipy.ndimage import maximum_filter

    if db.shape[1] == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    local = maximum_filter(db, size=(_FP_PEAK_BINS, _FP_PEAK_FRAMES), mode="constant", cval=-np.inf)
    peaks = (db == local) & (db > floor)
    peaks[:_FP_MIN_BIN] = False
    f, t = np.nonzero(peaks)
    order = np.lexsort((f, t))
    f, t = f[order].astype(np.int64), t[order].astype(np.int64)
    n = t.size
    if n < 2:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    look = 16  # candidates after each anchor (time-sorted); the first _FP_FAN that fit the target zone are kept
    j = np.arange(n)[:, None] + np.arange(1, look + 1)[None, :]
    valid = j < n
    j = np.minimum(j, n - 1)
    dt = t[j] - t[:, None]
    dfr = f[j] - f[:, None]
    valid &= (dt > 0) & (dt <= _FP_MAX_DT) & (np.abs(dfr) <= _FP_MAX_DF)
    valid &= np.cumsum(valid, axis=1) <= _FP_FAN
    a, b = np.nonzero(valid)
    key = (f[a].astype(np.uint64) << np.uint64(12)) | ((dfr[a, b] + 32).astype(np.uint64) << np.uint64(6)) | (
        dt[a, b].astype(np.uint64))
    return key, t[a]


def _envelope(power: np.ndarray) -> np.ndarray:
    """4-band loudness envelope, ``(4, blocks)`` uint8, from the fine-hop power spectrogram."""
    df = ANALYSIS_RATE / _FP_NFFT
    w = _hann(2 * _ENV_BLOCK)
    w = w / w.sum()
    rows = []
    for lo, hi in zip(_ENV_BANDS_HZ[:-1], _ENV_BANDS_HZ[1:], strict=True):
        e = power[int(lo / df): int(hi / df)].sum(axis=0, dtype=np.float64)
        ones = np.convolve(np.ones_like(e), w, mode="same")
        smooth = np.convolve(e, w, mode="same") / ones
        d = 10.0 * np.log10(smooth[_ENV_BLOCK // 2:: _ENV_BLOCK] + 1e-12)
        q = np.round((d - (d.max() - 255 * _ENV_STEP_DB)) / _ENV_STEP_DB)
        rows.append(np.clip(q, 0, 255).astype(np.uint8))
    return np.stack(rows)


def compare_fingerprints(a: Fingerprint, b: Fingerprint) -> FingerprintMatch:
    """Score two fingerprints: aligned sketch slots, their time offset, overlap and envelope agreement.

    The slots both sketches share are grouped by time offset (±2 units, 12 ms); the largest group gives
    ``aligned`` and the offset. At that offset ``b``'s envelope is interpolated onto ``a``'s blocks and, per
    band, the two are correlated over the overlap (levels more than 40 dB under the band's maximum clipped).
    """
    aligned, offset = _align(a, b)
    if aligned == 0:
        return FingerprintMatch(0, 0.0, 0.0, 0.0)
    return _match(a, b, aligned, offset)


def _align(a: Fingerprint, b: Fingerprint) -> tuple[int, float]:
    """Slots that agree at one time offset, and that offset (fine units); ``(0, 0.0)`` when none agree."""
    eq = a.minhash == b.minhash
    if not np.any(eq):
        return 0, 0.0
    d = a.times[eq].astype(np.int64) - b.times[eq].astype(np.int64)
    counts = (np.abs(d[:, None] - d[None, :]) <= 2).sum(axis=1)
    group = d[np.abs(d - d[int(np.argmax(counts))]) <= 2]
    return int(group.size), float(np.median(group))


def _match(a: Fingerprint, b: Fingerprint, aligned: int, offset: float) -> FingerprintMatch:
    shift = offset / _ENV_BLOCK
    ea = a.envelope.astype(np.float64) * _ENV_STEP_DB
    eb = b.envelope.astype(np.float64) * _ENV_STEP_DB
    pos = np.arange(ea.shape[1]) - shift
    inside = (pos >= 0) & (pos <= eb.shape[1] - 1)
    r = _envelope_r(ea[:, inside], eb, pos[inside]) if inside.sum() >= 5 else 0.0
    offset_s = offset * _FP_FINE / ANALYSIS_RATE
    overlap = min(a.duration_s, b.duration_s + offset_s) - max(0.0, offset_s)
    longest = max(a.duration_s, b.duration_s)
    coverage = float(np.clip(overlap / longest, 0.0, 1.0)) if longest > 0 else 0.0
    return FingerprintMatch(aligned, offset_s, coverage, r)


def _envelope_r(ea: np.ndarray, eb: np.ndarray, pos: np.ndarray) -> float:
    grid = np.arange(eb.shape[1])
    worst = 1.0
    for band in range(ea.shape[0]):
        xa = ea[band]
        xb = np.interp(pos, grid, eb[band])
        xa = np.maximum(xa, xa.max() - _ENV_FLOOR_DB)
        xb = np.maximum(xb, xb.max() - _ENV_FLOOR_DB)
        sa, sb = xa.std(), xb.std()
        if sa < 1e-9 and sb < 1e-9:
            r = 1.0  # both flat (e.g. a band with nothing in it): no evidence against
        elif sa < 1e-9 or sb < 1e-9:
            r = 0.0
        else:
            r = float(np.corrcoef(xa, xb)[0, 1])
        worst = min(worst, r)
    return worst


def is_near_duplicate(
    a: Fingerprint,
    b: Fingerprint,
    *,
    min_aligned: int = MIN_ALIGNED,
    min_coverage: float = MIN_COVERAGE,
    min_envelope_r: float = MIN_ENVELOPE_R,
) -> bool:
    """True when ``a`` and ``b`` are the same recording (re-encoded, trimmed, gain-changed or resampled).

    Needs ``min_aligned`` sketch slots at one time offset, an overlap of at least ``min_coverage`` of the longer
    stem (so a short excerpt of a long stem is not a duplicate of it) and band envelopes that correlate at least
    ``min_envelope_r`` in every band (so a mixture is not a duplicate of the stem that dominates it).
    """
    return _verified(a, b, min_aligned, min_coverage, min_envelope_r) is not None


def _verified(a: Fingerprint, b: Fingerprint, min_aligned: int, min_coverage: float,
              min_envelope_r: float) -> FingerprintMatch | None:
    aligned, offset = _align(a, b)
    if aligned < max(1, min_aligned):  # the cheap test first: most candidate pairs stop here
        return None
    m = _match(a, b, aligned, offset)
    ok = m.coverage >= min_coverage and m.envelope_r >= min_envelope_r
    return m if ok else None


def candidate_pairs(
    sketches: np.ndarray, *, rows_per_band: int = 2, min_bands: int = 1, max_bucket: int = 1000
) -> np.ndarray:
    """Pairs of stems whose MinHash sketches agree on whole bands (locality-sensitive hashing).

    The 64 slots are cut into ``64 / rows_per_band`` bands; two stems become a candidate pair when all slots of
    at least ``min_bands`` bands agree. With 2 rows per band and ``min_bands=1`` a pair whose key sets have
    Jaccard similarity J is found with probability ``1 - (1 - J^2)^32`` (0.97 at J = 0.33, the lowest seen for
    an MP3 128 kbps copy). Cost is one sort of ``n * bands`` band hashes plus the pairs inside buckets
    (docs/quality.md has the figures for 100,000 stems); buckets larger than ``max_bucket`` (values common to
    very many stems, which carry no evidence) are skipped.

    Args:
        sketches: ``(n, 64)`` uint32, one :attr:`Fingerprint.minhash` per row.
        rows_per_band: slots per band; must divide 64.
        min_bands: bands that must agree.
        max_bucket: skip buckets with more stems than this.

    Returns:
        ``(m, 2)`` int64 row indices ``i < j``, unique, sorted.

    Raises:
        ValueError: wrong shape, ``rows_per_band`` not a divisor of 64, or ``min_bands`` out of range.
    """
    s = np.asarray(sketches)
    if s.ndim != 2 or s.shape[1] != SKETCH_SLOTS:
        raise ValueError(f"sketches must be (n, {SKETCH_SLOTS}), got shape {s.shape}")
    if rows_per_band < 1 or SKETCH_SLOTS % rows_per_band:
        raise ValueError(f"rows_per_band={rows_per_band} must divide {SKETCH_SLOTS}")
    bands = SKETCH_SLOTS // rows_per_band
    if not 1 <= min_bands <= bands:
        raise ValueError(f"min_bands={min_bands} must be in [1, {bands}]")
    n = s.shape[0]
    if n < 2:
        return np.zeros((0, 2), np.int64)
    v = s.astype(np.uint64).reshape(n, bands, rows_per_band)
    h = np.full((n, bands), np.uint64(0x9E3779B97F4A7C15))
    for r in range(rows_per_band):
        h = (h ^ v[:, :, r]) * np.uint64(0x100000001B3)  # FNV-style mixing of the band's values
    h ^= np.arange(bands, dtype=np.uint64) << np.uint64(56)  # the band index keeps bands apart
    flat = h.ravel()
    order = np.argsort(flat, kind="stable")
    flat = flat[order]
    item = order // bands  # row of each sorted band hash
    starts = np.r_[0, np.nonzero(np.diff(flat))[0] + 1]
    sizes = np.diff(np.r_[starts, flat.size])
    keep = (sizes > 1) & (sizes <= max_bucket)
    starts, sizes = starts[keep], sizes[keep]
    if not starts.size:
        return np.zeros((0, 2), np.int64)
    # every position of a kept bucket pairs with the positions after it in the same bucket
    pos = np.repeat(starts, sizes) + (np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    after = np.repeat(starts + sizes, sizes) - pos - 1
    left = np.repeat(pos, after)
    right = left + 1 + (np.arange(after.sum()) - np.repeat(np.cumsum(after) - after, after))
    a, b = item[left], item[right]
    code = np.minimum(a, b) * n + np.maximum(a, b)
    code = code[a != b]
    code, count = np.unique(code, return_counts=True)
    code = code[count >= min_bands]
    return np.stack([code // n, code % n], axis=1).astype(np.int64)


def find_near_duplicates(
    fingerprints: Sequence[Fingerprint | None], **thresholds: Any
) -> list[tuple[int, int, FingerprintMatch]]:
    """All near-duplicate pairs in a list of fingerprints: LSH candidates, then :func:`is_near_duplicate`.

    Args:
        fingerprints: one per stem; ``None`` (no landmarks) never matches.
        thresholds: ``min_aligned``, ``min_coverage``, ``min_envelope_r`` for :func:`is_near_duplicate`, and
            ``min_bands`` for :func:`candidate_pairs` (2 trades a little recall for far fewer candidates;
            docs/quality.md has both figures).

    Returns:
        ``(i, j, match)`` for every verified pair, ``i < j``, in index order.
    """
    unknown = set(thresholds) - {"min_aligned", "min_coverage", "min_envelope_r", "min_bands"}
    if unknown:
        raise ValueError(f"unknown thresholds {sorted(unknown)}; allowed: min_aligned, min_coverage, "
                         "min_envelope_r, min_bands")
    idx = [i for i, f in enumerate(fingerprints) if f is not None]
    if len(idx) < 2:
        return []
    sk = np.stack([fingerprints[i].minhash for i in idx])  # type: ignore[union-attr]
    limits = (thresholds.get("min_aligned", MIN_ALIGNED), thresholds.get("min_coverage", MIN_COVERAGE),
              thresholds.get("min_envelope_r", MIN_ENVELOPE_R))
    out = []
    for p, q in candidate_pairs(sk, min_bands=thresholds.get("min_bands", 1)):
        i, j = idx[int(p)], idx[int(q)]
        m = _verified(fingerprints[i], fingerprints[j], *limits)  # type: ignore[arg-type]
        if m is not None:
            out.append((i, j, m))
    return out


# --------------------------------------------------------------------------------------------------------------
# all measures in one pass


@dataclass(frozen=True)
class Quality:
    """Every quality measure of one stem (see the functions of this module for each)."""

    bandwidth_hz: float
    bandwidth_cutoff: bool
    bleed: float
    key: str | None
    key_confidence: float
    fake_stereo: bool
    stereo_difference_db: float
    fingerprint: Fingerprint | None

    def as_record(self) -> dict[str, Any]:
        """Catalogue-ready values: NaN/inf become ``None``, the fingerprint its bytes."""
        return {
            "bandwidth_hz": _finite_or_none(self.bandwidth_hz),
            "bandwidth_cutoff": bool(self.bandwidth_cutoff),
            "bleed": _finite_or_none(self.bleed),
            "key": self.key,
            "key_confidence": float(self.key_confidence),
            "fake_stereo": bool(self.fake_stereo),
            "stereo_difference_db": _finite_or_none(self.stereo_difference_db),
            "fingerprint": None if self.fingerprint is None else self.fingerprint.to_bytes(),
        }


def assess(audio: np.ndarray, sample_rate: int, *, kind: str | None = None) -> Quality:
    """All quality measures of one decoded stem, sharing the downmix and the two resamplings.

    Args:
        audio: ``(channels, samples)`` float array, full scale ±1.0 (the array ingest already decoded).
        sample_rate: Hz.
        kind: the stem's kind, for :func:`bleed_score`.

    Raises:
        ValueError: bad shape or rate, or non-finite samples.
    """
    x = _check_audio(audio)
    rate = _check_rate(sample_rate)
    mono = _downmix(x)
    bw = _bandwidth_mono(mono, rate)
    mono22 = _resample(mono, rate, BLEED_RATE)
    mono11 = _mono11(mono22)
    key = _key_mono(mono11)
    diff = stereo_difference_db(x) if x.shape[0] > 1 else float("nan")
    return Quality(
        bandwidth_hz=bw.hz,
        bandwidth_cutoff=bw.cutoff,
        bleed=_bleed_mono(mono22, kind),
        key=key.key,
        key_confidence=key.confidence,
        fake_stereo=bool(not math.isnan(diff) and diff <= FAKE_STEREO_DB),
        stereo_difference_db=diff,
        fingerprint=_fingerprint_mono(mono11, x.shape[1] / rate),
    )


# --------------------------------------------------------------------------------------------------------------
# helpers


def _check_audio(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"audio must be (channels, samples), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"audio must be float (full scale ±1.0), got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"audio has {bad} NaN/inf samples")
    return x


def _check_rate(sample_rate: int) -> int:
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate!r} must be a positive integer (Hz)")
    return int(sample_rate)


def _downmix(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.mean(axis=0, dtype=np.float32) if x.shape[0] > 1 else x[0], dtype=np.float32)


def _resample(mono: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target or mono.size == 0:
        return mono
    import soxr

    return np.asarray(soxr.resample(mono, rate, target), dtype=np.float32)


def _mono11(mono22: np.ndarray) -> np.ndarray:
    # always by way of the 22050 Hz downmix, so standalone calls and assess() see the same samples
    return _resample(mono22, BLEED_RATE, ANALYSIS_RATE)


def _power_frames(mono: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``(n_fft // 2 + 1, frames)`` float32 power spectrogram, Hann window, frames starting at 0 (no padding)."""
    if mono.size < n_fft:
        return np.zeros((n_fft // 2 + 1, 0), np.float32)
    import scipy.fft

    frames = np.lib.stride_tricks.sliding_window_view(mono, n_fft)[::hop] * _hann(n_fft)
    spec = scipy.fft.rfft(frames, axis=1, overwrite_x=True)  # float32 in, complex64 out
    power = np.square(spec.real)
    power += np.square(spec.imag)
    return np.ascontiguousarray(power.T, dtype=np.float32)


@lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n + 2)[1:-1].astype(np.float32)


def _odd(n: float) -> int:
    k = max(1, int(round(n)))
    return k | 1


def _finite_or_none(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None
