"""The Prefect flows on the bundled fixtures, against a temporary Prefect server (``prefect_test_harness``).

One harness for the whole session (starting a server takes 20-40 s on a busy 2-core machine); small sets
(6 mixtures of 2 s in chunks of 2) keep each flow run to a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from stemdb.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
N, SECONDS, SEED, CHUNK = 6, 2.0, 3, 2


# --------------------------------------------------------------------------------------------------------------
# fixtures




def write_config(path: Path, pipelines: dict | None = None, **sections: object) -> Path:
    """A data.yaml with the repository's remix section and the given pipelines section."""
    base = yaml.safe_load((ROOT / "data.yaml").read_text())
    data = {"remix": base["remix"], "pipelines": {"retries": 1, "retry_delay_s": 0.0, **(pipelines or {})}}
    data.update(sections)
    path.write_text(yaml.safe_dump(data))
    return path


def tree(out: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``out`` (mixture folders, parts, recipes.parquet); the lock and
    build marker that ``build_remix`` keeps (the flow takes no lock) are not part of the set."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name not in (".lock", ".remix.json")}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("cfg") / "data.yaml")


@pytest.fixture(scope="module")
def reference(fixture_catalog: Path, config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same set built by the plain-Python loop (augment.build.build_remix), no Prefect involved."""
    from augment.build import build_remix
    from augment.config import load_project

    out = tmp_path_factory.mktemp("reference") / "remix"
    build_remix(fixture_catalog, out, n=N, seed=SEED, cfg=load_project(config_file).remix, seconds=SECONDS,
                chunk_size=CHUNK)
    return out


def remix(out: Path, catalog: Path, config: Path, **kw: object):
    from pipelines.flows import build_remix_flow

    params = {"catalog": catalog, "n_mixtures": N, "seconds": SECONDS, "seed": SEED, "out": out,
              "config": config, "chunk_size": CHUNK, **kw}
    return build_remix_flow(**params, return_state=True)


def artifacts(flow_run_id, key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


# --------------------------------------------------------------------------------------------------------------
# no server needed


def test_pipelines_section_is_validated_naming_the_key() -> None:
    from pipelines.params import pipelines_config

    cfg = pipelines_config({"task_runner": "dask", "dask_address": "tcp://10.0.0.5:8786", "dask_workers": 4})
    assert (cfg.task_runner, cfg.dask_address, cfg.dask_workers) == ("dask", "tcp://10.0.0.5:8786", 4)
    assert pipelines_config(None).task_runner == "threads"
    for bad, key, words in [
        ({"task_runner": "gpu"}, "pipelines.task_runner", "'threads', 'processes' or 'dask'"),
        ({"dask_address": "10.0.0.5"}, "pipelines.dask_address", "tcp://"),
        ({"dask_workers": 0}, "pipelines.dask_workers", "greater than or equal to 1"),
        ({"chunk_size": 0}, "pipelines.chunk_size", "greater than or equal to 1"),
        ({"task_runer": "threads"}, "pipelines.task_runer", "unknown key"),
    ]:
        with pytest.raises(ConfigError) as info:
            pipelines_config(bad)
        assert info.value.key == key
        assert key in str(info.value) and words in str(info.value)


def test_task_runner_follows_the_config() -> None:
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from pipelines.flows import make_task_runner
    from pipelines.params import PipelinesConfig

    threads = make_task_runner(PipelinesConfig(workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    assert isinstance(make_task_runner(PipelinesConfig(task_runner="processes", workers=2)), ProcessPoolTaskRunner)
    local = make_task_runner(PipelinesConfig(task_runner="dask", dask_workers=2))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    # a LocalCluster on the loopback interface, no dashboard, one thread per worker process
    assert local.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1, "processes": True,
                                    "host": "127.0.0.1", "dashboard_address": None}
    remote = make_task_runner(PipelinesConfig(task_runner="dask", dask_address="tcp://127.0.0.1:8786"))
    assert remote.address == "tcp://127.0.0.1:8786" and not remote.cluster_kwargs


def test_serve_url_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipelines.serve import build_deployments, prefect_env, resolve_api_url

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4999/api")
    assert resolve_api_url(None) == "http://127.0.0.1:4999/api"
    assert resolve_api_url(5123) == "http://127.0.0.1:5123/api"  # --port wins over PREFECT_API_URL
    with pytest.raises(ValueError, match="port=0"):
        resolve_api_url(0)
    env = prefect_env("http://127.0.0.1:5123/api", tmp_path, base={})
    assert env == {"PREFECT_API_URL": "http://127.0.0.1:5123/api", "PREFECT_HOME": str(tmp_path),
                   "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": "5123"}
    deps = build_deployments(ROOT / "data.yaml")
    assert [(d.flow_name, d.name) for d in deps] == [("ingest-stems", "default"), ("build-remix", "default"),
                                                      ("dataset-stats", "default"), ("compare-datasets", "default")]
    assert all(d.parameters == {"config": str(ROOT / "data.yaml")} and d.entrypoint.startswith("pipelines.flows.")
               for d in deps[:3])
    # compare-datasets takes a compare.yaml, given per run: the data.yaml is not its default
    assert deps[3].parameters == {} and deps[3].entrypoint.startswith("pipelines.")


# --------------------------------------------------------------------------------------------------------------
# flows


def test_build_remix_flow_equals_the_plain_loop_and_a_rerun_is_a_noop(
        prefect_harness, fixture_catalog: Path, config_file: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "remix"
    state = remix(out, fixture_catalog, config_file)
    assert state.is_completed(), state.message
    s = state.result()
    assert (s["mixtures"], s["rendered"], s["skipped"], s["chunks"]) == (N, N, 0, 3)
    assert s["out"] == str(out.resolve()) and s["hours"] == pytest.approx(N * SECONDS / 3600)
    assert s["task_runner"] == "threads" and s["seconds"] > 0
    assert tree(out) == tree(reference)  # byte for byte what build_remix writes
    recipes = pd.read_parquet(out / "recipes.parquet")
    assert len(recipes) == N and sorted(recipes["index"]) == list(range(N))
    run_id = state.state_details.flow_run_id
    md = artifacts(run_id, "remix-stats")
    table = artifacts(run_id, "remix-stats-table")
    assert len(md) == 1 and f"{N} mixtures" in md[0].data
    assert len(table) == 1 and table[0].type == "table" and "vocals" in str(table[0].data)

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    again = remix(out, fixture_catalog, config_file).result()
    assert (again["rendered"], again["skipped"]) == (0, N)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == before
    assert tree(out) == tree(reference)
    # the flow claims its output like `stemdb remix` (issue 18.6): another seed into it fails and deletes nothing
    other = remix(out, fixture_catalog, config_file, seed=SEED + 1)
    assert other.is_failed() and f"holds a remix of seed {SEED}" in other.message, other.message
    assert tree(out) == tree(reference)


@pytest.mark.parametrize(("params", "name"), [
    ({"n_mixtures": 0}, "n_mixtures"),
    ({"seconds": -1.0}, "seconds"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"task_runner": "gpu"}, "task_runner"),
    ({"catalog": "no-such-catalog"}, "catalog"),
    ({"config": "no-such.yaml"}, "config"),
])
def test_bad_parameters_fail_fast_naming_them(prefect_harness, fixture_catalog: Path, config_file: Path,
                                              tmp_path: Path, params: dict, name: str) -> None:
    out = tmp_path / "remix"
    t0 = time.perf_counter()
    kw = {"catalog": fixture_catalog, "config": config_file, **params}
    state = remix(out, **kw)
    assert state.is_failed()
    assert name in state.message
    assert time.perf_counter() - t0 < 20.0
    assert not out.exists()  # failed before any work


def test_bad_pipelines_section_fails_the_run_naming_the_key(prefect_harness, fixture_catalog: Path,
                                                           tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "data.yaml", {"task_runner": "gpus"})
    state = remix(tmp_path / "remix", fixture_catalog, cfg)
    assert state.is_failed() and "pipelines.task_runner" in state.message and "'gpus'" in state.message
    assert not (tmp_path / "remix").exists()


def test_a_failing_chunk_is_retried_and_an_interrupted_build_resumes(
        prefect_harness, fixture_catalog: Path, config_file: Path, reference: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.flows as flows

    real = flows.render_chunk
    calls: dict[int, int] = {}

    def flaky(chunk, *a, **k):  # noqa: ANN001, ANN002, ANN003
        first = chunk.start
        calls[first] = calls.get(first, 0) + 1
        if first == 2 and (mode == "always" or calls[first] == 1):
            raise OSError(f"injected failure of the chunk starting at mixture {first}")
        return real(chunk, *a, **k)

    monkeypatch.setattr(flows, "render_chunk", flaky)
    # raising once: the task's retry (pipelines.retries = 1) renders it; the run completes
    mode = "once"
    once = tmp_path / "once"
    state = remix(once, fixture_catalog, config_file)
    assert state.is_completed(), state.message
    assert calls[2] == 2 and state.result()["rendered"] == N
    assert tree(once) == tree(reference)

    # raising on every try: the run fails, the other chunks are kept; a rerun renders only the missing chunk
    calls.clear()
    mode = "always"
    out = tmp_path / "resumed"
    state = remix(out, fixture_catalog, config_file)
    assert state.is_failed() and "1 of 3 chunks failed" in state.message
    assert calls[2] == 2  # first try + 1 retry
    assert not (out / "recipes.parquet").exists()
    assert len(list((out / ".parts").glob("chunk-*.parquet"))) == 2
    monkeypatch.setattr(flows, "render_chunk", real)
    resumed = remix(out, fixture_catalog, config_file).result()
    assert (resumed["rendered"], resumed["skipped"]) == (CHUNK, N - CHUNK)
    assert tree(out) == tree(reference)


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dask", *args], env=env, cwd=log.parent,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


@pytest.fixture()
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """A Dask cluster as users run one: ``dask scheduler`` and two ``dask worker`` commands (one single-threaded
    worker each, under its nanny), every one its own process, on 127.0.0.1; yields the scheduler's address."""
    from distributed import Client

    work = tmp_path / "dask"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    sched = work / "scheduler.json"
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                     str(sched)], work / "scheduler.log", env)]
    try:
        deadline = time.monotonic() + 120
        while not sched.is_file() and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.2)
        assert sched.is_file(), (work / "scheduler.log").read_text()[-2000:]
        for k in range(2):
            procs.append(_start(["worker", "--scheduler-file", str(sched), "--nthreads", "1", "--nworkers", "1",
                                 "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{k}", "--local-directory",
                                 str(work / f"w{k}")], work / f"worker-{k}.log", env))
        with Client(scheduler_file=str(sched), timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield json.loads(sched.read_text())["address"]
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _tasks_per_worker(address: str) -> dict[str, int]:
    """Tasks each worker of the cluster has finished (its state machine's count of tasks that reached memory)."""
    from distributed import Client

    def done(dask_worker) -> int:  # noqa: ANN001 - the worker object distributed passes in
        return sum(1 for (_key, start, finish, *_rest) in dask_worker.state.log
                   if start == "executing" and finish == "memory")

    with Client(address, timeout=60) as client:
        return {info["name"]: n for (addr, n) in client.run(done).items()
                for a, info in client.scheduler_info()["workers"].items() if a == addr}


def test_build_remix_on_a_dask_cluster_of_separate_processes_equals_threads(
        prefect_harness, fixture_catalog: Path, config_file: Path, tmp_path: Path, dask_cluster: str) -> None:
    threads = tmp_path / "threads"
    assert remix(threads, fixture_catalog, config_file).is_completed()
    cfg = write_config(tmp_path / "data.yaml", {"task_runner": "dask", "dask_address": dask_cluster})
    out = tmp_path / "remix"
    state = remix(out, fixture_catalog, cfg)
    assert state.is_completed(), state.message
    s = state.result()
    assert s["task_runner"] == "dask" and s["rendered"] == N and s["chunks"] == N // CHUNK
    assert tree(out) == tree(threads)  # byte for byte, recipes.parquet and the .parts records included
    per_worker = _tasks_per_worker(dask_cluster)
    assert sorted(per_worker) == ["w0", "w1"] and sum(per_worker.values()) >= N // CHUNK, per_worker


def test_ingest_stems_flow_maps_only_new_or_changed_files(prefect_harness, stems_copy: Path,
                                                          tmp_path: Path) -> None:
    from pipelines.flows import ingest_stems_flow
    from stemdb import audio
    from stemdb.catalog import Catalog
    from stemdb.config import load_config
    from stemdb.ingest import ingest_sources

    source = {"name": "loose", "root": str(stems_copy), "origin": "test", "licence": "test",
              "layout": {"type": "stems", "kinds": {k: k for k in ("vocals", "drums", "bass", "keys", "other")}}}
    cfg = write_config(tmp_path / "data.yaml", sources=[source], ingest={"tempo": False, "batch_size": 4})
    catalog = tmp_path / "catalog"
    n_files = len(list(stems_copy.rglob("*.wav")))

    first = ingest_stems_flow(config=cfg, catalog=catalog)
    assert (first["scanned"], first["measured"], first["unchanged"]) == (n_files, n_files, 0)
    assert first["batches"] == -(-n_files // 4) and first["rows"] == n_files and first["rejected"] == 0
    # the same rows as the plain-Python ingest of the same folder
    plain = tmp_path / "plain"
    ingest_sources(load_config(cfg).sources, plain, cfg=load_config(cfg).ingest.model_copy(update={"workers": 1}))
    cols = ["key", "stem_id", "kind", "frames", "lufs"]
    pd.testing.assert_frame_equal(Catalog.open(catalog).stems(columns=cols), Catalog.open(plain).stems(columns=cols))

    again = ingest_stems_flow(config=cfg, catalog=catalog)
    assert (again["measured"], again["unchanged"], again["batches"]) == (0, n_files, 0)

    changed = sorted(stems_copy.rglob("*.wav"))[0]
    a, sr = audio.read(changed)
    audio.write(changed, a * 0.5, sr)
    gone = sorted(stems_copy.rglob("*.wav"))[-1]
    gone.unlink()
    third = ingest_stems_flow(config=cfg, catalog=catalog)
    assert (third["measured"], third["batches"], third["deleted"]) == (1, 1, 1)
    assert third["files"] == n_files - 1


def test_dataset_stats_flow_writes_reports_and_artifacts(prefect_harness, fixture_catalog: Path,
                                                         config_file: Path, reference: Path,
                                                         tmp_path: Path) -> None:
    from pipelines.flows import dataset_stats_flow

    remix_dir = tmp_path / "remix"
    shutil.copytree(reference, remix_dir)
    state = dataset_stats_flow(config=config_file, catalog=fixture_catalog, remix_dir=remix_dir,
                               out=tmp_path / "reports", return_state=True)
    assert state.is_completed(), state.message
    s = state.result()
    assert s["mixtures"] == N and s["files"] > 0
    for name in ("catalog", "remix"):
        html = tmp_path / "reports" / f"{name}.html"
        assert str(html) in s["reports"] and html.stat().st_size > 1000
        assert (tmp_path / "reports" / f"{name}.json").is_file()
    run_id = state.state_details.flow_run_id
    assert artifacts(run_id, "catalog-stats") and artifacts(run_id, "catalog-stats-table")
    assert f"{N} mixtures" in artifacts(run_id, "remix-stats")[0].data

    bad = dataset_stats_flow(config=config_file, catalog=fixture_catalog, remix_dir=tmp_path / "nothing",
                             out=tmp_path / "reports2", return_state=True)
    assert bad.is_failed() and "remix_dir" in bad.message and not (tmp_path / "reports2").exists()


def test_ingest_stems_flow_into_a_busy_catalogue_stops_naming_the_holder(prefect_harness, stems_copy: Path,
                                                                           tmp_path: Path) -> None:
    """Regression (issue 18): the ingest-stems flow took no lock, so it could race a `stemdb ingest` of the same
    catalogue (a compaction removing the parts the other reads). Now it stops at once, as the CLI does."""
    import signal

    from pipelines.flows import ingest_stems_flow

    source = {"name": "loose", "root": str(stems_copy), "origin": "test", "licence": "test",
              "layout": {"type": "stems", "kinds": {k: k for k in ("vocals", "drums", "bass", "keys", "other")}}}
    cfg = write_config(tmp_path / "data.yaml", sources=[source], ingest={"tempo": False})
    catalog = tmp_path / "catalog"
    hold = ("import sys, time\nfrom stemdb.atomic import folder_lock\n"
            "with folder_lock(sys.argv[1], 'stemdb ingest'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(catalog)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert holder.stdout.readline().strip() == "held"
        state = ingest_stems_flow(config=cfg, catalog=catalog, return_state=True)
        assert state.is_failed()
        assert f"busy: stemdb ingest (pid {holder.pid})" in state.message
        assert not (catalog / "stems").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert ingest_stems_flow(config=cfg, catalog=catalog)["rows"] > 0  # the lock died with its holder
