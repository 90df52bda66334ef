"""The ``train-model`` Prefect flow: a thin wrapper over :func:`train.run.train_run`.

One task trains (or resumes) a run folder and returns a small summary; the flow publishes the final numbers and
the paths of the log, the plot and the checkpoint as a markdown artifact. Nothing but paths and numbers crosses the
task boundary. Multi-GPU runs go through ``stemdb train --nproc N`` (torchrun), not through this flow.

::

    from pipelines.train_flow import train_model_flow
    train_model_flow(config="data.yaml", model="unet", out="runs/unet1", steps=1000)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

TRAIN_ARTIFACT = "train-model"


@task(name="train", cache_policy=NO_CACHE, persist_result=False)
def train_task(config: str | None, out: str, model: str | None, overrides: dict[str, Any], resume: bool
               ) -> dict[str, Any]:
    """Train (or resume) ``out``; returns :func:`summary` of the result."""
    from train.run import train_run

    return summary(train_run(config, out=out, model=model, overrides=overrides, resume=resume))


def summary(result: Any) -> dict[str, Any]:
    """The plain-data digest of a :class:`train.runlog.TrainResult`."""
    def num(x: float) -> float | None:
        return None if x is None or not math.isfinite(x) else round(float(x), 6)

    return {
        "out": str(result.out),
        "step": result.step,
        "steps_run": result.steps_run,
        "resumed_from": result.resumed_from,
        "loss": num(result.loss),
        "valid": {k: num(v) for k, v in result.valid.items()},
        "steps_per_s": num(result.steps_per_s),
        "audio_seconds_per_s": num(result.audio_seconds_per_s),
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "csv": str(result.csv),
        "png": str(result.png) if result.png else None,
    }


def markdown(s: dict[str, Any]) -> str:
    """The artifact text of a :func:`summary`."""
    lines = [f"# train-model: {Path(s['out']).name}", "",
             f"step **{s['step']}** ({s['steps_run']} this run"
             + (f", resumed from {s['resumed_from']}" if s["resumed_from"] is not None else "") + "), "
             f"loss **{s['loss']}**, {s['steps_per_s']} steps/s, {s['audio_seconds_per_s']} audio-s/s", ""]
    if s["valid"]:
        lines += ["| metric | dB |", "|---|---|"] + [f"| {k} | {v} |" for k, v in s["valid"].items()] + [""]
    lines += [f"- log: `{s['csv']}`", f"- plot: `{s['png']}`", f"- checkpoint: `{s['checkpoint']}`"]
    return "\n".join(lines)


@flow(name="train-model", persist_result=False)
def train_model_flow(
    out: Path,
    config: Path | None = None,
    model: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Train a bundled model as ``data.yaml``'s ``train:`` section says (the meaning of ``stemdb train``).

    Args:
        out: run folder; an existing one is resumed from its newest checkpoint when ``resume``.
        config: ``data.yaml`` (default ``./data.yaml``).
        model: ``unet`` | ``blstm`` | ``convtasnet`` (default ``train.model``).
        steps, batch_size: shortcuts for those ``train`` keys.
        overrides: any other ``train`` keys (validated; a bad key fails the run naming it).

    Returns:
        ``{out, step, steps_run, resumed_from, loss, valid, steps_per_s, audio_seconds_per_s, checkpoint, csv, png}``.
    """
    logger = get_run_logger()
    ov = dict(overrides or {})
    ov.update({k: v for k, v in (("steps", steps), ("batch_size", batch_size)) if v is not None})
    s = train_task(None if config is None else str(Path(config).resolve()), str(Path(out).resolve()), model, ov,
                   resume)
    create_markdown_artifact(key=TRAIN_ARTIFACT, markdown=markdown(s), description=f"training run {s['out']}")
    logger.info("train-model: step %s, loss %s, valid %s -> %s", s["step"], s["loss"], s["valid"], s["checkpoint"])
    return s


__all__ = ["TRAIN_ARTIFACT", "markdown", "summary", "train_model_flow", "train_task"]
