"""Ingest throughput vs decode-only, RSS vs corpus size, and a 1,000,000-row catalogue query.

Run: .venv/bin/python bench/ingest.py [--hours 1 --big-hours 4 --rows 1000000] (--smoke: a small corpus, seconds)

(a) decode-only: soundfile reads every file of the corpus, one process;
(b) full ingest (no tempo) of the same corpus with one worker process (per-core comparison), then with two;
Peak RSS of an ingest run (in a child process) for a 1 h and a 4 h corpus: must not grow with corpus size.
A synthetic catalogue of 1,000,000 rows: open and filter by kind and split, time and RSS (child process).
The ratio printed last is ingest throughput / decode-only throughput (goal >= 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stemdb import audio  # noqa: E402

FIXTURE_STEMS = ROOT / "tests" / "data" / "stems"


def build_corpus(dst: Path, hours: float) -> float:
    """Copies of the fixture stems with small gain changes (distinct hashes) until ``hours`` of audio."""
    srcs = sorted(FIXTURE_STEMS.rglob("*.wav"))
    clips = [(p.parent.name, *audio.read(p)) for p in srcs]
    total, i = 0.0, 0
    while total < hours * 3600:
        kind, a, sr = clips[i % len(clips)]
        g = np.float32(0.5 + 0.49 * ((i * 7919) % 1000) / 1000)
        audio.write(dst / kind / f"copy{i:06d}.wav", a * g, sr)
        total += a.shape[1] / sr
        i += 1
    return total


def decode_only(root: Path) -> float:
    t0 = time.perf_counter()
    for p in sorted(root.rglob("*.wav")):
        audio.read(p)
    return time.perf_counter() - t0


CHILD = """
import json, resource, sys, time
from stemdb.config import IngestConfig, SourceConfig, StemsLayout
from stemdb.ingest import ingest_sources
t0 = time.perf_counter()
rep = ingest_sources([SourceConfig(name="b", root=sys.argv[1], layout=StemsLayout())], sys.argv[2],
                     cfg=IngestConfig(tempo=False, workers=int(sys.argv[3]), batch_size=64))
dt = time.perf_counter() - t0
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": dt, "measured": rep.measured, "rss_mb": max(self_kb, child_kb) / 1024}))
"""


def ingest_child(root: Path, cat: Path, workers: int) -> dict:
    shutil.rmtree(cat, ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(cat), str(workers)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


QUERY_CHILD = """
import json, resource, sys, time
from stemdb.catalog import Catalog
t0 = time.perf_counter()
df = Catalog.open(sys.argv[1]).stems(kind="vocals", split="test", columns=["key", "stem_id", "path", "duration_s"])
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "rows": len(df),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def million_rows(cat: Path, n: int = 1_000_000) -> dict:
    from datetime import UTC, datetime

    import pyarrow as pa

    from stemdb.catalog import STEMS_SCHEMA, Catalog, write_parquet_atomic

    shutil.rmtree(cat, ignore_errors=True)
    Catalog.create(cat)
    rng = np.random.default_rng(0)
    kinds = np.array(["vocals", "drums", "bass", "keys", "other"])
    splits = np.array(["train", "valid", "test"])
    cols = {f.name: pa.nulls(n, f.type) for f in STEMS_SCHEMA}
    cols["key"] = pa.array([f"s:f{i:07d}.wav" for i in range(n)])
    cols["stem_id"] = pa.array([f"{i:032x}" for i in range(n)])
    cols["path"] = pa.array([f"f{i:07d}.wav" for i in range(n)])
    cols["kind"] = pa.array(kinds[rng.integers(0, 5, n)])
    cols["split"] = pa.array(splits[rng.integers(0, 3, n)])
    cols["duration_s"] = pa.array(rng.uniform(2, 300, n))
    cols["silence_ratio"] = pa.array(rng.uniform(0, 1, n))
    cols["deleted"] = pa.array(np.zeros(n, dtype=bool))
    cols["ingested_at"] = pa.array([datetime.now(UTC)] * n, type=pa.timestamp("us", tz="UTC"))
    write_parquet_atomic(pa.table(cols, schema=STEMS_SCHEMA), cat / "stems" / "part-0.parquet")
    out = subprocess.run([sys.executable, "-c", QUERY_CHILD, str(cat)], check=True, capture_output=True, text=True,
                         cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--big-hours", type=float, default=4.0)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic catalogue query")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary folder")
    ap.add_argument("--smoke", action="store_true", help="36 s of audio, no big corpus, 10,000 rows")
    args = ap.parse_args(argv)
    if args.smoke:
        args.hours, args.big_hours, args.rows = 0.01, 0.0, 10_000
    w = args.workdir or Path(tempfile.mkdtemp(prefix="stemdb-bench-ingest-"))
    shutil.rmtree(w, ignore_errors=True)
    two_workers = min(2, os.cpu_count() or 1)
    if two_workers < 2:
        print("note: 1 core: the 2-worker ingest runs with 1 worker")
    secs = build_corpus(w / "corpus1", args.hours)
    print(f"corpus: {secs / 3600:.2f} h of 44.1 kHz PCM_16 WAV")
    decode_only(w / "corpus1")  # warm the page cache
    t_dec = decode_only(w / "corpus1")
    one = ingest_child(w / "corpus1", w / "cat1", 1)
    two = ingest_child(w / "corpus1", w / "cat1", two_workers)
    print(f"decode-only (soundfile, 1 process): {t_dec:.2f} s = {secs / t_dec:,.0f}x real time")
    print(f"ingest, 1 worker:  {one['seconds']:.2f} s = {secs / one['seconds']:,.0f}x real time, "
          f"peak RSS {one['rss_mb']:.0f} MB")
    print(f"ingest, {two_workers} workers: {two['seconds']:.2f} s = {secs / two['seconds']:,.0f}x real time")
    if args.big_hours > 0:
        big = build_corpus(w / "corpus4", args.big_hours)
        decode_only(w / "corpus4")
        t_dec4 = decode_only(w / "corpus4")
        four = ingest_child(w / "corpus4", w / "cat4", 1)
        print(f"{big / 3600:.1f} h corpus: decode-only {big / t_dec4:,.0f}x, ingest (1 worker, process start and "
              f"imports included) {big / four['seconds']:,.0f}x real time: ratio {t_dec4 / four['seconds']:.2f}")
        print(f"peak RSS: {args.hours:g} h corpus {one['rss_mb']:.0f} MB, {big / 3600:.1f} h corpus "
              f"{four['rss_mb']:.0f} MB (ratio {four['rss_mb'] / one['rss_mb']:.2f})")
        shutil.rmtree(w / "corpus4", ignore_errors=True)
    q = million_rows(w / "cat1m", args.rows)
    print(f"{args.rows:,}-row catalogue: open + filter kind=vocals split=test -> {q['rows']:,} rows in "
          f"{q['seconds']:.2f} s, peak RSS {q['rss_mb']:.0f} MB")
    shutil.rmtree(w, ignore_errors=True)
    print(f"ratio ingest/decode-only throughput (1 process each): {t_dec / one['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
