"""A target's augmentation chain: the transforms of ``data.yaml``'s ``remix.augment.<target>`` in a fixed order.

:func:`from_config` builds a :class:`StemAugment` from a plain mapping (``{pitch: {...}, gain: {...}}``); its
``draw`` / ``apply`` follow :data:`CHAIN_ORDER`, and its params map 1:1 to recipe columns (:data:`RECORD_FIELDS`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from augment.params import InvalidParameterError, Params
from augment.transforms import TRANSFORMS, Transform

__all__ = ["CHAIN_ORDER", "RECORD_FIELDS", "Chain", "StemAugment", "from_config", "neutral_record"]


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
