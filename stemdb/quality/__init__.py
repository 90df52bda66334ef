"""Per-stem quality measures: bandwidth, bleed, near-duplicate fingerprints, key and fake stereo.

Every measure is a pure function of one decoded stem, ``(channels, samples)`` float32 full scale ±1.0, and its
sample rate in Hz, so ingest can compute them from the array it already decoded for :mod:`stemdb.measure`
(:func:`assess` runs them all and shares the downmix and the resampling). Nothing here reads files; the codec,
lossy flag and bit rate a container states are in :class:`stemdb.audio_facts.AudioInfo` already. docs/quality.md
says what each measure is, how it is computed, what it can and cannot see, and the figures measured on real audio.

Analysis rates: bandwidth reads the long-term spectrum at the file's own rate; bleed works on a mono downmix
resampled to 22050 Hz; the near-duplicate fingerprint and the key on the same downmix at 11025 Hz (by way of the
22050 Hz one), so a copy resampled to another rate is analysed on the same time and frequency grid as its original.

The near-duplicate :class:`Fingerprint` has two parts: a fixed-length MinHash sketch (64 ``uint32`` values and
the time of the landmark behind each, 512 bytes) that is bucketed to find candidate pairs in a large catalogue
(:func:`candidate_pairs`), and a coarse 4-band loudness envelope (about 43 bytes per second of audio) that
verifies a candidate (:func:`compare_fingerprints`). :meth:`Fingerprint.to_bytes` gives one binary value for a
Parquet column.

Modules: :mod:`~stemdb.quality.bandwidth`, :mod:`~stemdb.quality.bleed`, :mod:`~stemdb.quality.key`,
:mod:`~stemdb.quality.stereo`, :mod:`~stemdb.quality.fingerprint`, :mod:`~stemdb.quality.search`; shared signal
helpers in :mod:`~stemdb.quality._signal`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from stemdb.quality._signal import (
    ANALYSIS_RATE,
    BLEED_RATE,
    check_audio,
    check_rate,
    downmix,
    finite_or_none,
    mono11,
    resample,
)
from stemdb.quality.bandwidth import CUTOFF_MIN_HZ, Bandwidth, bandwidth, bandwidth_mono
from stemdb.quality.bleed import (
    BLEED_DRUMS_MAX_HZ,
    BLEED_REFERENCE_DB,
    BLEED_REFERENCE_DEFAULT_DB,
    BLEED_WEAK_SHARE,
    bleed_mono,
    bleed_score,
)
from stemdb.quality.fingerprint import (
    FINGERPRINT_HEADER_BYTES,
    MIN_ALIGNED,
    MIN_COVERAGE,
    MIN_ENVELOPE_R,
    SKETCH_SLOTS,
    Fingerprint,
    FingerprintMatch,
    compare_fingerprints,
    fingerprint,
    fingerprint_mono,
    is_near_duplicate,
)
from stemdb.quality.key import KK_MAJOR, KK_MINOR, PITCH_CLASSES, KeyEstimate, estimate_key, key_mono
from stemdb.quality.search import candidate_pairs, find_near_duplicates
from stemdb.quality.stereo import FAKE_STEREO_DB, is_fake_stereo, stereo_difference_db


@dataclass(frozen=True)
class Quality:
    """Every quality measure of one stem (see the functions of this package for each)."""

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
            "bandwidth_hz": finite_or_none(self.bandwidth_hz),
            "bandwidth_cutoff": bool(self.bandwidth_cutoff),
            "bleed": finite_or_none(self.bleed),
            "key": self.key,
            "key_confidence": float(self.key_confidence),
            "fake_stereo": bool(self.fake_stereo),
            "stereo_difference_db": finite_or_none(self.stereo_difference_db),
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
    x = check_audio(audio)
    rate = check_rate(sample_rate)
    mono = downmix(x)
    bw = bandwidth_mono(mono, rate)
    m22 = resample(mono, rate, BLEED_RATE)
    m11 = mono11(m22)
    key = key_mono(m11)
    diff = stereo_difference_db(x) if x.shape[0] > 1 else float("nan")
    return Quality(
        bandwidth_hz=bw.hz,
        bandwidth_cutoff=bw.cutoff,
        bleed=bleed_mono(m22, kind),
        key=key.key,
        key_confidence=key.confidence,
        fake_stereo=bool(not math.isnan(diff) and diff <= FAKE_STEREO_DB),
        stereo_difference_db=diff,
        fingerprint=fingerprint_mono(m11, x.shape[1] / rate),
    )


__all__ = [
    "ANALYSIS_RATE", "BLEED_DRUMS_MAX_HZ", "BLEED_RATE", "BLEED_REFERENCE_DB", "BLEED_REFERENCE_DEFAULT_DB",
    "BLEED_WEAK_SHARE", "CUTOFF_MIN_HZ", "FAKE_STEREO_DB", "FINGERPRINT_HEADER_BYTES", "KK_MAJOR", "KK_MINOR",
    "MIN_ALIGNED", "MIN_COVERAGE", "MIN_ENVELOPE_R", "PITCH_CLASSES", "SKETCH_SLOTS", "Bandwidth", "Fingerprint",
    "FingerprintMatch", "KeyEstimate", "Quality", "assess", "bandwidth", "bleed_score", "candidate_pairs",
    "compare_fingerprints", "estimate_key", "find_near_duplicates", "fingerprint", "is_fake_stereo",
    "is_near_duplicate", "stereo_difference_db",
]
