"""Running a comparison: plan, train every (variant, seed) run with the same budget, separate the held-out songs.

Layout of ``OUT`` (every step is resumable; a rerun with the same config trains, separates and scores nothing)::

    testset/                       held-out songs written here when needed (train.compare.testset)
    runs/<variant>/seed-<s>/       a run folder (checkpoints/, train.csv, train.png, run.json) plus
        estimates/<song>/<stem>.wav    the held-out songs separated by its final checkpoint
        compare-run.json               what the comparison measured of it (steps, seconds, checkpoint)
        scores.json                    its scores (train.compare.scoring)
    runs/<variant>/seed-<s>-pretrain/  the first phase of a pretrain variant
    baselines.json, results.json, report.html
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augment.config import ProjectConfig
from stemdb.atomic import write_text_atomic
from stemdb.errors import ConfigError
from train.compare.config import CompareConfig, load_compare
from train.compare.testset import HeldOut, prepare_test_set
from train.compare.variants import Phase, RunSpec, needs_multitracks, project_of, run_specs

logger = logging.getLogger(__name__)

RUN_RECORD = "compare-run.json"
ESTIMATES = "estimates"


@dataclass(frozen=True)
class Comparison:
    """A planned comparison: the config (and the file it came from), the project, the output folder, the runs and
    the held-out songs."""

    cfg: CompareConfig
    config_path: Path | None
    project: ProjectConfig
    out: Path
    specs: tuple[RunSpec, ...]
    heldout: HeldOut

    def run_dir(self, folder: str) -> Path:
        return self.out / "runs" / folder


def plan_comparison(config: str | Path | CompareConfig, out: str | Path) -> Comparison:
    """Load and check the config, expand its runs, check the catalogue has what the variants draw on, and prepare
    the held-out songs.

    Raises:
        ConfigError: a bad config, a missing catalogue, a coherent variant without real multitracks, or a bad
            test set (naming the key).
    """
    from augment.pool import build_pool
    from stemdb.catalog import Catalog
    from stemdb.errors import CatalogError

    path = None if isinstance(config, CompareConfig) else Path(config).resolve()
    cfg = config if isinstance(config, CompareConfig) else load_compare(config)
    project = project_of(cfg)
    try:
        Catalog.open(project.catalog)
    except CatalogError as exc:
        raise ConfigError(f"catalog={str(project.catalog)!r}: {exc} (ingest first: stemdb ingest)",
                          key="catalog") from exc
    specs = tuple(run_specs(cfg, project))
    coherent = [p for s in specs for p in s.phases if needs_multitracks(p.remix)]
    if coherent and not build_pool(project.catalog, coherent[0].remix).coherent:
        raise ConfigError(f"variant of {coherent[0].folder}: draws real multitracks, but no song of the catalogue "
                          f"{project.catalog} has every target ({', '.join(coherent[0].remix.targets)}) in split "
                          "train", key="variants")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return Comparison(cfg, path, project, out, specs, prepare_test_set(cfg.test, project, out))


def train_phase(comp: Comparison, phase: Phase) -> dict[str, Any]:
    """Train (or resume, or find finished) one phase's run folder; returns its record (also ``compare-run.json``)."""
    from train.run import train_run

    folder = comp.run_dir(phase.folder)
    stamp = _phase_stamp(phase)
    record = _read(folder / RUN_RECORD)
    if record.get("complete") == stamp and Path(str(record.get("checkpoint"))).is_file():
        logger.info("[%s] step %d (already trained)", phase.folder, record["step"])
        return record
    project = comp.project.model_copy(update={"remix": phase.remix})
    init = comp.run_dir(phase.init_from) if phase.init_from is not None else None
    t0 = time.perf_counter()
    result = train_run(project, out=folder, overrides=phase.train, init=init)
    record = {"folder": str(folder), "step": result.step, "checkpoint": str(result.checkpoint),
              "train_seconds": round(record.get("train_seconds", 0.0) + result.train_seconds, 3),
              "train_wall_s": round(record.get("train_wall_s", 0.0) + time.perf_counter() - t0, 3),
              "audio_seconds": round(record.get("audio_seconds", 0.0) + result.audio_seconds, 3),
              "final_loss": result.loss, "valid": result.valid, "budget": phase.budget.model_dump(),
              "init_from": str(init) if init else None, "complete": stamp}
    _write(folder / RUN_RECORD, record)
    logger.info("[%s] step %d (trained)", phase.folder, result.step)
    return record


def _phase_stamp(phase: Phase) -> dict[str, Any]:
    """What a finished phase was trained with: a rerun with the same stamp trains nothing (a minutes budget would
    otherwise train again)."""
    from stemdb.config import fingerprint_of
    from train.scores import json_safe

    return json_safe({"remix": fingerprint_of(phase.remix), "train": phase.train, "budget": phase.budget.model_dump(),
                      "init_from": phase.init_from})


def separate_run(comp: Comparison, spec: RunSpec) -> Path:
    """Separate the held-out songs with the run's final checkpoint into ``<run>/estimates/`` (skipped when they are
    there for that checkpoint); returns the estimates folder."""
    from train.runtime import resolve_device
    from train.separate import load_model, separate_tracks

    folder = comp.run_dir(spec.folder)
    record = _read(folder / RUN_RECORD)
    est = folder / ESTIMATES
    stamp = {"checkpoint": record.get("checkpoint"), "tracks": list(comp.heldout.tracks),
             "root": str(comp.heldout.root), "chunk_seconds": comp.cfg.scoring.chunk_seconds}
    if record.get("separated") == stamp and all((est / t).is_dir() for t in comp.heldout.tracks):
        return est
    device = resolve_device(str(spec.phases[-1].train.get("device", "auto")))
    t0 = time.perf_counter()
    model = load_model(folder, device=device)
    separate_tracks(model, comp.heldout.root, est, tracks=comp.heldout.tracks,
                    chunk_seconds=comp.cfg.scoring.chunk_seconds)
    record.update(separated=stamp, separate_wall_s=round(time.perf_counter() - t0, 3))
    _write(folder / RUN_RECORD, record)
    logger.info("[%s] separated %d songs in %.1f s", spec.key, len(comp.heldout.tracks), record["separate_wall_s"])
    return est


def run_spec(comp: Comparison, spec: RunSpec) -> dict[str, Any]:
    """Train every phase of one run, then separate the held-out songs; returns :func:`run_record`."""
    for phase in spec.phases:
        train_phase(comp, phase)
    separate_run(comp, spec)
    return run_record(comp, spec)


def run_record(comp: Comparison, spec: RunSpec) -> dict[str, Any]:
    """What the comparison recorded of a run (``compare-run.json`` of its final phase, plus the first phase's as
    ``pretrain`` where there is one); ``{}`` for a run not trained yet."""
    record = _read(comp.run_dir(spec.folder) / RUN_RECORD)
    if len(spec.phases) > 1:
        record["pretrain"] = _read(comp.run_dir(spec.phases[0].folder) / RUN_RECORD)
    return record


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write(path: Path, data: dict[str, Any]) -> None:
    from train.scores import json_safe

    write_text_atomic(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


__all__ = ["ESTIMATES", "RUN_RECORD", "Comparison", "plan_comparison", "run_record", "run_spec", "separate_run",
           "train_phase"]
