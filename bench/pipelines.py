"""Prefect overhead of ``build-remix``: the flow vs the plain render loop, same run, same catalogue and recipes.

Run: .venv/bin/python bench/pipelines.py [--n 1000 --seconds 6 --chunk-size 25]   (--smoke: 8 mixtures of 1 s)

A real local Prefect server (SQLite, 127.0.0.1, a free port, a temporary PREFECT_HOME, this repository's
prefect.toml) records every flow and task run. Each build renders ``n`` mixtures of ``seconds`` s (gain, channel
swap, polarity; no pitch shift or time stretch) from the fixture catalogue into its own empty folder:

(a) ``augment.build.build_remix(workers=1)``: the plain-Python loop, one process (the baseline);
(b) the ``build-remix`` flow with the thread runner and 1 thread: the same work plus Prefect (flow run, one task
    per chunk, manifest task, statistics artifacts) -> the overhead;
(c) the flow with the thread runner and one thread per core;
(d) the flow with a Dask LocalCluster of 2 worker processes (cluster start included);
(e) ``build_remix(workers=2)``: the plain loop on a process pool of 2, for comparison with (c) and (d).
Every build must give the same recipes.parquet bytes. Each build reports wall-clock seconds and CPU seconds (this
process and its reaped children: pool processes, Dask workers) plus the server's CPU seconds. On a shared machine
the wall clock carries the other users' load, so the overhead is printed both ways, (b)/(a), last (goal <= 1.15).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.chdir(ROOT)  # prefect.toml is read from the working directory

from augment.build import build_remix  # noqa: E402
from augment.config import load_project  # noqa: E402
from pipelines.serve import free_port, start_server, wait_healthy  # noqa: E402
from stemdb.config import IngestConfig, MusdbLayout, SourceConfig, StemsLayout  # noqa: E402
from stemdb.ingest import ingest_sources  # noqa: E402

DATA = ROOT / "tests" / "data"


def catalogue(dst: Path) -> Path:
    """The fixture multitracks and loose stems (the .stem.mp4 is left out: no pitch/stretch, wav reads only)."""
    srcs = [SourceConfig(name="musdb", root=DATA / "musdb", layout=MusdbLayout()),
            SourceConfig(name="stems", root=DATA / "stems", layout=StemsLayout(
                kinds={k: k for k in ("vocals", "drums", "bass", "keys", "other")}))]
    ingest_sources(srcs, dst, cfg=IngestConfig(tempo=False, workers=1))
    return dst


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have exited."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def server_cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def timed(label: str, fn, results: dict, server_pid: int) -> None:  # noqa: ANN001
    t0, c0, s0 = time.perf_counter(), cpu_seconds(), server_cpu(server_pid)
    fn()
    wall, cpu, srv = time.perf_counter() - t0, cpu_seconds() - c0, server_cpu(server_pid) - s0
    results[label] = (wall, cpu, srv)
    print(f"  {label:<44} {wall:7.1f} s wall {cpu:7.1f} s CPU (+ server {srv:4.1f} s)   "
          f"load {os.getloadavg()[0]:.1f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--chunk-size", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary folder")
    ap.add_argument("--smoke", action="store_true", help="8 mixtures of 1 s in chunks of 4 (the server still starts)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.seconds, args.chunk_size = 8, 1.0, 4
    w = (args.workdir or Path(tempfile.mkdtemp(prefix="stemdb-bench-pipelines-"))).resolve()
    pair = min(2, os.cpu_count() or 1)  # the Dask and process-pool builds: 2 workers, never more than the cores
    if pair < 2:
        print("note: 1 core: the Dask and process-pool builds run with 1 worker")
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    cat = catalogue(w / "cat")
    base = load_project(ROOT / "data.yaml").remix
    light = {t: {"channel_swap": {"p": 0.5}, "polarity": {"p": 0.5}} for t in base.targets}
    remix_cfg = base.model_copy(update={"augment": light})
    cfg_file = w / "data.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump({"remix": remix_cfg.model_dump(mode="json")}))

    url = f"http://127.0.0.1:{free_port()}/api"
    server = start_server(url, home=w / "prefect", log_path=w / "prefect" / "server.log", cwd=ROOT)
    try:
        wait_healthy(url, server, log_path=w / "prefect" / "server.log")
        import prefect.settings as ps

        from pipelines.flows import build_remix_flow

        with ps.temporary_settings(updates={ps.PREFECT_API_URL: url}):
            common = {"catalog": cat, "n_mixtures": args.n, "seconds": args.seconds, "seed": args.seed,
                      "config": cfg_file, "chunk_size": args.chunk_size}
            # warm-up: imports, page cache, the server's first writes
            build_remix_flow(**{**common, "n_mixtures": 2 * args.chunk_size}, out=w / "warm", workers=1)
            build_remix(cat, w / "warm-direct", n=2 * args.chunk_size, seed=args.seed, cfg=remix_cfg,
                        seconds=args.seconds, chunk_size=args.chunk_size)
            print(f"build-remix of {args.n} x {args.seconds:g} s mixtures, chunks of {args.chunk_size}, "
                  f"{os.cpu_count()} cores, server {url}:", flush=True)
            r: dict = {}
            pid = server.pid
            timed("(a) build_remix, 1 process", lambda: build_remix(
                cat, w / "a", n=args.n, seed=args.seed, cfg=remix_cfg, seconds=args.seconds,
                chunk_size=args.chunk_size), r, pid)
            timed("(b) flow, thread runner, 1 thread", lambda: build_remix_flow(
                **common, out=w / "b", task_runner="threads", workers=1), r, pid)
            timed(f"(c) flow, thread runner, {os.cpu_count()} threads", lambda: build_remix_flow(
                **common, out=w / "c", task_runner="threads"), r, pid)
            timed(f"(d) flow, Dask LocalCluster, {pair} workers", lambda: build_remix_flow(
                **common, out=w / "d", task_runner="dask", workers=pair), r, pid)
            timed(f"(e) build_remix, process pool of {pair}", lambda: build_remix(
                cat, w / "e", n=args.n, seed=args.seed, cfg=remix_cfg, seconds=args.seconds,
                chunk_size=args.chunk_size, workers=pair), r, pid)
            time.sleep(3.0)  # let the log and event workers send the runs' last records
    finally:
        server.terminate()
        server.wait(timeout=60)
    digests = {k: digest(w / k / "recipes.parquet") for k in "abcde"}
    same = len(set(digests.values())) == 1
    hours = args.n * args.seconds / 3600
    print(f"recipes.parquet identical in all five builds: {same} ({digests['a']})")
    for label, (wall, _, _) in r.items():
        print(f"  {label:<44} {hours * 3600 / wall:6.0f}x real time (wall)")
    (a, a_cpu, _), (b, b_cpu, b_srv), (c, _, _), (d, _, _) = (r[k] for k in sorted(r)[:4])
    print(f"Dask LocalCluster ({pair} workers) / threads ({os.cpu_count()}), wall: {d / c:.2f} (< 1: Dask faster)")
    print(f"threads ({os.cpu_count()}) speed-up over 1 thread, wall: {b / c:.2f}x")
    shutil.rmtree(w, ignore_errors=True)
    if not same:
        raise SystemExit("error: the builds differ")
    print(f"flow overhead, flow (1 thread) / build_remix (1 process): wall {b / a:.3f}, "
          f"CPU {b_cpu / a_cpu:.3f} (with the server's CPU {(b_cpu + b_srv) / a_cpu:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
