"""Atomic file writes: a dot-prefixed temp file in the target's folder, fsync, then rename over the target.

A reader (or a crash) never sees a half-written file: either the old file or the new one. Dot-prefixed temp
names are ignored by Parquet dataset readers and by the catalogue's part-file globs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from stemdb.errors import BusyError


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", *, encoding: str | None = None,
                file_mode: int = 0o644) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` for writing; on a clean exit fsync it and rename it to ``path``.

    On an exception the temp file is removed and ``path`` is left as it was. Parent folders are created.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(p.parent)


def remove_temps(folder: str | Path, *, older_than_s: float = 0.0) -> int:
    """Remove the temp files :func:`atomic_open` leaves in ``folder`` when its process is killed mid-write
    (``.<name>.<random>.tmp``, 0 bytes when killed before the first write), if older than ``older_than_s``
    (a concurrent writer's temp file is seconds old). Returns how many were removed."""
    now, n = time.time(), 0
    for p in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if p.is_file() and now - p.stat().st_mtime >= older_than_s:
                p.unlink()
                n += 1
    return n


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def fsync_dir(d: Path) -> None:
    """Make a rename in ``d`` durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created when missing) for one writer; a second writer fails at once.

    The lock is ``flock`` on ``<folder>/.lock``: the kernel releases it when the holder exits, however it dies
    (kill -9 included), so a crashed run never leaves a stale lock.

    Raises:
        BusyError: another process holds the lock; the message names the folder, ``what`` holds it and its pid.
    """
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, who = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
            raise BusyError(f"{d}: busy: {who or 'another run'} (pid {pid or '?'}) is writing here; wait for it to "
                            f"finish or use another folder for this {what}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}".encode(), 0)
        yield d
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class WriteGuard:
    """A file object (a temp file as libsndfile's virtual I/O sees it) that keeps the OSError of a failed write (a full disk, an
    I/O error) instead of letting it escape through the C callback, where it would be printed and lost."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.error: OSError | None = None
        self.path = getattr(fh, "name", "")

    def write(self, data: bytes) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            return 0

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def __getattr__(self, name: str) -> object:
        return getattr(self._fh, name)
