"""Order and sharding of indexed streams: pure functions of (seed, epoch, rank, world size, workers, run length).

An *indexed stream* yields items ``i`` of an epoch, each a pure function of ``(seed, epoch, i)``. Which process
yields which index, and in what order, is decided here:

1. **Epoch order** (finite streams of ``length`` items): ``epoch_order(seed, epoch, length)``, a permutation of
   ``range(length)`` drawn by ``numpy.random.default_rng(SeedSequence([seed, epoch, ORDER_TAG]))``.
   Infinite streams have no permutation: their order is ``0, 1, 2, ...`` (each item is an independent random draw
   anyway).
2. **Rank share**: rank ``r`` of ``w`` takes every ``w``-th entry of the order starting at ``r``
   (``order[r::w]``; infinite: ``r, r + w, r + 2w, ...``). Shares are disjoint and cover the epoch; their sizes differ
   by at most one item.
3. **Worker runs**: the rank's share, from position ``start`` on (the resume point), is cut into *runs* of ``run``
   consecutive entries; run ``j`` goes to worker ``j % workers``. With ``run`` equal to the DataLoader's batch size,
   a DataLoader (``in_order=True``, its default) returns the runs in order, so the training loop sees the rank's
   share in order *whatever the number of workers*, and a resume point is a single count of items received.

Nothing here reads global random state; everything is a function of its arguments.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from stemdb.errors import ConfigError

#: Entropy word that separates the order generator from the per-mixture generators ``SeedSequence([seed, i])``.
ORDER_TAG = 0x6F72646572  # "order"
#: Entropy word of the per-epoch content seed.
EPOCH_TAG = 0x65706F6368  # "epoch"


def check_int(name: str, value: object, *, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``; raises :class:`ConfigError` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < minimum:
        raise ConfigError(f"{name}={value!r} is not allowed: an int >= {minimum} is", key=name)
    return int(value)


def epoch_order(seed: int, epoch: int, length: int) -> np.ndarray:
    """The order of epoch ``epoch``: a permutation of ``range(length)`` (int64), a pure function of its arguments."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), ORDER_TAG]))
    return rng.permutation(int(length)).astype(np.int64)


def epoch_seed(seed: int, epoch: int) -> int:
    """The content seed of epoch ``epoch``: ``seed`` itself for epoch 0, a derived 63-bit seed for later epochs.

    Item ``i`` of epoch ``e`` is mixture ``plan_mixture(i, seed=epoch_seed(seed, e))``, so epoch 0 of a stream is
    exactly the set ``build_remix(n=epoch_length, seed=seed)`` renders, and later epochs hold other mixtures.
    """
    if int(epoch) == 0:
        return int(seed)
    state = np.random.SeedSequence([int(seed), int(epoch), EPOCH_TAG]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def share_length(length: int, rank: int, world_size: int) -> int:
    """Number of items of rank ``rank``'s share of a finite epoch of ``length`` items."""
    return max(0, (int(length) - int(rank) + int(world_size) - 1) // int(world_size))


def rank_share(order: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s share of an epoch's order: ``order[rank::world_size]``."""
    return order[int(rank) :: int(world_size)]


def worker_positions(n: int | None, *, start: int, run: int, worker: int, workers: int,
                     drop_last: bool = False) -> Iterator[np.ndarray]:
    """Positions (indices into the rank's share) that worker ``worker`` of ``workers`` takes, one array per run.

    ``n``: length of the rank's share (``None``: infinite). Positions ``start, start + 1, ...`` are cut into runs of
    ``run``; run ``j`` (counted from ``start``) belongs to worker ``j % workers``. With ``drop_last`` a final run
    shorter than ``run`` is left out.
    """
    j = worker
    while True:
        lo = start + j * run
        hi = lo + run
        if n is not None:
            if lo >= n or (drop_last and hi > n):
                return
            hi = min(hi, n)
        yield np.arange(lo, hi, dtype=np.int64)
        j += workers


def indices_at(positions: np.ndarray, *, share: np.ndarray | None, rank: int, world_size: int) -> np.ndarray:
    """Stream indices at ``positions`` of a rank's share (finite: ``share[positions]``; infinite:
    ``rank + world_size * positions``)."""
    if share is not None:
        return share[positions]
    return int(rank) + int(world_size) * positions


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: the arguments when given, else ``torch.distributed``'s when it is initialised,
    else ``(0, 1)``.

    Raises:
        ConfigError: only one of the two is given, or ``rank`` is not in ``[0, world_size)``.
    """
    if (rank is None) != (world_size is None):
        raise ConfigError(f"rank={rank!r}, world_size={world_size!r}: give both or neither", key="rank")
    if rank is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank()), int(dist.get_world_size())
        return 0, 1
    world = check_int("world_size", world_size, minimum=1)
    r = check_int("rank", rank, minimum=0)
    if r >= world:
        raise ConfigError(f"rank={r} is not allowed with world_size={world}: 0 <= rank < world_size", key="rank")
    return r, world
