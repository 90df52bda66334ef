"""Domain exceptions. Each carries the path, key or value it is about."""

from __future__ import annotations

from pathlib import Path


class StemdbError(Exception):
    """Base class of every error stemdb raises on purpose."""


class AudioReadError(StemdbError):
    """An audio file could not be read or decoded; ``path`` names it, ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class AudioWriteError(StemdbError):
    """An audio file could not be written."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(StemdbError):
    """A configuration value is wrong; the message names the key, the value and what is allowed."""

    def __init__(self, message: str, *, key: str | None = None, source: str | Path | None = None) -> None:
        self.key = key
        self.source = str(source) if source is not None else None
        prefix = f"{self.source}: " if self.source else ""
        super().__init__(prefix + message)


class CatalogError(StemdbError):
    """The catalogue on disk is missing, unreadable or of another schema version."""


class MissingDependencyError(StemdbError):
    """An optional tool or package needed by a feature is not installed; the message has the install hint."""
