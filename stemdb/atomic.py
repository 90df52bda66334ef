"""Atomic file writes: a dot-prefixed temp file in the target's folder, fsync, then rename over the target.

A reader (or a crash) never sees a half-written file: either the old file or the new one. Dot-prefixed temp
names are ignored by Parquet dataset readers and by the catalogue's part-file globs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


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
