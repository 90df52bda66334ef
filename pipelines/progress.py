"""Progress of the long commands: a rich bar on a terminal, timed log lines anywhere else.

Library functions report ``progress(done, total)``; :func:`progress` turns that into a transient rich bar when
stderr is a terminal, and into a :class:`LineProgress` (one line every few seconds with the count, the rate and
the time left) when stderr is a pipe or a log file, so a job run under ``nohup``, CI or a scheduler shows it is
alive. ``STEMDB_PROGRESS_S`` sets the seconds between two lines (default 5; 0: a line on every update).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

#: Seconds between two progress lines when the output is not a terminal (``STEMDB_PROGRESS_S`` overrides).
DEFAULT_EVERY_S = 5.0


def _every_s() -> float:
    raw = os.environ.get("STEMDB_PROGRESS_S", "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_EVERY_S
    except ValueError:
        return DEFAULT_EVERY_S


def _clock_text(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class LineProgress:
    """A ``progress(done, total)`` callback that writes ``LABEL: DONE/TOTAL UNIT (P%), R UNIT/s, ETA M:SS``
    to ``stream`` (default: stderr at the time of the call) at most once every ``every_s`` seconds.

    ``clock``: seconds, monotonic (injectable for tests). The rate is the mean since the object was made.
    """

    def __init__(self, label: str, *, unit: str = "items", every_s: float | None = None,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.unit = label, unit
        self.every_s = _every_s() if every_s is None else every_s
        self.stream = stream
        self.clock = clock
        self.t0 = self.last = clock()
        self.lines = 0

    def __call__(self, done: int, total: int | None) -> None:
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        (self.stream or sys.stderr).write(self.line(done, total, now - self.t0) + "\n")
        (self.stream or sys.stderr).flush()
        self.lines += 1

    def line(self, done: int, total: int | None, elapsed: float) -> str:
        """The text of one progress line after ``elapsed`` seconds."""
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{done}/{total}" if total else f"{done}"
        pct = f" ({100.0 * done / total:.0f}%)" if total else ""
        eta = (f", ETA {_clock_text((total - done) / rate)}" if total and rate > 0 and done < total
               else "")
        speed = f"{rate:.1f}" if rate >= 1.0 or rate == 0.0 else f"{rate:.3f}"
        return f"{self.label}: {count} {self.unit}{pct}, {speed} {self.unit}/s{eta}"


def track_lines(verb: str, *, stream: TextIO | None = None,
                clock: Callable[[], float] = time.monotonic) -> Callable[[str, int, int], None]:
    """An ``on_track(track, done, total)`` callback writing ``VERB TRACK (DONE/TOTAL tracks, R tracks/s, ETA
    M:SS)`` for every track (tracks take seconds to minutes each, so every one is worth a line)."""
    counter = LineProgress(verb, unit="tracks", every_s=0.0, clock=clock)

    def on_track(track: str, done: int, total: int) -> None:
        detail = counter.line(done, total, clock() - counter.t0).removeprefix(f"{verb}: ")
        (stream or sys.stderr).write(f"{verb} {track} ({detail})\n")
        (stream or sys.stderr).flush()

    return on_track


@contextlib.contextmanager
def progress(label: str, *, unit: str = "items") -> Iterator[Callable[[int, int], None]]:
    """Yields the ``progress(done, total)`` callback: a transient rich bar when stderr is a terminal, else a
    :class:`LineProgress` writing to stderr."""
    if not sys.stderr.isatty():
        yield LineProgress(label, unit=unit)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


__all__ = ["DEFAULT_EVERY_S", "LineProgress", "progress", "track_lines"]
