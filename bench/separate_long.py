"""Peak memory and time of ``stemdb separate`` on a long song, one child process per model.

::

    .venv/bin/python bench/separate_long.py --minutes 10 --models demucs dccrn phasen centre

A ``--minutes``-long stereo 44.1 kHz WAV is made in a temporary folder by tiling a fixture mixture. For each model
a checkpoint of its default architecture (weights from ``build_model(seed=0)``: separation costs the same whatever
the weights) is written beside it (the centre model needs none: it is separated by name), then
``stemdb separate SONG --model CKPT --out DIR --device cpu`` runs in a child process; its peak resident set size
(``wait4`` rusage of that child alone), wall time and exit status are printed, with the 4 GiB budget of the issue
as the baseline. ``--threads`` sets the child's torch threads (``OMP_NUM_THREADS``). The last line is the worst
model's peak RSS over the budget.

``--smoke``: the same code path in seconds (6 s of audio, the centre model and Demucs at its ``TINY`` options, so
its figure says nothing about the full-size models).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stemdb import audio  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "musdb" / "train" / "Music Delta - Rock" / "mixture.wav"
TARGETS = ("vocals", "drums", "bass", "other")
BUDGET_GIB = 4.0
CLI = "import sys; from pipelines.cli import main; sys.argv[0] = 'stemdb'; main()"


def long_song(path: Path, minutes: float) -> Path:
    """Tile the fixture mixture to ``minutes`` of stereo audio (16-bit WAV)."""
    x, sr = audio.read(FIXTURE)
    n = round(minutes * 60 * sr)
    reps = -(-n // x.shape[1])
    return audio.write(path, np.tile(x, (1, reps))[:, :n], sr, subtype="PCM_16")


def checkpoint(model: str, folder: Path, *, tiny: bool = False) -> str:
    """A checkpoint of ``model``'s default architecture, or of its ``TINY`` options when ``tiny`` (``"centre"``:
    the name itself, it has no weights)."""
    from train.checkpoint import save_checkpoint
    from train.models import build_model, model_class

    if not getattr(model_class(model), "trainable", True):
        return model
    net = build_model(model, targets=TARGETS, seed=0, **(model_class(model).TINY if tiny else {}))
    path = folder / model / "checkpoints" / "step_00000000.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"model_config": net.config(),
                           "model_state": {k: v.detach().clone() for k, v in net.state_dict().items()}})
    return str(path)


def run_child(song: Path, model_ref: str, out: Path, threads: int) -> dict[str, float | int]:
    """Run ``stemdb separate`` in a child process; its peak RSS (GiB), wall seconds and exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CLI, "separate", str(song), "--model", model_ref,
                             "--out", str(out), "--device", "cpu"], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"peak_rss_gib": usage.ru_maxrss / 2**20, "wall_s": time.perf_counter() - t0, "rc": proc.returncode}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--models", nargs="+", default=["demucs", "dccrn", "phasen", "centre"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="the models' TINY options instead of their defaults")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true", help="6 s, centre and a tiny Demucs: the code path in seconds")
    args = ap.parse_args(argv)
    if args.smoke:
        args.minutes, args.models, args.tiny = 0.1, ["centre", "demucs"], True
    rows = {}
    with tempfile.TemporaryDirectory(prefix="stemdb-long-") as tmp:
        song = long_song(Path(tmp) / "song.wav", args.minutes)
        print(f"{song.name}: {args.minutes:g} min stereo 44.1 kHz; budget {BUDGET_GIB} GiB RSS; "
              f"{args.threads} thread(s)", flush=True)
        for model in args.models:
            ref = checkpoint(model, Path(tmp) / "runs", tiny=args.tiny)
            r = run_child(song, ref, Path(tmp) / "out" / model, args.threads)
            written = sorted(p.name for p in (Path(tmp) / "out" / model).glob("*.wav"))
            r["stems"] = written
            rows[model] = r
            print(f"{model:<8} peak RSS {r['peak_rss_gib']:.2f} GiB ({r['peak_rss_gib'] / BUDGET_GIB:.2f} of the "
                  f"budget)  wall {r['wall_s']:.0f} s ({r['wall_s'] / (60 * args.minutes):.2f} x real time)  "
                  f"rc {r['rc']}  wrote {', '.join(written)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    worst = max(r["peak_rss_gib"] for r in rows.values())
    print(f"ratio worst peak RSS / {BUDGET_GIB:g} GiB budget: {worst / BUDGET_GIB:.2f}")
    return 0 if all(r["rc"] == 0 for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
