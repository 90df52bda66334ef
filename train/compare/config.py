"""``compare.yaml``: what :func:`train.compare.run_comparison` compares, validated at load.

::

    project: data.yaml            # optional: its remix and train sections are every run's base (default: built-ins)
    catalog: work/catalog         # the training catalogue (default: the project's)
    test:                         # the held-out songs: a MUSDB18-HQ-layout folder ...
      root: data/heldout
      split: test                 #   only the tracks under this split folder (optional)
      tracks: []                  #   only these tracks (optional)
      # catalog_split: test       # ... or the catalogue's songs of this split (not both)
      crop_seconds: null          # score only each song's first seconds (optional)
    model: unet
    model_options: {levels: 5}
    budget: {steps: 400}          # or {minutes: 10}: the same training minutes per run, on the same device
    seeds: [0, 1, 2]
    variants: [real, naive, calibrated, tempo, mixed, pretrain]
    custom:                       # user variants: named overlays of the remix and train config
      loud_vocals: {base: calibrated, remix: {levels: {fallback_rel_lufs: {vocals: 0.0}}}}
    remix: {seconds: 3.0}         # overlay shared by every run
    train: {batch_size: 4, lr: 0.001, valid: {root: tests/data/musdb/test, every: 100}}
    scoring: {workers: 2, excerpt_seconds: 5.0}

Every key is validated; unknown keys and bad values are :class:`stemdb.errors.ConfigError` naming the key, the value
and what is allowed. Relative paths resolve against the YAML file's folder. The built-in variants are
:data:`train.compare.variants.BUILTIN_VARIANTS`; a variant's ``train`` overlay may not touch what every run of a
comparison shares (:data:`train.compare.variants.SHARED_TRAIN_KEYS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stemdb.config import config_error
from stemdb.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TestSet(_Strict):
    """The held-out songs: ``root`` (a MUSDB18-HQ-layout folder, ``split`` / ``tracks`` pick from it) or
    ``catalog_split`` (the catalogue's complete multitracks of that split); ``crop_seconds`` keeps their start."""

    __test__ = False  # not a pytest test class

    root: Path | None = None
    split: str | None = None
    tracks: tuple[str, ...] = ()
    catalog_split: str | None = None
    crop_seconds: float | None = Field(None, gt=0.0, le=3600.0)

    @model_validator(mode="after")
    def _one_source(self) -> TestSet:
        if (self.root is None) == (self.catalog_split is None):
            raise ValueError("give exactly one of root (a MUSDB18-HQ-layout folder) or catalog_split (e.g. test)")
        if self.catalog_split is not None and self.split is not None:
            raise ValueError("split picks a folder under root; with catalog_split leave it out")
        return self


class Budget(_Strict):
    """Every run's training budget: ``steps`` optimizer steps, or ``minutes`` of training time on the same device."""

    steps: int | None = Field(None, ge=1)
    minutes: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _one(self) -> Budget:
        if (self.steps is None) == (self.minutes is None):
            raise ValueError("give exactly one of steps or minutes")
        return self

    def split(self, fraction: float) -> tuple[Budget, Budget]:
        """The budget cut in two at ``fraction`` (the two phases of a pretrain variant); steps round, at least 1."""
        if self.steps is not None:
            first = min(max(1, round(self.steps * fraction)), max(1, self.steps - 1))
            return Budget(steps=first), Budget(steps=max(1, self.steps - first))
        assert self.minutes is not None
        return Budget(minutes=self.minutes * fraction), Budget(minutes=self.minutes * (1.0 - fraction))

    def describe(self) -> str:
        return f"{self.steps:,} optimizer steps" if self.steps is not None else f"{self.minutes:g} minutes of training"


class Pretrain(_Strict):
    """Train on variant ``on`` for ``fraction`` of the budget first, then on this variant's data for the rest,
    starting from those weights (a fresh optimizer and step count: ``stemdb train --init``)."""

    on: str
    fraction: float = Field(0.5, gt=0.0, lt=1.0)


class VariantDef(_Strict):
    """A variant: ``base`` (another variant whose overlays come first), its ``remix`` and ``train`` overlays, and
    an optional ``pretrain`` phase."""

    base: str | None = None
    description: str = ""
    remix: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    pretrain: Pretrain | None = None


class Scoring(_Strict):
    """Scoring: ``workers`` tracks at once (bounded by memory), ``excerpt_seconds`` of separated vocals per
    variant as audio on the report page (0: none), separation ``chunk_seconds`` (default: the training crop)."""

    workers: int = Field(2, ge=1, le=64)
    excerpt_seconds: float = Field(5.0, ge=0.0, le=30.0)
    chunk_seconds: float | None = Field(None, gt=0.0, le=600.0)


class CompareConfig(_Strict):
    """The whole ``compare.yaml`` (see the module docstring)."""

    project: Path | None = None
    catalog: Path | None = None
    test: TestSet
    model: str = "unet"
    model_options: dict[str, Any] = Field(default_factory=dict)
    budget: Budget
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = ("real", "naive", "calibrated")
    custom: dict[str, VariantDef] = Field(default_factory=dict)
    remix: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    scoring: Scoring = Scoring()

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("allowed: a non-empty list of distinct integers >= 0")
        if len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError("allowed: distinct integers >= 0")
        return v

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError("allowed: a non-empty list of distinct variant names")
        return v


def load_compare(path: str | Path) -> CompareConfig:
    """Read and validate ``compare.yaml``; relative paths resolve against its folder; variants are resolved once
    (:func:`train.compare.variants.check_variants`) so a bad overlay fails here, before any work.

    Raises:
        ConfigError: unreadable file, unknown keys or bad values, naming each key, the value and what is allowed.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError("compare config not found (stemdb compare --config FILE)", key="config", source=p)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=p) from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"must be a mapping of keys, got {type(raw).__name__}", source=p)
    return compare_config(raw, base=p.resolve().parent, source=p)


def compare_config(raw: Mapping[str, Any], *, base: Path, source: Path | None = None) -> CompareConfig:
    """Validate a mapping of ``compare.yaml``'s keys (relative paths against ``base``); see :func:`load_compare`."""
    from train.compare.variants import check_variants

    try:
        cfg = CompareConfig.model_validate(dict(raw))
    except ValidationError as exc:
        raise _with_allowed_keys(config_error(exc, what="invalid compare configuration", source=source),
                                 exc) from exc

    def fix(v: Path | None) -> Path | None:
        return None if v is None else (v if v.expanduser().is_absolute() else base / v).expanduser()

    test = cfg.test.model_copy(update={"root": fix(cfg.test.root)})
    train = dict(cfg.train)
    if isinstance(train.get("valid"), Mapping) and train["valid"].get("root") is not None:
        train["valid"] = {**train["valid"], "root": str(fix(Path(train["valid"]["root"])))}
    cfg = cfg.model_copy(update={"project": fix(cfg.project), "catalog": fix(cfg.catalog), "test": test,
                                 "train": train})
    check_variants(cfg)
    return cfg


def _with_allowed_keys(err: ConfigError, exc: ValidationError) -> ConfigError:
    """``err`` with, for each unknown key, the keys allowed where it stands."""
    extra = []
    for e in exc.errors():
        if e["type"] == "extra_forbidden":
            model: Any = CompareConfig
            for part in e["loc"][:-1]:
                field = model.model_fields.get(part) if isinstance(part, str) else None
                model = field.annotation if field is not None else None
                if not (isinstance(model, type) and issubclass(model, BaseModel)):
                    break
            if isinstance(model, type) and issubclass(model, BaseModel):
                where = ".".join(str(x) for x in e["loc"])
                extra.append(f"{where}: allowed keys there: {', '.join(model.model_fields)}")
    if not extra:
        return err
    return ConfigError(str(err) + "\n  " + "\n  ".join(extra), key=err.key)


__all__ = ["Budget", "CompareConfig", "Pretrain", "Scoring", "TestSet", "VariantDef", "compare_config",
           "load_compare"]
