"""The variants of a comparison: the built-in ones (all defined here, as overlays of the remix and train config),
the user's named overlays, and the runs they expand to.

A variant is a :class:`train.compare.config.VariantDef`: optional ``base`` (a variant whose overlays come first),
a ``remix`` overlay, a ``train`` overlay, and optionally ``pretrain`` (train on another variant for a fraction of
the budget first, then on this one from those weights). Every run starts from the project's ``remix`` and
``train`` sections (``project``: a ``data.yaml``), then ``compare.yaml``'s shared ``remix`` / ``train`` overlays,
then the variant's chain, then what every run of a comparison shares (model, options, seed, budget).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augment.config import ProjectConfig, RemixConfig, load_project
from stemdb.config import validate_config
from stemdb.errors import ConfigError
from train.compare.config import Budget, CompareConfig, Pretrain, VariantDef
from train.config import train_config

#: The built-in variants (the report's experiment). ``real`` is the "MUSDB18 only" baseline every other variant is
#: compared with.
BUILTIN_VARIANTS: dict[str, VariantDef] = {
    "real": VariantDef(description="coherent mixtures of the catalogue's real multitracks only",
                       remix={"mode": "coherent"}),
    "naive": VariantDef(description="cross-song remixes, uniform random gains (Open-Unmix style)",
                        remix={"mode": "cross_song", "levels": {"mode": "uniform"}, "tempo": {"enabled": False}}),
    "calibrated": VariantDef(description="cross-song remixes, levels from the real multitracks' balance",
                             remix={"mode": "cross_song", "levels": {"mode": "calibrated"},
                                    "tempo": {"enabled": False}}),
    "tempo": VariantDef(base="calibrated", description="calibrated and tempo-aware cross-song remixes",
                        remix={"tempo": {"enabled": True}}),
    "mixed": VariantDef(base="calibrated", description="real and calibrated remixed mixtures, half each",
                        remix={"mode": "mixed", "coherent_weight": 0.5}),
    "pretrain": VariantDef(base="real", description="calibrated remixes for half the budget, then real multitracks",
                           pretrain=Pretrain(on="calibrated", fraction=0.5)),
}

#: ``train`` keys every run of a comparison shares: a variant's overlay may not set them (equal budgets).
SHARED_TRAIN_KEYS: tuple[str, ...] = ("model", "model_options", "steps", "max_minutes", "seed", "valid",
                                      "batch_size", "accumulate", "seconds", "sample_rate", "mono", "device",
                                      "precision")
#: ``train`` keys that have their own ``compare.yaml`` key.
OWN_KEYS: dict[str, str] = {"model": "model", "model_options": "model_options", "steps": "budget.steps",
                            "max_minutes": "budget.minutes", "seed": "seeds"}


@dataclass(frozen=True)
class Phase:
    """One training run: its folder (relative to the comparison's ``runs/``), remix config, ``train`` overrides,
    budget, and the run whose weights it starts from (``None``: fresh weights from the seed)."""

    folder: str
    remix: RemixConfig
    train: dict[str, Any]
    budget: Budget
    init_from: str | None = None


@dataclass(frozen=True)
class RunSpec:
    """A variant trained from one seed: one phase, or two for a pretrain variant (the last one is scored)."""

    variant: str
    seed: int
    phases: tuple[Phase, ...]

    @property
    def folder(self) -> str:
        return self.phases[-1].folder

    @property
    def key(self) -> str:
        return f"{self.variant}/seed-{self.seed}"


def variant_defs(cfg: CompareConfig) -> dict[str, VariantDef]:
    """The built-in variants and the user's (``custom``), by name.

    Raises:
        ConfigError: a custom variant reuses a built-in name.
    """
    clash = sorted(set(cfg.custom) & set(BUILTIN_VARIANTS))
    if clash:
        raise ConfigError(f"custom.{clash[0]}: a built-in variant has this name; name yours differently (built-in: "
                          f"{', '.join(BUILTIN_VARIANTS)})", key=f"custom.{clash[0]}")
    return {**BUILTIN_VARIANTS, **cfg.custom}


def project_of(cfg: CompareConfig) -> ProjectConfig:
    """The base project (``cfg.project``'s ``data.yaml``, else the built-in defaults) with ``cfg.catalog``."""
    project = load_project(cfg.project) if cfg.project is not None else ProjectConfig()
    if cfg.catalog is not None:
        project = project.model_copy(update={"catalog": cfg.catalog})
    return project


def run_specs(cfg: CompareConfig, project: ProjectConfig | None = None) -> list[RunSpec]:
    """Every (variant, seed) run of the comparison in order: variants as listed, seeds as listed.

    Raises:
        ConfigError: an unknown variant, a ``base`` cycle, a bad overlay, or an overlay of a shared key.
    """
    project = project or project_of(cfg)
    defs = variant_defs(cfg)
    specs = []
    for i, name in enumerate(cfg.variants):
        if name not in defs:
            raise ConfigError(f"variants[{i}]={name!r} is not allowed; allowed: {', '.join(defs)} (built-in or "
                              "defined under custom)", key=f"variants[{i}]")
        for seed in cfg.seeds:
            specs.append(RunSpec(name, seed, _phases(cfg, project, defs, name, seed)))
    return specs


def check_variants(cfg: CompareConfig) -> None:
    """Resolve every variant's runs once (see :func:`run_specs`); raises ConfigError naming the key."""
    for key in cfg.train:
        if key in OWN_KEYS:
            raise ConfigError(f"train.{key}: set it with compare.yaml's {OWN_KEYS[key]!r} key", key=f"train.{key}")
    run_specs(cfg.model_copy(update={"seeds": cfg.seeds[:1]}))


def needs_multitracks(remix: RemixConfig) -> bool:
    """True when the remix config draws coherent mixtures of real multitracks."""
    return remix.mode == "coherent" or (remix.mode == "mixed" and remix.coherent_weight > 0.0)


def _phases(cfg: CompareConfig, project: ProjectConfig, defs: Mapping[str, VariantDef], name: str,
            seed: int) -> tuple[Phase, ...]:
    remix, train, pre = _resolve(defs, name, ())
    folder = f"{name}/seed-{seed}"
    if pre is None:
        return (_phase(cfg, project, name, folder, remix, train, seed, cfg.budget),)
    if pre.on not in defs:
        raise ConfigError(f"variant {name!r}: pretrain.on={pre.on!r} is not allowed; allowed: {', '.join(defs)}",
                          key=f"custom.{name}.pretrain.on")
    pre_remix, pre_train, nested = _resolve(defs, pre.on, ())
    if nested is not None:
        raise ConfigError(f"variant {name!r}: pretrain.on={pre.on!r} has a pretrain phase itself; allowed: a "
                          "variant without one", key=f"custom.{name}.pretrain.on")
    first, rest = cfg.budget.split(pre.fraction)
    p1 = _phase(cfg, project, pre.on, f"{folder}-pretrain", pre_remix, pre_train, seed, first)
    p2 = _phase(cfg, project, name, folder, remix, train, seed, rest, init_from=p1.folder)
    return (p1, p2)


def _resolve(defs: Mapping[str, VariantDef], name: str, chain: tuple[str, ...]
             ) -> tuple[dict[str, Any], dict[str, Any], Pretrain | None]:
    """A variant's remix and train overlays with its ``base`` chain applied first, and its pretrain phase."""
    if name in chain:
        raise ConfigError(f"custom.{name}.base: variants form a cycle ({' -> '.join((*chain, name))})",
                          key=f"custom.{name}.base")
    v = defs[name]
    remix: dict[str, Any] = {}
    train: dict[str, Any] = {}
    pre = v.pretrain
    if v.base is not None:
        if v.base not in defs:
            raise ConfigError(f"custom.{name}.base={v.base!r} is not allowed; allowed: {', '.join(defs)}",
                              key=f"custom.{name}.base")
        remix, train, base_pre = _resolve(defs, v.base, (*chain, name))
        pre = pre or base_pre
    shared = sorted(set(v.train) & set(SHARED_TRAIN_KEYS))
    if shared:
        raise ConfigError(f"custom.{name}.train.{shared[0]}: not allowed in a variant: every run of a comparison "
                          f"shares {', '.join(SHARED_TRAIN_KEYS)} (set it in compare.yaml's train, model, "
                          "model_options, budget or seeds)", key=f"custom.{name}.train.{shared[0]}")
    return deep_merge(remix, v.remix), deep_merge(train, v.train), pre


def _phase(cfg: CompareConfig, project: ProjectConfig, name: str, folder: str, remix: dict[str, Any],
           train: dict[str, Any], seed: int, budget: Budget, *, init_from: str | None = None) -> Phase:
    where = f"custom.{name}.remix." if name in cfg.custom else "remix."
    base_remix = deep_merge(project.remix.model_dump(mode="json"), cfg.remix)
    rcfg = validate_config(RemixConfig, deep_merge(base_remix, remix), prefix=where,
                           what=f"invalid remix configuration of variant {name!r}")
    overrides = {**deep_merge(dict(cfg.train), train), "model": cfg.model, "model_options": dict(cfg.model_options),
                 "seed": seed, "steps": budget.steps if budget.steps is not None else 10**9,
                 "max_minutes": budget.minutes}
    if budget.steps is not None and (project.train or {}).get("max_minutes") is not None:
        raise ConfigError(f"budget.steps={budget.steps}: the project's train.max_minutes="
                          f"{project.train['max_minutes']!r} would cut runs short; remove it, or give budget.minutes",
                          key="budget.steps")
    base = cfg.project.parent if cfg.project is not None else Path.cwd()
    train_config(dict(project.train or {}), overrides=overrides, base=base)  # validated now, used by the runner
    return Phase(folder, rcfg, overrides, budget, init_from)


def deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``a`` with ``b`` on top, nested mappings merged (``None`` values of ``b`` kept: they mean null)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


__all__ = ["BUILTIN_VARIANTS", "OWN_KEYS", "SHARED_TRAIN_KEYS", "Phase", "RunSpec", "check_variants", "deep_merge",
           "needs_multitracks", "project_of", "run_specs", "variant_defs"]
