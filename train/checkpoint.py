"""Training checkpoints that describe themselves, written atomically, read with ``weights_only=True``.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python containers (dict, list, tuple, str,
int, float, bool, None), so :func:`load_checkpoint` can always use ``torch.load(..., weights_only=True)`` and never
runs pickled code. Its keys::

    format, format_version        "stemdb-train-checkpoint", 1
    model_config                  SeparationModel.config(): rebuilds the architecture (build_model(**cfg))
    model_state                   the model's state_dict (tensors)
    train_config                  the resolved training options (train.config.TrainConfig as JSON)
    stemdb_config                 the resolved data.yaml (JSON), or None
    catalog_fingerprint           stemdb.catalog.Catalog.fingerprint() of the training catalogue, or None
    code_version                  {"stemdb": __version__, "git": `git describe --always --dirty` or None}
    seed, step, epoch, batches_in_epoch, world_size
    optimizer, scheduler, scaler  their state_dicts (scaler None when no GradScaler is used)
    stream                        the training stream's state_dict() (mid-epoch resume), or None
    saved_at                      UTC time, ISO 8601

A run folder keeps them as ``<run>/checkpoints/step_<step:08d>.pt``; the newest is the one with the highest step.
A file only ever appears under its final name complete: it is written to a temporary file in the same folder,
flushed, fsynced and renamed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import stemdb
from stemdb.atomic import atomic_open
from stemdb.errors import StemdbError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "stemdb-train-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d{8,})\.pt$")
_PLAIN = (str, int, float, bool, type(None))


class CheckpointError(StemdbError):
    """A checkpoint is missing, unreadable, of another format, or holds something other than tensors and plain
    containers; the message names the path or the offending key."""


def checkpoint_path(run: str | Path, step: int) -> Path:
    """``<run>/checkpoints/step_<step:08d>.pt``."""
    if step < 0:
        raise ValueError(f"step={step} is negative; allowed: step >= 0")
    return Path(run) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def list_checkpoints(run: str | Path) -> list[Path]:
    """The complete checkpoints of a run folder, oldest (lowest step) first."""
    folder = Path(run) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run: str | Path) -> Path | None:
    """The highest-step checkpoint of a run folder, or ``None`` when it has none."""
    found = list_checkpoints(run)
    return found[-1] if found else None


def resolve_checkpoint(run_or_file: str | Path) -> Path:
    """A checkpoint file given either itself or its run folder (then the newest checkpoint in it).

    Raises:
        CheckpointError: no such file, or a run folder without checkpoints.
    """
    p = Path(run_or_file)
    if p.is_file():
        return p
    if p.is_dir():
        latest = latest_checkpoint(p)
        if latest is not None:
            return latest
        raise CheckpointError(f"{p}: run folder has no checkpoints under {CHECKPOINT_DIR}/ (train it first)")
    raise CheckpointError(f"{p}: no such run folder or checkpoint file")


def prune_checkpoints(run: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints of a run (``keep >= 1``); returns the deleted paths."""
    if keep < 1:
        raise ValueError(f"keep={keep} is not allowed; allowed: keep >= 1")
    old = list_checkpoints(run)[:-keep]
    for p in old:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return old


@functools.lru_cache(maxsize=1)
def git_describe() -> str | None:
    """``git describe --always --dirty --tags`` of the source tree this module lives in, or ``None``."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--tags"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def code_version() -> dict[str, str | None]:
    """``{"stemdb": stemdb.__version__, "git": git describe or None}``."""
    return {"stemdb": stemdb.__version__, "git": git_describe()}


def check_plain(obj: Any, key: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming the key path of anything that is not a tensor or plain data.

    ``weights_only=True`` loading accepts tensors, dict/list/tuple/set containers, str, int, float, bool, None
    (and a few torch types such as ``torch.Size`` and ``collections.Counter``); anything else would make the
    checkpoint unloadable, so it is refused at save time.
    """
    if isinstance(obj, (torch.Tensor, torch.Size, *_PLAIN)):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, _PLAIN):
                raise CheckpointError(f"{key}: key {k!r} of type {type(k).__name__} is not plain data")
            check_plain(v, f"{key}.{k}")
        return
    if isinstance(obj, list | tuple | set | frozenset):
        for i, v in enumerate(obj):
            check_plain(v, f"{key}[{i}]")
        return
    raise CheckpointError(
        f"{key}: value of type {type(obj).__name__} is not allowed; allowed: tensors, dict/list/tuple, "
        "str, int, float, bool, None"
    )


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (with ``format`` and ``format_version`` added) atomically to ``path``.

    Raises:
        CheckpointError: ``payload`` holds something ``weights_only`` loading would refuse (key path named).
    """
    p = Path(path)
    data = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, **payload}
    check_plain(data)
    with atomic_open(p, "wb") as fh:
        torch.save(data, fh)
    return p


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (a file, or a run folder's newest) with ``torch.load(..., weights_only=True)``.

    Raises:
        CheckpointError: missing, unreadable, or not a stemdb training checkpoint of a known format version.
    """
    p = resolve_checkpoint(path)
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise CheckpointError(f"{p}: not readable as a checkpoint ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: not a {CHECKPOINT_FORMAT} file")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: format_version {data.get('format_version')!r}; this stemdb reads version {FORMAT_VERSION}"
        )
    data["path"] = str(p)
    return data


def model_from_checkpoint(ckpt: Mapping[str, Any] | str | Path, *, device: str | torch.device = "cpu"):  # noqa: ANN201
    """The :class:`train.models.SeparationModel` a checkpoint holds, weights loaded, in eval mode on ``device``.

    Args:
        ckpt: a loaded checkpoint dict, a checkpoint file or a run folder.
    """
    from train.models import build_model

    data = load_checkpoint(ckpt) if isinstance(ckpt, str | Path) else ckpt
    cfg = dict(data["model_config"])
    model = build_model(cfg.pop("name"), **cfg)
    model.load_state_dict(data["model_state"])
    return model.to(device).eval()


__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "check_plain",
    "checkpoint_path",
    "code_version",
    "git_describe",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "model_from_checkpoint",
    "prune_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
]
