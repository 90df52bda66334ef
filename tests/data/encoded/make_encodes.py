"""Rebuild the encoded fixtures in this folder from one MUSDB18-HQ-layout fixture stem, with PyAV's encoders.

    python tests/data/encoded/make_encodes.py

Each file is the whole 4.0 s stereo source (``musdb/train/Music Delta - Hendrix/vocals.wav``) in a format soundfile
cannot read; the tests decode them through ``stemdb.audio`` (PyAV) and compare against the source. Encoders are
FFmpeg's (``aac``, ``alac``, ``wmav2``) and libopus, as bundled in the ``av`` wheel; Opus needs 48 kHz input, so those
two are resampled first (by FFmpeg's swresample). Rerunning may not give byte-identical files (encoder versions,
container time stamps); the MANIFEST's md5 sums are of the committed files.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

HERE = Path(__file__).parent
SOURCE = HERE.parent / "musdb" / "train" / "Music Delta - Hendrix" / "vocals.wav"

#: file name -> (container format, codec, encoder sample format, rate, bit rate in bit/s or None for lossless)
ENCODES = {
    "hendrix_vocals_aac.m4a": ("mp4", "aac", "fltp", 44100, 128_000),
    "hendrix_vocals_alac.m4a": ("mp4", "alac", "s16p", 44100, None),
    "hendrix_vocals.opus": ("ogg", "libopus", "s16", 48000, 96_000),
    "hendrix_vocals.webm": ("webm", "libopus", "s16", 48000, 96_000),
    "hendrix_vocals.wma": ("asf", "wmav2", "fltp", 44100, 128_000),
}


def encode(src: np.ndarray, sr: int, out: Path, fmt: str, codec: str, sample_fmt: str, rate: int,
           bit_rate: int | None) -> None:
    """Encode ``src`` ((samples, 2) int16) into ``out``."""
    with av.open(str(out), mode="w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate, layout="stereo")
        if bit_rate:
            s.bit_rate = bit_rate
        s.format = sample_fmt
        resampler = av.AudioResampler(format=sample_fmt, layout="stereo", rate=rate)
        hop = 4096
        for i in range(0, src.shape[0], hop):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(src[i : i + hop]).reshape(1, -1), format="s16",
                                               layout="stereo")
            frame.sample_rate = sr
            frame.pts = i  # in samples: the muxer derives the priming edit list from the time stamps
            frame.time_base = Fraction(1, sr)
            for f in resampler.resample(frame):
                c.mux(s.encode(f))
        for f in resampler.resample(None):
            c.mux(s.encode(f))
        c.mux(s.encode(None))


def main() -> None:
    src, sr = sf.read(str(SOURCE), dtype="int16", always_2d=True)
    for name, spec in ENCODES.items():
        out = HERE / "vocals" / name
        out.parent.mkdir(exist_ok=True)
        encode(src, sr, out, *spec)
        print(out.relative_to(HERE.parent), out.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
