"""The parameters of the per-stem transforms: one small frozen dataclass per transform, whose fields are named exactly
like the recipe columns they become, with neutral defaults ("not applied"); and the shared validation and drawing
helpers of :mod:`augment.transforms`.

Each params class has fields named exactly like the recipe columns they become (``fields()``, ``to_record()``,
``from_record()``), and a neutral value that means "not applied": ``gain_db = 0``, ``loudness_target_lufs = None``,
``pitch_semitones = 0``, ``stretch_rate = 1``, ``channel_swap = False``, ``polarity = +1``, ``filter_gain_db = 0``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from stemdb.errors import ConfigError


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


def check_audio(audio: np.ndarray, owner: str) -> np.ndarray:
    if not isinstance(audio, np.ndarray) or audio.ndim != 2:
        shape = getattr(audio, "shape", type(audio).__name__)
        raise ValueError(f"{owner}: audio must be a (channels, samples) array, got {shape}")
    if audio.dtype != np.float32:
        raise ValueError(f"{owner}: audio must be float32, got {audio.dtype}")
    return audio


def check_rate(sample_rate: int, owner: str) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"{owner}: sample_rate={sample_rate!r} must be a positive integer (Hz)")
    return int(sample_rate)


def number_in(owner: str, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """``value`` as a float, checked to lie in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    bracket = "(" if lo_open else "["
    allowed = f"a number in {bracket}{lo}, {hi}]"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidParameterError(f"{owner}: {name}={value!r} must be {allowed}", key=name)
    v = float(value)
    if not math.isfinite(v) or v > hi or (v <= lo if lo_open else v < lo):
        raise InvalidParameterError(f"{owner}: {name}={value!r} is out of range: must be {allowed}", key=name)
    return v


def check_ordered(owner: str, lo_name: str, lo: float, hi_name: str, hi: float) -> None:
    if lo > hi:
        raise InvalidParameterError(f"{owner}: {lo_name}={lo} must be <= {hi_name}={hi}", key=lo_name)


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One draw, uniform in ``[lo, hi]``; exactly ``lo`` when ``lo == hi``."""
    u = float(rng.random())
    if lo == hi:
        return lo
    return min(hi, max(lo, lo + (hi - lo) * u))


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One draw, uniform in ``log`` between ``lo > 0`` and ``hi``; exactly ``lo`` when ``lo == hi``."""
    u = float(rng.random())
    if lo == hi:
        return lo
    return min(hi, max(lo, math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)))
