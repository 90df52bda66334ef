"""Near-duplicate fingerprints: landmark MinHash sketch plus a 4-band envelope (docs/quality.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stemdb.quality._signal import ANALYSIS_RATE, check_audio, hann, mono11, mono22, power_frames

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
#: Bytes before the sketch in :meth:`Fingerprint.to_bytes`: magic, envelope blocks, landmarks, duration.
FINGERPRINT_HEADER_BYTES: int = len(_FP_MAGIC) + 16


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
    x = check_audio(audio)
    m22, rate = mono22(x, sample_rate)
    return fingerprint_mono(mono11(m22), x.shape[1] / rate)


def fingerprint_mono(mono11: np.ndarray, duration_s: float) -> Fingerprint | None:
    if mono11.size < _FP_NFFT + _FP_HOP or not np.any(mono11):
        return None
    win = hann(_FP_NFFT)
    power = power_frames(mono11, _FP_NFFT, _FP_FINE)
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
    w = hann(2 * _ENV_BLOCK)
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
    return verified(a, b, min_aligned, min_coverage, min_envelope_r) is not None


def verified(a: Fingerprint, b: Fingerprint, min_aligned: int, min_coverage: float,
             min_envelope_r: float) -> FingerprintMatch | None:
    """The match of ``a`` and ``b`` when it passes the thresholds (the cheap alignment test first), else ``None``."""
    aligned, offset = _align(a, b)
    if aligned < max(1, min_aligned):  # the cheap test first: most candidate pairs stop here
        return None
    m = _match(a, b, aligned, offset)
    ok = m.coverage >= min_coverage and m.envelope_r >= min_envelope_r
    return m if ok else None
