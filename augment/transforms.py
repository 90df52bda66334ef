"""Per-stem augmentation transforms, driven by recipes.

Every transform is a small class in three steps, so that a mixture's recipe alone decides its audio:

1. ``__init__`` validates the ranges (errors name the parameter, the value and the allowed range);
2. ``draw(rng)`` draws this transform's parameters from an explicit :class:`numpy.random.Generator` and returns a
   small frozen dataclass (the *params*); nothing else is random, and no global random state is ever read;
3. ``apply(audio, sample_rate, params)`` is a pure function of its inputs: the same ``(C, N)`` float32 audio and the
   same params give bit-identical output on every call, in any process.

A neutral params object (:mod:`augment.params`) makes ``apply`` return its input unchanged.

Drawing: ``draw`` first draws the "is it applied" coin (``rng.random() < p``), then always draws the transform's
values whatever the coin says, so every transform consumes a fixed number of draws and changing one transform's
``p`` never shifts the values drawn by the transforms after it. Ranges with ``min == max`` give exactly that value.

Pitch shift and time stretch run audiomentations' ``PitchShift`` / ``TimeStretch`` with ``method=
"signalsmith_stretch"`` (the fastest CPU method it offers; the other one is librosa's phase vocoder). The drawn
value is written into the audiomentations transform and its parameters are frozen before it is called, so its own
``random`` module state never decides anything. Signalsmith output was checked to be bit-identical across calls
and processes (``tests/test_transforms.py``) and time-aligned with its input.

The params dataclasses and the shared validation helpers are in :mod:`augment.params`; a target's ordered chain of
transforms (built from ``data.yaml``) is :class:`augment.chain.StemAugment`.

Arrays are ``(channels, samples)`` float32, full scale ±1.0. Transforms never modify their input in place; a
transform that is not applied (or is neutral) may return its input array itself.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic

import numpy as np
import scipy.fft

from augment.params import (
    ChannelSwapParams,
    GainParams,
    InvalidParameterError,
    LoudnessParams,
    P,
    Params,
    PitchParams,
    PolarityParams,
    SpectralFilterParams,
    StretchParams,
    check_audio,
    check_ordered,
    check_rate,
    db_to_gain,
    log_uniform,
    number_in,
    uniform,
)

logger = logging.getLogger(__name__)

__all__ = ["TRANSFORMS", "ChannelSwap", "ChannelSwapParams", "Gain", "GainParams", "InvalidParameterError",
           "LoudnessNormalize", "LoudnessParams", "Params", "PitchParams", "PitchShift", "Polarity",
           "PolarityParams", "SpectralFilter", "SpectralFilterParams", "StretchParams", "TimeStretch",
           "Transform", "db_to_gain", "filter_response_db"]


# --------------------------------------------------------------------------------------------------------------
# transforms


class Transform(ABC, Generic[P]):
    """One augmentation: validated ranges, parameters drawn from an explicit generator, pure ``apply``.

    Subclasses set ``name`` (the config key) and ``params_type``, draw values in :meth:`_draw_values` and
    implement :meth:`apply`.
    """

    name: ClassVar[str]
    params_type: ClassVar[type[Params]]

    def __init__(self, *, p: float) -> None:
        self.p = number_in(type(self).__name__, "p", p, 0.0, 1.0)

    def draw(self, rng: np.random.Generator) -> P:
        """Draw the params: the coin ``rng.random() < p`` first, then the values (always drawn)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"{type(self).__name__}.draw: rng must be a numpy.random.Generator, got {type(rng)}"
            )
        applied = float(rng.random()) < self.p
        values = self._draw_values(rng)
        return values if applied else self.params_type()  # type: ignore[return-value]

    @abstractmethod
    def _draw_values(self, rng: np.random.Generator) -> P:
        """The params when applied; must consume the same number of draws on every call."""

    def resolve(self, audio: np.ndarray, sample_rate: int, params: P) -> P:
        """Fill in params that depend on the audio (only loudness normalisation has any); default: unchanged."""
        return params

    @abstractmethod
    def apply(self, audio: np.ndarray, sample_rate: int, params: P) -> np.ndarray:
        """Apply ``params`` to ``audio`` ``(C, N)`` float32 at ``sample_rate`` Hz; pure, never in place."""

    def __call__(self, audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, P]:
        """Draw, resolve and apply in one go: returns ``(audio, resolved params)``."""
        params = self.resolve(audio, sample_rate, self.draw(rng))
        return self.apply(audio, sample_rate, params), params

    def config(self) -> dict[str, float]:
        """The constructor arguments (what :func:`from_config` takes under :attr:`name`)."""
        return dict(self._config())

    def _config(self) -> dict[str, float]:
        return {"p": self.p}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._config() == self._config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self._config().items())))


class Gain(Transform[GainParams]):
    """Multiply by ``10 ** (gain_db / 20)`` (as float32, see :func:`db_to_gain`), ``gain_db`` uniform in
    ``[min_db, max_db]`` dB, each in [-120, 120]."""

    name = "gain"
    params_type = GainParams

    def __init__(self, *, min_db: float = -6.0, max_db: float = 6.0, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.min_db = number_in("Gain", "min_db", min_db, -120.0, 120.0)
        self.max_db = number_in("Gain", "max_db", max_db, -120.0, 120.0)
        check_ordered("Gain", "min_db", self.min_db, "max_db", self.max_db)

    def _draw_values(self, rng: np.random.Generator) -> GainParams:
        return GainParams(gain_db=uniform(rng, self.min_db, self.max_db))

    def apply(self, audio: np.ndarray, sample_rate: int, params: GainParams) -> np.ndarray:
        check_audio(audio, "Gain")
        if params.gain_db == 0.0:
            return audio
        return audio * db_to_gain(params.gain_db)

    def _config(self) -> dict[str, float]:
        return {"min_db": self.min_db, "max_db": self.max_db, "p": self.p}


class LoudnessNormalize(Transform[LoudnessParams]):
    """Scale to a target integrated loudness (ITU-R BS.1770-4, :func:`stemdb.measure.integrated_loudness`).

    The target is drawn uniformly in ``[min_lufs, max_lufs]`` LUFS (each in [-70, 0]). :meth:`resolve` measures
    the audio and records the gain ``target - measured`` dB in ``loudness_gain_db``; :meth:`apply` uses a recorded
    gain as is (no measuring) and measures only when it is ``None``. Silent audio (loudness ``-inf``) gets gain 0
    and is returned unchanged. The result is not limited: peaks above full scale are the renderer's business.
    """

    name = "loudness"
    params_type = LoudnessParams

    def __init__(self, *, min_lufs: float = -30.0, max_lufs: float = -20.0, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.min_lufs = number_in("LoudnessNormalize", "min_lufs", min_lufs, -70.0, 0.0)
        self.max_lufs = number_in("LoudnessNormalize", "max_lufs", max_lufs, -70.0, 0.0)
        check_ordered("LoudnessNormalize", "min_lufs", self.min_lufs, "max_lufs", self.max_lufs)

    def _draw_values(self, rng: np.random.Generator) -> LoudnessParams:
        return LoudnessParams(
            loudness_target_lufs=uniform(rng, self.min_lufs, self.max_lufs), loudness_gain_db=None
        )

    def resolve(self, audio: np.ndarray, sample_rate: int, params: LoudnessParams) -> LoudnessParams:
        """Measure ``audio`` and fill ``loudness_gain_db`` (if a target is set and the gain is not yet known)."""
        if params.loudness_target_lufs is None or params.loudness_gain_db is not None:
            return params
        from stemdb.measure import integrated_loudness

        check_audio(audio, "LoudnessNormalize")
        lufs = integrated_loudness(audio, check_rate(sample_rate, "LoudnessNormalize"))
        gain_db = params.loudness_target_lufs - lufs if math.isfinite(lufs) else 0.0
        logger.debug(
            "loudness %.2f LUFS -> target %.2f LUFS: %+.3f dB", lufs, params.loudness_target_lufs, gain_db
        )
        return dataclasses.replace(params, loudness_gain_db=float(gain_db))

    def apply(self, audio: np.ndarray, sample_rate: int, params: LoudnessParams) -> np.ndarray:
        check_audio(audio, "LoudnessNormalize")
        if params.loudness_target_lufs is None:
            return audio
        gain_db = self.resolve(audio, sample_rate, params).loudness_gain_db
        if not gain_db:
            return audio
        return audio * db_to_gain(gain_db)

    def _config(self) -> dict[str, float]:
        return {"min_lufs": self.min_lufs, "max_lufs": self.max_lufs, "p": self.p}


def _signalsmith(kind: str, value: float, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Run audiomentations' signalsmith PitchShift (``kind="pitch"``) or TimeStretch with ``value`` fixed."""
    from audiomentations import PitchShift as _AmPitchShift
    from audiomentations import TimeStretch as _AmTimeStretch

    if kind == "pitch":
        impl = _AmPitchShift(min_semitones=value, max_semitones=value, method="signalsmith_stretch", p=1.0)
        impl.parameters = {"should_apply": True, "num_semitones": value}
    else:
        impl = _AmTimeStretch(
            min_rate=value, max_rate=value, leave_length_unchanged=False, method="signalsmith_stretch", p=1.0
        )
        impl.parameters = {"should_apply": True, "rate": value}
    # Frozen parameters with should_apply set: __call__ skips randomize_parameters, so python's `random` is unused.
    impl.freeze_parameters()
    out = impl(np.ascontiguousarray(audio, dtype=np.float32), sample_rate)
    return np.ascontiguousarray(out, dtype=np.float32)


class PitchShift(Transform[PitchParams]):
    """Shift the pitch by ``pitch_semitones`` (uniform in ``[min_semitones, max_semitones]``, each in [-24, 24]),
    keeping the duration; Signalsmith Stretch through audiomentations. 0 semitones returns the input."""

    name = "pitch"
    params_type = PitchParams

    def __init__(self, *, min_semitones: float = -2.0, max_semitones: float = 2.0, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.min_semitones = number_in("PitchShift", "min_semitones", min_semitones, -24.0, 24.0)
        self.max_semitones = number_in("PitchShift", "max_semitones", max_semitones, -24.0, 24.0)
        check_ordered("PitchShift", "min_semitones", self.min_semitones, "max_semitones", self.max_semitones)

    def _draw_values(self, rng: np.random.Generator) -> PitchParams:
        return PitchParams(pitch_semitones=uniform(rng, self.min_semitones, self.max_semitones))

    def apply(self, audio: np.ndarray, sample_rate: int, params: PitchParams) -> np.ndarray:
        check_audio(audio, "PitchShift")
        if params.pitch_semitones == 0.0 or audio.shape[1] == 0:
            return audio
        return _signalsmith("pitch", params.pitch_semitones, audio, check_rate(sample_rate, "PitchShift"))

    def _config(self) -> dict[str, float]:
        return {"min_semitones": self.min_semitones, "max_semitones": self.max_semitones, "p": self.p}


class TimeStretch(Transform[StretchParams]):
    """Change the tempo by ``stretch_rate`` (uniform in ``[min_rate, max_rate]``, each in [0.1, 10]), keeping
    the pitch; Signalsmith Stretch through audiomentations.

    The output has ``round(N / stretch_rate)`` samples (rate > 1 is shorter): it is neither padded nor cropped
    here, the renderer decides how to fit it to its window. Rate 1 returns the input.
    """

    name = "stretch"
    params_type = StretchParams

    def __init__(self, *, min_rate: float = 0.9, max_rate: float = 1.1, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.min_rate = number_in("TimeStretch", "min_rate", min_rate, 0.1, 10.0)
        self.max_rate = number_in("TimeStretch", "max_rate", max_rate, 0.1, 10.0)
        check_ordered("TimeStretch", "min_rate", self.min_rate, "max_rate", self.max_rate)

    def _draw_values(self, rng: np.random.Generator) -> StretchParams:
        return StretchParams(stretch_rate=uniform(rng, self.min_rate, self.max_rate))

    def apply(self, audio: np.ndarray, sample_rate: int, params: StretchParams) -> np.ndarray:
        check_audio(audio, "TimeStretch")
        rate = params.stretch_rate
        if rate == 1.0 or audio.shape[1] == 0:
            return audio
        if not (math.isfinite(rate) and rate > 0):
            raise InvalidParameterError(f"TimeStretch: stretch_rate={rate!r} must be > 0", key="stretch_rate")
        return _signalsmith("stretch", rate, audio, check_rate(sample_rate, "TimeStretch"))

    def _config(self) -> dict[str, float]:
        return {"min_rate": self.min_rate, "max_rate": self.max_rate, "p": self.p}


class ChannelSwap(Transform[ChannelSwapParams]):
    """Swap channels 0 and 1 (left and right) with probability ``p``; mono audio is returned unchanged."""

    name = "channel_swap"
    params_type = ChannelSwapParams

    def __init__(self, *, p: float = 0.5) -> None:
        super().__init__(p=p)

    def _draw_values(self, rng: np.random.Generator) -> ChannelSwapParams:
        return ChannelSwapParams(channel_swap=True)

    def apply(self, audio: np.ndarray, sample_rate: int, params: ChannelSwapParams) -> np.ndarray:
        check_audio(audio, "ChannelSwap")
        if not params.channel_swap or audio.shape[0] < 2:
            return audio
        order = np.arange(audio.shape[0])
        order[[0, 1]] = [1, 0]
        return audio[order]


class Polarity(Transform[PolarityParams]):
    """Multiply by -1 with probability ``p``."""

    name = "polarity"
    params_type = PolarityParams

    def __init__(self, *, p: float = 0.5) -> None:
        super().__init__(p=p)

    def _draw_values(self, rng: np.random.Generator) -> PolarityParams:
        return PolarityParams(polarity=-1)

    def apply(self, audio: np.ndarray, sample_rate: int, params: PolarityParams) -> np.ndarray:
        check_audio(audio, "Polarity")
        if params.polarity not in (1, -1):
            raise InvalidParameterError(
                f"Polarity: polarity={params.polarity!r} must be +1 or -1", key="polarity"
            )
        return audio if params.polarity == 1 else -audio


def _q_to_octaves(q: float) -> float:
    """Bandwidth in octaves of a filter of quality ``q`` (the peaking-EQ relation ``1/Q = 2 sinh(ln2 / 2 * BW)``)."""
    return 2.0 * math.asinh(1.0 / (2.0 * q)) / math.log(2.0)


def filter_response_db(freqs_hz: np.ndarray, freq_hz: float, gain_db: float, q: float) -> np.ndarray:
    """Magnitude response in dB of the spectral filter at ``freqs_hz``.

    ``H_dB(f) = gain_db * exp(-0.5 * (log2(f / freq_hz) / sigma) ** 2)``: a Gaussian bump (boost, ``gain_db > 0``)
    or dip (cut, ``gain_db < 0``) on a log2-frequency axis. Its full width at half the dB gain is the bandwidth
    ``BW`` octaves of a peaking filter of quality ``q`` (``1/q = 2 sinh(ln 2 / 2 * BW)``; q = 1 is 1.39 octaves),
    so ``sigma = BW / (2 sqrt(2 ln 2))`` octaves. DC (f = 0) is at 0 dB.
    """
    f = np.asarray(freqs_hz, dtype=np.float64)
    sigma = _q_to_octaves(q) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    with np.errstate(divide="ignore"):
        octaves = np.log2(f / freq_hz)
    return np.where(f > 0, gain_db * np.exp(-0.5 * (octaves / sigma) ** 2), 0.0)


class SpectralFilter(Transform[SpectralFilterParams]):
    """Random Gaussian-shaped boost or cut on a log-frequency axis (the random / "inverse Gaussian" frequency
    filtering of the singing-voice augmentation literature).

    Draws: centre ``filter_freq_hz`` log-uniform in ``[min_freq_hz, max_freq_hz]`` (each in (0, 48000]),
    ``filter_gain_db`` uniform in ``[min_gain_db, max_gain_db]`` (each in [-40, 40]), ``filter_q`` uniform in
    ``[min_q, max_q]`` (each in [0.1, 20]). Response: :func:`filter_response_db`, zero phase.

    Applied in the frequency domain over the whole clip: real FFT of the clip zero-padded by at least 100 ms (to a
    fast FFT length, so the filter's short non-causal impulse response does not wrap around), multiplied by the
    real gain ``10 ** (H_dB(f) / 20)``, inverse FFT, cropped to the input length, float32.
    """

    name = "spectral_filter"
    params_type = SpectralFilterParams
    _PAD_S: ClassVar[float] = 0.1

    def __init__(
        self,
        *,
        min_freq_hz: float = 150.0,
        max_freq_hz: float = 8000.0,
        min_gain_db: float = -10.0,
        max_gain_db: float = 10.0,
        min_q: float = 0.5,
        max_q: float = 2.0,
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        o = "SpectralFilter"
        self.min_freq_hz = number_in(o, "min_freq_hz", min_freq_hz, 0.0, 48000.0, lo_open=True)
        self.max_freq_hz = number_in(o, "max_freq_hz", max_freq_hz, 0.0, 48000.0, lo_open=True)
        check_ordered(o, "min_freq_hz", self.min_freq_hz, "max_freq_hz", self.max_freq_hz)
        self.min_gain_db = number_in(o, "min_gain_db", min_gain_db, -40.0, 40.0)
        self.max_gain_db = number_in(o, "max_gain_db", max_gain_db, -40.0, 40.0)
        check_ordered(o, "min_gain_db", self.min_gain_db, "max_gain_db", self.max_gain_db)
        self.min_q = number_in(o, "min_q", min_q, 0.1, 20.0)
        self.max_q = number_in(o, "max_q", max_q, 0.1, 20.0)
        check_ordered(o, "min_q", self.min_q, "max_q", self.max_q)

    def _draw_values(self, rng: np.random.Generator) -> SpectralFilterParams:
        freq = log_uniform(rng, self.min_freq_hz, self.max_freq_hz)
        gain = uniform(rng, self.min_gain_db, self.max_gain_db)
        q = uniform(rng, self.min_q, self.max_q)
        if gain == 0.0:  # a 0 dB filter is the neutral value
            return SpectralFilterParams()
        return SpectralFilterParams(filter_freq_hz=freq, filter_gain_db=gain, filter_q=q)

    def apply(self, audio: np.ndarray, sample_rate: int, params: SpectralFilterParams) -> np.ndarray:
        check_audio(audio, "SpectralFilter")
        if params.filter_gain_db == 0.0 or audio.shape[1] == 0:
            return audio
        if not (params.filter_freq_hz > 0 and params.filter_q > 0):
            raise InvalidParameterError(
                f"SpectralFilter: filter_freq_hz={params.filter_freq_hz!r} and filter_q={params.filter_q!r} "
                "must be > 0 when filter_gain_db != 0",
                key="filter_freq_hz",
            )
        rate = check_rate(sample_rate, "SpectralFilter")
        n = audio.shape[1]
        nfft = scipy.fft.next_fast_len(n + math.ceil(self._PAD_S * rate), real=True)
        spectrum = np.fft.rfft(audio, n=nfft, axis=1)
        response_db = filter_response_db(
            np.fft.rfftfreq(nfft, 1.0 / rate), params.filter_freq_hz, params.filter_gain_db, params.filter_q
        )
        gain = (10.0 ** (response_db / 20.0)).astype(spectrum.real.dtype)
        out = np.fft.irfft(spectrum * gain, n=nfft, axis=1)[:, :n]
        return np.ascontiguousarray(out, dtype=np.float32)

    def _config(self) -> dict[str, float]:
        return {
            "min_freq_hz": self.min_freq_hz,
            "max_freq_hz": self.max_freq_hz,
            "min_gain_db": self.min_gain_db,
            "max_gain_db": self.max_gain_db,
            "min_q": self.min_q,
            "max_q": self.max_q,
            "p": self.p,
        }


# --------------------------------------------------------------------------------------------------------------
# the registry

#: Config key -> transform class.
TRANSFORMS: dict[str, type[Transform[Any]]] = {
    cls.name: cls
    for cls in (PitchShift, TimeStretch, SpectralFilter, LoudnessNormalize, Gain, ChannelSwap, Polarity)
}
