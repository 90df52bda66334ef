"""``stemdb serve``: a local Prefect server (SQLite, 127.0.0.1) and the three deployments, with a clean shutdown.

:func:`serve_main` is a small supervisor:

1. the API URL is ``http://127.0.0.1:<port>/api`` with ``--port``, else ``PREFECT_API_URL``, else ``api.url`` of the
   project's ``prefect.toml``, else port 4200;
2. when nothing answers on ``<url>/health`` it starts ``prefect server start --host 127.0.0.1 --port N`` as a
   child in its own session (nohup style: stdin closed, output appended to ``$PREFECT_HOME/server.log``; not
   ``--background``) and waits for the health check; a server that already answers is reused and left running;
3. it starts a second child, ``python -m pipelines.serve --deployments-only``, which ``serve()``s
   ``ingest-stems/default``, ``build-remix/default`` and ``dataset-stats/default`` and polls every 2 s;
4. one SIGTERM or Ctrl-C stops the serve child first (SIGTERM, then SIGKILL of its process group after a grace
   period), then the server it started. If either child dies, the other is stopped and the exit status is 1.

``$PREFECT_HOME`` defaults to ``<project>/.prefect`` (the project is the folder of ``--config``, else the working
directory), so the SQLite database lives with the project. ``$PREFECT_HOME/serve.json`` holds the PIDs
(``supervisor``, ``server``, ``serve``) and the API URL while it runs. Telemetry is off (``DO_NOT_TRACK=1``,
``PREFECT_SERVER_ANALYTICS_ENABLED=false``) and the health checks bypass any HTTP proxy: nothing is contacted but
the API URL. Relative paths in flow parameters are resolved against the project folder (the deployments' runs
start there).

    python -m pipelines.serve [--port N] [--config data.yaml]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

DEFAULT_PORT = 4200
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: Seconds between two polls of the served runner for new flow runs.
POLL_SECONDS = 2.0
#: Seconds a fresh server may take to answer its health check (migrations on a busy 2-core machine are slow).
SERVER_START_TIMEOUT_S = 240.0
#: Seconds each child gets to stop after SIGTERM before its process group is killed.
STOP_GRACE_S = 20.0

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------------------------------------------
# URL, environment, health


def resolve_api_url(port: int | None = None) -> str:
    """The API URL to serve on: ``--port`` > ``PREFECT_API_URL`` > prefect.toml's ``api.url`` > port 4200."""
    if port is not None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port={port} is not allowed: must be 1..65535")
        return f"http://127.0.0.1:{port}/api"
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url
    return (url or f"http://127.0.0.1:{DEFAULT_PORT}/api").rstrip("/")


def url_port(api_url: str) -> int:
    parts = urlsplit(api_url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def is_loopback(api_url: str) -> bool:
    return (urlsplit(api_url).hostname or "") in LOOPBACK_HOSTS


def is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True when ``<api_url>/health`` answers 200 (no proxy is used)."""
    try:
        with _NO_PROXY.open(f"{api_url.rstrip('/')}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def prefect_env(api_url: str, home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the server and serve children: API URL, PREFECT_HOME, telemetry off, server on
    127.0.0.1 at the URL's port."""
    env = dict(os.environ if base is None else base)
    env.update({
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(url_port(api_url)),
    })
    return env


def wait_healthy(api_url: str, proc: subprocess.Popen | None = None, *, timeout: float = SERVER_START_TIMEOUT_S,
                 log_path: Path | None = None) -> None:
    """Wait until the API answers; raises RuntimeError when ``proc`` exits first or ``timeout`` s pass."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if is_healthy(api_url):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with status {proc.returncode} before answering on "
                               f"{api_url}{_tail(log_path)}")
        time.sleep(0.5)
    raise RuntimeError(f"the Prefect server did not answer on {api_url} within {timeout:.0f} s{_tail(log_path)}")


def _tail(path: Path | None, n: int = 20) -> str:
    if path is None or not path.is_file():
        return ""
    lines = path.read_text(errors="replace").splitlines()[-n:]
    return f"; last lines of {path}:\n" + "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# children


def start_server(api_url: str, *, home: Path, log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start ``prefect server start`` on 127.0.0.1 at the URL's port, in its own session, output appended to
    ``log_path``. Does not wait (see :func:`wait_healthy`)."""
    home.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port = url_port(api_url)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
           "--analytics-off"]
    with open(log_path, "ab") as fh:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                env=prefect_env(api_url, home), cwd=cwd, start_new_session=True)


def start_serve(api_url: str, *, home: Path, config: Path | None, cwd: Path,
                log_path: Path | None = None) -> subprocess.Popen:
    """Start the serve child (``python -m pipelines.serve --deployments-only``) in its own session; its output goes
    to ``log_path`` when given, else to this process's stdout/stderr."""
    cmd = [sys.executable, "-m", "pipelines.serve", "--deployments-only"]
    if config is not None:
        cmd += ["--config", str(config)]
    out = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT if out else None,
                                env=prefect_env(api_url, home), cwd=cwd, start_new_session=True)
    finally:
        if out is not None:
            out.close()


def stop_process(proc: subprocess.Popen, *, grace: float = STOP_GRACE_S, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` to ``proc``, wait up to ``grace`` s, then SIGKILL its process group. Returns its exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop within %.0f s of %s: killing its process group", proc.pid, grace,
                        signal.Signals(sig).name)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # children it left behind in its group (flow-run processes of the runner)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return int(proc.returncode)


# --------------------------------------------------------------------------------------------------------------
# deployments


def default_config(config: Path | None) -> Path | None:
    """``config`` made absolute, else ``./data.yaml`` when present, else None (built-in defaults)."""
    if config is not None:
        p = Path(config).expanduser().resolve()
        if not p.is_file():
            raise FileNotFoundError(f"config={str(config)!r}: no such file")
        return p
    p = Path("data.yaml")
    return p.resolve() if p.is_file() else None


def build_deployments(config: Path | None) -> list:
    """``<flow>/default`` runner deployments of the three flows; ``config`` (absolute) is their default ``config``
    parameter. Entry points are module paths (``pipelines.flows:...``), so runs do not depend on the cwd."""
    from prefect.deployments.runner import EntrypointType

    from pipelines.flows import FLOWS

    params = {"config": str(config)} if config is not None else {}
    return [
        f.to_deployment(name="default", parameters=dict(params), tags=["stemdb"],
                        entrypoint_type=EntrypointType.MODULE_PATH,
                        description=(f.description or "").strip().split("\n")[0])
        for f in FLOWS.values()
    ]


def serve_deployments(config: Path | None, *, poll_seconds: float = POLL_SECONDS) -> None:
    """Register and serve the three deployments against ``PREFECT_API_URL`` (blocks; SIGTERM or Ctrl-C stops it)."""
    from prefect import serve

    os.environ.setdefault("DO_NOT_TRACK", "1")
    serve(*build_deployments(config), query_seconds=poll_seconds, pause_on_shutdown=False)


def deployments_exist(api_url: str, names: list[str] | None = None, timeout: float = 5.0) -> bool:
    """True when every deployment ``flow/name`` in ``names`` (default: the three) exists on the server."""
    want = set(names or [f"{f}/default" for f in ("ingest-stems", "build-remix", "dataset-stats")])
    req = urllib.request.Request(f"{api_url.rstrip('/')}/deployments/filter", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with _NO_PROXY.open(req, timeout=timeout) as resp:
            deps = json.loads(resp.read())
        req2 = urllib.request.Request(f"{api_url.rstrip('/')}/flows/filter", data=b"{}", method="POST",
                                      headers={"Content-Type": "application/json"})
        with _NO_PROXY.open(req2, timeout=timeout) as resp:
            flows = {f["id"]: f["name"] for f in json.loads(resp.read())}
    except (OSError, urllib.error.URLError, ValueError):
        return False
    have = {f"{flows.get(d['flow_id'], '?')}/{d['name']}" for d in deps}
    return want <= have


# --------------------------------------------------------------------------------------------------------------
# the supervisor


def serve_main(config: Path | None = None, port: int | None = None) -> int:
    """``stemdb serve``: start a local server if none answers, serve the deployments, stop both on SIGTERM/Ctrl-C.

    Returns the exit status: 0 after a clean stop, 1 when a child died, 2 for a bad argument or a server that
    could not be started.
    """
    try:
        cfg = default_config(config)
        api_url = resolve_api_url(port)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    project = cfg.parent if cfg is not None else Path.cwd().resolve()
    home = Path(os.environ.get("PREFECT_HOME") or project / ".prefect").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    state_file = home / "serve.json"

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    children: dict[str, subprocess.Popen] = {}  # "server" (when started here), "serve"
    try:
        early = _ensure_server(api_url, home=home, project=project, stop=stop, children=children)
        if early is not None:
            return early
        serve = children["serve"] = start_serve(api_url, home=home, config=cfg, cwd=project)
        _write_state(state_file, api_url, children.get("server"), serve)
        ui = api_url[: -len("/api")] if api_url.endswith("/api") else api_url
        print(f"stemdb serve: serving ingest-stems/default, build-remix/default, dataset-stats/default "
              f"(pid {serve.pid}); UI on {ui}; stop with Ctrl-C or SIGTERM to pid {os.getpid()}", flush=True)
        status = _supervise(serve, children.get("server"), stop)
    finally:
        for name in ("serve", "server"):  # serve first, then the server it talks to
            if name in children:
                stop_process(children[name])
        with contextlib.suppress(FileNotFoundError):
            state_file.unlink()
        for s, h in old.items():
            signal.signal(s, h)
    if received:
        print(f"stemdb serve: stopped ({signal.Signals(received[0]).name})", flush=True)
    return status


def _ensure_server(api_url: str, *, home: Path, project: Path, stop: threading.Event,
                   children: dict[str, subprocess.Popen]) -> int | None:
    """Reuse the server answering on ``api_url``, or start one on 127.0.0.1 (recorded in ``children["server"]``)
    and wait for its health check. Returns ``None`` to go on, or the exit status to return now (2: no server
    possible; 0: stopped while waiting)."""
    if is_healthy(api_url):
        print(f"stemdb serve: using the Prefect server already answering on {api_url}", flush=True)
        return None
    if not is_loopback(api_url):
        print(f"error: nothing answers on {api_url}, and a server is only started on 127.0.0.1", file=sys.stderr)
        return 2
    if not port_is_free(url_port(api_url)):
        print(f"error: port {url_port(api_url)} is in use by something that is not a Prefect server; "
              f"use --port", file=sys.stderr)
        return 2
    log_path = home / "server.log"
    server = children["server"] = start_server(api_url, home=home, log_path=log_path, cwd=project)
    print(f"stemdb serve: starting a Prefect server on {api_url} (pid {server.pid}, log {log_path})", flush=True)
    try:
        _wait_or_stop(api_url, server, stop, log_path)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if stop.is_set() else None


def _supervise(serve: subprocess.Popen, server: subprocess.Popen | None, stop: threading.Event) -> int:
    """Wait until ``stop`` (0) or until a child exits (1)."""
    while not stop.wait(0.5):
        if serve.poll() is not None:
            print(f"error: the serve process exited with status {serve.returncode}", file=sys.stderr)
            return 1
        if server is not None and server.poll() is not None:
            print(f"error: the Prefect server exited with status {server.returncode}", file=sys.stderr)
            return 1
    return 0


def _wait_or_stop(api_url: str, server: subprocess.Popen, stop: threading.Event, log_path: Path) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        try:
            wait_healthy(api_url, server, timeout=1.0, log_path=log_path)
            return
        except RuntimeError:
            if server.poll() is not None or time.monotonic() - t0 > SERVER_START_TIMEOUT_S:
                raise


def _write_state(path: Path, api_url: str, server: subprocess.Popen | None, serve: subprocess.Popen) -> None:
    from stemdb.catalog import write_json_atomic

    write_json_atomic({"api_url": api_url, "supervisor": os.getpid(), "server": server.pid if server else None,
                       "serve": serve.pid}, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.serve", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=None, help="serve on http://127.0.0.1:PORT/api")
    ap.add_argument("--config", type=Path, default=None, help="data.yaml (default: ./data.yaml if present)")
    ap.add_argument("--deployments-only", action="store_true",
                    help="only serve the deployments against PREFECT_API_URL (the supervisor's child)")
    args = ap.parse_args(argv)
    if args.deployments_only:  # Prefect configures its own logging here
        serve_deployments(args.config)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return serve_main(args.config, args.port)


if __name__ == "__main__":
    sys.exit(main())
