"""Project configuration: ``data.yaml`` loaded into validated, frozen pydantic models.

Every section of ``data.yaml`` has a model here, so a typo or a bad value fails at load with a message that names
the key, the value and what is allowed. Relative paths are resolved against the folder that holds the YAML file.
This module imports neither torch nor prefect.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stemdb.errors import ConfigError

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
    holding the file), or ``regex:<pattern>`` (first group of the pattern on the file stem).
    """

    type: Literal["stems"] = "stems"
    kinds: dict[str, str] = Field(default_factory=dict)
    # every ending stemdb.audio reads except .mp4/.m4b (video, audiobooks; multitrack .stem.mp4 is the musdb layout)
    globs: tuple[str, ...] = ("**/*.wav", "**/*.flac", "**/*.mp3", "**/*.ogg", "**/*.oga", "**/*.opus", "**/*.aif",
                              "**/*.aiff", "**/*.m4a", "**/*.aac", "**/*.webm", "**/*.weba", "**/*.mka", "**/*.wma")
    song: str = "file"
    split: Split = "train"

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


class SourceConfig(_Frozen):
    """One source of audio: a named root folder with a layout, origin and licence."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    root: Path
    layout: Annotated[StemsLayout | MusdbLayout, Field(discriminator="type")]
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


class RemixConfig(_Frozen):
    """How mixtures are drawn and rendered (see augment/)."""

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
    augment: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)

    @field_validator("silent_prob")
    @classmethod
    def _probs(cls, v: dict[str, float]) -> dict[str, float]:
        for k, p in v.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"silent_prob.{k}={p} is not a probability in [0, 1]")
        return v


class StemdbConfig(_Frozen):
    """The whole ``data.yaml``."""

    catalog: Path = Path("catalog")
    sources: tuple[SourceConfig, ...] = ()
    ingest: IngestConfig = IngestConfig()
    remix: RemixConfig = RemixConfig()
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


def load_config(path: str | Path | None = None, *, overrides: dict[str, Any] | None = None) -> StemdbConfig:
    """Load and validate ``data.yaml``; ``None`` gives the built-in defaults (no sources).

    Relative ``catalog`` and source ``root`` paths are resolved against the YAML file's folder.

    Raises:
        ConfigError: unreadable YAML, unknown keys or bad values; the message names each offending key.
    """
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("config file not found", source=p)
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML ({exc})", source=p) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"top level must be a mapping, got {type(loaded).__name__}", source=p)
        raw = loaded or {}
        base = p.resolve().parent
    if overrides:
        raw = _deep_merge(raw, overrides)
    try:
        cfg = StemdbConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc), source=path, key=_first_key(exc)) from exc
    return _resolve_paths(cfg, base)


def _resolve_paths(cfg: StemdbConfig, base: Path) -> StemdbConfig:
    def fix(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    sources = tuple(s.model_copy(update={"root": fix(s.root)}) for s in cfg.sources)
    return cfg.model_copy(update={"catalog": fix(cfg.catalog), "sources": sources})


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _loc(err: dict[str, Any]) -> str:
    parts: list[str] = []
    for item in err["loc"]:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("stems", "musdb", "function-after[_sum(), HashSplit]") or str(item).startswith(
            ("function-", "literal[", "union[")
        ):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _first_key(exc: ValidationError) -> str | None:
    errs = exc.errors()
    return _loc(errs[0]) if errs else None


def _explain(exc: ValidationError) -> str:
    lines = []
    seen: set[str] = set()
    for err in exc.errors():
        key = _loc(err)
        if err["type"] == "extra_forbidden":
            msg = f"{key}: unknown key"
        elif err["type"] == "literal_error":
            allowed = err.get("ctx", {}).get("expected", "")
            msg = f"{key}: value {err.get('input')!r} is not allowed; allowed: {allowed}"
        else:
            msg = f"{key}: {err['msg']} (got {err.get('input')!r})"
        if msg not in seen:
            seen.add(msg)
            lines.append(msg)
    return "invalid configuration:\n  " + "\n  ".join(lines)
