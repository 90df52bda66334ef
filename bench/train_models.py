"""Training throughput of the bundled models (fp32 vs bf16).

Throughput (default mode)::

    .venv/bin/python bench/train_models.py --device cuda                 # realistic batches, H100
    .venv/bin/python bench/train_models.py --device cpu --batch 1 --seconds 2 --steps 3

For each model (full-size default architecture) and precision, optimizer steps of :class:`train.trainer.Trainer`
(autocast, Adam, the model's default loss) on one fixed random batch already on the device; prints ms per step,
steps/s and audio-seconds/s (batch x seconds x steps/s), and last the bf16/fp32 speed ratio per model measured in
the same run. Realistic batches on CUDA: U-Net 4 x 11.9 s (the issue's reference: 55 ms/step on an H100),
BLSTM 64 x 6 s (reference 64 ms), Conv-TasNet 4 x 6 s.

The comparison of training data (naive, calibrated, tempo-aware remixes against real multitracks, equal budgets,
held-out songs) that this file's former ``--proof`` mode ran is ``bench/compare.py`` now, through the library's
:func:`train.compare.run_comparison` (``stemdb compare``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train.config import train_config  # noqa: E402
from train.models import build_model, model_class, model_names  # noqa: E402
from train.run import iter_batches  # noqa: E402
from train.runtime import resolve_device  # noqa: E402
from train.trainer import Trainer  # noqa: E402

TARGETS = ("vocals", "drums", "bass", "other")
SR = 44100
#: (batch, seconds) per model on CUDA: the reference settings; a model not named here trains 4 x 6 s.
REALISTIC = {"unet": (4, 11.9), "blstm": (64, 6.0), "convtasnet": (4, 6.0),
             "demucs": (4, 10.0),  # the paper: 64 x 10 s over 16 GPUs
             "dccrn": (8, 6.0), "phasen": (4, 6.0),
             "cunet": (4, 11.9), "lasaft": (4, 3.0), "d3net": (6, 6.0)}
DEFAULT_REALISTIC = (4, 6.0)



# --------------------------------------------------------------------------------------------------------------
# throughput


def throughput(model_name: str, precision: str, *, device: torch.device, batch: int, seconds: float, steps: int,
               warmup: int, tiny: bool = False) -> dict[str, float]:
    """ms/step, steps/s and audio-s/s of ``steps`` optimizer steps after ``warmup`` ones (of the model's ``TINY``
    configuration when ``tiny``, else its full-size default)."""
    options = model_class(model_name).TINY if tiny else {}
    model = build_model(model_name, targets=TARGETS, channels=2, sample_rate=SR, seed=0, **options)
    gen = torch.Generator(device="cpu").manual_seed(0)
    n = round(seconds * SR)
    tgt = (0.1 * torch.randn(batch, len(TARGETS), 2, n, generator=gen)).to(device)
    mix = tgt.sum(1)
    cfg = train_config({"steps": 10**9, "batch_size": batch, "precision": precision, "device": str(device)})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, cfg, out=tmp, train_data=iter_batches(mix, tgt, batch_size=batch))

        def endless():  # noqa: ANN202
            while True:
                yield mix, tgt

        it = endless()
        for _ in range(warmup):
            trainer.train_step(it)
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss, _ = trainer.train_step(it)
        float(loss)
        sync(device)
        dt = (time.perf_counter() - t0) / steps
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"ms_per_step": dt * 1e3, "steps_per_s": 1 / dt, "audio_s_per_s": batch * seconds / dt,
            "peak_gib": None if math.isnan(mem) else mem, "params_m": params, "precision": trainer.amp.name}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_throughput(args: argparse.Namespace) -> dict:
    """Every model of ``args.models`` at every precision; returns the figures (also printed)."""
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {device} ({name})")
    print(f"{'model':<11} {'prec':<5} {'batch':>5} {'sec':>5} {'params':>7} {'ms/step':>9} {'steps/s':>8} "
          f"{'audio-s/s':>10} {'peak GiB':>8}")
    rows: list[dict] = []
    rates: dict[tuple[str, str], float] = {}
    for model in args.models:
        batch, seconds = REALISTIC.get(model, DEFAULT_REALISTIC) if device.type == "cuda" else (1, 2.0)
        batch, seconds = args.batch or batch, args.seconds or seconds
        for precision in args.precisions:
            r = throughput(model, precision, device=device, batch=batch, seconds=seconds, steps=args.steps,
                           warmup=args.warmup, tiny=args.tiny)
            rates[model, precision] = r["steps_per_s"]
            rows.append({"model": model, "batch": batch, "seconds": seconds, **r})
            print(f"{model:<11} {r['precision']:<5} {batch:>5} {seconds:>5.1f} {r['params_m']:>6.1f}M "
                  f"{r['ms_per_step']:>9.1f} {r['steps_per_s']:>8.2f} {r['audio_s_per_s']:>10.1f} "
                  f"{r['peak_gib'] or math.nan:>8.2f}")
    ratios = {m: rates[m, "bf16"] / rates[m, "fp32"] for m in args.models if (m, "bf16") in rates and
              (m, "fp32") in rates}
    for model, ratio in ratios.items():
        print(f"ratio bf16/fp32 steps/s {model}: {ratio:.2f}", flush=True)
    return {"device": name, "rows": rows, "bf16_over_fp32": ratios}


#: ``--smoke``: the same code path at a size that finishes in seconds on one CPU core.
SMOKE_THROUGHPUT = {"device": "cpu", "batch": 1, "seconds": 0.25, "steps": 1, "warmup": 0, "tiny": True}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    # centre has no weights; a bundle is joined from trained runs, not built by name
    trainable = [n for n in model_names() if n != "bundle" and getattr(model_class(n), "trainable", True)]
    ap.add_argument("--models", nargs="+", default=trainable, choices=trainable)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--batch", type=int, default=None, help="items per step (default: realistic per model)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per item")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="each model's TINY options instead of its full size")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: the same code path in seconds")
    args = ap.parse_args(argv)
    if args.smoke:
        for k, v in SMOKE_THROUGHPUT.items():
            setattr(args, k, v)
    sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("train.trainer").setLevel(logging.INFO)
    figures = run_throughput(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
