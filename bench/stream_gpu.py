"""Headline: a Spleeter-style U-Net training step fed by RemixStream + GpuAugment vs the same step on random tensors
already on the device.

Run on a GPU machine: .venv/bin/python bench/stream_gpu.py --device cuda --batch 4 --seconds 11.9 --workers 14
(smoke run on the CPU: --smoke, i.e. --device cpu --batch 1 --seconds 1 --steps 2 --workers 1 --small). Loader
workers are capped at the machine's cores (said when capped); --json PATH writes the figures.

(a) synthetic: random (B, C, T) mixture and (B, S, C, T) targets created once on the device; time N steps.
(b) stream: a catalogue built from the fixtures (or --catalog), RemixStream(gpu_augment=True) with pitch shift and
    time stretch at p = 0.3 on every stem, StreamLoader(device=..., augment=GpuAugment()) feeding the same step.
Prints both step rates and their ratio last (goal >= 0.9 on an H100 with 16 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from augment.config import load_project as load_config  # noqa: E402
from stemdb.config import IngestConfig  # noqa: E402
from train.data import RemixStream, StreamLoader  # noqa: E402
from train.gpu_augment import GpuAugment  # noqa: E402
from train.losses import get_loss  # noqa: E402
from train.models import build_model  # noqa: E402

TARGETS = ("vocals", "drums", "bass", "other")


def fixture_catalog(work: Path) -> Path:
    from stemdb.ingest import ingest_sources

    cfg = load_config(ROOT / "data.yaml")
    cat = work / "catalog"
    ingest_sources(cfg.sources, cat, cfg=IngestConfig(tempo=False, workers=2))
    return cat


def make_step(model: torch.nn.Module, device: torch.device, bf16: bool):  # noqa: ANN201
    loss_fn = get_loss("l1_spec")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(mix: torch.Tensor, tgt: torch.Tensor) -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            est, _ = model.estimate(mix)
            loss = loss_fn(est, model.magnitude(tgt))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def timed(fn, n: int, device: torch.device) -> float:  # noqa: ANN001
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=11.9)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--catalog", type=Path, default=None)
    ap.add_argument("--small", action="store_true", help="a tiny U-Net (n_fft 512, 4 levels) for CPU smoke runs")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: the same code path in seconds")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.batch, args.seconds, args.steps, args.workers, args.small = "cpu", 1, 1.0, 2, 1, True
    cores = os.cpu_count() or 1
    if args.workers > cores:
        print(f"note: {cores} cores: --workers {args.workers} capped to {cores}")
        args.workers = cores
    device = torch.device(args.device)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    torch.backends.cudnn.benchmark = True
    opts = dict(n_fft=512, hop_length=128, levels=4, max_bin=None) if args.small else {}
    model = build_model("unet", targets=TARGETS, channels=2, seed=0, **opts).to(device)
    step = make_step(model, device, bf16)
    frames = int(round(args.seconds * 44100))
    g = torch.Generator(device="cpu").manual_seed(0)
    mix = torch.rand((args.batch, 2, frames), generator=g).to(device) * 0.2 - 0.1
    tgt = torch.rand((args.batch, 4, 2, frames), generator=g).to(device) * 0.1 - 0.05
    step(mix, tgt)  # warm-up (cudnn autotuning)
    t_syn = timed(lambda: step(mix, tgt), args.steps, device)

    work = Path(tempfile.mkdtemp(prefix="stemdb-bench-gpu-"))
    try:
        cat = args.catalog or fixture_catalog(work)
        cfg = load_config(ROOT / "data.yaml")
        heavy = {t: {"pitch": {"min_semitones": -2, "max_semitones": 2, "p": 0.3},
                     "stretch": {"min_rate": 0.9, "max_rate": 1.1, "p": 0.3},
                     "channel_swap": {"p": 0.5}, "polarity": {"p": 0.5}} for t in TARGETS}
        rcfg = cfg.remix.model_copy(update={"augment": heavy})
        stream = RemixStream(cat, config=rcfg, seconds=args.seconds, seed=0, epoch_length=None, gpu_augment=True,
                             dtype="int16")
        loader = StreamLoader(stream, batch_size=args.batch, num_workers=args.workers, device=device,
                              augment=GpuAugment().to(device))
        it = iter(loader)
        m, t = next(it)[:2]
        step(m, t)

        def fed() -> None:
            m, t = next(it)[:2]
            step(m, t)

        t_fed = timed(fed, args.steps, device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    audio_s = args.batch * args.seconds
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, U-Net ({'small' if args.small else 'Spleeter size'}), batch {args.batch} x "
          f"{args.seconds:g} s, {'bf16' if bf16 else 'fp32'}, {args.workers} loader workers")
    print(f"synthetic tensors on the device: {t_syn * 1e3:.1f} ms per step ({audio_s / t_syn:,.0f} audio-s/s)")
    print(f"RemixStream + GpuAugment (pitch/stretch p=0.3): {t_fed * 1e3:.1f} ms per step "
          f"({audio_s / t_fed:,.0f} audio-s/s)")
    if args.json:
        args.json.write_text(json.dumps({
            "device": name, "model": "small" if args.small else "spleeter", "batch": args.batch,
            "seconds": args.seconds, "precision": "bf16" if bf16 else "fp32", "workers": args.workers,
            "synthetic_ms": t_syn * 1e3, "fed_ms": t_fed * 1e3, "ratio": t_syn / t_fed}, indent=2) + "\n")
    print(f"ratio fed/synthetic step rate: {t_syn / t_fed:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
