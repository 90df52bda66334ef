"""``build_remix`` scaling over worker processes: mixtures per second at 1, 2, 4, ... workers, same recipes.

Run: .venv/bin/python bench/remix_scaling.py [--workers 1 2 4 8 16] [--n 2000] [--seconds 6] [--json out.json]
(smoke: ``--smoke``, a few mixtures at 1 and 2 workers).

One catalogue of the bundled fixtures (multitracks and loose stems; no pitch shift or time stretch: gain,
calibrated levels, channel swap, polarity). For each worker count ``w`` (never more than the machine's cores, said
when capped) ``build_remix(workers=w)`` plans ``n`` recipes and renders and writes them (MUSDB18-HQ layout, 16-bit
WAV, five files per mixture) into an empty folder, which is deleted afterwards. The output goes to ``/dev/shm``
when it has room (so the disk's write speed does not set the figure; said in the output), else to ``--workdir``.
Every build must write the same ``recipes.parquet``. Throughput is mixtures per wall second of the whole call
(planning, pool start and the final ``recipes.parquet`` included). ``--n-per-worker K`` renders ``min(n, K * w)``
mixtures at ``w`` workers instead of ``n`` everywhere (a shorter run; the rate is still per mixture).

The last line is the speed-up of the largest worker count over one worker (goal on a 16-core machine: >= 12x).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from augment.build import build_remix  # noqa: E402
from augment.config import load_project  # noqa: E402
from stemdb.config import IngestConfig, MusdbLayout, SourceConfig, StemsLayout  # noqa: E402
from stemdb.ingest import ingest_sources  # noqa: E402

DATA = ROOT / "tests" / "data"
#: Bytes one 4-stem mixture of one second takes on disk (5 stereo 16-bit files).
BYTES_PER_MIX_SECOND = 5 * 2 * 2 * 44100


def fixture_catalog(dst: Path) -> Path:
    """The fixture multitracks and loose stems (WAV only)."""
    srcs = [SourceConfig(name="musdb", root=DATA / "musdb", layout=MusdbLayout()),
            SourceConfig(name="stems", root=DATA / "stems", layout=StemsLayout(
                kinds={k: k for k in ("vocals", "drums", "bass", "keys", "other")}))]
    ingest_sources(srcs, dst, cfg=IngestConfig(tempo=False, workers=1))
    return dst


def output_root(workdir: Path, need_bytes: int) -> Path:
    """``/dev/shm`` when it has twice ``need_bytes`` free, else ``workdir``."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2 * need_bytes:
        return Path(tempfile.mkdtemp(prefix="stemdb-scaling-", dir=shm))
    workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="stemdb-scaling-", dir=workdir))


def worker_counts(asked: list[int], cores: int) -> list[int]:
    """The asked counts capped at ``cores``, without repeats, in order."""
    out: list[int] = []
    for w in asked:
        w = max(1, min(w, cores))
        if w not in out:
            out.append(w)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--n", type=int, default=2000, help="mixtures per build")
    ap.add_argument("--n-per-worker", type=int, default=None, help="render min(n, K x workers) mixtures per build")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--chunk-size", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "stemdb-bench-scaling")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--smoke", action="store_true", help="a few 1 s mixtures at 1 and 2 workers")
    args = ap.parse_args(argv)
    if args.smoke:
        args.workers, args.n, args.n_per_worker, args.seconds, args.chunk_size = [1, 2], 8, None, 1.0, 4
    if args.n < 1 or args.seconds <= 0 or args.chunk_size < 1:
        ap.error("--n, --seconds and --chunk-size must be positive")
    cores = os.cpu_count() or 1
    counts = worker_counts(args.workers, cores)
    if counts != sorted(set(args.workers)) and max(args.workers) > cores:
        print(f"note: {cores} cores: worker counts capped to {counts}")
    base = load_project(ROOT / "data.yaml").remix
    light = {t: {"channel_swap": {"p": 0.5}, "polarity": {"p": 0.5}} for t in base.targets}
    cfg = base.model_copy(update={"augment": light})
    sizes = {w: min(args.n, args.n_per_worker * w) if args.n_per_worker else args.n for w in counts}
    work = Path(tempfile.mkdtemp(prefix="stemdb-scaling-cat-"))
    out_root = output_root(args.workdir, max(sizes.values()) * int(args.seconds * BYTES_PER_MIX_SECOND))
    results: dict[int, dict[str, float]] = {}
    digests: dict[int, str] = {}
    try:
        cat = fixture_catalog(work / "cat")
        build_remix(cat, out_root / "warm", n=2 * args.chunk_size, seed=args.seed, cfg=cfg, seconds=args.seconds,
                    chunk_size=args.chunk_size)  # page cache, imports, numba kernels
        shutil.rmtree(out_root / "warm")
        print(f"build_remix of {args.seconds:g} s mixtures, chunks of {args.chunk_size}, {cores} cores, "
              f"output in {out_root}")
        print(f"{'workers':>7} {'mixtures':>8} {'wall s':>8} {'mix/s':>8} {'x real time':>11} {'speed-up':>8}")
        for w in counts:
            dst = out_root / f"w{w}"
            t0 = time.perf_counter()
            build_remix(cat, dst, n=sizes[w], seed=args.seed, cfg=cfg, seconds=args.seconds, workers=w,
                        chunk_size=args.chunk_size)
            wall = time.perf_counter() - t0
            digests[w] = hashlib.sha256((dst / "recipes.parquet").read_bytes()).hexdigest()[:16]
            shutil.rmtree(dst)
            rate = sizes[w] / wall
            results[w] = {"mixtures": sizes[w], "wall_s": wall, "mix_per_s": rate,
                          "realtime": rate * args.seconds, "speedup": rate / results[counts[0]]["mix_per_s"]
                          if results else 1.0}
            r = results[w]
            print(f"{w:>7} {sizes[w]:>8} {wall:>8.1f} {rate:>8.1f} {r['realtime']:>11.0f} {r['speedup']:>7.2f}x",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(out_root, ignore_errors=True)
    same_size = {w for w in counts if sizes[w] == args.n}
    identical = len({digests[w] for w in same_size}) <= 1
    if not identical:
        print("error: builds of the same size wrote different recipes.parquet", file=sys.stderr)
        return 1
    top = counts[-1]
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "seconds": args.seconds, "chunk_size": args.chunk_size,
                                         "output": str(out_root.parent), "by_workers": results,
                                         "speedup_max": results[top]["speedup"], "max_workers": top}, indent=2))
    print(f"speed-up {top} workers / {counts[0]} worker(s): {results[top]['speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
