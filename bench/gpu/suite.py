"""Every GPU check in one run: tests, model step rates, GPU augmentation, the fed U-Net, remix scaling, the proof.

Started by ``bench/gpu/suite.sh`` (which installs the kit's wheels first); run directly only with the kit's wheels
on ``PYTHONPATH``::

    python bench/gpu/suite.py OUTDIR [--dry-run] [--only tests,train] [--budget 345] [--proof-minutes auto]

Each part is a separate process with a time box (its own cap, and never past the suite's ``--budget``); a part that
fails or runs out of time is recorded and the next one runs. Parts, in order:

``tests``    ``pytest -m gpu`` over every test file that marks GPU tests;
``train``    ``bench/train_models.py``: every registered model, fp32 and bf16, realistic batches, peak memory;
``augment``  ``bench/stream_gpu_augment.py``: per-item pitch shift and time stretch, real-time factor;
``stream``   ``bench/stream_gpu.py``: the U-Net fed by RemixStream + StreamLoader + GpuAugment, 14 loader workers,
             against the same step on synthetic tensors;
``scaling``  ``bench/remix_scaling.py``: ``build_remix`` on 1, 2, 4, 8, 16 processes;
``proof``    the packed training pool (``.pool/``) unpacked and checked, then ``bench/compare.py`` (the library's
             comparison, :func:`train.compare.run_comparison`, as ``stemdb compare`` runs it): the U-Net trained
             for the same minutes on real multitracks and on naive, calibrated and tempo-aware remixes, the two
             held-out songs separated on the GPU and scored with BSSEval v4 here on the machine, with both
             baselines. ``--proof-minutes auto`` fits the part into what the budget leaves: fewer variants when
             the minutes per variant would fall under :data:`PROOF_MIN_MINUTES` (the plan is printed and recorded),
             and "skipped: budget" when not even two variants fit.

``--dry-run`` runs every part at its smoke size on the CPU. Writes ``OUTDIR/gpu.json`` (every figure, the GPU,
torch/CUDA versions, part timings), ``OUTDIR/gpu.md`` (the tables docs/benchmarks.md shows) and ``OUTDIR/suite.log``
(every part's output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
PY = sys.executable
#: The proof's variants in the order they are dropped from the end when the budget is short (``real`` first: it is
#: what every other variant is compared with).
PROOF_VARIANTS = ("real", "naive", "calibrated", "tempo")
#: Seconds the proof spends besides training, per variant (stream start, separation, its share of scoring: about
#: 50 s of evaluation each on the H200 run of 2026-11-27) and once (unpacking, ingest with tempo, scoring both
#: baselines: 34 + 80 s there).
PROOF_OVERHEAD_S, PROOF_SETUP_S = 50.0, 120.0
#: Fewer training minutes than this per variant is no comparison: drop a variant instead.
PROOF_MIN_MINUTES = 0.5
#: Share of the time box the plan may use (the rest is margin for a slow start).
PROOF_PLAN_SHARE = 0.9


@dataclass(frozen=True)
class Part:
    """One check: the commands it runs (given the work folder and options), its cap in seconds, its figures file."""

    name: str
    title: str
    commands: Callable[[Path, argparse.Namespace], list[list[str]]]
    cap_s: float


def gpu_test_files() -> list[str]:
    """Test files that mark tests ``gpu`` (relative to the repository root)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if "mark.gpu" in p.read_text(encoding="utf-8"))


def _tests(w: Path, a: argparse.Namespace) -> list[list[str]]:
    return [[PY, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={w / 'tests.xml'}",
             *gpu_test_files()]]


def _train(w: Path, a: argparse.Namespace) -> list[list[str]]:
    size = ["--smoke"] if a.dry_run else ["--device", "cuda"]
    return [[PY, str(BENCH / "train_models.py"), *size, "--json", str(w / "train.json")]]


def _augment(w: Path, a: argparse.Namespace) -> list[list[str]]:
    size = ["--smoke"] if a.dry_run else ["--device", "cuda"]
    return [[PY, str(BENCH / "stream_gpu_augment.py"), *size, "--json", str(w / "augment.json")]]


def _stream(w: Path, a: argparse.Namespace) -> list[list[str]]:
    size = ["--smoke"] if a.dry_run else ["--device", "cuda", "--batch", "4", "--seconds", "11.9", "--workers", "14"]
    return [[PY, str(BENCH / "stream_gpu.py"), *size, "--json", str(w / "stream.json")]]


def _scaling(w: Path, a: argparse.Namespace) -> list[list[str]]:
    size = ["--smoke"] if a.dry_run else ["--workers", "1", "2", "4", "8", "16", "--n", "2000",
                                          "--n-per-worker", str(a.scaling_per_worker)]
    return [[PY, str(BENCH / "remix_scaling.py"), *size, "--json", str(w / "scaling.json")]]


def _proof(w: Path, a: argparse.Namespace) -> list[list[str]]:
    unpack = [PY, str(BENCH / "gpu" / "kit.py"), "unpack", "--src", str(a.pool), "--out", str(w / "pool")]
    run = [PY, str(BENCH / "compare.py"), "--work", str(w / "proof"), "--json", str(w / "proof.json")]
    if a.dry_run:
        run += ["--smoke"]
    else:
        minutes, variants = a.proof_plan
        run += ["--pool", str(w / "pool" / "musdb"), "--device", "cuda", "--minutes", f"{minutes:.3f}",
                "--variants", *variants, "--seeds", "0", "--batch", "4", "--seconds", "6", "--model-options", "{}",
                "--num-workers", "12", "--eval-workers", "4", "--valid-every", "250"]
    return [unpack, run]


PARTS = [
    Part("tests", "pytest -m gpu", _tests, 120),
    Part("train", "training step rates", _train, 120),
    Part("augment", "GpuAugment pitch/stretch", _augment, 90),
    Part("stream", "U-Net fed by RemixStream + GpuAugment", _stream, 120),
    Part("scaling", "build_remix scaling", _scaling, 150),
    Part("proof", "compare-datasets: real vs naive vs calibrated vs tempo-aware remixes", _proof, 3600),
]


def run_part(part: Part, work: Path, args: argparse.Namespace, timeout: float, log: Path) -> dict:
    """Run one part's commands in order under one time box; returns its record (status, seconds, rc, tail)."""
    t0 = time.perf_counter()
    record: dict = {"title": part.title, "status": "ok", "rc": 0, "commands": []}
    with log.open("a", encoding="utf-8") as fh:
        for cmd in part.commands(work, args):
            left = timeout - (time.perf_counter() - t0)
            shown = " ".join(c if " " not in c else repr(c) for c in cmd)
            record["commands"].append(shown)
            fh.write(f"\n===== [{part.name}] $ {shown}\n")
            fh.flush()
            if left <= 1:
                record.update(status="timeout", rc=None)
                break
            try:
                proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=left,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"})
            except subprocess.TimeoutExpired:
                record.update(status="timeout", rc=None)
                fh.write(f"\n===== [{part.name}] stopped by its time box ({timeout:.0f} s)\n")
                break
            if proc.returncode != 0:
                record.update(status="failed", rc=proc.returncode)
                break
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["time_box_s"] = round(timeout, 1)
    figures = work / f"{part.name}.json"
    if figures.is_file():
        try:
            record["figures"] = json.loads(figures.read_text())
        except json.JSONDecodeError as e:
            record["figures_error"] = f"{figures}: {e}"
    if part.name == "tests":
        record["figures"] = junit_counts(work / "tests.xml")
    record["log_tail"] = tail(log, 40) if record["status"] != "ok" else ""
    return record


def junit_counts(path: Path) -> dict:
    """Test counts and failing test ids from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    if not path.is_file():
        return {}
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    failures = []
    for case in ET.parse(path).getroot().iter("testcase"):
        tid = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None:
            counts["failed"] += 1
            failures.append(tid)
        elif case.find("error") is not None:
            counts["errors"] += 1
            failures.append(tid)
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures}


def tail(path: Path, n: int) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])


def machine_info() -> dict:
    """GPU, driver, torch and CUDA versions, CPU count, Python."""
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cpus": os.cpu_count(), "cuda_available": torch.cuda.is_available(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if smi.returncode == 0:
            info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def proof_plan(args: argparse.Namespace, remaining: float) -> tuple[float, tuple[str, ...]] | None:
    """(training minutes per variant, variants) of the proof part: ``--proof-minutes`` as given with every variant;
    ``auto``: the most variants (dropped from the end of :data:`PROOF_VARIANTS`, at least two) whose minutes, with
    the setup and each variant's overhead, fit :data:`PROOF_PLAN_SHARE` of ``remaining`` seconds at no less than
    :data:`PROOF_MIN_MINUTES` each; ``None`` when not even two variants fit (the part is skipped)."""
    if args.proof_minutes != "auto":
        return float(args.proof_minutes), PROOF_VARIANTS
    usable = PROOF_PLAN_SHARE * remaining - PROOF_SETUP_S
    for n in range(len(PROOF_VARIANTS), 1, -1):
        per = (usable - n * PROOF_OVERHEAD_S) / n / 60.0
        if per >= PROOF_MIN_MINUTES:
            return per, PROOF_VARIANTS[:n]
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="where gpu.json, gpu.md and suite.log go")
    ap.add_argument("--dry-run", action="store_true", help="every part at its smoke size on the CPU")
    ap.add_argument("--only", default=",".join(p.name for p in PARTS), help="comma-separated parts")
    ap.add_argument("--budget", type=float, default=345.0, help="seconds for all parts together (installs excluded)")
    ap.add_argument("--proof-minutes", default="auto", help="training minutes per proof variant, or auto")
    ap.add_argument("--scaling-per-worker", type=int, default=125, help="mixtures per worker in the scaling part")
    ap.add_argument("--pool", type=Path, default=ROOT / ".pool", help="the packed training pool (make gpu-kit)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - {p.name for p in PARTS})
    if unknown:
        ap.error(f"--only: unknown parts {unknown}; allowed: {', '.join(p.name for p in PARTS)}")
    if args.proof_minutes != "auto":
        try:
            if float(args.proof_minutes) <= 0:
                raise ValueError
        except ValueError:
            ap.error(f"--proof-minutes {args.proof_minutes!r}: allowed: a positive number or auto")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "suite.log"
    log.write_text("")
    work = Path(tempfile.mkdtemp(prefix="stemdb-gpu-suite-"))
    t_start = time.perf_counter()
    result = {"mode": "dry-run (CPU, smoke sizes)" if args.dry_run else "gpu", "machine": machine_info(),
              "install_s": float(os.environ.get("STEMDB_KIT_INSTALL_S", "nan")), "parts": {}}
    print(f"stemdb GPU suite ({result['mode']}): {result['machine']}", flush=True)
    for part in PARTS:
        if part.name not in names:
            continue
        remaining = args.budget - (time.perf_counter() - t_start)
        timeout = min(part.cap_s, remaining) if not args.dry_run else part.cap_s
        if part.name == "proof" and not args.dry_run:
            args.proof_plan = proof_plan(args, timeout)
            if args.proof_plan is None:
                why = (f"skipped: budget ({timeout:.0f} s left; two variants need {PROOF_SETUP_S:.0f} s + "
                       f"2 x ({PROOF_OVERHEAD_S:.0f} s + {PROOF_MIN_MINUTES:g} min) / {PROOF_PLAN_SHARE:g})")
                print(f"[{part.name}] {why}", flush=True)
                result["parts"][part.name] = {"title": part.title, "status": why, "rc": None, "seconds": 0.0}
                continue
            print(f"[{part.name}] plan: {args.proof_plan[0]:.2f} training minutes for each of "
                  f"{', '.join(args.proof_plan[1])}" + (" (fewer variants: the budget is short)"
                                                         if len(args.proof_plan[1]) < len(PROOF_VARIANTS) else ""),
                  flush=True)
        print(f"[{part.name}] {part.title} (time box {timeout:.0f} s) ...", flush=True)
        rec = run_part(part, work, args, timeout, log)
        if part.name == "proof" and not args.dry_run:
            rec["minutes_per_variant"] = round(args.proof_plan[0], 3)
            rec["variants"] = list(args.proof_plan[1])
        result["parts"][part.name] = rec
        print(f"[{part.name}] {rec['status']} in {rec['seconds']:.0f} s", flush=True)
        write_outputs(args.out, result, t_start)
    write_outputs(args.out, result, t_start)
    failed = [n for n, r in result["parts"].items() if r["status"] != "ok"]
    print(f"suite done in {time.perf_counter() - t_start:.0f} s; " +
          (f"not ok: {', '.join(failed)}" if failed else "every part ok") + f"; {args.out}/gpu.md", flush=True)
    return 1 if failed else 0


def write_outputs(out: Path, result: dict, t_start: float) -> None:
    """``gpu.json`` and ``gpu.md`` as they stand (rewritten after every part, so a cut-off run keeps its parts)."""
    from gpu_report import markdown  # bench/gpu/gpu_report.py, beside this file

    result["suite_s"] = round(time.perf_counter() - t_start, 1)
    (out / "gpu.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "gpu.md").write_text(markdown(result) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
