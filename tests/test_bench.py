"""Every benchmark in bench/ runs at its smoke size and ends with the line it promises.

A bench that loses its smoke mode, stops running, or changes its last line fails here; a new bench file without an
entry in :data:`LAST_LINE` fails too. The smoke runs go three at a time to keep the file near a minute. The GPU kit
(bench/gpu/) has its own tests in test_gpu_kit.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
NUM = r"-?\d+\.\d+"
#: bench file -> (extra arguments, pattern of the last line of its output).
LAST_LINE: dict[str, tuple[list[str], str]] = {
    "decode.py": ([], rf"ratio PyAV/soundfile whole-file speed, geometric mean over \d+ formats both read: {NUM}"),
    "ingest.py": ([], rf"ratio ingest/decode-only throughput \(1 process each\): {NUM}"),
    "loudness.py": ([], rf"ratio stemdb / pyloudnorm \(integrated loudness, wall clock\): {NUM}x"),
    "pipelines.py": ([], rf"flow overhead, flow \(1 thread\) / build_remix \(1 process\): wall {NUM}, CPU {NUM} "
                         rf"\(with the server's CPU {NUM}\)"),
    "remix.py": ([], rf"ratio naive/stemdb: {NUM}"),
    "remix_scaling.py": ([], rf"speed-up \d+ workers / \d+ worker\(s\): {NUM}x"),
    "stream.py": ([], rf"ratio naive/stream: {NUM}"),
    "stream_gpu.py": ([], rf"ratio fed/synthetic step rate: {NUM}"),
    "stream_gpu_augment.py": ([], rf"ratio per-item / one-rate baseline: pitch {NUM}x, stretch {NUM}x"),
    "train_models.py": ([], rf"ratio bf16/fp32 steps/s \w+: {NUM}"),
}


def run_smoke(name: str) -> tuple[str, int, str, str]:
    args, _ = LAST_LINE[name]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / name), "--smoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    return name, proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def smoke_runs() -> dict[str, tuple[int, str, str]]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        return {name: (rc, out, err) for name, rc, out, err in pool.map(run_smoke, sorted(LAST_LINE))}


def test_every_bench_has_a_smoke_entry() -> None:
    files = sorted(p.name for p in BENCH.glob("*.py"))
    assert files == sorted(LAST_LINE), "a bench/*.py without a LAST_LINE entry (or an entry without a file)"


@pytest.mark.parametrize("name", sorted(LAST_LINE))
def test_bench_smoke_runs_and_ends_with_its_figure(name: str, smoke_runs: dict[str, tuple[int, str, str]]) -> None:
    rc, out, err = smoke_runs[name]
    assert rc == 0, f"{name} --smoke exited {rc}:\n{out[-2000:]}\n{err[-3000:]}"
    lines = [line for line in out.splitlines() if line.strip()]  # stdout: logs go to stderr
    assert lines, f"{name} printed nothing"
    assert re.fullmatch(LAST_LINE[name][1], lines[-1]), f"{name}: last line {lines[-1]!r}"


@pytest.mark.slow
def test_proof_smoke_on_the_fixture_multitracks(tmp_path: Path) -> None:
    """The proof's whole path (ingest with tempo, three remix variants, training, separation, BSSEval) on the
    fixture excerpts: Hendrix and Rock held out, Reggae and Zeppelin plus the loose stems to train on."""
    out = tmp_path / "proof.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(BENCH / "train_models.py"), "--proof", "--smoke", "--pool",
                           str(ROOT / "tests" / "data"), "--json", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    result = json.loads(out.read_text())
    assert set(result) == {"naive", "tempo"}
    for r in result.values():
        assert r["step"] == 2 and set(r["median"]) == {"vocals", "drums", "bass", "other"}
