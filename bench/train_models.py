"""Training throughput of the bundled models (fp32 vs bf16), and the proof that remixed data trains a separator.

Throughput (default mode)::

    .venv/bin/python bench/train_models.py --device cuda                 # realistic batches, H100
    .venv/bin/python bench/train_models.py --device cpu --batch 1 --seconds 2 --steps 3

For each model (full-size default architecture) and precision, optimizer steps of :class:`train.trainer.Trainer`
(autocast, Adam, the model's default loss) on one fixed random batch already on the device; prints ms per step,
steps/s and audio-seconds/s (batch x seconds x steps/s), and last the bf16/fp32 speed ratio per model measured in
the same run. Realistic batches on CUDA: U-Net 4 x 11.9 s (the issue's reference: 55 ms/step on an H100),
BLSTM 64 x 6 s (reference 64 ms), Conv-TasNet 4 x 6 s.

Proof (``--proof``)::

    .venv/bin/python bench/train_models.py --proof --device cuda --minutes 15 --work /tmp/proof

1. a catalogue of the train-pool songs (``--pool``, MUSDB18-HQ layout, FLAC) except the two ``--holdout`` songs,
   plus the fixture stem pool (``--stems``); the held-out songs are copied aside as the test set;
2. for each variant: ``naive`` (``remix.levels.mode: uniform``: random gains), ``calibrated`` (per-kind loudness
   relative to the mixture as measured on the real multitracks) and ``tempo`` (calibrated + tempo-aware stretching),
   a Spleeter U-Net trained from the same seed for ``--minutes`` of training time (or ``--train-steps`` steps, the
   fair choice on a machine shared with other work) on the on-the-fly remix stream;
3. each run separates the held-out songs whole and is scored by museval (BSSEval v4, the MUSDB18 convention);
   printed: per stem the SDR and the SDR improvement over the unprocessed mixture (median over the 2 songs).
Writes ``<work>/proof.json`` and ``<work>/proof.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from augment.config import MixLevels, TempoConfig  # noqa: E402
from augment.config import ProjectConfig as StemdbConfig  # noqa: E402
from augment.config import load_project as load_config  # noqa: E402
from stemdb.config import IngestConfig, MusdbLayout, SourceConfig, StemsLayout  # noqa: E402
from train.config import train_config  # noqa: E402
from train.models import build_model, model_names  # noqa: E402
from train.run import iter_batches, train_run  # noqa: E402
from train.runtime import resolve_device  # noqa: E402
from train.trainer import Trainer  # noqa: E402

TARGETS = ("vocals", "drums", "bass", "other")
SR = 44100
#: (batch, seconds) per model on CUDA: the reference settings; a model not named here trains 4 x 6 s.
REALISTIC = {"unet": (4, 11.9), "blstm": (64, 6.0), "convtasnet": (4, 6.0),
             "cunet": (4, 11.9), "lasaft": (4, 3.0), "d3net": (6, 6.0)}
DEFAULT_REALISTIC = (4, 6.0)
POOL = ROOT.parent / "shared" / "data" / "train-pool"  # beside the checkout
HOLDOUT = ("Music Delta - Hendrix", "Music Delta - Rock")  # not among the fixture stems' source songs
VARIANTS = {
    "naive": {"levels": MixLevels(mode="uniform")},
    "calibrated": {"levels": MixLevels(mode="calibrated")},
    "tempo": {"levels": MixLevels(mode="calibrated"), "tempo": TempoConfig(enabled=True)},
}


# --------------------------------------------------------------------------------------------------------------
# throughput


def throughput(model_name: str, precision: str, *, device: torch.device, batch: int, seconds: float, steps: int,
               warmup: int) -> dict[str, float]:
    """ms/step, steps/s and audio-s/s of ``steps`` optimizer steps after ``warmup`` ones."""
    model = build_model(model_name, targets=TARGETS, channels=2, sample_rate=SR, seed=0)
    gen = torch.Generator(device="cpu").manual_seed(0)
    n = round(seconds * SR)
    tgt = (0.1 * torch.randn(batch, len(TARGETS), 2, n, generator=gen)).to(device)
    mix = tgt.sum(1)
    cfg = train_config({"steps": 10**9, "batch_size": batch, "precision": precision, "device": str(device)})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, cfg, out=tmp, train_data=iter_batches(mix, tgt, batch_size=batch))

        def endless():  # noqa: ANN202
            while True:
                yield mix, tgt

        it = endless()
        for _ in range(warmup):
            trainer.train_step(it)
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss, _ = trainer.train_step(it)
        float(loss)
        sync(device)
        dt = (time.perf_counter() - t0) / steps
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"ms_per_step": dt * 1e3, "steps_per_s": 1 / dt, "audio_s_per_s": batch * seconds / dt,
            "peak_gib": None if math.isnan(mem) else mem, "params_m": params, "precision": trainer.amp.name}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_throughput(args: argparse.Namespace) -> dict:
    """Every model of ``args.models`` at every precision; returns the figures (also printed)."""
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {device} ({name})")
    print(f"{'model':<11} {'prec':<5} {'batch':>5} {'sec':>5} {'params':>7} {'ms/step':>9} {'steps/s':>8} "
          f"{'audio-s/s':>10} {'peak GiB':>8}")
    rows: list[dict] = []
    rates: dict[tuple[str, str], float] = {}
    for model in args.models:
        batch, seconds = REALISTIC.get(model, DEFAULT_REALISTIC) if device.type == "cuda" else (1, 2.0)
        batch, seconds = args.batch or batch, args.seconds or seconds
        for precision in args.precisions:
            r = throughput(model, precision, device=device, batch=batch, seconds=seconds, steps=args.steps,
                           warmup=args.warmup)
            rates[model, precision] = r["steps_per_s"]
            rows.append({"model": model, "batch": batch, "seconds": seconds, **r})
            print(f"{model:<11} {r['precision']:<5} {batch:>5} {seconds:>5.1f} {r['params_m']:>6.1f}M "
                  f"{r['ms_per_step']:>9.1f} {r['steps_per_s']:>8.2f} {r['audio_s_per_s']:>10.1f} "
                  f"{r['peak_gib'] or math.nan:>8.2f}")
    ratios = {m: rates[m, "bf16"] / rates[m, "fp32"] for m in args.models if (m, "bf16") in rates and
              (m, "fp32") in rates}
    for model, ratio in ratios.items():
        print(f"ratio bf16/fp32 steps/s {model}: {ratio:.2f}", flush=True)
    return {"device": name, "rows": rows, "bf16_over_fp32": ratios}


# --------------------------------------------------------------------------------------------------------------
# proof


def copy_song(src: Path, dst: Path, crop_s: float | None) -> None:
    """Copy one MUSDB18-HQ song folder; with ``crop_s`` only its first ``crop_s`` seconds (as 16-bit WAV)."""
    if crop_s is None:
        shutil.copytree(src, dst)
        return
    from stemdb import audio

    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.suffix in (".wav", ".flac"):
            x, sr = audio.read(f)
            audio.write(dst / f"{f.stem}.wav", x[:, : int(crop_s * sr)], sr)


def build_catalog(work: Path, pool: Path, stems: Path, holdout: tuple[str, ...], *, tempo: bool,
                  holdout_crop: float | None = None) -> tuple[Path, Path]:
    """Copy the pool's training songs and its held-out songs apart; ingest the former plus the stem pool.

    Returns:
        (catalogue folder, held-out MUSDB18-HQ-layout root).
    """
    from stemdb.ingest import ingest_sources

    songs = sorted(p for p in (pool / "musdb" / "train").iterdir() if p.is_dir())
    missing = set(holdout) - {p.name for p in songs}
    if missing:
        raise SystemExit(f"--holdout {sorted(missing)} not in {pool}")
    train_root, test_root = work / "pool", work / "holdout"
    for song in songs:
        held = song.name in holdout
        dst = (test_root / "test" if held else train_root / "train") / song.name
        if not dst.exists():
            copy_song(song, dst, holdout_crop if held else None)
    catalog = work / "catalog"
    if not (catalog / "_catalog.json").is_file():
        sources = [
            SourceConfig(name="train-pool", root=train_root, layout=MusdbLayout(validation=False),
                         origin="medleydb", licence="CC BY-NC-SA 4.0"),
            SourceConfig(name="stem-pool", root=stems, origin="single-stems", licence="mixed",
                         layout=StemsLayout(kinds={"vocals": "vocals", "drums": "drums", "bass": "bass",
                                                   "keys": "keys", "other": "other"})),
        ]
        report = ingest_sources(sources, catalog, cfg=IngestConfig(tempo=tempo, workers=0))
        print(report.line(), flush=True)
    return catalog, test_root


def proof_overrides(args: argparse.Namespace) -> dict:
    """The ``train:`` overrides every variant shares: same seed, model, budget and data settings."""
    cuda = resolve_device(args.device).type == "cuda"
    cores = os.cpu_count() or 1
    if args.num_workers > cores:
        print(f"note: {cores} cores: --num-workers {args.num_workers} capped to {cores}")
        args.num_workers = cores
    return {
        "steps": args.train_steps or 10**7, "max_minutes": None if args.train_steps else args.minutes,
        "batch_size": args.batch or (4 if cuda else 2), "device": args.device, "seed": 0, "lr": args.lr,
        "num_workers": args.num_workers, "gpu_augment": cuda, "checkpoint_every": 10**6, "log_every": 10,
        "model_options": json.loads(args.model_options),
        "valid": {"root": str(ROOT / "tests" / "data" / "musdb" / "test"), "every": args.valid_every,
                  "seconds": 4.0},
    }


def run_proof(args: argparse.Namespace) -> dict:
    """Train and score every variant; returns ``{variant: figures}`` (also written to ``<work>/proof.json``)."""
    from train.separate import evaluate_run

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    variants = args.variants
    t0 = time.perf_counter()
    catalog, holdout = build_catalog(work, args.pool, args.stems, tuple(args.holdout), tempo="tempo" in variants,
                                     holdout_crop=args.holdout_crop)
    print(f"catalogue and held-out songs ready in {time.perf_counter() - t0:.0f} s", flush=True)
    base = load_config(ROOT / "data.yaml")
    results = {}
    for variant in variants:
        remix = base.remix.model_copy(update={"seconds": args.seconds or 6.0, **VARIANTS[variant]})
        scfg = StemdbConfig(catalog=catalog, remix=remix)
        out = work / "runs" / variant
        t0 = time.perf_counter()
        r = train_run(scfg, out=out, model="unet", overrides=proof_overrides(args))
        train_wall = time.perf_counter() - t0
        print(f"[{variant}] {r.line()} ({train_wall:.0f} s wall)", flush=True)
        t0 = time.perf_counter()
        baseline = next(iter(results.values()))["mixture_scores"] if results else None
        scores = evaluate_run(out, holdout, split="test", out=out / "scores.json", workers=args.eval_workers,
                              device=args.device, baseline=baseline)
        eval_wall = time.perf_counter() - t0
        print(f"[{variant}] evaluated in {eval_wall:.0f} s", flush=True)
        results[variant] = {"step": r.step, "train_seconds": round(r.train_seconds, 1),
                            "train_wall_s": round(train_wall, 1), "eval_wall_s": round(eval_wall, 1),
                            "audio_s_per_s": round(r.audio_seconds_per_s, 1), "final_loss": r.loss,
                            "median": scores["median"], "mixture": scores["mixture"]["median"],
                            "improvement": scores["improvement"], "mixture_scores": scores["mixture"]}
        if args.json:  # after every variant: a run stopped by its time box keeps the finished ones
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    (work / "proof.json").write_text(json.dumps(results, indent=2) + "\n")
    md = proof_table(results)
    (work / "proof.md").write_text(md + "\n")
    print(md, flush=True)
    return results


def proof_table(results: dict) -> str:
    """Markdown: per variant the median SDR and its improvement over the unprocessed mixture, per stem."""
    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.2f}"

    lines = ["| variant | steps | " + " | ".join(f"{s} SDR / dSDR" for s in TARGETS) + " |",
             "|---|---|" + "---|" * len(TARGETS)]
    first = next(iter(results.values()))
    lines.append("| mixture (no model) | - | " + " | ".join(f"{f(first['mixture'][s]['SDR'])} / 0" for s in TARGETS)
                 + " |")
    for variant, r in results.items():
        cells = [f"{f(r['median'][s]['SDR'])} / {f(r['improvement'][s]['SDR'])}" for s in TARGETS]
        lines.append(f"| {variant} | {r['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: ``--smoke``: the same code paths at a size that finishes in seconds on one CPU core.
SMOKE_THROUGHPUT = {"device": "cpu", "batch": 1, "seconds": 0.25, "steps": 1, "warmup": 0}
SMOKE_PROOF = {"device": "cpu", "variants": ["naive", "tempo"], "train_steps": 2, "batch": 1, "seconds": 1.0, "holdout_crop": 2.0, "eval_workers": 1,
               "valid_every": 10**6, "num_workers": 0,
               "model_options": '{"n_fft": 512, "hop_length": 128, "levels": 3, "base_filters": 4, "max_bin": null}'}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    names = [m for m in model_names() if m != "bundle"]  # a bundle is joined from trained runs, not built by name
    ap.add_argument("--models", nargs="+", default=names, choices=names)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--batch", type=int, default=None, help="items per step (default: realistic per model)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per item")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--proof", action="store_true", help="the naive vs calibrated remix training experiment")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "stemdb-proof")
    ap.add_argument("--pool", type=Path, default=POOL)
    ap.add_argument("--stems", type=Path, default=ROOT / "tests" / "data" / "stems")
    ap.add_argument("--holdout", nargs=2, default=list(HOLDOUT))
    ap.add_argument("--holdout-crop", type=float, default=None, help="score only the held-out songs' first seconds")
    ap.add_argument("--variants", nargs="+", default=["naive", "calibrated"], choices=list(VARIANTS))
    ap.add_argument("--minutes", type=float, default=15.0, help="training time per variant")
    ap.add_argument("--train-steps", type=int, default=None,
                    help="train each variant this many steps instead of --minutes (equal work on a shared machine)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--num-workers", type=int, default=0, help="stream worker processes")
    ap.add_argument("--valid-every", type=int, default=200)
    ap.add_argument("--eval-workers", type=int, default=2)
    ap.add_argument("--model-options", default="{}", help="JSON, e.g. '{\"levels\": 5}'")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: the same code path in seconds")
    args = ap.parse_args(argv)
    if args.smoke:
        for k, v in (SMOKE_PROOF if args.proof else SMOKE_THROUGHPUT).items():
            setattr(args, k, v)
        if args.proof:
            args.work = Path(tempfile.mkdtemp(prefix="stemdb-proof-smoke-"))
    sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("train.trainer").setLevel(logging.INFO)
    figures = run_proof(args) if args.proof else run_throughput(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
