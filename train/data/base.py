"""The base of the streaming datasets: an epoch of indexed items, sharded, ordered and resumable.

Subclasses say how to render item ``i`` of epoch ``e`` (a pure function of ``(seed, e, i)``); this class decides
which process yields which index, in what order (see :mod:`train.data.sharding`), and how to resume.

Progress and resume. ``state_dict()`` is ``{"epoch", "consumed", ...}`` where ``consumed`` counts the items of this
rank's share that the training loop has *received*, in order. Because workers take the share in runs of
``batch_size`` items, round robin, a DataLoader with the same ``batch_size`` (and ``in_order=True``, its default)
delivers the share in order, so "the first ``consumed`` items" is a well-defined prefix and
``load_state_dict(state)`` continues with the next one: nothing repeated, nothing skipped, and the batches after the
resume equal those of an uninterrupted run (whatever the number of workers before and after).
The count is kept for you when the stream is iterated in this process (``num_workers=0``) or through
:class:`train.data.StreamLoader`; with a plain DataLoader *with workers* the items are drawn in other processes
(which also prefetch), so the loop must say what it received: ``ds.count_delivered(len(batch[0]))`` per batch, or
``ds.state_dict(consumed=items_received)``; and give the stream the loader's ``batch_size``.

``set_epoch``, ``load_state_dict`` and the resolved rank live in a small shared-memory tensor, so DataLoader
workers see them even with ``persistent_workers=True``.

Endless mode (``epoch_length=None``): there is no permutation; rank ``r`` of ``w`` takes indices ``r, r + w, ...``
(in runs per worker, as above) forever. The epoch still seeds the content (item ``i`` of epoch ``e`` is a pure
function of ``(seed, e, i)``), ``set_epoch`` starts a new endless sequence at index 0, and ``state_dict`` /
``load_state_dict`` resume it exactly as in finite mode. Break out of the loop after the number of steps you want.

Distributed training: ranks' shares differ by one item when ``epoch_length`` is not a multiple of ``world_size``
(every index is still seen once); with DDP choose ``epoch_length`` a multiple of ``world_size * batch_size`` so every
rank runs the same number of steps (a warning is logged otherwise).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from stemdb.errors import ConfigError
from train.data.sharding import (
    check_int,
    epoch_order,
    indices_at,
    resolve_rank,
    share_length,
    worker_positions,
)

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "int16": torch.int16}
_NP_DTYPES = {"float32": np.float32, "int16": np.int16}
_EPOCH, _START, _RANK, _WORLD = range(4)
STATE_VERSION = 1


class IndexedStream(IterableDataset):
    """An epoch of ``epoch_length`` items (``None``: endless), each a pure function of ``(seed, epoch, index)``.

    Items: ``(mixture (C, T), targets (S, C, T))`` tensors of ``dtype`` (``"float32"``, full scale 1.0, or
    ``"int16"``, PCM: divide by 32768 on the device, see :func:`train.data.to_float`), preceded by the ``index``
    (int) when ``with_index`` and followed by ``{"pitch": (S,), "rate": (S,)}`` float32 when the stream defers
    pitch/stretch to the GPU (:attr:`has_aug_params`).

    Args:
        seed: the stream's seed (>= 0).
        epoch_length: items per epoch over all ranks, or ``None`` for an endless stream (no permutation; index
            ``i`` of epoch ``e`` is still a pure function of ``(seed, e, i)``).
        rank, world_size: this process's share; both ``None`` reads ``torch.distributed`` when initialised (at
            construction, ``set_epoch``, ``load_state_dict`` and iteration in the main process), else ``(0, 1)``.
        with_index: yield the index first.
        batch_size: the DataLoader's batch size: workers take the rank's share in runs of this many items, so the
            loader delivers it in order (needed for an exact resume with workers; any value gives every index once).
        dtype: ``"float32"`` or ``"int16"``.
    """

    def __init__(self, *, seed: int = 0, epoch_length: int | None = 1000, rank: int | None = None,
                 world_size: int | None = None, with_index: bool = False, batch_size: int = 1,
                 dtype: str = "float32") -> None:
        super().__init__()
        self.seed = check_int("seed", seed)
        self.epoch_length = None if epoch_length is None else check_int("epoch_length", epoch_length, minimum=1)
        if (rank is None) != (world_size is None):
            raise ConfigError(f"rank={rank!r}, world_size={world_size!r}: give both or neither", key="rank")
        if rank is not None:
            resolve_rank(rank, world_size)  # validates
        self._rank_arg, self._world_arg = rank, world_size
        self.with_index = bool(with_index)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        if dtype not in DTYPES:
            raise ConfigError(f"dtype={dtype!r} is not allowed: one of {sorted(DTYPES)}", key="dtype")
        self.dtype = dtype
        self._control = torch.zeros(4, dtype=torch.int64).share_memory_()
        self._consumed = 0
        self._scratch: tuple[np.ndarray, np.ndarray] | None = None
        self._resolve()

    # -- what subclasses provide ----------------------------------------------------------------------------
    @property
    @abstractmethod
    def targets(self) -> tuple[str, ...]:
        """Target names, in the order of the ``S`` axis."""

    @property
    @abstractmethod
    def channels(self) -> int:
        """``C``."""

    @property
    @abstractmethod
    def frames(self) -> int:
        """``T``: samples per channel of the items yielded (the training length, or the longer window read for
        GPU pitch/stretch)."""

    @property
    def has_aug_params(self) -> bool:
        """True when items carry per-stem ``pitch``/``rate`` for :class:`train.gpu_augment.GpuAugment`."""
        return False

    @property
    def on_grid16(self) -> bool:
        """True when every target sample is guaranteed on the 16-bit grid and in range (the int16 conversion of
        the targets is then a single cast; otherwise values are rounded and clipped)."""
        return False

    @abstractmethod
    def _render_float(self, index: int, epoch: int, mixture: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
        """Write item ``index`` of ``epoch`` into float32 ``mixture`` (C, T) and ``targets`` (S, C, T); return the
        ``(2, S)`` float32 pitch (semitones) / rate rows when :attr:`has_aug_params`, else None."""

    # -- epoch, rank, resume ----------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return int(self._control[_EPOCH])

    def _resolve(self) -> tuple[int, int]:
        rank, world = resolve_rank(self._rank_arg, self._world_arg)
        self._control[_RANK] = rank
        self._control[_WORLD] = world
        if world > 1 and self.epoch_length is not None and self.epoch_length % (world * self.batch_size) \
                and not getattr(self, "_warned", False):
            self._warned = True
            log.warning("epoch_length=%d is not a multiple of world_size * batch_size = %d * %d: ranks will run "
                        "different numbers of steps per epoch (DDP needs equal ones)", self.epoch_length, world,
                        self.batch_size)
        return rank, world

    def begin_iteration(self) -> int:
        """Called in the main process when an iteration starts: resolves the rank and resets the count of items
        delivered to the resume point, which it returns."""
        self._resolve()
        self._consumed = int(self._control[_START])
        return self._consumed

    def count_delivered(self, n: int) -> None:
        """``n`` more items reached the training loop (kept by in-process iteration and :class:`StreamLoader`)."""
        self._consumed += int(n)

    def rank_world(self) -> tuple[int, int]:
        """The ``(rank, world_size)`` in force (as last resolved in the main process)."""
        return int(self._control[_RANK]), int(self._control[_WORLD])

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` at its beginning (a resume point loaded for this same epoch is kept)."""
        epoch = check_int("epoch", epoch)
        self._resolve()
        if epoch != self.epoch:
            self._control[_EPOCH] = epoch
            self._control[_START] = 0
            self._consumed = 0

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """``{"epoch", "consumed", "seed", "epoch_length", "rank", "world_size", "stream", "version"}``.

        ``consumed``: items of this rank's share the training loop received in this epoch; default: the count kept
        by in-process iteration or :class:`StreamLoader` (see the module docstring for plain DataLoader workers).
        """
        rank, world = self.rank_world()
        c = self._consumed if consumed is None else check_int("consumed", consumed)
        if self.epoch_length is not None and c > share_length(self.epoch_length, rank, world):
            raise ConfigError(f"consumed={c} is more than rank {rank}'s share of {self.epoch_length} items over "
                              f"{world} ranks ({share_length(self.epoch_length, rank, world)})", key="consumed")
        return {"stream": type(self).__name__, "version": STATE_VERSION, "epoch": self.epoch, "consumed": c,
                "seed": self.seed, "epoch_length": self.epoch_length, "rank": rank, "world_size": world}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next item is number ``state["consumed"]`` of the rank's share of
        ``state["epoch"]``. Seed, epoch length, rank and world size must match this stream's."""
        rank, world = self._resolve()
        mine = {"seed": self.seed, "epoch_length": self.epoch_length, "rank": rank, "world_size": world}
        for key, value in mine.items():
            if key not in state:
                raise ConfigError(f"state_dict has no {key!r} (keys: {sorted(state)})", key=key)
            if state[key] != value:
                raise ConfigError(f"state_dict {key}={state[key]!r} does not match this stream's {key}={value!r}: "
                                  "a resume point is only valid for the same seed, epoch length and ranks", key=key)
        self._control[_EPOCH] = check_int("epoch", state["epoch"])
        self._control[_START] = check_int("consumed", state["consumed"])
        self._consumed = int(state["consumed"])

    # -- order ----------------------------------------------------------------------------------------------
    def share(self, epoch: int, rank: int, world: int) -> tuple[np.ndarray | None, int | None]:
        """``(indices of the rank's share in order, its length)``; ``(None, None)`` for an endless stream."""
        if self.epoch_length is None:
            return None, None
        return epoch_order(self.seed, epoch, self.epoch_length)[rank::world], share_length(self.epoch_length, rank,
                                                                                            world)

    def runs(self, worker: int, workers: int, *, run: int, drop_last: bool = False) -> Iterator[np.ndarray]:
        """The index runs worker ``worker`` of ``workers`` yields in the current epoch, from the resume point."""
        epoch, start, rank, world = (int(v) for v in self._control.tolist())
        share, n = self.share(epoch, rank, world)
        for pos in worker_positions(n, start=start, run=run, worker=worker, workers=workers, drop_last=drop_last):
            yield indices_at(pos, share=share, rank=rank, world_size=world)

    def __len__(self) -> int:
        """Items left in this rank's share of the current epoch (from the resume point)."""
        if self.epoch_length is None:
            raise TypeError(f"{type(self).__name__} with epoch_length=None is endless and has no length")
        _epoch, start, rank, world = (int(v) for v in self._control.tolist())
        return max(0, share_length(self.epoch_length, rank, world) - start)

    def __iter__(self) -> Iterator[tuple]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is None:
            self.begin_iteration()
        epoch = self.epoch
        for idx in self.runs(worker, workers, run=self.batch_size):
            self.plan_ahead(idx, epoch)
            for i in idx.tolist():
                item = self.item(i, epoch)
                if info is None:
                    self.count_delivered(1)
                yield item

    # -- items ----------------------------------------------------------------------------------------------
    def plan_ahead(self, indices: np.ndarray, epoch: int) -> None:
        """Called with each run of indices before its items are rendered, in the process that renders them: a
        stream whose per-item work has a cheaper batched form (the remix planner) does it here. Default: nothing."""

    def item(self, index: int, epoch: int | None = None) -> tuple:
        """Item ``index`` of ``epoch`` (default: the current epoch) as the stream yields it."""
        epoch = self.epoch if epoch is None else epoch
        s, c, t = len(self.targets), self.channels, self.frames
        mix = torch.empty((c, t), dtype=DTYPES[self.dtype])
        tgt = torch.empty((s, c, t), dtype=DTYPES[self.dtype])
        aug = torch.empty((2, s), dtype=torch.float32) if self.has_aug_params else None
        self.render_into(index, epoch, mix.numpy(), tgt.numpy(), None if aug is None else aug.numpy())
        out: tuple = (mix, tgt)
        if aug is not None:
            out = (*out, {"pitch": aug[0], "rate": aug[1]})
        return (int(index), *out) if self.with_index else out

    def render_into(self, index: int, epoch: int, mixture: np.ndarray, targets: np.ndarray,
                    aug: np.ndarray | None = None) -> None:
        """Render item ``index`` of ``epoch`` into ``mixture`` (C, T) and ``targets`` (S, C, T) of this stream's
        dtype, and its ``(2, S)`` pitch/rate rows into ``aug`` when given."""
        if self.dtype == "float32":
            params = self._render_float(index, epoch, mixture, targets)
        else:
            fm, ft = self._float_scratch()
            params = self._render_float(index, epoch, fm, ft)
            to_int16(fm, mixture)
            if self.on_grid16:  # exact: k / 32768 * 32768 == k in float32
                np.multiply(ft, np.float32(32768.0), out=targets, casting="unsafe")
            else:
                to_int16(ft, targets)
        if aug is not None:
            if params is None:
                aug[0] = 0.0
                aug[1] = 1.0
            else:
                aug[...] = params

    def _float_scratch(self) -> tuple[np.ndarray, np.ndarray]:
        s, c, t = len(self.targets), self.channels, self.frames
        if self._scratch is None or self._scratch[1].shape != (s, c, t):
            self._scratch = (np.empty((c, t), np.float32), np.empty((s, c, t), np.float32))
        return self._scratch

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_scratch"] = None  # per process
        return state


def to_int16(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Float32 audio on the 16-bit grid (full scale 1.0) -> int16 PCM into ``out``, rounding, clipped to the range."""
    np.multiply(x, np.float32(32768.0), out=x)
    np.clip(x, -32768.0, 32767.0, out=x)
    np.rint(x, out=x)
    np.copyto(out, x, casting="unsafe")
    return out


def to_float(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """int16 PCM -> float full scale 1.0 (``x / 32768``), on ``x``'s device; float input is cast to ``dtype``."""
    if x.dtype == torch.int16:
        return x.to(dtype).mul_(1.0 / 32768.0)
    return x.to(dtype)
