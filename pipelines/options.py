"""Option checking for the ``stemdb`` command line: the one place where a bad option value becomes an error.

Every check runs as a typer callback, before the command does anything, so a bad value writes nothing. Bounds that
a config model already states (``remix.seconds``, ``ingest.workers``) are read from that model's field, so the
option and ``data.yaml`` allow the same values. :class:`OneLineErrors` (the command group's class) prints every
usage error, and every :class:`~stemdb.errors.StemdbError` or OS error a command raises, as one line
``error: ...`` on stderr with exit status 2 (a traceback only with ``--verbose``).
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from stemdb.errors import StemdbError

#: The most processes an option may ask for.
MAX_WORKERS = 1024
#: Seeds are numpy ``SeedSequence`` entropy: non-negative, below 2**63 here.
MAX_SEED = 2**63 - 1


#: Set per invocation by :class:`OneLineErrors` from ``--verbose`` / ``-v``.
_STATE = {"verbose": False}


def print_error(exc: BaseException) -> None:
    """``error: <one line>`` on stderr; the traceback first when the command line has ``--verbose``."""
    if _STATE["verbose"]:
        traceback.print_exception(exc)
    typer.secho(f"error: {one_line(exc)}", fg=typer.colors.RED, err=True)


def one_line(exc: BaseException) -> str:
    """An error message on one line (a multi-line ConfigError's lines joined with ``; ``)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return lines[0] + " " + "; ".join(lines[1:])
    return "; ".join(lines) or type(exc).__name__


class OneLineErrors(TyperGroup):
    """The ``stemdb`` group: usage errors, StemdbErrors and OS errors end as one line on stderr, exit 2."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> Any:  # noqa: ANN401
        argv = list(sys.argv[1:] if args is None else args)
        _STATE["verbose"] = any(a in ("-v", "--verbose") for a in argv)
        try:
            rv = super().main(args=argv, prog_name=prog_name, standalone_mode=False, **extra)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        except typer.TyperException as exc:  # click's usage errors (typer carries its own click)
            typer.echo(f"error: {_usage_line(exc, argv)}", err=True)
            sys.exit(getattr(exc, "exit_code", 2))
        except (StemdbError, OSError) as exc:
            print_error(exc)
            sys.exit(2)
        sys.exit(rv if isinstance(rv, int) else 0)


def _usage_line(exc: typer.TyperException, argv: list[str]) -> str:
    fmt = getattr(exc, "format_message", None)
    msg = " ".join((fmt() if fmt else str(exc)).split())
    if isinstance(exc, typer.BadParameter) and exc.param is not None:
        raw = _raw_value(argv, list(getattr(exc.param, "opts", [])))
        if raw is not None and raw not in msg:
            msg += f" (got {raw!r})"
    return msg


def _raw_value(argv: list[str], opts: list[str]) -> str | None:
    for i, a in enumerate(argv):
        for o in opts:
            if a == o and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(o + "="):
                return a[len(o) + 1:]
    return None


# --------------------------------------------------------------------------------------------------------------
# numbers


def number(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           unit: str = "") -> Callable[[Any], Any]:
    """A callback accepting finite numbers within the bounds given (``None`` passes: the default applies)."""

    def check(value: Any) -> Any:  # noqa: ANN401
        if value is None:
            return value
        bad = (isinstance(value, float) and not math.isfinite(value)) or \
            (ge is not None and value < ge) or (gt is not None and value <= gt) or \
            (le is not None and value > le) or (lt is not None and value >= lt)
        if bad:
            what = "a finite number" if isinstance(value, float) else "an integer"
            raise typer.BadParameter(f"{value!r} is not allowed; allowed: {what}{_bounds(ge, gt, le, lt, unit)}")
        return value

    return check


def field_number(model: type, name: str, *, unit: str = "") -> Callable[[Any], Any]:
    """:func:`number` with the bounds of a pydantic model's field (``Field(gt=..., le=...)``)."""
    bounds: dict[str, float] = {}
    for meta in model.model_fields[name].metadata:
        for key in ("ge", "gt", "le", "lt"):
            if getattr(meta, key, None) is not None:
                bounds[key] = getattr(meta, key)
    return number(**bounds, unit=unit)


def _bounds(ge: float | None, gt: float | None, le: float | None, lt: float | None, unit: str) -> str:
    parts = [f"{op} {v:g}" if isinstance(v, float) else f"{op} {v}"
             for op, v in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if v is not None]
    return (" " + " and ".join(parts) if parts else "") + (f" {unit}" if unit else "")


WORKERS = number(ge=1, le=MAX_WORKERS)
SEED = number(ge=0, le=MAX_SEED)


def choice(*allowed: str) -> Callable[[str | None], str | None]:
    """A callback accepting one of ``allowed`` (``None`` passes)."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"{value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
        return value

    return check


# --------------------------------------------------------------------------------------------------------------
# paths


def existing_dir(value: Path | None) -> Path | None:
    """An existing folder."""
    if value is not None and not value.is_dir():
        what = "is not a folder" if value.exists() else "does not exist"
        raise typer.BadParameter(f"{str(value)!r} {what}; allowed: an existing folder")
    return value


def folder_path(value: Path | None) -> Path | None:
    """A folder that may not exist yet, but is not a file."""
    if value is not None and value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{str(value)!r} is a file; allowed: a folder")
    return value


def existing_file(value: Path | None) -> Path | None:
    """An existing file."""
    if value is not None and not value.is_file():
        what = "is a folder" if value.is_dir() else "does not exist"
        raise typer.BadParameter(f"{str(value)!r} {what}; allowed: an existing file")
    return value


def existing_path(value: Path | None) -> Path | None:
    """An existing file or folder (a run folder or a checkpoint file)."""
    if value is not None and not value.exists():
        raise typer.BadParameter(f"{str(value)!r} does not exist; allowed: an existing run folder or checkpoint file")
    return value


def existing_paths(values: list[Path] | None) -> list[Path] | None:
    """Every one an existing file or folder."""
    for v in values or []:
        existing_path(v)
    return values


def output_dir(value: Path | None) -> Path | None:
    """A folder to write into: an existing folder or a new one, on a writable file system."""
    if value is None:
        return value
    if value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{str(value)!r} is a file; allowed: a folder (existing or new)")
    _writable(value, "a folder")
    return value


def output_file(value: Path | None) -> Path | None:
    """A file to write: not a folder, its folder existing or new, writable."""
    if value is None:
        return value
    if value.is_dir():
        raise typer.BadParameter(f"{str(value)!r} is a folder; allowed: a file path")
    _writable(value, "a file path")
    return value


def _writable(p: Path, what: str) -> None:
    anc = p.absolute()
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise typer.BadParameter(f"{str(p)!r}: {str(anc)!r} is a file; allowed: {what} under a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"{str(p)!r}: {str(anc)!r} is not writable; allowed: {what} where stemdb may "
                                 "write")


__all__ = ["MAX_SEED", "MAX_WORKERS", "SEED", "WORKERS", "OneLineErrors", "choice", "existing_dir", "existing_file", "field_number", "folder_path",
           "number", "one_line", "print_error", "output_dir", "output_file"]
