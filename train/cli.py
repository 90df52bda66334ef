"""Command-line commands for training, separation and run evaluation (a typer sub-app, mounted by ``stemdb``).

Mount in ``stemdb/cli.py``::

    from train import cli as train_cli
    app.command("train")(train_cli.train_cmd)
    app.command("separate")(train_cli.separate_cmd)
    app.command("evaluate-run")(train_cli.evaluate_run_cmd)

This module imports neither torch nor the training code at import time (``stemdb --help`` stays fast); each command
imports what it needs. ``python -m train`` runs :func:`train_cmd` alone (what ``torchrun`` launches).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from stemdb.errors import StemdbError

logger = logging.getLogger(__name__)

app = typer.Typer(help="Train, separate with and evaluate bundled separation models.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a": {"b": 1}, "c": [1, 2]}`` (values parsed as YAML).

    Raises:
        typer.BadParameter: an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set {item!r}: expected KEY=VALUE (e.g. valid.every=100)")
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The ``torchrun --standalone --nproc_per_node N -m train ARGS`` command line (through this Python)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "train", *args]


def train_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder (checkpoints/, train.csv, train.png)")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="data.yaml (default: ./data.yaml)")] = None,
    model: Annotated[str | None, typer.Option(help="unet | blstm | convtasnet | demucs | dccrn | phasen (default: "
                                              "train.model)")] = None,
    steps: Annotated[int | None, typer.Option(help="optimizer steps in total (a resume continues to it)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="items per process and micro-batch")] = None,
    accumulate: Annotated[int | None, typer.Option(help="micro-batches per optimizer step")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate")] = None,
    precision: Annotated[str | None, typer.Option(help="auto | fp32 | bf16 | fp16")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of weights, data order and dropout")] = None,
    seconds: Annotated[float | None, typer.Option(help="training crop length in seconds")] = None,
    num_workers: Annotated[int | None, typer.Option(help="data loader processes per training process")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="stop after this much training time")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="steps between checkpoints")] = None,
    valid_root: Annotated[Path | None, typer.Option(help="MUSDB18-HQ-layout folder for validation SDR")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="any train.* key: KEY=VALUE (repeatable)")] = None,
    nproc: Annotated[int, typer.Option(help="processes (DDP through torchrun; GPUs or CPU gloo)")] = 1,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="continue from RUN's newest checkpoint")]
    = True,
) -> None:
    """Train a separation model on the remix stream (or rendered folders) into a run folder."""
    if nproc < 1:
        raise typer.BadParameter(f"--nproc {nproc}: must be >= 1")
    overrides: dict[str, Any] = parse_sets(sets)
    for key, value in (("steps", steps), ("batch_size", batch_size), ("accumulate", accumulate), ("lr", lr),
                       ("precision", precision), ("device", device), ("seed", seed), ("seconds", seconds),
                       ("num_workers", num_workers), ("max_minutes", max_minutes),
                       ("checkpoint_every", checkpoint_every)):
        if value is not None:
            overrides[key] = value
    if valid_root is not None:
        overrides.setdefault("valid", {})["root"] = str(valid_root.resolve())
    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        args = ["--out", str(out.resolve())]
        if config is not None:
            args += ["--config", str(config.resolve())]
        if model is not None:
            args += ["--model", model]
        args += [f"--set={k}={json.dumps(v)}" for k, v in _flatten(overrides).items()]  # JSON is YAML
        args.append("--resume" if resume else "--no-resume")
        cmd = torchrun_command(nproc, args)
        typer.echo("launching: " + " ".join(cmd), err=True)
        raise typer.Exit(subprocess.call(cmd))
    from train.loop import dist_info, train_run

    try:
        result = train_run(config, out=out, model=model, overrides=overrides, resume=resume)
    except (StemdbError, ValueError) as exc:
        _fail(exc)
    if dist_info()[0] == 0:
        typer.echo(result.line())
        typer.echo(f"log {result.csv}  plot {result.png}")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def separate_cmd(
    file: Annotated[Path, typer.Argument(help="audio file to separate (.wav, .flac, .stem.mp4 ...)")],
    model: Annotated[Path, typer.Option("--model", "-m", help="run folder or checkpoint file, or centre (no "
                                        "training needed)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for <stem>.wav")],
    chunk_seconds: Annotated[float | None, typer.Option(help="chunk length (default: the run's crop length)")]
    = None,
    overlap: Annotated[float, typer.Option(help="overlap of chunks, fraction of a chunk (crossfaded)")] = 0.25,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32 | bf16 | fp16 | auto")] = "fp32",
    subtype: Annotated[str, typer.Option(help="WAV sample format: FLOAT | PCM_16 | PCM_24")] = "FLOAT",
) -> None:
    """Separate FILE into OUT/<stem>.wav with a trained run (input channels and rate kept)."""
    from train.separate import separate_file

    try:
        paths = separate_file(file, model, out, chunk_seconds=chunk_seconds, overlap=overlap, device=device,
                              precision=precision, subtype=subtype)
    except (StemdbError, ValueError) as exc:
        _fail(exc)
    for stem, p in paths.items():
        typer.echo(f"{stem:<10} {p}")


def evaluate_run_cmd(
    run: Annotated[Path, typer.Argument(help="run folder or checkpoint file, or centre (no training needed)")],
    musdb_root: Annotated[Path, typer.Option(help="MUSDB18-HQ-layout references (mixture + stems)")],
    out: Annotated[Path, typer.Option("--out", help="scores.json")] = Path("scores.json"),
    split: Annotated[str | None, typer.Option(help="only tracks under this split folder (e.g. test)")] = None,
    tracks: Annotated[list[str] | None, typer.Option("--track", help="only these tracks (repeatable)")] = None,
    workers: Annotated[int, typer.Option(help="tracks scored in parallel by museval")] = 1,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    keep_estimates: Annotated[Path | None, typer.Option(help="keep the separated stems here")] = None,
) -> None:
    """Separate every track of MUSDB_ROOT with RUN and score it (BSSEval v4 SDR, SI-SDR, gain over the mixture)."""
    from train.separate import evaluate_run, stems_summary

    try:
        result = evaluate_run(run, musdb_root, out=out, split=split, tracks=tracks or None, workers=workers,
                              device=device, estimates=keep_estimates,
                              on_track=lambda t, d, n: typer.echo(f"separated {t} ({d}/{n})", err=True))
    except (StemdbError, ValueError, FileNotFoundError) as exc:
        _fail(exc)

    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    typer.echo(f"{'stem':<10} {'SDR':>8} {'SI-SDR':>8} {'dSDR':>8}   (median over {len(result['tracks'])} tracks; "
               "dSDR: improvement over the mixture)")
    skipped = result.get("not_estimated", {})
    for stem, s, si, imp in stems_summary(result):
        if stem in skipped:
            typer.echo(f"{stem:<10} not estimated ({skipped[stem]})")
        else:
            typer.echo(f"{stem:<10} {f(s):>8} {f(si):>8} {f(imp):>8}")
    typer.echo(f"wrote {out}")


app.command("train")(train_cmd)
app.command("separate")(separate_cmd)
app.command("evaluate-run")(evaluate_run_cmd)


def main() -> None:
    """``python -m train``: the train command alone (what ``torchrun ... -m train`` runs on every rank)."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(levelname)s [rank {rank}] %(name)s: %(message)s")
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command()(train_cmd)
    single()


__all__ = ["app", "evaluate_run_cmd", "main", "parse_sets", "separate_cmd", "torchrun_command", "train_cmd"]
