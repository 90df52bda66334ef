"""The training batches of one process, endlessly, epoch after epoch, with the position a checkpoint resumes from.

The data may be

- a :mod:`train.data` stream (``RemixStream``, ``MixtureFolders``): batched by :class:`train.data.StreamLoader`
  (``batch_size``, ``num_workers``, straight to the device, GPU pitch/stretch when the stream defers it);
  ``set_epoch`` at each epoch, its ``state_dict()`` in every checkpoint and ``load_state_dict()`` on resume (exact
  mid-epoch position, each rank its own share);
- another ``torch.utils.data.IterableDataset`` of ``(mixture (C, T), targets (S, C, T))`` or
  ``(index, mixture, targets)`` items: a DataLoader batches it (``set_epoch`` called when it has one); a resume
  skips the batches already trained on;
- a map-style ``Dataset`` of such items (e.g. :class:`train.validation.ArrayDataset`): shuffled per epoch by a
  ``DistributedSampler`` (seeded from ``seed``; each rank its share, ``drop_last``);
- any re-iterable of ready batches ``(mixture (B, C, T), targets (B, S, C, T))`` (one pass = one epoch).

Data order comes from explicit generators seeded from (seed, epoch, rank).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from stemdb.errors import StemdbError
from train.runtime import derive_seed

logger = logging.getLogger(__name__)


class TrainingError(StemdbError):
    """Training cannot go on: non-finite loss, data that yields nothing, a checkpoint of another model."""


def is_indexed_stream(data: Any) -> bool:
    """True for the sharded, resumable streams of :mod:`train.data` (``RemixStream``, ``MixtureFolders``)."""
    mod = sys.modules.get("train.data.base")
    return mod is not None and isinstance(data, mod.IndexedStream)


def data_stems(data: Any) -> tuple[str, ...] | None:
    """The stem names of a data source's target axis, in order: its ``stems`` or ``targets`` attribute when that is
    a sequence of names (the :mod:`train.data` streams, :class:`train.validation.ArrayDataset` made by
    :meth:`train.validation.Crops.dataset`); ``None`` when it does not say."""
    for attr in ("stems", "targets"):
        names = getattr(data, attr, None)
        if isinstance(names, tuple | list) and names and all(isinstance(n, str) for n in names):
            return tuple(names)
    return None


class BatchFeed:
    """Endless ``(mixture (B, C, T), targets (B, S, C, T))`` float32 batches on ``device`` from ``data``.

    ``epoch`` and ``batches_in_epoch`` count what was delivered; :meth:`restore` sets them (and the stream's state)
    from a checkpoint, so the next batch is the one an uninterrupted run would have trained on. When the data names
    its stems (:func:`data_stems`) and the model separates fewer (a per-target run), the model's stems are picked
    from each batch; the mixture stays the data's (the sum of every stem).
    """

    def __init__(self, data: Any, *, targets: tuple[str, ...], batch_size: int, num_workers: int, seed: int,
                 rank: int, world: int, device: torch.device) -> None:
        self.data, self.targets = data, targets
        names = data_stems(data)
        missing = [t for t in targets if names is not None and t not in names]
        if missing:
            raise TrainingError(f"the training data has no stem(s) {missing} (it has {list(names or ())})")
        self._pick = None if names is None or names == targets else [names.index(t) for t in targets]
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.rank, self.world, self.device = rank, world, device
        self.epoch = 0
        self.batches_in_epoch = 0
        self._stream_state: dict | None = None
        self._loader: Any = None

    def stream_state(self) -> dict | None:
        """The stream's ``state_dict()`` for a checkpoint (``None`` for other data)."""
        return self.data.state_dict() if is_indexed_stream(self.data) else None

    def restore(self, *, epoch: int, batches_in_epoch: int, stream: dict | None) -> None:
        """Continue from a checkpoint's position."""
        self.epoch, self.batches_in_epoch, self._stream_state = epoch, batches_in_epoch, stream

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches, epoch after epoch.

        Raises:
            TrainingError: an epoch that yields no batch.
        """
        while True:
            skip = self.batches_in_epoch
            n = 0
            for batch in self._epoch_batches(self.epoch, skip):
                n += 1
                self.batches_in_epoch += 1
                yield self.unpack(batch)
            if n == 0 and skip == 0:
                raise TrainingError(
                    f"training data yielded no batch in epoch {self.epoch} (fewer items than batch_size="
                    f"{self.batch_size} per process, or a one-shot iterator that is used up)"
                )
            self.epoch += 1
            self.batches_in_epoch = 0

    def _epoch_batches(self, epoch: int, skip: int) -> Iterator[Any]:
        data = self.data
        if is_indexed_stream(data):
            self._start_stream_epoch(data, epoch)
            return iter(self._stream_loader(data))
        if isinstance(data, torch.utils.data.IterableDataset):
            if hasattr(data, "set_epoch"):
                data.set_epoch(epoch)
            it: Iterator[Any] = iter(self._loader_of(data, epoch))
        elif isinstance(data, torch.utils.data.Dataset):
            it = iter(self._loader_of(data, epoch, indices=self._shuffled(data, epoch, skip)))
            skip = 0
        else:
            if hasattr(data, "set_epoch"):
                data.set_epoch(epoch)
            it = iter(data)
        for _ in range(skip):
            next(it, None)
        return it

    def _shuffled(self, data: Any, epoch: int, skip: int) -> list[int]:
        """This rank's indices of a map-style dataset for ``epoch``, whole batches only, ``skip`` batches in."""
        sampler = torch.utils.data.DistributedSampler(
            data, num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed % 2**31, drop_last=True,
        )
        sampler.set_epoch(epoch)
        indices = list(sampler)
        usable = len(indices) // self.batch_size * self.batch_size
        return indices[skip * self.batch_size: usable]

    def _loader_of(self, data: Any, epoch: int, *, indices: list[int] | None = None) -> torch.utils.data.DataLoader:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, self.rank, "loader"))
        return torch.utils.data.DataLoader(
            data, batch_size=self.batch_size, sampler=indices, num_workers=self.num_workers, drop_last=True,
            pin_memory=self.device.type == "cuda", generator=gen,
        )

    def _start_stream_epoch(self, stream: Any, epoch: int) -> None:
        """Position a ``train.data`` stream at ``epoch``, or at the checkpoint's resume point within it."""
        state, self._stream_state = self._stream_state, None
        if state is not None and int(state.get("epoch", -1)) == epoch:
            if state.get("world_size") == self.world:
                stream.load_state_dict({**state, "rank": self.rank})  # every rank consumed as many items
                return
            logger.warning("stream state of a %s-process run: epoch %d restarts from its beginning",
                           state.get("world_size"), epoch)
        stream.set_epoch(epoch)
        stream.load_state_dict(stream.state_dict(consumed=0))  # from the epoch's first item, whatever came before

    def _stream_loader(self, stream: Any) -> Any:
        if self._loader is None:
            from train.data import StreamLoader

            augment = None
            if stream.has_aug_params:
                from train.gpu_augment import GpuAugment

                augment = GpuAugment().to(self.device)
            self._loader = StreamLoader(
                stream, batch_size=self.batch_size, num_workers=self.num_workers, drop_last=True,
                device=self.device, augment=augment, persistent_workers=self.num_workers > 0,
            )
        return self._loader

    def unpack(self, batch: Any) -> tuple[Tensor, Tensor]:
        """``(mixture, targets)`` float32 on the device from a batch of any supported form.

        Raises:
            TrainingError: a batch of another form, or targets that do not match the model's.
        """
        if isinstance(batch, Mapping):
            mix, tgt = batch["mixture"], batch["targets"]
        else:
            parts = [b for b in batch if not isinstance(b, Mapping)]  # a stream's pitch/rate dict: see GpuAugment
            if len(parts) == 3:  # (index, mixture, targets)
                parts = parts[1:]
            if len(parts) != 2:
                raise TrainingError(f"a batch must be (mixture, targets) or (index, mixture, targets); got "
                                    f"{len(batch)} parts")
            mix, tgt = parts
        mix = torch.as_tensor(mix).to(self.device, torch.float32, non_blocking=True)
        tgt = torch.as_tensor(tgt).to(self.device, torch.float32, non_blocking=True)
        if self._pick is not None and tgt.dim() == 4 and tgt.shape[1] == len(data_stems(self.data) or ()):
            tgt = tgt[:, self._pick]
        if tgt.dim() != 4 or tgt.shape[1] != len(self.targets):
            raise TrainingError(
                f"targets batch has shape {tuple(tgt.shape)}; expected (B, {len(self.targets)}, C, T) for "
                f"targets {list(self.targets)}"
            )
        return mix, tgt


__all__ = ["BatchFeed", "TrainingError", "data_stems", "is_indexed_stream"]
