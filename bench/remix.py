"""Renderer cost per 6 s 4-stem mixture vs a naive source-folder baseline, same run, same corpus.

Run: .venv/bin/python bench/remix.py [--n 200 --seconds 6]   (--smoke: 8 mixtures of 1 s, seconds)

(a) naive baseline, written here the way Open-Unmix's source-folder dataset works: for each mixture open 4 random
    files (one per target), read a random 6 s window of each (soundfile, float32), random gain, random channel swap,
    sum;
(b) stemdb: plan + ``render_recipe`` on a catalogue of the same files (no pitch/stretch: gain, swap, polarity),
    reusing its output buffers from one mixture to the next as the writer and the stream do;
(c) stemdb with pitch shift and time stretch at p = 0.3 per stem.
All in this process, one core, no file writing. The ratio printed last is naive / ours (goal >= 2.5) and our
cost must be <= 10 ms per mixture.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from augment.config import load_project  # noqa: E402
from augment.pool import build_pool  # noqa: E402
from augment.remix import plan_mixture  # noqa: E402
from augment.render import StemTable, render_recipe  # noqa: E402
from stemdb import audio  # noqa: E402
from stemdb.config import IngestConfig, SourceConfig, StemsLayout  # noqa: E402
from stemdb.ingest import ingest_sources  # noqa: E402

TARGETS = ("vocals", "drums", "bass", "other")


def build_corpus(dst: Path, copies: int = 6, seconds: int = 30) -> None:
    """Stereo 30 s stems per target from the fixture multitracks and loose stems (distinct gains per copy)."""
    rng = np.random.default_rng(0)
    srcs = sorted((ROOT / "tests" / "data" / "musdb" / "train").rglob("*.wav"))
    srcs += sorted((ROOT / "tests" / "data" / "stems").rglob("*.wav"))
    for i in range(copies):
        for p in srcs:
            kind = p.stem if p.parent.parent.name == "train" else p.parent.name
            if kind == "mixture":
                continue
            kind = "other" if kind == "keys" else kind
            a, sr = audio.read(p)
            if sr != 44100:
                continue
            a = np.repeat(a, 2, axis=0) if a.shape[0] == 1 else a
            reps = int(np.ceil(seconds * sr / a.shape[1]))
            a = np.tile(a, reps)[:, : seconds * sr] * np.float32(rng.uniform(0.3, 0.9))
            audio.write(dst / kind / f"{p.parent.name}-{p.stem}-{i}.wav", a, sr)


def naive(files: dict[str, list[Path]], n: int, seconds: float, seed: int) -> float:
    rnd = random.Random(seed)
    t0 = time.process_time()
    for _ in range(n):
        stems = []
        for t in TARGETS:
            path = rnd.choice(files[t])
            info = sf.info(str(path))
            frames = int(seconds * info.samplerate)
            start = rnd.randint(0, max(0, info.frames - frames))
            x, _ = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
            x = x.T * np.float32(rnd.uniform(0.25, 1.25))
            if rnd.random() < 0.5:
                x = x[::-1]
            stems.append(x)
        _mix = np.stack(stems).sum(0)
    return (time.process_time() - t0) / n


def ours(cat: Path, cfg, n: int, seconds: float, seed: int) -> float:  # noqa: ANN001
    pool = build_pool(cat, cfg)
    table = StemTable.from_catalog(cat)
    # warm-up; the stems and mixture buffers are reused across mixtures, as the writer and the stream do
    r = render_recipe(plan_mixture(0, seed=seed, pool=pool, cfg=cfg, seconds=seconds), table, cfg)
    t0 = time.process_time()
    for i in range(n):
        r = render_recipe(plan_mixture(i, seed=seed, pool=pool, cfg=cfg, seconds=seconds), table, cfg,
                          out=r.stems, mix_out=r.mixture)
    return (time.process_time() - t0) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary folder")
    ap.add_argument("--smoke", action="store_true", help="8 mixtures of 1 s from a small corpus")
    args = ap.parse_args(argv)
    corpus = {"copies": 6, "seconds": 30}
    if args.smoke:
        args.n, args.seconds, corpus = 8, 1.0, {"copies": 1, "seconds": 4}
    w = args.workdir or Path(tempfile.mkdtemp(prefix="stemdb-bench-remix-"))
    shutil.rmtree(w, ignore_errors=True)
    build_corpus(w / "stems", **corpus)
    ingest_sources([SourceConfig(name="b", root=w / "stems", layout=StemsLayout())], w / "cat",
                   cfg=IngestConfig(tempo=False, workers=1))
    files = {t: sorted((w / "stems" / t).glob("*.wav")) for t in TARGETS}
    base = load_project(ROOT / "data.yaml").remix
    light = {t: {"gain": {"min_db": -3, "max_db": 3, "p": 1.0}, "channel_swap": {"p": 0.5},
                 "polarity": {"p": 0.5}} for t in TARGETS}
    heavy = {t: {**light[t], "pitch": {"min_semitones": -2, "max_semitones": 2, "p": 0.3},
                 "stretch": {"min_rate": 0.9, "max_rate": 1.1, "p": 0.3}} for t in TARGETS}
    cfg_light = base.model_copy(update={"augment": light})
    cfg_heavy = base.model_copy(update={"augment": heavy})
    naive(files, 10, args.seconds, 1)  # warm the page cache
    t_naive = naive(files, args.n, args.seconds, 0)
    t_ours = ours(w / "cat", cfg_light, args.n, args.seconds, 0)
    t_heavy = ours(w / "cat", cfg_heavy, max(20, args.n // 5), args.seconds, 0)
    shutil.rmtree(w, ignore_errors=True)
    print(f"naive baseline: {t_naive * 1e3:.2f} ms CPU per {args.seconds:g} s 4-stem mixture")
    print(f"stemdb render (gain/swap/polarity, calibrated levels): {t_ours * 1e3:.2f} ms")
    print(f"stemdb render with pitch/stretch p=0.3 per stem: {t_heavy * 1e3:.1f} ms")
    print(f"ratio naive/stemdb: {t_naive / t_ours:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
