"""Cost per item as the catalogue grows: open + filter, pool, planning, loading and peak RSS at 1,000, 10,000 and
100,000 stems; then 1,000,000 recipes planned and streamed to Parquet in row groups.

Run: .venv/bin/python bench/scale.py [--sizes 1000 10000 100000] [--recipes 1000000] [--smoke]

Catalogues. The fixture stems (MUSDB18-HQ excerpts and loose WAV stems, tempo off) are ingested once. A synthetic
catalogue of ``N`` stems repeats their rows at the report's 2:2:3:3 ratio of vocals : drums : bass : other (keys
count as other): row ``j`` of a kind is a copy of one real stem of that kind with its own key, its own ``stem_id``
(a hash of the original id and ``j``: distinct hashes), its own song (``song-<j>``, so the four kinds of one ``j``
form a multitrack-like group), and its own gain (uniform in +-6 dB: ``lufs``, peak, RMS and the 100 ms loudness
profile shifted by it). Every copy points at its original file, so the audio read is the few real files' audio,
warm in the page cache (the catalogue, pool, planner and stem table are the full size; the reads are not).

Each size is measured in a fresh child process (so its peak RSS is its own): catalogue open + filter (the pool's
columns of the train split, ``Catalog.stems_table``), the pool (``build_pool``), planning (``plan_block`` over
blocks of 4,096 recipes, CPU time per recipe), the stream's loader (``RemixStream`` int16: a batch of 16 planned at
once, then each 6 s 4-stem mixture rendered into a reused buffer, CPU time per mixture, no DataLoader: the
per-item cost that could grow with the catalogue), and the child's peak RSS. Then a child plans ``--recipes``
recipes on the largest catalogue and writes them to ``recipes.parquet`` one row group per block of 65,536 (peak
RSS printed). The last line is the ratio of the largest size's per-item costs to the smallest's (goal: within 1.5x).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from augment.config import load_project  # noqa: E402
from augment.pool import POOL_COLUMNS, build_pool  # noqa: E402
from augment.remix import plan_block  # noqa: E402
from stemdb.catalog import STEMS_SCHEMA, Catalog, write_json_atomic, write_parquet_atomic  # noqa: E402
from stemdb.config import IngestConfig, MusdbLayout, SourceConfig, StemsLayout  # noqa: E402
from stemdb.ingest import ingest_sources  # noqa: E402

DATA = ROOT / "tests" / "data"
RATIO = {"vocals": 2, "drums": 2, "bass": 3, "other": 3}
PLAN_BLOCK = 4096
ROW_GROUP = 65536


def fixture_catalog(dst: Path) -> Path:
    srcs = [SourceConfig(name="musdb", root=DATA / "musdb", layout=MusdbLayout()),
            SourceConfig(name="stems", root=DATA / "stems", layout=StemsLayout(
                kinds={k: k for k in ("vocals", "drums", "bass", "keys", "other")}))]
    ingest_sources(srcs, dst, cfg=IngestConfig(tempo=False, workers=1))
    return dst


def synth_catalog(real: Path, dst: Path, n: int, *, seed: int = 0) -> float:
    """Write a catalogue of ``n`` stems made from ``real``'s (see the module docstring); returns its hours."""
    t = Catalog.open(real).stems_table()
    kinds = np.array(["other" if k == "keys" else k for k in t["kind"].to_pylist()], dtype=object)
    usable = (kinds != "mixture") & (t["silence_ratio"].to_numpy() < 1.0)
    rng = np.random.default_rng(seed)
    take, kind_of = [], []
    total = sum(RATIO.values())
    for kind, share in RATIO.items():
        pos = np.flatnonzero(usable & (kinds == kind))
        m = n * share // total
        take.append(pos[np.arange(m) % pos.size])
        kind_of += [kind] * m
    idx = np.concatenate(take)
    rows = t.take(pa.array(idx))
    m = rows.num_rows
    j = np.concatenate([np.arange(len(p)) for p in take])
    gain = rng.uniform(-6.0, 6.0, size=m)
    ids = [hashlib.blake2b(f"{sid}|{k}|{jj}".encode(), digest_size=16).hexdigest()
           for sid, k, jj in zip(rows["stem_id"].to_pylist(), kind_of, j.tolist(), strict=True)]
    prof = rows["loudness_100ms"]
    lengths = pc.list_value_length(prof).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(prof).to_numpy(zero_copy_only=False) * np.repeat(10.0 ** (gain / 10.0), lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    cols = {
        "key": pa.array([f"synth:{k}/{jj:07d}" for k, jj in zip(kind_of, j.tolist(), strict=True)]),
        "stem_id": pa.array(ids), "source": pa.array(["synth"] * m), "kind": pa.array(kind_of),
        "song": pa.array([f"song-{jj:07d}" for jj in j.tolist()]), "split": pa.array(["train"] * m),
        "lufs": pc.add(rows["lufs"], pa.array(gain)), "peak_dbfs": pc.add(rows["peak_dbfs"], pa.array(gain)),
        "rms_dbfs": pc.add(rows["rms_dbfs"], pa.array(gain)),
        "loudness_100ms": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(np.float32))),
        "duplicate_of": pa.nulls(m, pa.string()), "deleted": pa.array(np.zeros(m, dtype=bool)),
    }
    out = pa.Table.from_arrays([cols.get(f.name, rows[f.name]).cast(f.type) if f.name in cols else rows[f.name]
                                for f in STEMS_SCHEMA], schema=STEMS_SCHEMA)
    dst.mkdir(parents=True)
    shutil.copy(real / "_catalog.json", dst / "_catalog.json")
    write_parquet_atomic(out, dst / "stems" / "part-0000000000000000001-synth.parquet")
    write_json_atomic(json.loads((real / "_catalog.json").read_text()), dst / "_catalog.json")
    return float(pc.sum(out["duration_s"]).as_py()) / 3600.0


def _cfg():  # noqa: ANN202
    base = load_project(ROOT / "data.yaml").remix
    light = {t: {"gain": {"min_db": -3, "max_db": 3, "p": 1.0}, "channel_swap": {"p": 0.5},
                 "polarity": {"p": 0.5}} for t in base.targets}
    return base.model_copy(update={"augment": light})


def _cpu() -> float:
    return time.process_time()


def measure_size(cat: Path, *, recipes: int, mixtures: int) -> dict:
    """One size, in this (fresh) process."""
    cfg = _cfg()
    t0 = time.perf_counter()
    c0 = _cpu()
    table = Catalog.open(cat).stems_table(split="train", columns=POOL_COLUMNS)
    open_s = _cpu() - c0
    n = table.num_rows
    del table
    c0 = _cpu()
    pool = build_pool(cat, cfg)
    pool_s = _cpu() - c0
    plan_block(pool, cfg, seed=1, indices=range(64))
    c0 = _cpu()
    for start in range(0, recipes, PLAN_BLOCK):
        plan_block(pool, cfg, seed=1, indices=range(start, min(recipes, start + PLAN_BLOCK)))
    plan_s = _cpu() - c0
    from train.data import RemixStream

    c0 = _cpu()
    ds = RemixStream(cat, cfg, seconds=6.0, seed=0, epoch_length=None, dtype="int16", batch_size=16)
    stream_init_s = _cpu() - c0
    mix = np.empty((ds.channels, ds.frames), np.int16)
    tgt = np.empty((len(ds.targets), ds.channels, ds.frames), np.int16)
    ds.plan_ahead(np.arange(16), 0)
    for i in range(16):  # warm-up: kernel load, page cache
        ds.render_into(i, 0, mix, tgt)
    c0 = _cpu()
    for start in range(16, 16 + mixtures, 16):
        idx = np.arange(start, start + 16)
        ds.plan_ahead(idx, 0)
        for i in idx.tolist():
            ds.render_into(i, 0, mix, tgt)
    load_s = _cpu() - c0
    done = (mixtures + 15) // 16 * 16
    return {"stems": n, "open_filter_us": open_s / n * 1e6, "pool_us": pool_s / n * 1e6,
            "plan_ms": plan_s / recipes * 1e3, "stream_init_s": stream_init_s, "load_ms": load_s / done * 1e3,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "wall_s": time.perf_counter() - t0}


def plan_to_parquet(cat: Path, out: Path, recipes: int) -> dict:
    """Plan ``recipes`` recipes and stream them to ``out`` one row group per block."""
    cfg = _cfg()
    pool = build_pool(cat, cfg)
    w0, c0 = time.perf_counter(), _cpu()
    with pq.ParquetWriter(out, plan_block(pool, cfg, seed=3, indices=[0]).table().schema) as writer:
        for start in range(0, recipes, ROW_GROUP):
            block = plan_block(pool, cfg, seed=3, indices=range(start, min(recipes, start + ROW_GROUP)))
            writer.write_table(block.table(), row_group_size=ROW_GROUP)
    cpu, wall = _cpu() - c0, time.perf_counter() - w0
    meta = pq.ParquetFile(out).metadata
    return {"recipes": meta.num_rows, "row_groups": meta.num_row_groups, "bytes": out.stat().st_size,
            "cpu_ms_per_recipe": cpu / recipes * 1e3, "wall_s": wall,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def _child(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--recipes", type=int, default=1_000_000, help="recipes planned to Parquet on the largest size")
    ap.add_argument("--plan", type=int, default=50_000, help="recipes planned per size for the per-recipe cost")
    ap.add_argument("--mixtures", type=int, default=160, help="6 s mixtures loaded per size")
    ap.add_argument("--smoke", action="store_true", help="the same code path at a size that runs in seconds")
    ap.add_argument("--child-size", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-parquet", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_size:
        print(json.dumps(measure_size(args.child_size, recipes=args.plan, mixtures=args.mixtures)))
        return 0
    if args.child_parquet:
        print(json.dumps(plan_to_parquet(*args.child_parquet, args.recipes)))
        return 0
    if args.smoke:
        args.sizes, args.recipes, args.plan, args.mixtures = [200, 2000], 20_000, 4_000, 16
    work = Path(tempfile.mkdtemp(prefix="stemdb-bench-scale-"))
    try:
        real = fixture_catalog(work / "real")
        load = os.getloadavg()[0]
        print(f"fixture stems ingested; load average {load:.1f}; per size: {args.plan} recipes planned, "
              f"{args.mixtures} mixtures of 6 s loaded (int16, batches of 16), each size in a fresh process")
        rows = []
        for n in args.sizes:
            hours = synth_catalog(real, work / f"cat-{n}", n)
            r = _child(["--child-size", str(work / f"cat-{n}"), "--plan", str(args.plan),
                        "--mixtures", str(args.mixtures)])
            rows.append(r)
            print(f"{r['stems']:>7} stems ({hours:6.1f} h): open+filter {r['open_filter_us']:.2f} us/stem, pool "
                  f"{r['pool_us']:.2f} us/stem, planning {r['plan_ms']:.4f} ms/recipe, loader {r['load_ms']:.2f} ms "
                  f"CPU/mixture, stream start {r['stream_init_s']:.2f} s, peak RSS {r['rss_mb']:.0f} MB")
        big = work / f"cat-{args.sizes[-1]}"
        p = _child(["--child-parquet", str(big), str(work / "recipes.parquet"), "--recipes", str(args.recipes)])
        print(f"{p['recipes']:,} recipes on {args.sizes[-1]:,} stems -> recipes.parquet: {p['row_groups']} row "
              f"groups, {p['bytes'] / 1e6:.0f} MB, {p['cpu_ms_per_recipe']:.4f} ms CPU/recipe "
              f"({p['wall_s']:.0f} s wall), peak RSS {p['rss_mb']:.0f} MB; load average {os.getloadavg()[0]:.1f}")
        a, b = rows[0], rows[-1]
        print(f"per-item cost ratio {b['stems']} / {a['stems']} stems: open+filter "
              f"{b['open_filter_us'] / a['open_filter_us']:.2f}, planning {b['plan_ms'] / a['plan_ms']:.2f}, "
              f"loader {b['load_ms'] / a['load_ms']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
