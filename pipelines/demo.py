"""The README's main job: the whole Prefect loop on the bundled fixtures, started and stopped cleanly.

    python -m pipelines.demo --out work/demo [--n 16] [--seconds 4] [--seed 0] [--config data.yaml] [--port N]
                             [--keep-serving]

1. starts ``python -m pipelines.serve`` (a local Prefect server on 127.0.0.1 and the three served deployments) in
   the background, on a free port, with its own ``PREFECT_HOME`` under ``OUT/prefect`` (so it never meets another
   server or database), and waits until ``build-remix/default`` and the others exist;
2. runs ``prefect deployment run ingest-stems/default --watch`` (catalogue in ``OUT/catalog``), then
   ``build-remix/default`` (``--n`` mixtures of ``--seconds`` s into ``OUT/remix``), then ``dataset-stats/default``
   (HTML reports in ``OUT/reports``), each with ``--watch``;
3. prints where the output is, and stops serve and server (SIGTERM to the supervisor, which stops serve first, then
   the server), also when a step fails or on Ctrl-C. Exit status 0 when every run completed. With
   ``--keep-serving`` it waits for Ctrl-C before stopping, so the runs, tasks and artifacts can be browsed in the UI.

Rerunning is safe: the catalogue is incremental and a finished remix set is not rendered again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipelines.serve import deployments_exist, free_port, prefect_env

#: Seconds to wait for the server and the deployments (a first start runs the database migrations).
READY_TIMEOUT_S = 300.0
#: Seconds ``--watch`` may wait for one flow run.
WATCH_TIMEOUT_S = 1800


def _log_tail(path: Path, n: int = 30) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def start_supervisor(out: Path, api_url: str, config: Path) -> tuple[subprocess.Popen, Path]:
    """Start ``python -m pipelines.serve`` in its own session, output to ``OUT/prefect/serve.log``."""
    home = out / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "serve.log"
    port = api_url.rsplit(":", 1)[1].split("/")[0]
    with open(log_path, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.serve", "--port", port, "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=prefect_env(api_url, home),
            cwd=config.parent, start_new_session=True,
        )
    return proc, log_path


def wait_ready(api_url: str, proc: subprocess.Popen, log_path: Path, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until the three deployments exist; RuntimeError (with the log's tail) when serve dies or times out."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"stemdb serve exited with status {proc.returncode}:\n{_log_tail(log_path)}")
        if deployments_exist(api_url):
            return
        time.sleep(1.0)
    raise RuntimeError(f"the deployments did not appear on {api_url} within {timeout:.0f} s:\n{_log_tail(log_path)}")


def stop_supervisor(proc: subprocess.Popen, home: Path, grace: float = 60.0) -> None:
    """SIGTERM to the supervisor (it stops serve, then the server); after ``grace`` s kill whatever is left."""
    pids: dict[str, int | None] = {}
    with contextlib.suppress(OSError, ValueError):
        pids = json.loads((home / "serve.json").read_text())
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for key in ("serve", "server"):  # normally gone already: the supervisor waited for them
        pid = pids.get(key)
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)


def run_deployment(name: str, params: dict[str, object], env: dict[str, str], cwd: Path) -> None:
    """``prefect deployment run NAME --param k=v ... --watch``; RuntimeError unless the run completed."""
    cmd = [sys.executable, "-m", "prefect", "deployment", "run", name, "--watch",
           "--watch-timeout", str(WATCH_TIMEOUT_S)]
    for k, v in params.items():
        cmd += ["--param", f"{k}={v}"]
    print(f"\n$ prefect deployment run {name} " + " ".join(f"--param {k}={v}" for k, v in params.items())
          + " --watch", flush=True)
    rc = subprocess.call(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    if rc != 0:
        raise RuntimeError(f"flow run of {name} did not complete (prefect exited with status {rc})")


def run_demo(out: Path, *, config: Path, n: int = 16, seconds: float = 4.0, seed: int = 0,
             port: int | None = None, keep_serving: bool = False) -> int:
    """The whole loop (see the module docstring). Returns the exit status."""
    out = out.expanduser().resolve()
    config = config.expanduser().resolve()
    if not config.is_file():
        print(f"error: config={str(config)!r}: no such file", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{port or free_port()}/api"
    home = out / "prefect"
    env = prefect_env(api_url, home)
    t0 = time.perf_counter()
    print(f"demo: starting a Prefect server and stemdb serve on {api_url} (logs in {home})", flush=True)
    proc, log_path = start_supervisor(out, api_url, config)
    catalog, remix, reports = out / "catalog", out / "remix", out / "reports"
    finished = False
    try:
        wait_ready(api_url, proc, log_path)
        print(f"demo: deployments ready after {time.perf_counter() - t0:.0f} s; UI on {api_url[:-4]}", flush=True)
        run_deployment("ingest-stems/default", {"catalog": catalog}, env, config.parent)
        chunk = max(1, min(25, (n + 1) // 2))  # two render tasks at least, so the UI shows the mapping
        run_deployment("build-remix/default", {"catalog": catalog, "n_mixtures": n, "seconds": seconds,
                                               "seed": seed, "out": remix, "chunk_size": chunk}, env, config.parent)
        run_deployment("dataset-stats/default", {"catalog": catalog, "remix_dir": remix, "out": reports},
                       env, config.parent)
        finished = True
        if keep_serving:
            print(f"\ndemo: the runs and artifacts are on {api_url[:-4]}; Ctrl-C stops serve and server", flush=True)
            while proc.poll() is None:
                time.sleep(1.0)
    except KeyboardInterrupt:
        if not finished:
            print("\ndemo: interrupted", file=sys.stderr)
            return 1
    except RuntimeError as exc:
        print(f"\ndemo: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        print("demo: stopping stemdb serve and the Prefect server", flush=True)
        stop_supervisor(proc, home)
    mixtures = sorted(p for p in remix.glob("*/mix-*") if p.is_dir())
    print(f"\ndemo: done in {time.perf_counter() - t0:.0f} s")
    print(f"  catalogue : {catalog}")
    print(f"  remix set : {remix}  ({len(mixtures)} mixtures of {seconds:g} s, MUSDB18-HQ layout, recipes.parquet)")
    for html in sorted(reports.glob("*.html")):
        print(f"  report    : {html}")
    print(f"  logs      : {home}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (catalog/, remix/, reports/, prefect/)")
    ap.add_argument("--config", type=Path, default=Path("data.yaml"), help="data.yaml (default: ./data.yaml)")
    ap.add_argument("--n", type=int, default=16, help="mixtures to render (default 16)")
    ap.add_argument("--seconds", type=float, default=4.0, help="mixture length in seconds (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=None, help="API port (default: a free one)")
    ap.add_argument("--keep-serving", action="store_true", help="after the runs, serve the UI until Ctrl-C")
    args = ap.parse_args(argv)
    return run_demo(args.out, config=args.config, n=args.n, seconds=args.seconds, seed=args.seed, port=args.port,
                    keep_serving=args.keep_serving)


if __name__ == "__main__":
    sys.exit(main())
