"""Bleed score: how much content a stem carries in the cells its own source leaves empty (docs/quality.md)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from stemdb.quality._signal import BLEED_RATE, mono22, power_frames

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
    return bleed_mono(mono22(audio, sample_rate)[0], kind)


def bleed_mono(mono22: np.ndarray, kind: str | None) -> float:
    if mono22.size < _BLEED_NFFT or not np.any(mono22):
        return float("nan")
    power = power_frames(mono22, _BLEED_NFFT, _BLEED_HOP)
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
