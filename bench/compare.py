"""Which training data separates best: ``train.compare`` (``stemdb compare``) on the training pool.

::

    nice .venv/bin/python bench/compare.py --work /tmp/cmp --seeds 0 1 --steps 150        # the CPU run of the docs
    .venv/bin/python bench/compare.py --device cuda --minutes 2 --seeds 0 1 2              # a GPU machine

1. a catalogue of the train-pool songs (``--pool``, MUSDB18-HQ layout) except the two ``--holdout`` songs, plus the
   fixture stem pool (``--stems``), ingested with tempo (the ``tempo`` variant needs it); the held-out songs stay in
   the pool folder and are the comparison's test set (``test.root`` = the pool, ``test.tracks`` = the two songs;
   the comparison refuses a held-out song that the catalogue trains on);
2. a ``compare.yaml`` for ``--variants`` (default: real, naive, calibrated, tempo, mixed) x ``--seeds``, the U-Net
   with ``--model-options``, every run the same ``--steps`` optimizer steps (or ``--minutes`` of training on the
   same device), batch ``--batch`` x ``--seconds`` s, validation on the fixture test song;
3. :func:`train.compare.run_comparison`: train, separate the held-out songs whole, score them and both baselines
   (the mixture and the mixture / 4) with BSSEval v4, write ``<work>/cmp/results.json`` and ``report.html``.

Prints the table (median SDR per variant and stem, improvement over mixture / 4, verdicts against ``real``) and
last the cost of scoring: seconds per minute of audio and its share of the comparison's wall time. ``--smoke``: the
same path on the fixture multitracks (Hendrix and Rock held out), 2 variants x 1 seed, 2 steps of a tiny U-Net.
Writes ``<work>/compare.yaml``, ``<work>/cmp/`` and, with ``--json``, the results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stemdb.config import IngestConfig, MusdbLayout, SourceConfig, StemsLayout  # noqa: E402

POOL = ROOT.parent / "shared" / "data" / "train-pool" / "musdb"  # beside the checkout
HOLDOUT = ("Music Delta - Hendrix", "Music Delta - Rock")  # not among the fixture stems' source songs
VARIANTS = ("real", "naive", "calibrated", "tempo", "mixed")
KINDS = {"vocals": "vocals", "drums": "drums", "bass": "bass", "keys": "keys", "other": "other"}


def pool_songs(pool: Path) -> dict[str, Path]:
    """Song name -> folder of every MUSDB18-HQ-layout song under ``pool`` (split folders allowed)."""
    from train.evaluate import find_tracks

    return find_tracks(pool)


def build_catalog(work: Path, pool: Path, stems: Path, holdout: tuple[str, ...]) -> Path:
    """Ingest the pool's songs except ``holdout`` (linked into ``<work>/pool/train``) and the loose stems."""
    from stemdb.ingest import ingest_sources

    songs = pool_songs(pool)
    missing = sorted(set(holdout) - set(songs))
    if missing:
        raise SystemExit(f"--holdout {missing} not in {pool} (songs there: {sorted(songs)})")
    train_root = work / "pool" / "train"
    for name, folder in songs.items():
        dst = train_root / name
        if name not in holdout and not dst.exists():
            shutil.copytree(folder, dst)
    catalog = work / "catalog"
    if not (catalog / "_catalog.json").is_file():
        sources = [SourceConfig(name="train-pool", root=work / "pool", layout=MusdbLayout(validation=False),
                                origin="medleydb", licence="CC BY-NC-SA 4.0"),
                   SourceConfig(name="stem-pool", root=stems, origin="single-stems", licence="mixed",
                                layout=StemsLayout(kinds=KINDS))]
        report = ingest_sources(sources, catalog, cfg=IngestConfig(tempo=True, workers=0))
        print(report.line(), flush=True)
    return catalog


def compare_yaml(args: argparse.Namespace, catalog: Path) -> dict:
    """The comparison the arguments describe (see the module docstring)."""
    budget = {"minutes": args.minutes} if args.minutes else {"steps": args.steps}
    cuda = args.device.startswith("cuda")
    valid = {"root": str(ROOT / "tests" / "data" / "musdb" / "test"), "every": args.valid_every, "seconds": 4.0}
    return {
        "catalog": str(catalog),
        "test": {"root": str(args.pool), "tracks": list(args.holdout), "crop_seconds": args.holdout_crop},
        "model": "unet", "model_options": json.loads(args.model_options), "budget": budget,
        "seeds": list(args.seeds), "variants": list(args.variants),
        "remix": {"seconds": args.seconds},
        "train": {"batch_size": args.batch, "lr": args.lr, "device": args.device, "num_workers": args.num_workers,
                  "gpu_augment": cuda, "log_every": 10, "checkpoint_every": 10**6, "valid": valid},
        "scoring": {"workers": args.eval_workers, "excerpt_seconds": 5.0},
    }


def run(args: argparse.Namespace) -> dict:
    """Build the catalogue, write compare.yaml, run the comparison; returns its results."""
    from train.compare import run_comparison
    from train.compare.results import text_table

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    catalog = build_catalog(work, args.pool, args.stems, tuple(args.holdout))
    print(f"catalogue ready in {time.perf_counter() - t0:.0f} s", flush=True)
    config = work / "compare.yaml"
    config.write_text(yaml.safe_dump(compare_yaml(args, catalog), sort_keys=False))
    results = run_comparison(config, work / "cmp",
                             on_run=lambda k, d, n: print(f"[{k}] done ({d}/{n}) at {time.perf_counter() - t0:.0f} s",
                                                          flush=True))
    for line in text_table(results):
        print(line, flush=True)
    print(f"report: {work / 'cmp' / 'report.html'}; load average {os.getloadavg()[0]:.1f}", flush=True)
    return results


#: ``--smoke``: the same path at a size that finishes in a few minutes on one CPU core.
SMOKE = {"device": "cpu", "variants": ["real", "naive"], "seeds": [0], "steps": 2, "minutes": None, "batch": 1,
         "seconds": 1.0, "holdout_crop": 3.0, "eval_workers": 1, "valid_every": 10**6, "num_workers": 0,
         "pool": ROOT / "tests" / "data" / "musdb",
         "model_options": '{"n_fft": 256, "hop_length": 64, "levels": 3, "base_filters": 4, "max_bin": 100}'}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "stemdb-compare")
    ap.add_argument("--pool", type=Path, default=POOL, help="MUSDB18-HQ-layout songs (split folders allowed)")
    ap.add_argument("--stems", type=Path, default=ROOT / "tests" / "data" / "stems")
    ap.add_argument("--holdout", nargs=2, default=list(HOLDOUT))
    ap.add_argument("--holdout-crop", type=float, default=None, help="score only the held-out songs' first seconds")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps per run (equal work on a shared machine)")
    ap.add_argument("--minutes", type=float, default=None, help="training minutes per run instead of --steps")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per training item")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--num-workers", type=int, default=0, help="stream worker processes")
    ap.add_argument("--valid-every", type=int, default=50)
    ap.add_argument("--eval-workers", type=int, default=2)
    ap.add_argument("--model-options", default='{"n_fft": 1024, "hop_length": 256, "levels": 4, "base_filters": 8, '
                    '"max_bin": 256}', help="U-Net options, JSON")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the fixtures: the same code path")
    args = ap.parse_args(argv)
    if args.smoke:
        for k, v in SMOKE.items():
            setattr(args, k, v)
        args.work = Path(tempfile.mkdtemp(prefix="stemdb-compare-smoke-"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("train.compare").setLevel(logging.INFO)
    try:
        results = run(args)
    finally:
        if args.smoke:
            shutil.rmtree(args.work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    t = results["timing"]
    print(f"scoring: {t['scoring_s_per_audio_minute'] or 0.0:.2f} s per minute of audio, share of the wall time "
          f"{t['scoring_share'] or 0.0:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
