"""GpuAugment throughput: per-item pitch shift and time stretch vs a one-rate-per-batch plain phase vocoder.

Run: .venv/bin/python bench/stream_gpu_augment.py [--device cuda|cpu] [--batch 64] [--seconds 6] [--repeats 10]

Input: a batch of ``--batch`` stereo clips of ``--seconds`` at 44.1 kHz cut from the real MUSDB-layout fixtures
(tiled), on ``--device``. Throughput is audio-seconds of output per wall second (one stereo clip of 6 s counts 6 s),
also given as a multiple of real time; each figure is the median of ``--repeats`` timed calls after two warm-ups,
with the device synchronised around each call.

- per-item stretch: ``train.gpu_augment.time_stretch`` with a rate per clip uniform in [0.8, 1.25], input
  ``ceil(T * 1.25) + 8`` samples (as the CPU renderer reads), output ``T``;
- baseline stretch: the plain batched phase vocoder (one time grid for the batch, ``index_select``, librosa's
  algorithm, ``torch.istft``) at rate 1.1 on the same input, cropped to ``T``;
- per-item pitch: ``train.gpu_augment.pitch_shift`` with semitones per clip uniform in [-2, 2];
- baseline pitch: the plain phase vocoder at ``2 ** (-2 / 12)`` (+2 st for the whole batch) followed by a polyphase
  windowed-sinc resampler (``conv1d`` over a rational approximation of the ratio), cropped to ``T``.

Sanity lines: both pitch paths at +2 st on the first clip vs ``librosa.effects.pitch_shift`` (soxr_hq). The baseline,
like torchaudio's ``pitch_shift``, resamples by a small-denominator approximation of the ratio (49/55 for +2 st,
1e-5 off), so it drifts by about a sample over 2 s and its error is larger at low frequencies. The ratio
printed last is per-item throughput / baseline throughput for pitch and for stretch (goal on an H100: per-item at
least 25,000x real time, and not slower than the one-rate baseline).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import librosa
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stemdb import audio  # noqa: E402
from train.gpu_augment import pitch_shift, time_stretch  # noqa: E402

SR = 44100
N_FFT = 2048
HOP = 512
MUSDB = ROOT / "tests" / "data" / "musdb"


# ------------------------------------------------------------------------------------------------ baseline


def plain_phase_vocoder(x: torch.Tensor, rate: float) -> torch.Tensor:
    """librosa's phase vocoder with one time grid for the batch: ``(N, T)`` -> ``(N, round(T / rate))``."""
    n_sig, n = x.shape
    window = torch.hann_window(N_FFT, device=x.device)
    spec = torch.stft(x, N_FFT, HOP, window=window, center=True, pad_mode="constant", return_complex=True)
    n_frames = spec.shape[-1]
    steps = torch.arange(0, n_frames, rate, dtype=torch.float64, device=x.device)
    spec = F.pad(spec, (0, 2))
    i0 = steps.floor().long()
    alpha = (steps - i0).float()
    mag, ang = spec.abs(), spec.angle()
    m0, m1 = mag.index_select(-1, i0), mag.index_select(-1, i0 + 1)
    advance = torch.linspace(0, math.pi * HOP, spec.shape[1], device=x.device).unsqueeze(-1)
    dphi = ang.index_select(-1, i0 + 1) - ang.index_select(-1, i0) - advance
    dphi = dphi - 2 * math.pi * torch.round(dphi / (2 * math.pi)) + advance
    phase = ang[..., :1] + torch.cumsum(dphi, -1) - dphi
    out = torch.polar(torch.lerp(m0, m1, alpha), phase)
    return torch.istft(out, N_FFT, HOP, window=window, center=True, length=round(n / rate))


def sinc_resample(y: torch.Tensor, ratio: float, zeros: int = 16) -> torch.Tensor:
    """Read ``y`` ``(N, L)`` at positions ``j / ratio`` (polyphase windowed sinc, one ratio): ``(N, ~L * ratio)``."""
    frac = Fraction(ratio).limit_denominator(64)
    up, down = frac.numerator, frac.denominator
    cutoff = min(1.0, up / down) * 0.95
    half = math.ceil(zeros / cutoff)
    t = torch.arange(-half, down + half, dtype=torch.float64)
    d = t.unsqueeze(0) - (torch.arange(up, dtype=torch.float64) * down / up).unsqueeze(1)  # (up, K)
    taper = torch.where(d.abs() < half, 0.5 + 0.5 * torch.cos(math.pi * d / half), torch.zeros_like(d))
    kernel = (cutoff * torch.sinc(cutoff * d) * taper).to(y.dtype).to(y.device).unsqueeze(1)  # (up, 1, K)
    n_out = math.ceil(y.shape[-1] * up / down)
    ypad = F.pad(y.unsqueeze(1), (half, half + down))
    out = F.conv1d(ypad, kernel, stride=down)  # (N, up, Q)
    return out.transpose(1, 2).reshape(y.shape[0], -1)[:, :n_out]


def crop(y: torch.Tensor, n: int) -> torch.Tensor:
    return y[..., :n] if y.shape[-1] >= n else F.pad(y, (0, n - y.shape[-1]))


def baseline_stretch(x: torch.Tensor, rate: float, out_frames: int) -> torch.Tensor:
    b, c, n = x.shape
    return crop(plain_phase_vocoder(x.reshape(b * c, n), rate), out_frames).view(b, c, out_frames)


def baseline_pitch(x: torch.Tensor, semitones: float) -> torch.Tensor:
    b, c, n = x.shape
    ratio = 2.0 ** (-semitones / 12.0)
    y = sinc_resample(plain_phase_vocoder(x.reshape(b * c, n), ratio), ratio)
    return crop(y, n).view(b, c, n)


# ------------------------------------------------------------------------------------------------ harness


def fixture_batch(batch: int, frames: int, device: torch.device) -> torch.Tensor:
    """``(batch, 2, frames)`` float32 cut from the real MUSDB fixture stems, tiled as needed."""
    clips = [audio.read(p)[0] for p in sorted(MUSDB.rglob("*.wav")) if "mixture" not in p.name]
    clips = [c for c in clips if np.abs(c).max() > 0]
    pool = torch.from_numpy(np.concatenate(clips, axis=1))  # (2, total)
    reps = math.ceil(batch * frames / pool.shape[1]) + 1
    pool = pool.repeat(1, reps)
    starts = [(i * 7919 * 13) % (pool.shape[1] - frames) for i in range(batch)]
    return torch.stack([pool[:, s : s + frames] for s in starts]).to(device)


def timed(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    ap.add_argument("--batch", type=int, default=None, help="clips per batch (default 64 on cuda, 4 on cpu)")
    ap.add_argument(
        "--seconds", type=float, default=None, help="seconds per clip (default 6 on cuda, 2 on cpu)"
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 10 cuda, 2 cpu)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: the same code path in seconds")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.batch, args.seconds, args.repeats = "cpu", 2, 1.0, 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    on_gpu = device.type == "cuda"
    batch = args.batch or (64 if on_gpu else 4)
    seconds = args.seconds or (6.0 if on_gpu else 2.0)
    repeats = args.repeats or (10 if on_gpu else 2)
    if batch < 1 or seconds <= 0 or repeats < 1:
        ap.error("--batch, --seconds and --repeats must be positive")
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = False
    frames = int(round(seconds * SR))
    gen = torch.Generator().manual_seed(args.seed)
    rates = 0.8 + 0.45 * torch.rand(batch, generator=gen)
    semis = 4.0 * torch.rand(batch, generator=gen) - 2.0
    long_in = fixture_batch(batch, math.ceil(frames * 1.25) + 8, device)
    clips = long_in[..., :frames].contiguous()
    audio_s = batch * seconds
    name = torch.cuda.get_device_name(device) if on_gpu else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}; batch {batch} x 2 ch x {seconds:g} s at {SR} Hz; n_fft {N_FFT}, hop {HOP}")

    cases = {
        "stretch per-item": lambda: time_stretch(long_in, rates, out_frames=frames),
        "stretch baseline": lambda: baseline_stretch(long_in, 1.1, frames),
        "pitch per-item": lambda: pitch_shift(clips, semis),
        "pitch baseline": lambda: baseline_pitch(clips, 2.0),
    }
    speed: dict[str, float] = {}
    sanity: dict[str, float] = {}
    with torch.inference_mode():
        for label, fn in cases.items():
            dt = timed(fn, device, repeats)
            speed[label] = audio_s / dt
            print(
                f"{label:17s} {dt * 1e3:9.1f} ms/batch  {speed[label]:10.0f} audio-s/s  ({speed[label]:.0f}x real time)"
            )
        ref = librosa.effects.pitch_shift(clips[0, 0].cpu().numpy(), sr=SR, n_steps=2.0, res_type="soxr_hq")
        body = slice(N_FFT, frames - 2 * N_FFT)
        for label, y in (
            ("per-item", pitch_shift(clips[:1], 2.0)),
            ("baseline", baseline_pitch(clips[:1], 2.0)),
        ):
            err = y[0, 0, body].cpu().numpy() - ref[body]
            rel = float(np.sum(err.astype(np.float64) ** 2) / np.sum(ref[body].astype(np.float64) ** 2))
            sanity[label] = 10 * math.log10(rel)
            print(
                f"sanity: {label} +2 st vs librosa.effects.pitch_shift (soxr_hq), clip 0: {10 * math.log10(rel):.1f} dB"
            )
    pitch_ratio = speed["pitch per-item"] / speed["pitch baseline"]
    stretch_ratio = speed["stretch per-item"] / speed["stretch baseline"]
    if args.json:
        args.json.write_text(json.dumps({
            "device": name, "batch": batch, "seconds": seconds, "realtime": speed, "sanity_db": sanity,
            "ratio_pitch": pitch_ratio, "ratio_stretch": stretch_ratio}, indent=2) + "\n")
    print(f"ratio per-item / one-rate baseline: pitch {pitch_ratio:.2f}x, stretch {stretch_ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
