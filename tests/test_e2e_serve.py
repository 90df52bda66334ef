"""End to end: a real Prefect server and ``stemdb serve`` on a free port, a deployment run with ``--watch``.

Runs in CI (marked ``e2e``, not ``slow``): about a minute, most of it the server's start and the flow run's
process start. The supervisor (``stemdb serve``, or ``python -m pipelines.serve`` while the CLI has no ``serve``
command) starts the server itself; the test reads the PIDs from ``$PREFECT_HOME/serve.json`` and checks that one
SIGTERM to the supervisor stops serve and server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from pipelines.serve import deployments_exist, free_port, prefect_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 240.0


def serve_command(port: int) -> list[str]:
    """``stemdb serve --port N`` when the CLI has it, else the module entry point."""
    from pipelines import cli

    names = {c.name or (c.callback.__name__ if c.callback else "") for c in cli.app.registered_commands}
    stemdb = shutil.which("stemdb", path=str(Path(sys.executable).parent))
    if "serve" in names and stemdb:
        return [stemdb, "serve", "--port", str(port), "--config", str(ROOT / "data.yaml")]
    return [sys.executable, "-m", "pipelines.serve", "--port", str(port), "--config", str(ROOT / "data.yaml")]


def api(url: str, path: str, body: dict | None = None) -> object:
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as resp:
        return json.loads(resp.read())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_serve_runs_build_remix_deployment_and_stops_cleanly(fixture_catalog: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    home = tmp_path / "prefect"
    env = prefect_env(url, home)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        sup = subprocess.Popen(serve_command(port), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    pids: dict = {}
    try:
        t0 = time.monotonic()
        while not deployments_exist(url):
            assert sup.poll() is None, f"serve exited with {sup.returncode}:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() - t0 < READY_TIMEOUT_S, f"no deployments after {READY_TIMEOUT_S} s:\n" \
                                                            + log_path.read_text()[-3000:]
            time.sleep(1.0)
        pids = json.loads((home / "serve.json").read_text())
        assert pids["supervisor"] == sup.pid and pids["server"] and pids["serve"] and pids["api_url"] == url

        # a bad parameter is refused when the run is created, naming the parameter
        bad = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "build-remix/default",
                              "--param", "n_mixtures=0"], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert bad.returncode != 0 and "n_mixtures" in bad.stdout + bad.stderr

        out = tmp_path / "remix"
        run = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "run", "build-remix/default",
             "--param", f"catalog={fixture_catalog}", "--param", "n_mixtures=4", "--param", "seconds=2",
             "--param", "seed=1", "--param", f"out={out}", "--param", "chunk_size=2",
             "--watch", "--watch-timeout", "300"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=360)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + log_path.read_text()[-3000:]

        recipes = pd.read_parquet(out / "recipes.parquet")
        assert len(recipes) == 4
        folders = sorted(p for p in (out / "train").iterdir() if p.is_dir())
        assert [p.name for p in folders] == sorted(recipes["mix_id"])
        for d in folders:
            assert sorted(f.name for f in d.iterdir()) == ["bass.wav", "drums.wav", "mixture.wav", "other.wav",
                                                           "vocals.wav"]

        # the artifact, through the API, belongs to a completed run of build-remix/default
        dep = api(url, "/deployments/name/build-remix/default")
        arts = api(url, "/artifacts/filter", {"artifacts": {"key": {"any_": ["remix-stats"]}}})
        assert len(arts) == 1 and "4 mixtures" in arts[0]["data"]
        fr = api(url, f"/flow_runs/{arts[0]['flow_run_id']}")
        assert fr["deployment_id"] == dep["id"] and fr["state_type"] == "COMPLETED"
        table = api(url, "/artifacts/filter", {"artifacts": {"key": {"any_": ["remix-stats-table"]}}})
        assert table and table[0]["type"] == "table"
    finally:
        # stop both by PID: SIGTERM to the supervisor stops serve, then the server
        if sup.poll() is None:
            sup.send_signal(signal.SIGTERM)
        try:
            rc = sup.wait(timeout=90)
        except subprocess.TimeoutExpired:
            sup.kill()
            rc = None
        left = [k for k in ("serve", "server") if pids.get(k) and alive(int(pids[k]))]
        for k in left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pids[k]), signal.SIGKILL)
    assert rc == 0, log_path.read_text()[-3000:]
    assert not left, f"still running after the supervisor stopped: {left}"
    assert not (home / "serve.json").exists()
    assert "stopped (SIGTERM)" in log_path.read_text()
