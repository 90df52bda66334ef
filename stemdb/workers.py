"""Process pools whose workers end with their parent.

A ``ProcessPoolExecutor`` worker waits on its task queue; when the parent is killed (``kill -9``) nothing tells
it, and it lingers (50 s and more, holding its memory). :func:`process_pool` starts every worker with a watchdog
thread that ends the worker within :data:`WATCH_S` seconds of its parent's death (its parent pid changes).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext

#: How often (seconds) a worker checks that its parent is alive.
WATCH_S = 0.5


def process_pool(max_workers: int, *, mp_context: BaseContext | None = None,
                 max_tasks_per_child: int | None = None) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``max_workers`` processes that exit when the process that made them dies."""
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=mp_context, initializer=_watch_parent,
                               initargs=(os.getpid(),), max_tasks_per_child=max_tasks_per_child)


def _watch_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_S)
        os._exit(1)  # the parent is gone: nobody will read this worker's results

    threading.Thread(target=watch, name="stemdb-parent-watch", daemon=True).start()


__all__ = ["WATCH_S", "process_pool"]
