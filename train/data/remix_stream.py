"""``RemixStream``: the remix engine's mixtures rendered on the fly, as a sharded, resumable ``IterableDataset``.

Content. Item ``i`` of epoch ``e`` is the mixture ``plan_mixture(i, seed=epoch_seed(seed, e), seconds=seconds)``
rendered by ``augment.render.render_recipe``: epoch 0 is exactly the set ``build_remix(n=epoch_length, seed=seed)``
writes; every later epoch draws other mixtures (a per-epoch seed derived from ``(seed, epoch)``). The endless mode
(``epoch_length=None``) uses the same rule with indices ``0, 1, 2, ...``.

CPU work per item is the renderer's fast path: one windowed (int16 where the file is 16-bit PCM) read per stem, one
scaled copy (level, gain, polarity, channel swap), quantisation and the sum, written straight into the output
buffers. Stems whose rate differs from the output rate (or an output rate override) go through soxr.

GPU pitch/stretch (``gpu_augment=True``): the recipe's pitch shift and time stretch are *not* rendered on the CPU;
instead each item reads a window of ``ceil(T * max_rate) + 8`` samples (``max_rate``: the largest stretch rate the
config allows, so every stretched stem stays full length) and carries ``{"pitch": (S,), "rate": (S,)}``, the recipe's
per-stem ``pitch_semitones`` and ``stretch_rate``, for ``train.gpu_augment.GpuAugment`` on the device (see
:func:`train.data.device_batch`). The other transforms stay on the CPU, so GPU pitch/stretch comes after them (exact
for gain, polarity and swap; the spectral filter and loudness normalisation, when configured, then act before the
shift instead of after it). The mixture yielded in this mode is the sum of the un-shifted stems; use the one
``GpuAugment`` returns.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from augment.config import RemixConfig, remix_section
from augment.config import remix_config as base_remix_config
from augment.pool import build_pool
from augment.recipe import Recipe
from augment.remix import chain_for, plan_mixture, plan_recipes
from augment.render import StemTable, render_recipe
from stemdb.catalog import Catalog
from stemdb.config import StemdbConfig
from stemdb.errors import ConfigError
from train.data.base import IndexedStream
from train.data.sharding import epoch_seed

#: Samples of margin added to the window read for GPU time stretch (as the CPU renderer reads).
STRETCH_MARGIN = 8


def remix_config(config: str | Path | StemdbConfig | RemixConfig | dict | None, *,
                 sample_rate: int | None = None, mono: bool = False) -> RemixConfig:
    """The ``remix`` section (:func:`augment.config.remix_config`) with the stream's overrides (output rate, mono)
    applied and validated."""
    cfg = base_remix_config(config)
    update: dict[str, Any] = {}
    if sample_rate is not None:
        update["sample_rate"] = sample_rate
    if mono:
        update["channels"] = 1
    return remix_section({**cfg.model_dump(), **update}) if update else cfg


def max_stretch_rate(cfg: RemixConfig) -> float:
    """The largest ``stretch_rate`` any target's augmentation chain can draw (1.0 without stretch)."""
    rate = 1.0
    for t in cfg.targets:
        for tr in chain_for(cfg, t).transforms:
            if tr.name == "stretch":
                rate = max(rate, float(tr.config()["max_rate"]))
    return rate


class RemixStream(IndexedStream):
    """Cross-song remixes rendered on the fly from a catalogue.

    Yields ``(mixture (C, T), targets (S, C, T))`` (``(index, mixture, targets)`` with ``with_index``; plus
    ``{"pitch": (S,), "rate": (S,)}`` last with ``gpu_augment``), tensors of ``dtype``; ``S`` in the configured
    target order, ``T = round(seconds * sample_rate)`` (``gpu_augment``: the longer window, see the module
    docstring). ``mixture == targets.sum(0)`` exactly (float32) and every value is on the 16-bit grid (PCM_16
    recipes), so ``dtype="int16"`` is lossless.

    Args:
        catalog: the catalogue folder (or an open :class:`stemdb.catalog.Catalog`).
        config: ``data.yaml`` path, ``StemdbConfig``, ``RemixConfig``, mapping, or ``None`` (defaults).
        seconds: mixture length in seconds.
        seed, epoch_length, rank, world_size, with_index, batch_size, dtype: see :class:`IndexedStream`.
        sample_rate: output rate override in Hz (e.g. 33075 = 3/4 rate, 22050); stems are resampled with soxr.
        mono: one channel (stereo stems averaged).
        gpu_augment: leave pitch/stretch to :class:`train.gpu_augment.GpuAugment` on the device.
        splits: catalogue splits the stems come from.
    """

    def __init__(self, catalog: str | Path | Catalog, config: str | Path | StemdbConfig | RemixConfig | dict | None
                 = None, *, seconds: float = 6.0, seed: int = 0, epoch_length: int | None = 1000,
                 rank: int | None = None, world_size: int | None = None, with_index: bool = False,
                 sample_rate: int | None = None, mono: bool = False, gpu_augment: bool = False,
                 dtype: str = "float32", batch_size: int = 1, splits: Sequence[str] = ("train",)) -> None:
        super().__init__(seed=seed, epoch_length=epoch_length, rank=rank, world_size=world_size,
                         with_index=with_index, batch_size=batch_size, dtype=dtype)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 600:
            raise ConfigError(f"seconds={seconds!r} is not allowed: a duration in (0, 600] seconds", key="seconds")
        self.cfg = remix_config(config, sample_rate=sample_rate, mono=mono)
        if dtype == "int16" and self.cfg.subtype != "PCM_16":
            raise ConfigError(f"dtype='int16' needs remix.subtype PCM_16 (got {self.cfg.subtype!r}): only then is "
                              "every sample on the 16-bit grid", key="dtype")
        self.seconds = float(seconds)
        self.gpu_augment = bool(gpu_augment)
        self.pool = build_pool(catalog, self.cfg, splits=tuple(splits))
        plan_recipes(catalog, n=0, seed=self.seed, cfg=self.cfg, pool=self.pool)  # validates the pool
        self.table = StemTable.from_catalog(catalog)
        self.out_frames = int(round(self.seconds * self.cfg.sample_rate))
        rate = max_stretch_rate(self.cfg) if self.gpu_augment else 1.0
        self._window = self.out_frames if rate <= 1.0 else int(math.ceil(self.out_frames * rate)) + STRETCH_MARGIN

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.cfg.targets)

    @property
    def channels(self) -> int:
        return int(self.cfg.channels)

    @property
    def sample_rate(self) -> int:
        return int(self.cfg.sample_rate)

    @property
    def frames(self) -> int:
        """Samples per channel yielded: ``out_frames``, or the stretch window with ``gpu_augment``."""
        return self._window

    @property
    def has_aug_params(self) -> bool:
        return self.gpu_augment

    @property
    def on_grid16(self) -> bool:
        return self.cfg.subtype == "PCM_16"  # the renderer quantises every stem onto the grid, clipped

    def recipe(self, index: int, epoch: int | None = None) -> Recipe:
        """The recipe of item ``index`` of ``epoch`` (default: the current epoch), with its full augmentation."""
        epoch = self.epoch if epoch is None else epoch
        return plan_mixture(index, seed=epoch_seed(self.seed, epoch), pool=self.pool, cfg=self.cfg,
                            seconds=self.seconds)

    def cpu_recipe(self, recipe: Recipe) -> Recipe:
        """What the CPU renders of ``recipe``: itself, or with ``gpu_augment`` the recipe without pitch/stretch
        over the longer window."""
        if not self.gpu_augment:
            return recipe
        stems = tuple(dataclasses.replace(s, augment={**s.augment, "pitch_semitones": 0.0, "stretch_rate": 1.0})
                      for s in recipe.stems)
        return dataclasses.replace(recipe, stems=stems, duration_s=self._window / recipe.sample_rate)

    def _render_float(self, index: int, epoch: int, mixture: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
        recipe = self.recipe(index, epoch)
        r = render_recipe(self.cpu_recipe(recipe), self.table, self.cfg, out=targets, mix_out=mixture)
        if r.stems is not targets:
            np.copyto(targets, r.stems)
        if r.mixture is not mixture:
            np.copyto(mixture, r.mixture)
        if not self.gpu_augment:
            return None
        return gpu_params(recipe)


def gpu_params(recipe: Recipe) -> np.ndarray:
    """``(2, S)`` float32: each stem's ``pitch_semitones`` and ``stretch_rate``; a silent target gets the identity
    (0, 1) so ``GpuAugment`` copies it instead of processing zeros."""
    out = np.zeros((2, len(recipe.stems)), dtype=np.float32)
    out[1] = 1.0
    for k, s in enumerate(recipe.stems):
        if s.stem_id is not None:
            out[0, k] = float(s.augment.get("pitch_semitones", 0.0))
            out[1, k] = float(s.augment.get("stretch_rate", 1.0))
    return out
