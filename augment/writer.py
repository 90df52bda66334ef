"""The MUSDB18-HQ writer: rendered mixtures as ``<out>/<split>/<mix_id>/{mixture,<targets>}.wav`` folders.

Each folder is written atomically (a temp folder, then one rename) through :mod:`stemdb.audio`; its name carries
the recipe's hash, so a folder that exists is the recipe's and a stale one is never trusted.
:func:`remove_stale` clears the folders of recipes that are no longer in the set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from augment.recipe import Recipe
from augment.render import Rendered
from stemdb import audio as audio_io

log = logging.getLogger(__name__)


def mixture_folder(out: Path, recipe: Recipe) -> Path:
    """``<out>/<split>/<mix_id>``."""
    return Path(out) / recipe.split / recipe.mix_id


def write_mixture(out: Path, recipe: Recipe, rendered: Rendered) -> Path:
    """Write ``out/<split>/<mix_id>/{mixture,<targets>}.wav`` atomically (temp folder, then rename)."""
    final = mixture_folder(out, recipe)
    if final.is_dir():
        return final
    tmp = out / recipe.split / f".tmp-{recipe.mix_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    audio_io.write(tmp / "mixture.wav", rendered.mixture, recipe.sample_rate, subtype=recipe.subtype)
    for name, s in zip(recipe.targets, rendered.stems, strict=True):
        audio_io.write(tmp / f"{name}.wav", s, recipe.sample_rate, subtype=recipe.subtype)
    try:
        os.rename(tmp, final)
    except OSError:  # a concurrent writer finished first: same recipe, same bytes
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def is_complete(out: Path, recipe: Recipe) -> bool:
    """Whether the recipe's folder holds the mixture and every target file."""
    d = mixture_folder(out, recipe)
    return all((d / f"{n}.wav").is_file() for n in ("mixture", *recipe.targets))


def remove_stale(out: Path, recipes: Iterable[Recipe]) -> int:
    """Remove mixture folders (and leftover temp folders) under ``out`` that belong to none of ``recipes``, then
    split folders left empty. Returns how many mixture folders were removed."""
    keep = {(r.split, r.mix_id) for r in recipes}
    removed = 0
    for split_dir in (d for d in out.iterdir() if d.is_dir() and not d.name.startswith(".")):
        for d in split_dir.iterdir():
            if d.is_dir() and d.name.startswith(("mix-", ".tmp-")) and (split_dir.name, d.name) not in keep:
                log.info("removing stale mixture folder %s", d)
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
    with contextlib.suppress(OSError):
        for split_dir in out.iterdir():
            if split_dir.is_dir() and not split_dir.name.startswith(".") and not any(split_dir.iterdir()):
                split_dir.rmdir()
    return removed


__all__ = ["is_complete", "mixture_folder", "remove_stale", "write_mixture"]
