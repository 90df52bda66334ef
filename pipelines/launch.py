"""What ``stemdb train`` needs besides its options: ``--set KEY=VALUE`` parsing and the ``torchrun`` command line of
a multi-process run (``--nproc N``), which runs ``python -m pipelines train ...`` on every rank."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
import yaml


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a": {"b": 1}, "c": [1, 2]}`` (values parsed as YAML).

    Raises:
        typer.BadParameter: an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set {item!r}: expected KEY=VALUE (e.g. valid.every=100)")
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def overrides_from(sets: list[str] | None, *, valid_root: Path | None = None, **options: Any) -> dict[str, Any]:
    """The ``train`` overrides of a command line: ``--set`` items, then the named options that were given (``None``
    values left out), then ``valid.root`` (made absolute)."""
    out = parse_sets(sets)
    out.update({k: v for k, v in options.items() if v is not None})
    if valid_root is not None:
        out.setdefault("valid", {})["root"] = str(valid_root.resolve())
    return out


def torchrun_args(out: Path, *, config: Path | None, model: str | None, overrides: dict[str, Any],
                  resume: bool) -> list[str]:
    """The ``train`` arguments each rank gets: absolute paths, every override as ``--set KEY=JSON``."""
    args = ["train", "--out", str(out.resolve())]
    if config is not None:
        args += ["--config", str(config.resolve())]
    if model is not None:
        args += ["--model", model]
    args += [f"--set={k}={json.dumps(v)}" for k, v in _flatten(overrides).items()]  # JSON is YAML
    args.append("--resume" if resume else "--no-resume")
    return args


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The ``torchrun --standalone --nproc_per_node N -m pipelines ARGS`` command line (through this Python)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "pipelines", *args]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


__all__ = ["overrides_from", "parse_sets", "torchrun_args", "torchrun_command"]
