"""Benchmark: stemdb's BS.1770-4 integrated loudness against pyloudnorm, in the same run, on one core.

The fixture recordings (tests/data: 44.1 and 48 kHz, mono and stereo, plus the five .stem.mp4 streams when ffmpeg is
there) are cycled to about ``--minutes`` of audio. Each contender measures every file; the best of ``--repeats``
passes counts. Real-time factor = seconds of audio / seconds of compute (wall clock; CPU time alongside, since the
machine may be shared). Also timed, for the record: the scipy/numpy fallback backend and the full ``measure()``
(tempo off). The last line is the ratio ours / pyloudnorm.

    .venv/bin/python bench/loudness.py [--minutes 10] [--repeats 3]     (--smoke: 10 s of audio, one pass)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, before numpy/numba load

import argparse  # noqa: E402
import itertools  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyloudnorm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stemdb import audio  # noqa: E402
from stemdb.measure import integrated_loudness, measure  # noqa: E402

DATA = ROOT / "tests" / "data"


def load_corpus(minutes: float) -> list[tuple[np.ndarray, int]]:
    """Fixture recordings, cycled until they add up to ``minutes`` of audio."""
    base = [audio.read(p) for p in sorted(DATA.rglob("*.wav"))]
    for mp4 in sorted(DATA.rglob("*.stem.mp4")):
        base += [audio.read(mp4, stream=i) for i in range(audio.stem_mp4_stream_count(mp4))]
    corpus, total = [], 0.0
    for x, sr in itertools.cycle(base):
        if total >= minutes * 60:
            break
        corpus.append((x, sr))
        total += x.shape[1] / sr
    return corpus


def pyloudnorm_lufs(x: np.ndarray, sr: int) -> float:
    # pyloudnorm wants (samples, channels) float64 and one Meter per rate, as a user would call it.
    return float(pyloudnorm.Meter(sr).integrated_loudness(x.T.astype(np.float64)))


def time_it(fn: Callable[[np.ndarray, int], object], corpus: list, repeats: int) -> tuple[float, float]:
    """Best (wall, cpu) seconds of ``repeats`` passes over the corpus."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        for x, sr in corpus:
            fn(x, sr)
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="minutes of audio to measure per pass")
    ap.add_argument("--repeats", type=int, default=3, help="passes per contender; the best counts")
    ap.add_argument("--smoke", action="store_true", help="the same code path on 10 s of audio, one pass")
    args = ap.parse_args(argv)
    if args.smoke:
        args.minutes, args.repeats = 10 / 60, 1

    corpus = load_corpus(args.minutes)
    seconds = sum(x.shape[1] / sr for x, sr in corpus)
    distinct = {id(x): (x, sr) for x, sr in corpus}.values()
    worst = max(
        abs(integrated_loudness(x, sr) - pyloudnorm_lufs(x, sr))
        for x, sr in distinct
        if np.isfinite(integrated_loudness(x, sr))
    )
    measure(corpus[0][0], corpus[0][1], tempo=False)  # compile / load the numba kernels outside the timing

    contenders: dict[str, Callable[[np.ndarray, int], object]] = {
        "pyloudnorm": pyloudnorm_lufs,
        "stemdb integrated_loudness": integrated_loudness,
        "stemdb integrated_loudness (numpy backend)": lambda x, sr: integrated_loudness(x, sr, backend="numpy"),
        "stemdb measure (tempo off)": lambda x, sr: measure(x, sr, tempo=False),
    }
    print(f"corpus: {len(corpus)} files, {seconds / 60:.1f} min of audio; one core; best of {args.repeats}")
    print(f"largest |stemdb - pyloudnorm| over the distinct files: {worst:.3f} LU")
    rtf: dict[str, float] = {}
    for name, fn in contenders.items():
        wall, cpu = time_it(fn, corpus, args.repeats)
        rtf[name] = seconds / wall
        print(f"{name:45s} {wall:7.3f} s  {seconds / wall:8.0f}x real time  (CPU time: {seconds / cpu:8.0f}x)")
    ratio = rtf["stemdb integrated_loudness"] / rtf["pyloudnorm"]
    print(f"ratio stemdb / pyloudnorm (integrated loudness, wall clock): {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
