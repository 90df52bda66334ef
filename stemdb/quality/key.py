"""Key and confidence of a stem from its chroma (Krumhansl-Schmuckler key finding; docs/quality.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stemdb.quality._signal import ANALYSIS_RATE, mono11, mono22, power_frames

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
    return key_mono(mono11(mono22(audio, sample_rate)[0]))


_NO_KEY = KeyEstimate(None, 0.0, 0.0, -1, "")


def key_mono(mono11: np.ndarray) -> KeyEstimate:
    import librosa

    if mono11.size < _KEY_NFFT or not np.any(mono11):
        return _NO_KEY
    power = power_frames(mono11, _KEY_NFFT, _KEY_HOP)
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
