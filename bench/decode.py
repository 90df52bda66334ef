"""Decoding speed per format: soundfile (libsndfile) against PyAV (FFmpeg's libraries) on the same files.

Run: .venv/bin/python bench/decode.py [--seconds 180 --repeats 5]   (--smoke: 5 s, one repeat)

A stereo 44.1 kHz programme is built from the real multitracks of the training pool (their mixtures, summed from
the stems, one after the other, cycled to ``--seconds``), then written once per format: WAV, AIFF, FLAC (16-bit),
Ogg Vorbis, MP3 and Ogg Opus through soundfile, M4A (AAC, ALAC), Opus, WebM and WMA through PyAV's encoders. For
every format both decoders can open, the whole file is decoded by each (best of ``--repeats``, one core, in this
process) and the two outputs are compared; then a 1 s window at 3/4 of the file (soundfile seeks; PyAV decodes from
the start up to the window's end, as ``stemdb.audio.read`` does). PyAV-only formats get PyAV's figures. Printed:
real-time factors (seconds of audio per second of decoding) and the ratio PyAV / soundfile per format (> 1: PyAV
is faster); ``stemdb.audio`` uses the faster one per format. Last, the native ``.stem.mp4`` fixture: PyAV against
stempeg (the ffmpeg program), time and agreement, where stempeg imports.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stemdb import audio  # noqa: E402

POOL = ROOT.parent / "shared" / "data" / "train-pool" / "musdb" / "train"  # beside the checkout
FALLBACK = ROOT / "tests" / "data" / "musdb" / "train"
STEMS = ("vocals", "drums", "bass", "other")

#: name -> (file name, soundfile format, soundfile subtype) for the files soundfile writes
SF_FORMATS = {
    "WAV PCM_16": ("prog.wav", "WAV", "PCM_16"),
    "AIFF PCM_16": ("prog.aiff", "AIFF", "PCM_16"),
    "FLAC 16-bit": ("prog.flac", "FLAC", "PCM_16"),
    "Ogg Vorbis": ("prog.ogg", "OGG", "VORBIS"),
    "MP3": ("prog.mp3", "MP3", "MPEG_LAYER_III"),
    "Ogg Opus (48 kHz)": ("prog_opus.ogg", "OGG", "OPUS"),
}
#: name -> (file name, container, codec, encoder sample format, rate, bit rate) for the files PyAV writes
AV_FORMATS = {
    "M4A AAC 192k": ("prog_aac.m4a", "mp4", "aac", "fltp", 44100, 192_000),
    "M4A ALAC": ("prog_alac.m4a", "mp4", "alac", "s16p", 44100, None),
    "Opus 128k": ("prog.opus", "ogg", "libopus", "s16", 48000, 128_000),
    "WebM Opus 128k": ("prog.webm", "webm", "libopus", "s16", 48000, 128_000),
    "WMA v2 192k": ("prog.wma", "asf", "wmav2", "fltp", 44100, 192_000),
}


def programme(seconds: float) -> tuple[np.ndarray, int]:
    """(samples, 2) int16 at 44.1 kHz: the pool's mixtures (sum of the stems) one after the other."""
    root = POOL if POOL.is_dir() else FALLBACK
    songs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        parts = [audio.read(f)[0] for s in STEMS for f in sorted(d.glob(f"{s}.*"))[:1]]
        n = min(x.shape[1] for x in parts)
        songs.append(np.clip(sum(x[:, :n] for x in parts), -1, 1))
    whole = np.concatenate(songs, axis=1)
    reps = int(np.ceil(seconds * 44100 / whole.shape[1]))
    x = np.tile(whole, reps)[:, : int(seconds * 44100)]
    return np.round(x.T * 32767).astype(np.int16), 44100


def av_encode(src: np.ndarray, sr: int, out: Path, fmt: str, codec: str, sample_fmt: str, rate: int,
              bit_rate: int | None) -> None:
    import av

    with av.open(str(out), mode="w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate, layout="stereo")
        if bit_rate:
            s.bit_rate = bit_rate
        s.format = sample_fmt
        res = av.AudioResampler(format=sample_fmt, layout="stereo", rate=rate)
        for i in range(0, src.shape[0], 8192):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(src[i : i + 8192]).reshape(1, -1), format="s16",
                                           layout="stereo")
            f.sample_rate, f.pts, f.time_base = sr, i, Fraction(1, sr)
            for g in res.resample(f):
                c.mux(s.encode(g))
        for g in res.resample(None):
            c.mux(s.encode(g))
        c.mux(s.encode(None))


def best(fn: Callable[[], object], repeats: int) -> float:
    t = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def sf_whole(p: Path) -> np.ndarray:
    data, _ = sf.read(str(p), dtype="float32", always_2d=True)
    return data.T


def av_whole(p: Path) -> np.ndarray:
    return audio._av_decode(p, [0], stop=None)[0][0]


def sf_window(p: Path, start: int, n: int) -> np.ndarray:
    with sf.SoundFile(str(p)) as f:
        f.seek(start)
        return f.read(n, dtype="float32", always_2d=True).T


def av_window(p: Path, start: int, n: int) -> np.ndarray:
    return audio._av_decode(p, [0], stop=start + n)[0][0][:, start : start + n]


def stem_mp4(repeats: int) -> None:
    """The native .stem.mp4 fixture, all five streams: PyAV (one demuxing pass) against stempeg (one ffmpeg process
    per stream, as stemdb read it before), where stempeg can be imported (it needs the ffmpeg program)."""
    path = ROOT / "tests" / "data" / "musdb-stems" / "test" / "The Easton Ellises - Falcon 69.stem.mp4"
    ours, sr = audio.read_stem_mp4(path)
    secs = ours.shape[0] * ours.shape[2] / sr
    t_av = best(lambda: audio.read_stem_mp4(path), repeats)
    line = f"stem.mp4 fixture, 5 streams ({secs:.1f} s of audio): PyAV {t_av * 1e3:.0f} ms ({secs / t_av:,.0f}x RT)"
    try:
        import stempeg
    except Exception as exc:  # noqa: BLE001 - RuntimeError without ffmpeg
        print(f"{line}; stempeg not importable ({exc})")
        return
    ref, _ = stempeg.read_stems(str(path), dtype=np.float32, always_3d=True)
    t_sp = best(lambda: stempeg.read_stems(str(path), dtype=np.float32, always_3d=True), repeats)
    diff = float(np.max(np.abs(ours - np.transpose(ref, (0, 2, 1)))))
    print(f"{line}; stempeg {t_sp * 1e3:.0f} ms ({secs / t_sp:,.0f}x RT); stempeg/PyAV time {t_sp / t_av:.1f}; "
          f"same shape {ours.shape == np.transpose(ref, (0, 2, 1)).shape}, max abs diff {diff:.2g}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary folder")
    ap.add_argument("--smoke", action="store_true", help="5 s of audio, one repeat")
    args = ap.parse_args(argv)
    if args.smoke:
        args.seconds, args.repeats = 5.0, 1
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stemdb-bench-decode-"))
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    ratios = []
    src, sr = programme(args.seconds)
    import soxr

    src48 = np.round(np.clip(soxr.resample(src.astype(np.float32) / 32768, sr, 48000), -1, 32767 / 32768) * 32768)
    print(f"programme: {src.shape[0] / sr:.1f} s stereo 44.1 kHz; {args.repeats} repeats, best time")
    print("| format | MB | soundfile x RT | PyAV x RT | PyAV/soundfile | outputs (max abs diff, frames) "
          "| 1 s window at 3/4: soundfile ms | PyAV ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (fname, fmt, subtype) in SF_FORMATS.items():
        p = args.workdir / fname
        data, rate = (src48.astype(np.int16), 48000) if subtype == "OPUS" else (src, sr)
        audio.write(p, data.T.astype(np.float32) / 32768, rate, subtype=subtype, format=fmt)
        secs = data.shape[0] / rate
        a, b = sf_whole(p), av_whole(p)
        n = min(a.shape[1], b.shape[1])
        same = f"{np.max(np.abs(a[:, :n] - b[:, :n])):.2g}, {a.shape[1]} vs {b.shape[1]}"
        t_sf, t_av = best(lambda p=p: sf_whole(p), args.repeats), best(lambda p=p: av_whole(p), args.repeats)
        start = int(0.75 * a.shape[1])
        w_sf = best(lambda p=p, s=start, r=rate: sf_window(p, s, r), args.repeats)
        w_av = best(lambda p=p, s=start, r=rate: av_window(p, s, r), args.repeats)
        ratios.append(t_sf / t_av)
        print(f"| {name} | {p.stat().st_size / 1e6:.1f} | {secs / t_sf:,.0f} | {secs / t_av:,.0f} | "
              f"{t_sf / t_av:.2f} | {same} | {w_sf * 1e3:.1f} | {w_av * 1e3:.1f} |")
    for name, (fname, *spec) in AV_FORMATS.items():
        p = args.workdir / fname
        av_encode(src, sr, p, *spec)
        secs = src.shape[0] / sr
        t_av = best(lambda p=p: av_whole(p), args.repeats)
        b = av_whole(p)
        start = int(0.75 * b.shape[1])
        w_av = best(lambda p=p, s=start, r=spec[3]: av_window(p, s, r), args.repeats)
        print(f"| {name} | {p.stat().st_size / 1e6:.1f} | - | {secs / t_av:,.0f} | - | - | - | {w_av * 1e3:.1f} |")
    stem_mp4(args.repeats)
    shutil.rmtree(args.workdir, ignore_errors=True)
    gmean = float(np.exp(np.mean(np.log(ratios))))
    print(f"ratio PyAV/soundfile whole-file speed, geometric mean over {len(ratios)} formats both read: {gmean:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
