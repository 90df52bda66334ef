"""Domain exceptions. Each carries the path, key or value it is about."""

from __future__ import annotations

from pathlib import Path


class StemdbError(Exception):
    """Base class of every error stemdb raises on purpose."""


class PathError(StemdbError):
    """An error about one file: ``path`` names it, ``reason`` says why. Pickles with both, so an error raised in a
    worker process reaches the parent intact (a process pool re-creates it from ``__reduce__``)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.path, self.reason)


class AudioReadError(PathError):
    """An audio file could not be read or decoded; ``path`` names it, ``reason`` says why."""


class AudioWriteError(PathError):
    """An audio file could not be written; ``path`` names it, ``reason`` says why (the OS error for a full disk)."""


class ConfigError(StemdbError):
    """A configuration value is wrong; the message names the key, the value and what is allowed."""

    def __init__(self, message: str, *, key: str | None = None, source: str | Path | None = None) -> None:
        self.key = key
        self.source = str(source) if source is not None else None
        self.message = message
        prefix = f"{self.source}: " if self.source else ""
        super().__init__(prefix + message)

    def __reduce__(self) -> tuple[object, ...]:
        return _rebuild_config_error, (type(self), self.message, self.key, self.source)


def _rebuild_config_error(cls: type[ConfigError], message: str, key: str | None, source: str | None) -> ConfigError:
    return cls(message, key=key, source=source)


class BusyError(StemdbError):
    """Another stemdb process holds the lock of a folder this run would write (a catalogue or a remix output)."""


class CatalogError(StemdbError):
    """The catalogue on disk is missing, unreadable or of another schema version."""


class MissingDependencyError(StemdbError):
    """An optional tool or package needed by a feature is not installed; the message has the install hint."""
