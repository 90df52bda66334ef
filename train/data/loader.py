"""``StreamLoader``: whole batches rendered in DataLoader workers straight into reused shared-memory buffers.

Why. A DataLoader over per-item tensors collates each batch into a *fresh* shared-memory tensor in the worker and
maps it again in the main process: a 6 s stereo 4-stem float32 batch of 16 is 170 MB, and first-touch page faults on
fresh shared memory cost more CPU than rendering it (measured in ``bench/stream.py``). Here each worker owns a ring
of ``slots`` batch buffers allocated once, in shared memory, before the workers start; it renders each item of its
batch in place and sends only ``(worker, slot, n)``; the main process hands out views of that slot and gives the slot
back when the next batch is asked for. Nothing is allocated, copied or collated per batch.

Memory: ``max(1, num_workers) * slots`` batches of shared memory (``/dev/shm``), allocated once
(:attr:`StreamLoader.ring_bytes`); e.g. 8 workers x 3 slots x 16 mixtures of 6 s stereo 4 stems + mixture: 4.1 GB in
float32, 2.0 GB in int16. A plain DataLoader keeps about ``prefetch_factor * num_workers`` batches in flight there.

Contract: a batch (on the CPU) is valid until the next one is requested; move it to the device, or ``clone()`` it to
keep it. With ``device=`` the loader does the transfer itself (int16 -> float32 on the device, and ``GpuAugment``
when the stream carries pitch/stretch parameters), so what it yields is yours to keep.

Order and resume are the stream's (:class:`train.data.base.IndexedStream`): worker ``w`` renders batches
``w, w + W, ...`` of the rank's share, the loader delivers them in order, and the stream's ``state_dict()`` counts
the items delivered. Set ``stream.set_epoch`` / ``load_state_dict`` before iterating.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from stemdb.errors import ConfigError
from train.data.base import DTYPES, IndexedStream, to_float
from train.data.sharding import check_int

log = logging.getLogger(__name__)

_FREE = 0
_POLL_S = 0.0005


class _Ring:
    """Per-worker rings of batch buffers and their flags, all in shared memory.

    ``flags[w, s]`` holds the generation (one per loader iteration) that owns the slot, 0 when free; a slot owned by
    an older generation counts as free, and a worker whose generation is no longer current stops, so a stale
    iterator (an abandoned epoch, persistent workers) never blocks or overwrites the current one.
    """

    def __init__(self, stream: IndexedStream, workers: int, slots: int, batch: int) -> None:
        s, c, t = len(stream.targets), stream.channels, stream.frames
        dt = DTYPES[stream.dtype]
        shape = (workers, slots, batch)
        self.mixture = torch.zeros((*shape, c, t), dtype=dt).share_memory_()
        self.targets = torch.zeros((*shape, s, c, t), dtype=dt).share_memory_()
        self.aug = torch.zeros((*shape, 2, s), dtype=torch.float32).share_memory_()
        self.index = torch.zeros(shape, dtype=torch.int64).share_memory_()
        self.nbytes = sum(x.numel() * x.element_size() for x in (self.mixture, self.targets, self.aug, self.index))
        self.flags = torch.zeros((workers, slots), dtype=torch.int64).share_memory_()
        self.generation = torch.zeros(1, dtype=torch.int64).share_memory_()

    def next_generation(self) -> int:
        self.generation += 1
        return int(self.generation[0])

    def acquire(self, worker: int, slot: int, gen: int, parent: int) -> bool:
        """Wait until ``slot`` of ``worker`` is free and take it for generation ``gen``; False when ``gen`` is no
        longer current (the loader's iteration ended) or the main process is gone."""
        while True:
            if int(self.generation[0]) != gen or os.getppid() != parent:
                return False
            if int(self.flags[worker, slot]) != gen:
                break
            time.sleep(_POLL_S)
        self.flags[worker, slot] = gen
        return True

    def release(self, worker: int, slot: int) -> None:
        self.flags[worker, slot] = _FREE


class _RingBatches(IterableDataset):
    """What the DataLoader iterates: each worker renders its runs into its ring and yields ``(worker, slot, n)``."""

    def __init__(self, stream: IndexedStream, ring: _Ring, batch: int, drop_last: bool) -> None:
        super().__init__()
        self.stream, self.ring, self.batch, self.drop_last = stream, ring, batch, drop_last

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        parent = os.getppid()
        gen = int(self.ring.generation[0])
        epoch = self.stream.epoch
        with_aug = self.stream.has_aug_params
        ring = self.ring
        slots = ring.flags.shape[1]
        for k, idx in enumerate(self.stream.runs(worker, workers, run=self.batch, drop_last=self.drop_last)):
            slot = k % slots
            if not ring.acquire(worker, slot, gen, parent):
                return
            mix, tgt, aug = ring.mixture[worker, slot], ring.targets[worker, slot], ring.aug[worker, slot]
            self.stream.plan_ahead(idx, epoch)
            for b, i in enumerate(idx.tolist()):
                self.stream.render_into(i, epoch, mix[b].numpy(), tgt[b].numpy(),
                                        aug[b].numpy() if with_aug else None)
            ring.index[worker, slot, : len(idx)] = torch.from_numpy(idx)
            yield worker, slot, len(idx)


class StreamLoader:
    """Batches of an :class:`IndexedStream` (``RemixStream``, ``MixtureFolders``) without per-batch allocation.

    Yields what a ``DataLoader(stream, batch_size=batch_size)`` would: ``(mixture (B, C, T), targets (B, S, C, T))``,
    with ``index (B,)`` int64 first when ``stream.with_index`` and ``{"pitch": (B, S), "rate": (B, S)}`` last when
    the stream carries pitch/stretch parameters; the last batch of an epoch may be shorter unless ``drop_last``.

    With ``device`` (e.g. ``"cuda"``) each batch is moved there and made float32 (int16 scaled by 1/32768); with
    ``augment`` (a ``GpuAugment``) as well, pitch/stretch is applied there and the batch is
    ``(mixture (B, C, out_frames), targets (B, S, C, out_frames))`` float32 (``index`` first when asked), see
    :func:`device_batch`.

    Args:
        stream: the stream; its ``batch_size`` is set to ``batch_size``.
        batch_size: items per batch.
        num_workers: DataLoader worker processes (0: render in this process).
        slots: batch buffers per worker (default ``prefetch_factor + 1``: a worker never waits in steady state).
        drop_last: leave out a final short batch of each rank's share (an epoch then skips those items).
        device, augment: see above.
        prefetch_factor, persistent_workers, multiprocessing_context, timeout: passed to the DataLoader.
            Workers persist across epochs by default: a fresh worker would fault in its whole ring again (and fork
            again); ``set_epoch`` / ``load_state_dict`` reach persistent workers through shared memory.
    """

    def __init__(self, stream: IndexedStream, *, batch_size: int, num_workers: int = 0, slots: int | None = None,
                 drop_last: bool = False, device: str | torch.device | None = None,
                 augment: torch.nn.Module | None = None, prefetch_factor: int = 2, persistent_workers: bool = True,
                 multiprocessing_context: Any = None, timeout: float = 0) -> None:
        if not isinstance(stream, IndexedStream):
            raise ConfigError(f"stream={type(stream).__name__} is not allowed: a train.data IndexedStream "
                              "(RemixStream, MixtureFolders)", key="stream")
        self.stream = stream
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.num_workers = check_int("num_workers", num_workers, minimum=0)
        prefetch = check_int("prefetch_factor", prefetch_factor, minimum=1)
        self.slots = check_int("slots", prefetch + 1 if slots is None else slots, minimum=1)
        if self.num_workers == 0:
            self.slots = 1
        if augment is not None and device is None:
            raise ConfigError("augment needs device= (the GPU pitch/stretch runs after the transfer)", key="augment")
        self.device = None if device is None else torch.device(device)
        self.augment = augment
        self.drop_last = bool(drop_last)
        stream.batch_size = self.batch_size
        self.ring = _Ring(stream, max(1, self.num_workers), self.slots, self.batch_size)
        log.info("StreamLoader: %d worker(s) x %d slot(s) x batch %d: %.0f MB of shared memory (/dev/shm)",
                 max(1, self.num_workers), self.slots, self.batch_size, self.ring.nbytes / 1e6)
        kw: dict[str, Any] = {}
        if self.num_workers:
            kw = dict(prefetch_factor=prefetch, persistent_workers=persistent_workers,
                      multiprocessing_context=multiprocessing_context, timeout=timeout)
        self.loader = DataLoader(_RingBatches(stream, self.ring, self.batch_size, self.drop_last), batch_size=None,
                                 num_workers=self.num_workers, **kw)

    @property
    def ring_bytes(self) -> int:
        """Bytes of shared memory held by the batch buffers."""
        return self.ring.nbytes

    def __len__(self) -> int:
        n = len(self.stream)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        """The stream's resume point (items delivered by this loader in this epoch)."""
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)

    def __iter__(self) -> Iterator[tuple]:
        stream, ring = self.stream, self.ring
        stream.begin_iteration()
        ring.next_generation()
        it = iter(self.loader)
        try:
            for worker, slot, n in it:
                stream.count_delivered(n)
                yield self._batch(worker, slot, n)
                ring.release(worker, slot)
        finally:
            ring.next_generation()  # stops workers still rendering this iteration
            del it

    def _batch(self, worker: int, slot: int, n: int) -> tuple:
        r = self.ring
        mix, tgt = r.mixture[worker, slot, :n], r.targets[worker, slot, :n]
        aug = None
        if self.stream.has_aug_params:
            a = r.aug[worker, slot, :n]
            aug = {"pitch": a[:, 0], "rate": a[:, 1]}
        index = r.index[worker, slot, :n]
        if self.device is not None:
            index = index.clone()
            mix, tgt = device_batch(mix, tgt, aug, device=self.device, augment=self.augment,
                                    out_frames=getattr(self.stream, "out_frames", None))
            if self.augment is not None:
                aug = None
            elif aug is not None:
                aug = {k: v.clone() for k, v in aug.items()}
        out: tuple = (mix, tgt) if aug is None else (mix, tgt, aug)
        return (index, *out) if self.stream.with_index else out


def device_batch(mixture: torch.Tensor, targets: torch.Tensor, aug: dict[str, torch.Tensor] | None = None, *,
                 device: str | torch.device, augment: torch.nn.Module | None = None,
                 out_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch as the stream yields it -> float32 ``(mixture (B, C, T), targets (B, S, C, T))`` on ``device``.

    int16 is scaled by 1/32768 after the transfer (half the bytes over the bus). With ``augment`` (a
    ``train.gpu_augment.GpuAugment``) and ``aug`` (``{"pitch": (B, S), "rate": (B, S)}``, kept on the CPU so no
    device sync is needed) the stems are pitch-shifted / stretched to ``out_frames`` and the mixture is their sum;
    without ``augment`` the result is cropped to ``out_frames`` when given.
    """
    dev = torch.device(device)
    nb = dev.type == "cuda" and mixture.is_pinned()
    tgt = to_float(targets.to(dev, non_blocking=nb, copy=True))  # a copy: the loader's buffer is reused
    if augment is not None:
        if aug is None:
            raise ConfigError("augment given but the batch has no pitch/rate (build the stream with "
                              "gpu_augment=True)", key="augment")
        if out_frames is None:
            raise ConfigError("augment needs out_frames (the training length in samples)", key="out_frames")
        return _swap(augment(tgt, aug["pitch"], aug["rate"], out_frames=int(out_frames)))
    mix = to_float(mixture.to(dev, non_blocking=nb, copy=True))
    if out_frames is not None and mix.shape[-1] != out_frames:
        mix, tgt = mix[..., :out_frames], tgt[..., :out_frames]
    return mix, tgt


def _swap(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    stems, mixture = pair
    return mixture, stems
