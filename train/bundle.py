"""``stemdb bundle``: join per-target runs into one separator (:class:`train.models.bundle.Bundle`).

::

    from train.bundle import bundle_runs
    path = bundle_runs(["runs/voc", "runs/drums", "runs/bass", "runs/other"], out="runs/bundle")
    # runs/bundle/checkpoints/step_00000000.pt: `stemdb separate --model runs/bundle`, `stemdb evaluate-run`

Each run's newest checkpoint (or a checkpoint file) gives one member: its model config and weights, taking the
stems of ``targets`` it separates. The runs may differ in architecture, loss, steps and options; they must share
the channel count and sample rate. A stem of ``targets`` that no run separates, or that two runs separate, is an
error naming it. The bundle is written as a checkpoint at step 0 of the run folder ``out`` (atomic; a rerun
replaces it), with ``run.json`` listing the runs, their checkpoints and steps, and ``train_config.seconds`` the
longest training crop of the members (the default chunk length of ``stemdb separate``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stemdb.errors import StemdbError
from train.checkpoint import checkpoint_path, code_version, list_checkpoints, load_checkpoint, save_checkpoint
from train.runlog import RUN_JSON

logger = logging.getLogger(__name__)

#: The stems of a bundle when neither the caller nor the first run's ``data.yaml`` names them.
MUSDB_STEMS: tuple[str, ...] = ("vocals", "drums", "bass", "other")


class BundleError(StemdbError):
    """The runs cannot be bundled: a stem missing or given twice, other channels or rates."""


def _default_targets(ckpt: dict[str, Any]) -> tuple[str, ...]:
    remix = (ckpt.get("stemdb_config") or {}).get("remix") or {}
    return tuple(remix.get("targets") or MUSDB_STEMS)


def _members(ckpts: list[dict[str, Any]], targets: tuple[str, ...]) -> list[dict[str, Any]]:
    """One member config per checkpoint, ``use`` = its stems among ``targets``.

    Raises:
        BundleError: a stem missing or separated by two runs, a run giving none of ``targets``, other channels or
            sample rates (each named with its run).
    """
    owner: dict[str, str] = {}
    members = []
    first = ckpts[0]["model_config"]
    for ckpt in ckpts:
        cfg, run = dict(ckpt["model_config"]), ckpt["path"]
        for key in ("channels", "sample_rate"):
            if cfg[key] != first[key]:
                raise BundleError(f"{run}: {key}={cfg[key]}, but {ckpts[0]['path']} has {first[key]}")
        use = [t for t in cfg["targets"] if t in targets]
        if not use:
            raise BundleError(f"{run}: separates {cfg['targets']}, none of the bundle's stems {list(targets)}")
        for t in use:
            if t in owner:
                raise BundleError(f"stem {t!r} is separated by two runs: {owner[t]} and {run}")
            owner[t] = run
        members.append({**cfg, "use": use})
    missing = [t for t in targets if t not in owner]
    if missing:
        raise BundleError(f"stem(s) {missing} separated by none of the runs ({', '.join(owner.values())})")
    return members


def bundle_runs(runs: Sequence[str | Path], *, out: str | Path, targets: Sequence[str] | None = None) -> Path:
    """Join the newest checkpoints of ``runs`` into one bundle checkpoint in the run folder ``out``.

    Args:
        runs: run folders or checkpoint files, one per member.
        out: the bundle's run folder (must not hold training checkpoints of another run).
        targets: the bundle's stems in output order (default: the first run's ``remix.targets``, else the four
            MUSDB stems).

    Returns:
        The checkpoint written.

    Raises:
        BundleError: see :func:`_members`; ``out`` holding checkpoints other than a bundle's.
        train.checkpoint.CheckpointError: a run without a readable checkpoint.
    """
    from stemdb.catalog import write_json_atomic
    from train.models import build_model

    if not runs:
        raise BundleError("bundle: no runs given")
    ckpts = [load_checkpoint(r) for r in runs]
    stems = tuple(targets) if targets else _default_targets(ckpts[0])
    members = _members(ckpts, stems)
    out = Path(out)
    others = [p for p in list_checkpoints(out) if p != checkpoint_path(out, 0)]
    if others:
        raise BundleError(f"{out}: holds training checkpoints ({others[-1].name}); bundle into a new folder")
    first = ckpts[0]["model_config"]
    bundle = build_model("bundle", targets=stems, channels=first["channels"], sample_rate=first["sample_rate"],
                         members=members)
    for net, ckpt in zip(bundle.members, ckpts, strict=True):
        net.load_state_dict(ckpt["model_state"])
    seconds = [s for s in (_train_seconds(c) for c in ckpts) if s]
    runs_meta = [{"run": str(Path(r)), "checkpoint": c["path"], "step": int(c.get("step", 0)),
                  "model": c["model_config"]["name"], "stems": m["use"]}
                 for r, c, m in zip(runs, ckpts, members, strict=True)]
    path = save_checkpoint(checkpoint_path(out, 0), {
        "model_config": bundle.config(),
        "model_state": {k: v.detach().cpu() for k, v in bundle.state_dict().items()},
        "train_config": {"seconds": max(seconds) if seconds else None},
        "stemdb_config": ckpts[0].get("stemdb_config"), "catalog_fingerprint": None,
        "extra": {"bundle": runs_meta}, "code_version": code_version(), "seed": None, "step": 0,
    })
    write_json_atomic({"model_config": bundle.config(), "bundle": runs_meta,
                       "parameters": sum(p.numel() for p in bundle.parameters())}, out / RUN_JSON)
    logger.info("bundle of %d runs -> %s", len(runs), path)
    return path


def _train_seconds(ckpt: dict[str, Any]) -> float | None:
    tcfg = ckpt.get("train_config") or {}
    return tcfg.get("seconds") or ((ckpt.get("stemdb_config") or {}).get("remix") or {}).get("seconds")


__all__ = ["MUSDB_STEMS", "BundleError", "bundle_runs"]
