"""The ``remix`` section of ``data.yaml`` (how mixtures are drawn and rendered) and the project config that types it.

:class:`ProjectConfig` is :class:`stemdb.config.StemdbConfig` with ``remix`` validated as a :class:`RemixConfig`:
what the remix, training and pipeline layers load (:func:`load_project`). Errors name the key (``remix.<key>``),
the value and what is allowed (:func:`stemdb.config.validate_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

from stemdb.config import MUSDB_TARGETS, StemdbConfig, load_config, validate_config
from stemdb.errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MixLevels(_Frozen):
    """Loudness-calibrated mixing: per-kind level relative to the mixture, in LU."""

    mode: Literal["calibrated", "uniform"] = "calibrated"
    spread_lu: float = Field(2.0, ge=0.0, le=20.0)
    fallback_rel_lufs: dict[str, float] = Field(
        default_factory=lambda: {"vocals": -3.0, "drums": -5.0, "bass": -8.0, "other": -5.0}
    )
    uniform_gain_db: tuple[float, float] = (-6.0, 3.0)
    mix_lufs: tuple[float, float] = (-16.0, -10.0)


class TempoConfig(_Frozen):
    """Tempo-aware mixing (off by default)."""

    enabled: bool = False
    max_rate_change: float = Field(0.08, gt=0.0, lt=0.5)


def _default_augment() -> dict[str, dict[str, dict[str, Any]]]:
    """The shipped ``data.yaml``'s ``remix.augment``: channel swap and polarity at p = 0.5 for every MUSDB target,
    pitch declared for vocals but off (tests/test_config.py holds every default equal to ``data.yaml``)."""
    def swap_flip() -> dict[str, dict[str, Any]]:
        return {"channel_swap": {"p": 0.5}, "polarity": {"p": 0.5}}

    return {"vocals": {"pitch": {"min_semitones": -2, "max_semitones": 2, "p": 0.0}, **swap_flip()},
            **{t: swap_flip() for t in ("drums", "bass", "other")}}


class KeyConfig(_Frozen):
    """Key-aware mixing (off by default; :mod:`augment.keys`): cross-song stems shifted by at most ``max_shift``
    semitones into a key compatible with the reference stem's; stems whose key confidence is below
    ``min_confidence`` (and drums) are left alone."""

    enabled: bool = False
    max_shift: int = Field(2, ge=0, le=6)
    min_confidence: float = Field(0.05, ge=0.0, le=1.0)


class StemFilters(_Frozen):
    """Which catalogue stems a remix may draw, by their quality columns (:mod:`stemdb.quality`, docs/quality.md).

    ``min_bandwidth_hz``: leave out stems whose effective bandwidth is below this (Hz; an MP3 at 128 kbps reads
    about 16-17 kHz, at 64 kbps about 11 kHz); ``max_bleed``: leave out stems whose bleed score is above this (dB
    over a typical clean stem of the kind; one number for every target, or per target, e.g. ``{vocals: 6}``);
    ``lossy``: ``exclude`` leaves out stems decoded from a lossy codec; ``dedupe``: leave out near-duplicates of a
    kept stem (exact copies, same content hash, are always left out). A stem whose measure is missing (null: too
    short or silent to measure) fails a filter that is set.
    """

    min_bandwidth_hz: float | None = Field(None, ge=0.0, le=96000.0)
    max_bleed: float | dict[str, float] | None = None
    lossy: Literal["allow", "exclude"] = "allow"
    dedupe: bool = True

    def is_default(self) -> bool:
        return self == StemFilters()


class RemixConfig(_Frozen):
    """How mixtures are drawn and rendered (see :mod:`augment.remix` and :mod:`augment.render`)."""

    targets: tuple[str, ...] = MUSDB_TARGETS
    kind_map: dict[str, str] = Field(default_factory=lambda: {"keys": "other", "guitar": "other"})
    mode: Literal["cross_song", "coherent", "mixed"] = "cross_song"
    coherent_weight: float = Field(0.0, ge=0.0, le=1.0)
    seconds: float = Field(6.0, gt=0.0, le=600.0)
    sample_rate: int = Field(44100, ge=8000, le=192000)
    channels: Literal[1, 2] = 2
    subtype: Literal["PCM_16", "PCM_24", "FLOAT"] = "PCM_16"
    short: Literal["pad", "loop"] = "pad"
    silent_prob: dict[str, float] = Field(default_factory=dict)
    valid_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    levels: MixLevels = MixLevels()
    tempo: TempoConfig = TempoConfig()
    augment: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=_default_augment)
    filters: StemFilters = StemFilters()
    key: KeyConfig = KeyConfig()

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # sections added after recipes were first written (filters, key) are left out of the dump while at their
        # defaults, so the config fingerprint of a remix that sets none of them is unchanged
        data = handler(self)
        if self.filters.is_default():
            data.pop("filters", None)
        if self.key == KeyConfig():
            data.pop("key", None)
        return data

    @field_validator("silent_prob")
    @classmethod
    def _probs(cls, v: dict[str, float]) -> dict[str, float]:
        for k, p in v.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"silent_prob.{k}={p} is not a probability in [0, 1]")
        return v


class ProjectConfig(StemdbConfig):
    """The whole ``data.yaml`` with its ``remix`` section typed (the ``train`` and ``pipelines`` sections stay
    mappings, validated by their layers)."""

    remix: RemixConfig = RemixConfig()  # type: ignore[assignment]


def load_project(config: str | Path | StemdbConfig | None = None, *,
                 overrides: dict[str, Any] | None = None) -> ProjectConfig:
    """``data.yaml`` as a :class:`ProjectConfig`: the file given, else ``./data.yaml`` when there is one, else the
    built-in defaults. A loaded :class:`StemdbConfig` is re-validated with its ``remix`` section typed.

    Raises:
        ConfigError: a missing or invalid file; the message names each bad key.
    """
    if isinstance(config, ProjectConfig) and not overrides:
        return config
    if isinstance(config, StemdbConfig):
        return validate_config(ProjectConfig, config.model_dump(mode="python"))
    if config is None:
        config = default_config_path()
    return load_config(config, overrides=overrides, schema=ProjectConfig)


def default_config_path(folder: str | Path | None = None) -> Path | None:
    """``FOLDER/data.yaml`` (default: the working folder's) when it is a file, else ``None`` (built-in defaults)."""
    p = Path(folder or ".") / "data.yaml"
    return p if p.is_file() else None


def config_source(config: str | Path | None = None, *, folder: str | Path | None = None) -> str:
    """In words, which config :func:`load_project` (``config``) uses: the file given, ``FOLDER/data.yaml``, or
    ``built-in defaults (no data.yaml in FOLDER)``. The built-in defaults are the shipped ``data.yaml``'s, without
    its ``sources`` (tests/test_config.py holds every other key equal)."""
    if config is not None:
        return str(config)
    p = default_config_path(folder)
    where = Path(folder or ".").resolve()
    return str(where / "data.yaml") if p is not None else f"built-in defaults (no data.yaml in {where})"


def remix_config(config: str | Path | StemdbConfig | RemixConfig | Mapping[str, Any] | None) -> RemixConfig:
    """The ``remix`` section from a ``data.yaml`` path, a loaded config, a ``RemixConfig``, a plain mapping of the
    section, or ``None`` (the defaults).

    Raises:
        ConfigError: naming ``remix.<key>``, the value and what is allowed; or an unsupported ``config``.
    """
    if config is None:
        return RemixConfig()
    if isinstance(config, RemixConfig):
        return config
    if isinstance(config, StemdbConfig):
        section = config.remix
        return section if isinstance(section, RemixConfig) else remix_section(section)
    if isinstance(config, Mapping):
        return remix_section(config)
    if isinstance(config, str | Path):
        return load_project(config).remix
    raise ConfigError(f"config={config!r} is not allowed: a data.yaml path, StemdbConfig, RemixConfig, a "
                      "mapping of the remix section, or None", key="config")


def remix_section(mapping: Mapping[str, Any]) -> RemixConfig:
    """Validate a mapping of the ``remix`` section; errors name ``remix.<key>``."""
    return validate_config(RemixConfig, mapping, prefix="remix.", what="invalid remix configuration")


__all__ = ["KeyConfig", "MixLevels", "ProjectConfig", "RemixConfig", "StemFilters", "TempoConfig",
           "config_source", "default_config_path", "load_project", "remix_config", "remix_section"]
