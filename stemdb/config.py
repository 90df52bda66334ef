"""Project configuration: ``data.yaml`` loaded into validated, frozen pydantic models.

The catalogue's sections (``catalog``, ``sources``, ``ingest``) have their models here; each higher layer owns
the models of its own section (``augment.config``: ``remix``; ``train.config``: ``train``; ``pipelines.params``:
``pipelines``) and :func:`load_config` takes the schema of the layer that loads it, so a typo or a bad value fails
at load with a message that names the key, the value and what is allowed. :func:`validate_config` /
:func:`config_error` are the one place where a pydantic validation error becomes a :class:`ConfigError`. Relative
paths are resolved against the folder that holds the YAML file. This module imports neither torch nor prefect.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stemdb.errors import ConfigError
from stemdb.taxonomy import Taxonomy

#: The MUSDB18 target kinds, in the order MUSDB18 writes them.
MUSDB_TARGETS: tuple[str, ...] = ("vocals", "drums", "bass", "other")
#: Kinds stemdb knows out of the box; users may add their own kinds by naming them in ``kinds`` rules.
DEFAULT_KINDS: tuple[str, ...] = ("vocals", "drums", "bass", "keys", "guitar", "other", "mixture")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HashSplit(_Frozen):
    """Deterministic split by a hash of the song id: ``valid`` and ``test`` are fractions in [0, 1)."""

    valid: float = Field(0.0, ge=0.0, lt=1.0)
    test: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _sum(self) -> HashSplit:
        if self.valid + self.test >= 1.0:
            raise ValueError(f"valid + test must be < 1 (got {self.valid} + {self.test})")
        return self


Split = Literal["train", "valid", "test"] | HashSplit


class StemsLayout(_Frozen):
    """Rules for a folder of loose single stems.

    ``kinds`` maps a folder name (any level below the root, case-insensitive) to a kind; the first matching folder
    from the top wins; a file under no mapped folder takes the name of its first folder level as its kind.
    ``song`` says how files are grouped into songs: ``file`` (each file is its own song), ``parent`` (the folder
    holding the file), or ``regex:<pattern>`` (first group of the pattern on the file stem). ``names``: the kind
    comes from the taxonomy's file-name rules first (``Artist - Title (Acapella).mp3`` is vocals), then from a
    folder in ``kinds``; a file neither maps is unmapped (listed, not ingested).
    """

    type: Literal["stems"] = "stems"
    kinds: dict[str, str] = Field(default_factory=dict)
    # every ending stemdb.audio reads except .mp4/.m4b (video, audiobooks; multitrack .stem.mp4 is the musdb layout)
    globs: tuple[str, ...] = ("**/*.wav", "**/*.flac", "**/*.mp3", "**/*.ogg", "**/*.oga", "**/*.opus", "**/*.aif",
                              "**/*.aiff", "**/*.m4a", "**/*.aac", "**/*.webm", "**/*.weba", "**/*.mka", "**/*.wma")
    song: str = "file"
    split: Split = "train"
    names: bool = False

    @field_validator("song")
    @classmethod
    def _song(cls, v: str) -> str:
        if v in ("file", "parent") or v.startswith("regex:"):
            return v
        raise ValueError(f"song={v!r} is not allowed; use 'file', 'parent' or 'regex:<pattern>'")


class MusdbLayout(_Frozen):
    """MUSDB18 layout: ``train/`` and ``test/`` folders of track folders (HQ) or of ``.stem.mp4`` files.

    ``validation``: tracks of MUSDB18's official 14-track validation split get split ``valid`` when true.
    """

    type: Literal["musdb"] = "musdb"
    validation: bool = True
    stems: tuple[str, ...] = ("mixture", "vocals", "drums", "bass", "other")


class _TracksLayout(_Frozen):
    """What the track layouts share (see :mod:`stemdb.layouts`).

    ``kinds``: the kinds a song's tracks are summed into (one stem per kind); a track whose taxonomy kind is not
    listed goes to ``other`` when ``other`` is listed, and is unmapped otherwise. ``mixture``: keep and measure
    the song's mixture file when there is one. ``split``: as for loose stems (the song is the folder).
    """

    kinds: tuple[str, ...] = MUSDB_TARGETS
    mixture: bool = True
    split: Split = "train"

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or "mixture" in v or len(set(v)) != len(v):
            raise ValueError(f"kinds={list(v)} must be distinct kinds, not empty, without 'mixture'")
        return v


class MultitrackLayout(_TracksLayout):
    """Studio sessions: one folder per song holding one file per recorded track (any depth below it), each
    track's kind from the taxonomy's file-name rules; a root holding audio files itself is one song."""

    type: Literal["multitrack"] = "multitrack"


class MedleydbLayout(_TracksLayout):
    """MedleyDB: ``<song>/<song>_METADATA.yaml`` with stems, their instrument labels and raw tracks; stems from
    ``<song>_STEMS/`` when ``use_stems`` and present, else built from ``<song>_RAW/``."""

    type: Literal["medleydb"] = "medleydb"
    use_stems: bool = True


class MoisesdbLayout(_TracksLayout):
    """MoisesDB: ``<track>/data.json`` listing stems (``stemName``) and their source tracks
    (``<track>/<stemName>/<id>.<extension>``)."""

    type: Literal["moisesdb"] = "moisesdb"


class SlakhLayout(_TracksLayout):
    """Slakh2100: ``<track>/metadata.yaml`` (stems with ``inst_class``, ``is_drum``, ``audio_rendered``),
    ``<track>/stems/<Sxx>.flac`` and ``<track>/mix.flac``."""

    type: Literal["slakh"] = "slakh"


TRACK_LAYOUTS = (MultitrackLayout, MedleydbLayout, MoisesdbLayout, SlakhLayout)
Layout = StemsLayout | MusdbLayout | MultitrackLayout | MedleydbLayout | MoisesdbLayout | SlakhLayout


class SourceConfig(_Frozen):
    """One source of audio: a named root folder with a layout, origin and licence."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    root: Path
    layout: Annotated[Layout, Field(discriminator="type")]
    origin: str = "unknown"
    licence: str = "unknown"
    max_channels: int = Field(2, ge=1, le=64)


class IngestConfig(_Frozen):
    """Measurement and scanning settings."""

    silence_db: float = Field(-45.0, le=0.0)
    silence_window_s: float = Field(0.1, gt=0.0, le=10.0)
    clip_level: float = Field(0.999, gt=0.0, le=1.0)
    tempo: bool = True
    workers: int = Field(0, ge=0, description="process-pool size; 0 = one per core")
    batch_size: int = Field(16, ge=1, description="files measured between two catalogue commits")
    taxonomy: Taxonomy = Taxonomy()


class StemdbConfig(_Frozen):
    """The whole ``data.yaml`` as the catalogue layer sees it: ``catalog``, ``sources`` and ``ingest`` validated
    here; the sections of the layers above (``remix``, ``train``, ``pipelines``, ...) kept as mappings, validated by
    their owners (:class:`augment.config.ProjectConfig` types ``remix``; ``train.config.train_config``,
    ``pipelines.params.pipelines_config`` the others)."""

    catalog: Path = Path("work/catalog")  # as the shipped data.yaml (tests/test_config.py holds them equal)
    sources: tuple[SourceConfig, ...] = ()
    ingest: IngestConfig = IngestConfig()
    remix: dict[str, Any] = Field(default_factory=dict)
    stream: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    pipelines: dict[str, Any] = Field(default_factory=dict)
    report: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_names(self) -> StemdbConfig:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sources: names must be unique, repeated: {dupes}")
        return self

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise ConfigError(f"sources: no source named {name!r} (have {[s.name for s in self.sources]})", key=name)

    def fingerprint(self, section: str) -> str:
        """Short hash of one resolved section (names derived outputs; see DESIGN.md)."""
        return fingerprint_of(self.model_dump(mode="json")[section])


def fingerprint_of(data: Any) -> str:
    """Short hash (16 hex characters) of JSON-able data, key order ignored; a model's: ``model_dump(mode="json")``."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return hashlib.blake2b(json.dumps(data, sort_keys=True).encode(), digest_size=8).hexdigest()


C = TypeVar("C", bound=StemdbConfig)
M = TypeVar("M", bound=BaseModel)


def load_config(path: str | Path | None = None, *, overrides: dict[str, Any] | None = None,
                schema: type[C] = StemdbConfig) -> C:  # type: ignore[assignment]
    """Load and validate ``data.yaml`` into ``schema``; ``None`` gives the built-in defaults (no sources).

    ``schema``: :class:`StemdbConfig`, or a subclass of a higher layer that types more sections
    (:class:`augment.config.ProjectConfig`). Relative ``catalog`` and source ``root`` paths are resolved against
    the YAML file's folder.

    Raises:
        ConfigError: unreadable YAML, unknown keys or bad values; the message names each offending key.
    """
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        raw = _read_yaml(Path(path))
        base = Path(path).resolve().parent
    if overrides:
        raw = _deep_merge(raw, overrides)
    cfg = validate_config(schema, raw, source=path)
    return _resolve_paths(cfg, base)


def _read_yaml(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError("config file not found", source=p)
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({exc})", source=p) from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"top level must be a mapping, got {type(loaded).__name__}", source=p)
    return loaded or {}


def _resolve_paths(cfg: C, base: Path) -> C:
    def fix(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    sources = tuple(s.model_copy(update={"root": fix(s.root)}) for s in cfg.sources)
    return cfg.model_copy(update={"catalog": fix(cfg.catalog), "sources": sources})


def _deep_merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def merge_overrides(mapping: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``mapping`` with ``overrides`` on top (nested mappings merged, ``None`` override values ignored)."""
    return _deep_merge(dict(mapping or {}), {k: v for k, v in (overrides or {}).items() if v is not None})


# --------------------------------------------------------------------------------------------------------------
# the one place a pydantic validation error becomes a ConfigError


def validate_config(model: type[M], data: Mapping[str, Any], *, prefix: str = "",
                    what: str = "invalid configuration", source: str | Path | None = None) -> M:
    """``model.model_validate(data)``; a failure becomes :func:`config_error`'s ConfigError."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise config_error(exc, prefix=prefix, what=what, source=source) from exc


def config_error(exc: ValidationError, *, prefix: str = "", what: str = "invalid configuration",
                 source: str | Path | None = None) -> ConfigError:
    """A pydantic validation error as the project's :class:`ConfigError`: one line per problem naming the key
    (``prefix`` + dotted path, list items as ``[i]``), the value given and what is allowed; ``key`` is the first.

    ``what`` heads the message (a config section, or a flow name for flow parameters).
    """
    lines = list(dict.fromkeys(_line(err, prefix) for err in exc.errors()))
    errs = exc.errors()
    first = prefix + _loc(errs[0]) if errs else None
    return ConfigError(f"{what}:\n  " + "\n  ".join(lines), key=first, source=source)


def _line(err: Mapping[str, Any], prefix: str) -> str:
    key = prefix + _loc(err)
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (got {value!r})"
    if err["type"] == "literal_error":
        return f"{key}={value!r} is not allowed; allowed: {err.get('ctx', {}).get('expected', '')}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{key}={value!r} is not allowed" + ("; " if msg.startswith("allowed") else ": ") + msg


def _loc(err: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for item in err["loc"]:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("stems", "musdb", "multitrack", "medleydb", "moisesdb", "slakh") or str(item).startswith(("function-", "literal[", "union[")):
            continue  # pydantic's names of union members and validators, not keys of data.yaml
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"
