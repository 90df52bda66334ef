"""Per-stem augmentation transforms, driven by recipes.

Every transform is a small class in three steps, so that a mixture's recipe alone decides its audio:

1. ``__init__`` validates the ranges (errors name the parameter, the value and the allowed range);
2. ``draw(rng)`` draws this transform's parameters from an explicit :class:`numpy.random.Generator` and returns a
   small frozen dataclass (the *params*); nothing else is random, and no global random state is ever read;
3. ``apply(audio, sample_rate, params)`` is a pure function of its inputs: the same ``(C, N)`` float32 audio and the
   same params give bit-identical output on every call, in any process.

Each params class has fields named exactly like the recipe columns they become (``fields()``, ``to_record()``,
``from_record()``), and a neutral value that means "not applied": ``gain_db = 0``, ``loudness_target_lufs = None``,
``pitch_semitones = 0``, ``stretch_rate = 1``, ``channel_swap = False``, ``polarity = +1``, ``filter_gain_db = 0``.
A neutral params object makes ``apply`` return its input unchanged.

Drawing: ``draw`` first draws the "is it applied" coin (``rng.random() < p``), then always draws the transform's
values whatever the coin says, so every transform consumes a fixed number of draws and changing one transform's
``p`` never shifts the values drawn by the transforms after it. Ranges with ``min == max`` give exactly that value.

Pitch shift and time stretch run audiomentations' ``PitchShift`` / ``TimeStretch`` with ``method=
"signalsmith_stretch"`` (the fastest CPU method it offers; the other one is librosa's phase vocoder). The drawn
value is written into the audiomentations transform and its parameters are frozen before it is called, so its own
``random`` module state never decides anything. Signalsmith output was checked to be bit-identical across calls
and processes (``tests/test_transforms.py``) and time-aligned with its input.

Arrays are ``(channels, samples)`` float32, full scale ±1.0. Transforms never modify their input in place; a
transform that is not applied (or is neutral) may return its input array itself.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import scipy.fft

from stemdb.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "CHAIN_ORDER",
    "RECORD_FIELDS",
    "TRANSFORMS",
    "ChannelSwap",
    "ChannelSwapParams",
    "Gain",
    "GainParams",
    "InvalidParameterError",
    "LoudnessNormalize",
    "LoudnessParams",
    "Params",
    "PitchShift",
    "PitchParams",
    "Polarity",
    "PolarityParams",
    "SpectralFilter",
    "SpectralFilterParams",
    "StemAugment",
    "Chain",
    "StretchParams",
    "TimeStretch",
    "Transform",
    "db_to_gain",
    "filter_response_db",
    "from_config",
    "neutral_record",
]


class InvalidParameterError(ConfigError, ValueError):
    """A transform parameter (or augmentation config key) is out of range; ``key`` names it."""


# --------------------------------------------------------------------------------------------------------------
# params


@dataclass(frozen=True)
class Params:
    """Base of the params dataclasses: fields map 1:1 to recipe columns; defaults are the neutral values."""

    #: fields that may hold ``None`` (a recipe null); every other field is a number or a bool.
    _optional: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """Recipe column names of this params class, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_record(self) -> dict[str, float | int | bool | None]:
        """The params as ``{column: value}`` (plain Python scalars)."""
        return {name: getattr(self, name) for name in self.fields()}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Params:
        """Rebuild params from a recipe row (a dict, or a pandas row); NaN in an optional column reads as None.

        Raises:
            InvalidParameterError: a column is missing or holds a value of the wrong kind.
        """
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in record:
                raise InvalidParameterError(
                    f"{cls.__name__}: recipe column {f.name!r} is missing (needed: {list(cls.fields())})",
                    key=f.name,
                )
            values[f.name] = _coerce(cls, f.name, record[f.name], f.default)
        return cls(**values)

    @property
    def applied(self) -> bool:
        """False when these are the neutral ("not applied") values."""
        return self != type(self)()


def _coerce(cls: type, name: str, value: Any, default: Any) -> Any:
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        if name in cls._optional:
            return None
        raise InvalidParameterError(
            f"{cls.__name__}: recipe column {name}={value!r} may not be null", key=name
        )
    try:
        if isinstance(default, bool):
            return bool(value)
        if isinstance(default, int):
            return int(value)
        return float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"{cls.__name__}: recipe column {name}={value!r} is not a number", key=name
        ) from exc


@dataclass(frozen=True)
class GainParams(Params):
    """``gain_db``: gain in dB (0 = not applied)."""

    gain_db: float = 0.0


@dataclass(frozen=True)
class LoudnessParams(Params):
    """``loudness_target_lufs``: drawn target in LUFS (None = not applied);
    ``loudness_gain_db``: the gain in dB that reaches it (None = not measured yet, see :meth:`Transform.resolve`).

    A recipe stores resolved params (both set), so re-rendering applies the gain without measuring again.
    """

    _optional: ClassVar[frozenset[str]] = frozenset({"loudness_target_lufs", "loudness_gain_db"})

    loudness_target_lufs: float | None = None
    loudness_gain_db: float | None = 0.0


@dataclass(frozen=True)
class PitchParams(Params):
    """``pitch_semitones``: pitch shift in semitones, duration unchanged (0 = not applied)."""

    pitch_semitones: float = 0.0


@dataclass(frozen=True)
class StretchParams(Params):
    """``stretch_rate``: time-stretch rate, pitch unchanged; > 1 is faster (shorter) (1 = not applied)."""

    stretch_rate: float = 1.0


@dataclass(frozen=True)
class ChannelSwapParams(Params):
    """``channel_swap``: swap the first two channels (left and right)."""

    channel_swap: bool = False


@dataclass(frozen=True)
class PolarityParams(Params):
    """``polarity``: +1 (unchanged) or -1 (inverted)."""

    polarity: int = 1


@dataclass(frozen=True)
class SpectralFilterParams(Params):
    """``filter_freq_hz`` centre (Hz), ``filter_gain_db`` boost (> 0) or cut (< 0) in dB, ``filter_q`` width.

    Neutral: ``filter_gain_db == 0`` (the other two are then 0.0 and ignored). See :func:`filter_response_db`.
    """

    filter_freq_hz: float = 0.0
    filter_gain_db: float = 0.0
    filter_q: float = 0.0

    @property
    def applied(self) -> bool:
        return self.filter_gain_db != 0.0


P = TypeVar("P", bound=Params)


# --------------------------------------------------------------------------------------------------------------
# helpers


def db_to_gain(gain_db: float) -> np.float32:
    """Linear gain of ``gain_db`` dB as float32: ``float32(10 ** (gain_db / 20))`` (computed in float64, rounded once)."""
    return np.float32(10.0 ** (float(gain_db) / 20.0))


def _check_audio(audio: np.ndarray, owner: str) -> np.ndarray:
    if not isinstance(audio, np.ndarray) or audio.ndim != 2:
        shape = getattr(audio, "shape", type(audio).__name__)
        raise ValueError(f"{owner}: audio must be a (channels, samples) array, got {shape}")
    if audio.dtype != np.float32:
        raise ValueError(f"{owner}: audio must be float32, got {audio.dtype}")
    return audio


def _check_rate(sample_rate: int, owner: str) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"{owner}: sample_rate={sample_rate!r} must be a positive integer (Hz)")
    return int(sample_rate)


def _number(owner: str, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """``value`` as a float, checked to lie in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    bracket = "(" if lo_open else "["
    allowed = f"a number in {bracket}{lo}, {hi}]"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidParameterError(f"{owner}: {name}={value!r} must be {allowed}", key=name)
    v = float(value)
    if not math.isfinite(v) or v > hi or (v <= lo if lo_open else v < lo):
        raise InvalidParameterError(f"{owner}: {name}={value!r} is out of range: must be {allowed}", key=name)
    return v


def _ordered(owner: str, lo_name: str, lo: float, hi_name: str, hi: float) -> None:
    if lo > hi:
        raise InvalidParameterError(f"{owner}: {lo_name}={lo} must be <= {hi_name}={hi}", key=lo_name)


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One draw, uniform in ``[lo, hi]``; exactly ``lo`` when ``lo == hi``."""
    u = float(rng.random())
    if lo == hi:
        return lo
    return min(hi, max(lo, lo + (hi - lo) * u))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One draw, uniform in ``log`` between ``lo > 0`` and ``hi``; exactly ``lo`` when ``lo == hi``."""
    u = float(rng.random())
    if lo == hi:
        return lo
    return min(hi, max(lo, math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)))


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
        self.p = _number(type(self).__name__, "p", p, 0.0, 1.0)

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
        self.min_db = _number("Gain", "min_db", min_db, -120.0, 120.0)
        self.max_db = _number("Gain", "max_db", max_db, -120.0, 120.0)
        _ordered("Gain", "min_db", self.min_db, "max_db", self.max_db)

    def _draw_values(self, rng: np.random.Generator) -> GainParams:
        return GainParams(gain_db=_uniform(rng, self.min_db, self.max_db))

    def apply(self, audio: np.ndarray, sample_rate: int, params: GainParams) -> np.ndarray:
        _check_audio(audio, "Gain")
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
        self.min_lufs = _number("LoudnessNormalize", "min_lufs", min_lufs, -70.0, 0.0)
        self.max_lufs = _number("LoudnessNormalize", "max_lufs", max_lufs, -70.0, 0.0)
        _ordered("LoudnessNormalize", "min_lufs", self.min_lufs, "max_lufs", self.max_lufs)

    def _draw_values(self, rng: np.random.Generator) -> LoudnessParams:
        return LoudnessParams(
            loudness_target_lufs=_uniform(rng, self.min_lufs, self.max_lufs), loudness_gain_db=None
        )

    def resolve(self, audio: np.ndarray, sample_rate: int, params: LoudnessParams) -> LoudnessParams:
        """Measure ``audio`` and fill ``loudness_gain_db`` (if a target is set and the gain is not yet known)."""
        if params.loudness_target_lufs is None or params.loudness_gain_db is not None:
            return params
        from stemdb.measure import integrated_loudness

        _check_audio(audio, "LoudnessNormalize")
        lufs = integrated_loudness(audio, _check_rate(sample_rate, "LoudnessNormalize"))
        gain_db = params.loudness_target_lufs - lufs if math.isfinite(lufs) else 0.0
        logger.debug(
            "loudness %.2f LUFS -> target %.2f LUFS: %+.3f dB", lufs, params.loudness_target_lufs, gain_db
        )
        return dataclasses.replace(params, loudness_gain_db=float(gain_db))

    def apply(self, audio: np.ndarray, sample_rate: int, params: LoudnessParams) -> np.ndarray:
        _check_audio(audio, "LoudnessNormalize")
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
        self.min_semitones = _number("PitchShift", "min_semitones", min_semitones, -24.0, 24.0)
        self.max_semitones = _number("PitchShift", "max_semitones", max_semitones, -24.0, 24.0)
        _ordered("PitchShift", "min_semitones", self.min_semitones, "max_semitones", self.max_semitones)

    def _draw_values(self, rng: np.random.Generator) -> PitchParams:
        return PitchParams(pitch_semitones=_uniform(rng, self.min_semitones, self.max_semitones))

    def apply(self, audio: np.ndarray, sample_rate: int, params: PitchParams) -> np.ndarray:
        _check_audio(audio, "PitchShift")
        if params.pitch_semitones == 0.0 or audio.shape[1] == 0:
            return audio
        return _signalsmith("pitch", params.pitch_semitones, audio, _check_rate(sample_rate, "PitchShift"))

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
        self.min_rate = _number("TimeStretch", "min_rate", min_rate, 0.1, 10.0)
        self.max_rate = _number("TimeStretch", "max_rate", max_rate, 0.1, 10.0)
        _ordered("TimeStretch", "min_rate", self.min_rate, "max_rate", self.max_rate)

    def _draw_values(self, rng: np.random.Generator) -> StretchParams:
        return StretchParams(stretch_rate=_uniform(rng, self.min_rate, self.max_rate))

    def apply(self, audio: np.ndarray, sample_rate: int, params: StretchParams) -> np.ndarray:
        _check_audio(audio, "TimeStretch")
        rate = params.stretch_rate
        if rate == 1.0 or audio.shape[1] == 0:
            return audio
        if not (math.isfinite(rate) and rate > 0):
            raise InvalidParameterError(f"TimeStretch: stretch_rate={rate!r} must be > 0", key="stretch_rate")
        return _signalsmith("stretch", rate, audio, _check_rate(sample_rate, "TimeStretch"))

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
        _check_audio(audio, "ChannelSwap")
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
        _check_audio(audio, "Polarity")
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
        self.min_freq_hz = _number(o, "min_freq_hz", min_freq_hz, 0.0, 48000.0, lo_open=True)
        self.max_freq_hz = _number(o, "max_freq_hz", max_freq_hz, 0.0, 48000.0, lo_open=True)
        _ordered(o, "min_freq_hz", self.min_freq_hz, "max_freq_hz", self.max_freq_hz)
        self.min_gain_db = _number(o, "min_gain_db", min_gain_db, -40.0, 40.0)
        self.max_gain_db = _number(o, "max_gain_db", max_gain_db, -40.0, 40.0)
        _ordered(o, "min_gain_db", self.min_gain_db, "max_gain_db", self.max_gain_db)
        self.min_q = _number(o, "min_q", min_q, 0.1, 20.0)
        self.max_q = _number(o, "max_q", max_q, 0.1, 20.0)
        _ordered(o, "min_q", self.min_q, "max_q", self.max_q)

    def _draw_values(self, rng: np.random.Generator) -> SpectralFilterParams:
        freq = _log_uniform(rng, self.min_freq_hz, self.max_freq_hz)
        gain = _uniform(rng, self.min_gain_db, self.max_gain_db)
        q = _uniform(rng, self.min_q, self.max_q)
        if gain == 0.0:  # a 0 dB filter is the neutral value
            return SpectralFilterParams()
        return SpectralFilterParams(filter_freq_hz=freq, filter_gain_db=gain, filter_q=q)

    def apply(self, audio: np.ndarray, sample_rate: int, params: SpectralFilterParams) -> np.ndarray:
        _check_audio(audio, "SpectralFilter")
        if params.filter_gain_db == 0.0 or audio.shape[1] == 0:
            return audio
        if not (params.filter_freq_hz > 0 and params.filter_q > 0):
            raise InvalidParameterError(
                f"SpectralFilter: filter_freq_hz={params.filter_freq_hz!r} and filter_q={params.filter_q!r} "
                "must be > 0 when filter_gain_db != 0",
                key="filter_freq_hz",
            )
        rate = _check_rate(sample_rate, "SpectralFilter")
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
# chain

#: Config key -> transform class.
TRANSFORMS: dict[str, type[Transform[Any]]] = {
    cls.name: cls
    for cls in (PitchShift, TimeStretch, SpectralFilter, LoudnessNormalize, Gain, ChannelSwap, Polarity)
}

#: The fixed order in which :func:`from_config` builds a chain, whatever the order of the config's keys: the
#: expensive resynthesis (pitch, stretch) and the filter work on the raw stem, loudness is measured after them,
#: then a relative gain, then the sign and channel changes. Draws follow the same order.
CHAIN_ORDER: tuple[str, ...] = tuple(TRANSFORMS)

#: Every recipe column a chain can write, in :data:`CHAIN_ORDER`.
RECORD_FIELDS: tuple[str, ...] = tuple(
    f for name in CHAIN_ORDER for f in TRANSFORMS[name].params_type.fields()
)


def neutral_record() -> dict[str, float | int | bool | None]:
    """Every column of :data:`RECORD_FIELDS` at its neutral ("not applied") value."""
    record: dict[str, float | int | bool | None] = {}
    for name in CHAIN_ORDER:
        record.update(TRANSFORMS[name].params_type().to_record())
    return record


class StemAugment:
    """An ordered chain of transforms for one kind of stem.

    :meth:`draw` draws every transform's params from one generator, in chain order (each transform consumes a
    fixed number of draws, see the module docstring); :meth:`run` applies them in the same order, resolving
    audio-dependent params (the loudness gain) on the way, and returns the resolved params for the recipe;
    :meth:`apply` re-renders from recorded params. A chain holds at most one transform of each kind, because
    each kind owns its recipe columns.
    """

    def __init__(self, transforms: Sequence[Transform[Any]] = ()) -> None:
        names = [t.name for t in transforms]
        for t in transforms:
            if not isinstance(t, Transform):
                raise TypeError(f"StemAugment: {t!r} is not a Transform")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidParameterError(
                f"StemAugment: transforms {dupes} appear more than once", key=dupes[0]
            )
        self.transforms: tuple[Transform[Any], ...] = tuple(transforms)

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any] | None) -> StemAugment:
        """Build a chain from ``{name: {argument: value}}`` (names in :data:`TRANSFORMS`), ordered by
        :data:`CHAIN_ORDER`. An empty or None mapping is the identity chain. ``{name: None}`` uses the defaults.

        Raises:
            InvalidParameterError: unknown transform or argument (named), or a value out of range.
        """
        if mapping is None:
            return cls(())
        if not isinstance(mapping, Mapping):
            raise InvalidParameterError(
                f"augmentation config must be a mapping of transform name -> arguments, got {mapping!r}"
            )
        unknown = sorted(set(mapping) - set(TRANSFORMS), key=str)
        if unknown:
            raise InvalidParameterError(
                f"unknown augmentation {unknown[0]!r}: allowed are {list(CHAIN_ORDER)}", key=str(unknown[0])
            )
        transforms = []
        for name in CHAIN_ORDER:
            if name not in mapping:
                continue
            transforms.append(_build(name, mapping[name]))
        return cls(transforms)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.transforms)

    def config(self) -> dict[str, dict[str, float]]:
        """The mapping :meth:`from_config` takes to rebuild this chain."""
        return {t.name: t.config() for t in self.transforms}

    def draw(self, rng: np.random.Generator) -> tuple[Params, ...]:
        """Draw every transform's params in chain order from ``rng``."""
        return tuple(t.draw(rng) for t in self.transforms)

    def run(
        self, audio: np.ndarray, sample_rate: int, params: Sequence[Params]
    ) -> tuple[np.ndarray, tuple[Params, ...]]:
        """Apply ``params`` in chain order, resolving audio-dependent ones; returns ``(audio, resolved params)``."""
        self._check_params(params)
        resolved = []
        for t, p in zip(self.transforms, params, strict=True):
            p = t.resolve(audio, sample_rate, p)
            audio = t.apply(audio, sample_rate, p)
            resolved.append(p)
        return audio, tuple(resolved)

    def apply(self, audio: np.ndarray, sample_rate: int, params: Sequence[Params]) -> np.ndarray:
        """Apply ``params`` (e.g. read back from a recipe) in chain order; pure."""
        return self.run(audio, sample_rate, params)[0]

    def __call__(
        self, audio: np.ndarray, sample_rate: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, tuple[Params, ...]]:
        """Draw from ``rng`` and run: returns ``(audio, resolved params)``."""
        return self.run(audio, sample_rate, self.draw(rng))

    def to_record(
        self, params: Sequence[Params], *, complete: bool = True
    ) -> dict[str, float | int | bool | None]:
        """Flatten params into recipe columns; with ``complete`` every column of :data:`RECORD_FIELDS` is present
        (transforms not in this chain at their neutral values), so all kinds share one recipe schema."""
        self._check_params(params)
        record = neutral_record() if complete else {}
        for p in params:
            record.update(p.to_record())
        return record

    def params_from_record(self, record: Mapping[str, Any]) -> tuple[Params, ...]:
        """This chain's params read back from a recipe row (columns as written by :meth:`to_record`)."""
        return tuple(t.params_type.from_record(record) for t in self.transforms)

    def _check_params(self, params: Sequence[Params]) -> None:
        if len(params) != len(self.transforms):
            raise ValueError(
                f"StemAugment: {len(params)} params for {len(self.transforms)} transforms {self.names}"
            )
        for t, p in zip(self.transforms, params, strict=True):
            if type(p) is not t.params_type:
                raise TypeError(
                    f"StemAugment: {t.name} expects {t.params_type.__name__}, got {type(p).__name__}"
                )

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f"StemAugment({list(self.transforms)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StemAugment) and other.transforms == self.transforms

    def __hash__(self) -> int:
        return hash(self.transforms)


#: Alias: a chain of transforms.
Chain = StemAugment


def _build(name: str, args: Any) -> Transform[Any]:
    cls = TRANSFORMS[name]
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise InvalidParameterError(
            f"augmentation {name!r}: arguments must be a mapping, got {args!r}", key=name
        )
    allowed = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = sorted(set(args) - set(allowed), key=str)
    if unknown:
        raise InvalidParameterError(
            f"augmentation {name!r}: unknown argument {unknown[0]!r}: allowed are {allowed}",
            key=f"{name}.{unknown[0]}",
        )
    try:
        return cls(**args)
    except InvalidParameterError as exc:
        raise InvalidParameterError(f"augmentation {name!r}: {exc}", key=f"{name}.{exc.key}") from exc


def from_config(mapping: Mapping[str, Any] | None) -> StemAugment:
    """Build a :class:`StemAugment` from a plain mapping; see :meth:`StemAugment.from_config`."""
    return StemAugment.from_config(mapping)
