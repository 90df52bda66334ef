"""The ``stemdb`` command line. Thin: each command parses options, calls one library function, prints a summary.

One function per command; the heavy modules (torch, prefect, matplotlib) are imported inside the commands that
need them, so ``stemdb --help`` and ``stemdb catalog summary`` import no torch (tests/test_architecture.py checks).
``python -m pipelines ARGS`` is the same command line (what ``torchrun`` launches on every rank for
``stemdb train --nproc N``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from augment.config import RemixConfig
from pipelines import options as opt
from pipelines.launch import overrides_from, torchrun_args, torchrun_command
from pipelines.progress import progress as _progress
from pipelines.progress import track_lines
from pipelines.tables import compare_lines, num, run_scores_lines
from stemdb.config import IngestConfig
from stemdb.errors import StemdbError

app = typer.Typer(help="stemdb: turn loose music stems and MUSDB18 into source-separation training data.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=opt.OneLineErrors)
catalog_app = typer.Typer(help="Inspect the catalogue.", no_args_is_help=True)
report_app = typer.Typer(help="Dataset statistics reports (HTML + JSON).", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
app.add_typer(report_app, name="report")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="data.yaml (default: ./data.yaml if present)")]
CatalogOpt = Annotated[Path | None, typer.Option("--catalog", help="catalogue folder (default: from data.yaml)",
                                                 callback=opt.folder_path)]
OutCatalogOpt = Annotated[Path | None, typer.Option("--catalog", help="catalogue folder (default: from data.yaml)",
                                                    callback=opt.output_dir)]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")]
LAYOUTS = ("stems", "musdb", "multitrack", "medleydb", "moisesdb", "slakh")


def _load(config: Path | None):  # noqa: ANN202 - augment.config.ProjectConfig
    from augment.config import load_project

    _say_config(config)
    return load_project(config)


def _say_config(config: Path | None) -> None:
    """Without ``--config``, say on stderr which config is used (./data.yaml, or the built-in defaults)."""
    if config is None:
        from augment.config import config_source

        typer.echo(f"using {config_source(None)}", err=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        import stemdb

        try:
            v = version("stemdb")
        except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
            v = stemdb.__version__
        typer.echo(f"stemdb {v}")
        raise typer.Exit()


def _catalog_dir(config: Path | None, catalog: Path | None) -> Path:
    return catalog if catalog is not None else _load(config).catalog


def _fail(exc: Exception) -> NoReturn:
    opt.print_error(exc)
    raise typer.Exit(2)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
          _v: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                           help="print the version and exit")] = False) -> None:
    rank = int(os.environ.get("RANK", "0"))  # set by torchrun on every rank of `stemdb train --nproc N`
    level = logging.DEBUG if verbose else (logging.INFO if rank == 0 else logging.WARNING)
    tag = f" [rank {rank}]" if "RANK" in os.environ else ""
    logging.basicConfig(level=level, format=f"%(levelname)s{tag} %(name)s: %(message)s")


@app.command()
def ingest(
    folder: Annotated[Path | None, typer.Argument(help="ingest this one folder (needs --layout) instead of data.yaml's sources",
                                                  callback=opt.existing_dir)] = None,
    layout: Annotated[str | None, typer.Option(help="layout of FOLDER: stems | musdb | multitrack | medleydb | moisesdb | slakh",
                                               callback=opt.choice(*LAYOUTS))] = None,
    config: ConfigOpt = None,
    catalog: OutCatalogOpt = None,
    workers: Annotated[int | None, typer.Option(help="process-pool size (0 = one per core)",
                                                callback=opt.field_number(IngestConfig, "workers"))] = None,
    tempo: Annotated[bool | None, typer.Option("--tempo/--no-tempo", help="estimate tempo with librosa")] = None,
    strict: Annotated[bool, typer.Option(help="exit 1 when any file was rejected")] = False,
    origin: Annotated[str | None, typer.Option(
        help="origin of FOLDER's files measured in this run (where they come from; unchanged files keep theirs)")]
    = None,
    licence: Annotated[str | None, typer.Option(help="licence of FOLDER's files measured in this run")] = None,
) -> None:
    """Scan sources (or one FOLDER) into the Parquet catalogue; prints a one-line summary."""
    from stemdb.ingest import ingest_folder, ingest_sources

    try:
        cfg = _load(config)
        icfg = cfg.ingest.model_copy(update={k: v for k, v in (("workers", workers), ("tempo", tempo))
                                             if v is not None})
        if folder is not None and layout is None:
            raise typer.BadParameter("FOLDER needs --layout stems|musdb|multitrack|medleydb|moisesdb|slakh")
        if folder is None and not cfg.sources:
            raise typer.BadParameter("no sources: give FOLDER --layout, or a data.yaml with sources")
        if folder is None and (origin or licence):
            raise typer.BadParameter("--origin/--licence describe FOLDER; data.yaml's sources carry their own")
        with _progress("measuring", unit="files") as progress:
            if folder is not None:
                report = ingest_folder(folder, layout=layout, catalog=catalog or cfg.catalog, cfg=icfg,
                                       origin=origin or "unknown", licence=licence or "unknown",
                                       progress=progress)
            else:
                report = ingest_sources(cfg.sources, catalog or cfg.catalog, cfg=icfg, progress=progress)
    except StemdbError as exc:
        _fail(exc)
    typer.echo(report.line())
    if strict and report.rejected:
        raise typer.Exit(1)


@catalog_app.command("summary")
def catalog_summary(config: ConfigOpt = None, catalog: CatalogOpt = None,
                    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Hours and files per kind, source and split; duplicates and rejects."""
    from stemdb.catalog import Catalog

    try:
        cat = Catalog.open(_catalog_dir(config, catalog))
    except StemdbError as exc:
        _fail(exc)
    df = cat.stems(columns=["key", "kind", "source", "split", "duration_s"])
    s = cat.summary()
    tables = {}
    for col in ("kind", "source", "split"):
        g = df.groupby(col)["duration_s"].agg(["count", "sum"])
        tables[col] = {str(k): {"files": int(r["count"]), "hours": round(float(r["sum"]) / 3600, 4)}
                       for k, r in g.iterrows()}
    if as_json:
        typer.echo(json.dumps({"files": s.files, "hours": s.hours, "duplicates": s.duplicates,
                               "rejects": s.rejects, **{f"by_{k}": v for k, v in tables.items()}}, indent=2))
        return
    for col, t in tables.items():
        typer.echo(f"by {col}:")
        for k, v in t.items():
            typer.echo(f"  {k:<24} {v['files']:>6} files {v['hours']:>9.3f} h")
    typer.echo(s.line())


@catalog_app.command("show")
def catalog_show(stem_id: Annotated[str, typer.Argument(help="a stem_id or a unique prefix (6+ chars)")],
                 config: ConfigOpt = None, catalog: CatalogOpt = None) -> None:
    """Every column of one stem."""
    from stemdb.catalog import Catalog

    try:
        row = Catalog.open(_catalog_dir(config, catalog)).get(stem_id)
    except StemdbError as exc:
        _fail(exc)
    for k, v in row.items():
        if k == "active":
            v = f"{len(v)} regions: " + ", ".join(f"[{a:.2f}, {b:.2f}]" for a, b in list(v)[:8])
        elif k == "beats":
            v = f"{len(v)} beats"
        elif k in ("fingerprint", "loudness_100ms") and v is not None:
            v = f"{len(v)} {'bytes' if k == 'fingerprint' else 'values'}"
        typer.echo(f"{k:>16}: {v}")


@app.command()
def remix(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (MUSDB18-HQ layout + recipes.parquet)",
                                      callback=opt.output_dir)],
    n: Annotated[int, typer.Option("--n", help="number of mixtures", callback=opt.number(ge=1))] = 100,
    seconds: Annotated[float | None, typer.Option(help="mixture length in seconds (default: data.yaml)",
                                                  callback=opt.field_number(RemixConfig, "seconds", unit="seconds"))] = None,
    seed: Annotated[int, typer.Option(help="seed: same arguments, same bytes", callback=opt.SEED)] = 0,
    workers: Annotated[int, typer.Option(help="render processes", callback=opt.WORKERS)] = 1,
    config: ConfigOpt = None,
    catalog: CatalogOpt = None,
) -> None:
    """Draw N random cross-song mixtures, write recipes.parquet and OUT/<split>/<mix_id>/{mixture,targets}.wav."""
    from augment.build import build_remix

    try:
        cfg = _load(config)
        with _progress("rendering", unit="mixtures") as progress:
            summary = build_remix(catalog or cfg.catalog, out, n=n, seed=seed, cfg=cfg.remix, seconds=seconds,
                                  workers=workers, progress=progress)
    except StemdbError as exc:
        _fail(exc)
    typer.echo(summary.line())


@app.command()
def evaluate(
    estimates: Annotated[Path, typer.Option("--estimates", help="EST/<track>/<stem>.wav", callback=opt.existing_dir)],
    references: Annotated[Path, typer.Option("--references", help="REF/[split/]<track>/<stem>.{wav,flac} or .stem.mp4",
                                             callback=opt.existing_dir)],
    out: Annotated[Path, typer.Option("--out", help="scores.json", callback=opt.output_file)] = Path("scores.json"),
    stems: Annotated[list[str] | None, typer.Option("--stem", help="score only these stems (repeatable)")] = None,
    workers: Annotated[int, typer.Option(help="tracks scored in parallel", callback=opt.WORKERS)] = 1,
) -> None:
    """BSSEval v4 SDR, SIR, SAR, ISR (museval, MUSDB18 convention), SI-SDR and level error of a folder of
    estimates; writes JSON."""
    from train.evaluate import score_folders, write_scores

    try:
        scores = score_folders(estimates, references, stems=stems or None, workers=workers,
                               on_track=track_lines("scored"))
    except (StemdbError, FileNotFoundError, ValueError) as exc:
        _fail(exc)
    write_scores(scores, out)
    metrics = ("SDR", "SIR", "SAR", "ISR", "SI-SDR", "level_error")
    typer.echo(f"{'stem':<12} " + " ".join(f"{m.replace('level_error', 'level'):>8}" for m in metrics)
               + f"   (dB, median over {len(scores['tracks'])} tracks)")
    for stem, v in scores["median"].items():
        typer.echo(f"{stem:<12} " + " ".join(f"{num(v.get(m)):>8}" for m in metrics))
    typer.echo(f"wrote {out}")


@report_app.command("catalog")
def report_catalog(
    out: Annotated[Path, typer.Option("--out", "-o", help="the HTML page; FILE.json is written beside it",
                                      callback=opt.output_file)] = Path("reports/catalog.html"),
    config: ConfigOpt = None,
    catalog: CatalogOpt = None,
) -> None:
    """Catalogue statistics: one self-contained HTML page with plots, and JSON with every figure."""
    from stemdb.report import catalog_report

    try:
        stats = catalog_report(_catalog_dir(config, catalog), out)
    except StemdbError as exc:
        _fail(exc)
    files = sum(stats.get("files_by_kind", {}).values())
    hours = sum(stats.get("hours_by_kind", {}).values())
    typer.echo(f"report: {files} files, {hours:.2f} h -> {out} (+ {out.with_suffix('.json').name})")


@report_app.command("remix")
def report_remix(
    remix_dir: Annotated[Path, typer.Argument(help="a remix output folder (with recipes.parquet)",
                                              callback=opt.existing_dir)],
    out: Annotated[Path, typer.Option("--out", "-o", help="the HTML page; FILE.json is written beside it",
                                      callback=opt.output_file)] = Path("reports/remix.html"),
    config: ConfigOpt = None,
    catalog: CatalogOpt = None,
) -> None:
    """Remix-set statistics, with the real multitracks of the catalogue as the level reference."""
    from augment.report import remix_report
    from stemdb.catalog import Catalog

    try:
        cat: Path | None = _catalog_dir(config, catalog)
        try:
            Catalog.open(cat)
        except StemdbError:
            typer.secho(f"note: no catalogue at {cat}; the real-multitrack reference is left out", err=True)
            cat = None
        stats = remix_report(remix_dir, out, catalog=cat)
    except StemdbError as exc:
        _fail(exc)
    n = sum(stats.get("mixtures_by_split", {}).values())
    typer.echo(f"report: {n} mixtures -> {out} (+ {out.with_suffix('.json').name})")


@app.command()
def serve(
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option(help="server port (default: from PREFECT_API_URL, else 4200)")] = None,
) -> None:
    """Start a local Prefect server (SQLite, 127.0.0.1) if none answers, then serve the deployments
    ingest-stems/default, build-remix/default and dataset-stats/default until Ctrl-C / SIGTERM."""
    from pipelines.serve import serve_main

    raise typer.Exit(serve_main(config, port))


@app.command("train", help="Train a bundled model (unet, blstm, convtasnet, ...) on the remix stream.")
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder (checkpoints/, train.csv, train.png)",
                                      callback=opt.output_dir)],
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option(help="a registered model name (default: train.model)")] = None,
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
    target: Annotated[list[str] | None, typer.Option("--target", help="a per-target run: only this stem "
                                                                      "(repeatable; default: every stem)")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="any train.* key: KEY=VALUE (repeatable)")] = None,
    nproc: Annotated[int, typer.Option(help="processes (DDP through torchrun; GPUs or CPU gloo)",
                                       callback=opt.WORKERS)] = 1,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="continue from RUN's newest checkpoint")]
    = True,
    init: Annotated[Path | None, typer.Option("--init", help="start from this run's (or checkpoint file's) "
                                              "weights; optimizer and step count start fresh",
                                              callback=opt.existing_path)] = None,
) -> None:
    """Train a separation model on the remix stream (or rendered folders) into a run folder."""
    overrides: dict[str, Any] = overrides_from(
        sets, valid_root=valid_root, steps=steps, batch_size=batch_size, accumulate=accumulate, lr=lr,
        precision=precision, device=device, seed=seed, seconds=seconds, num_workers=num_workers,
        max_minutes=max_minutes, checkpoint_every=checkpoint_every, targets=target or None)
    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        cmd = torchrun_command(nproc, torchrun_args(out, config=config, model=model, overrides=overrides,
                                                    resume=resume, init=init))
        typer.echo("launching: " + " ".join(cmd), err=True)
        raise typer.Exit(subprocess.call(cmd))
    from train.run import train_run
    from train.runtime import dist_info

    if os.environ.get("RANK", "0") == "0":  # before the process group exists: torchrun's variable
        _say_config(config)
    try:
        result = train_run(config, out=out, model=model, overrides=overrides, resume=resume, init=init)
    except (StemdbError, ValueError) as exc:
        _fail(exc)
    if dist_info()[0] == 0:
        typer.echo(result.line())
        typer.echo(f"log {result.csv}  plot {result.png}")


@app.command("bundle", help="Join per-target runs into one separator (a run folder separate/evaluate-run use).")
def bundle(
    runs: Annotated[list[Path], typer.Argument(help="run folders or checkpoint files, one per member",
                                               callback=opt.existing_paths)],
    out: Annotated[Path, typer.Option("--out", "-o", help="the bundle's run folder", callback=opt.output_dir)],
    target: Annotated[list[str] | None, typer.Option("--target", help="the bundle's stems in order (repeatable; "
                                                                      "default: the first run's remix targets)")]
    = None,
) -> None:
    """Join the newest checkpoints of RUNS (each separating some stems) into one bundle in OUT."""
    from train.bundle import bundle_runs

    try:
        path = bundle_runs(runs, out=out, targets=target or None)
    except (StemdbError, ValueError) as exc:
        _fail(exc)
    typer.echo(f"wrote {path}")


@app.command("separate", help="Separate an audio file into stems with a trained run (or the centre baseline).")
def separate(
    file: Annotated[Path, typer.Argument(help="audio file to separate (.wav, .flac, .stem.mp4 ...)",
                                         callback=opt.existing_file)],
    model: Annotated[Path, typer.Option("--model", "-m", help="run folder or checkpoint file, or centre (no "
                                        "training needed)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for <stem>.wav", callback=opt.output_dir)],
    chunk_seconds: Annotated[float | None, typer.Option(help="chunk length (default: the run's crop length)",
                                                        callback=opt.number(gt=0, le=3600, unit="seconds"))] = None,
    overlap: Annotated[float, typer.Option(help="overlap of chunks, fraction of a chunk (crossfaded)",
                                           callback=opt.number(ge=0, lt=1))] = 0.25,
    device: DeviceOpt = "auto",
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


@app.command("evaluate-run", help="Separate a MUSDB18-layout set with a run and score it.")
def evaluate_run(
    run: Annotated[Path, typer.Argument(help="run folder or checkpoint file, or centre (no training needed)")],
    musdb_root: Annotated[Path, typer.Option(help="MUSDB18-HQ-layout references (mixture + stems)",
                                             callback=opt.existing_dir)],
    out: Annotated[Path, typer.Option("--out", help="scores.json", callback=opt.output_file)] = Path("scores.json"),
    split: Annotated[str | None, typer.Option(help="only tracks under this split folder (e.g. test)")] = None,
    tracks: Annotated[list[str] | None, typer.Option("--track", help="only these tracks (repeatable)")] = None,
    workers: Annotated[int, typer.Option(help="tracks scored in parallel by museval", callback=opt.WORKERS)] = 1,
    device: DeviceOpt = "auto",
    keep_estimates: Annotated[Path | None, typer.Option(help="keep the separated stems here")] = None,
) -> None:
    """Separate every track of MUSDB_ROOT with RUN and score it (BSSEval v4, SI-SDR, level error; gain over the
    mixture divided by the number of stems and over the mixture)."""
    from train.separate import evaluate_run as run_and_score

    try:
        result = run_and_score(run, musdb_root, out=out, split=split, tracks=tracks or None, workers=workers,
                               device=device, estimates=keep_estimates,
                               on_track=track_lines("separated"))
    except (StemdbError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    for line in run_scores_lines(result):
        typer.echo(line)
    typer.echo(f"wrote {out}")


@app.command("compare", help="Which training data separates best: train one model per data variant and seed "
             "with equal budgets, score held-out songs, write results.json and report.html.")
def compare(
    config: Annotated[Path, typer.Option("--config", "-c", help="compare.yaml (variants, budget, seeds, test set)",
                                         callback=opt.existing_file)],
    out: Annotated[Path, typer.Option("--out", help="the comparison's folder (runs, results.json, report.html)",
                                      callback=opt.output_dir)],
) -> None:
    """Run the comparison ``compare.yaml`` describes into OUT (finished runs and scores are reused on a rerun)."""
    from train.compare import run_comparison

    try:
        results = run_comparison(config, out, on_run=lambda k, d, n: typer.echo(f"run {k} done ({d}/{n})", err=True))
    except (StemdbError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    for line in compare_lines(results, out):
        typer.echo(line)

def main() -> None:
    """Console-script entry point (``stemdb``)."""
    app()


if __name__ == "__main__":
    main()
