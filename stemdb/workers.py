"""Process pools whose workers end with their parent.

A ``ProcessPoolExecutor`` worker waits on its task queue; when the parent is killed (``kill -9``) nothing tells
it, and it lingers (50 s and more, holding its memory). :func:`process_pool` starts every worker with a watchdog
thread that ends the worker within :data:`WATCH_S` seconds of its parent's death (its parent pid changes).
:func:`bounded_map` feeds a pool from a generator without submitting it all at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: How often (seconds) a worker checks that its parent is alive.
WATCH_S = 0.5


def process_pool(max_workers: int, *, mp_context: BaseContext | None = None,
                 max_tasks_per_child: int | None = None) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``max_workers`` processes that exit when the process that made them dies."""
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=mp_context, initializer=_watch_parent,
                               initargs=(os.getpid(),), max_tasks_per_child=max_tasks_per_child)


def bounded_map(executor: Executor, fn: Callable[[T], R], items: Iterable[T], *, window: int) -> Iterator[R]:
    """``fn`` over ``items`` in ``executor``, results in order, with at most ``window`` tasks submitted ahead.

    ``Executor.map`` submits every item before the first result comes back, so a generator of a million chunks sat
    in memory as a million futures; here the items are drawn as results are taken. When the consumer stops (an
    exception, or it closes the generator) the tasks not yet started are cancelled.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(executor.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()


def _watch_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_S)
        os._exit(1)  # the parent is gone: nobody will read this worker's results

    threading.Thread(target=watch, name="stemdb-parent-watch", daemon=True).start()


__all__ = ["WATCH_S", "bounded_map", "process_pool"]
