"""File checks and error reasons for :mod:`stemdb.audio` (which alone reads and writes audio): a missing or empty
file, a WAV cut short, libsndfile's reasons said without the path (the error names the file), and a decoded PyAV
frame as float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stemdb.errors import AudioReadError


def sf_reason(exc: Exception, what: str = "not readable as audio") -> str:
    """libsndfile's reason without the path (the error names it): for a regular file whose bytes match no format
    it says "File does not exist or is not a regular file (possibly a pipe?)", which is said here as it is."""
    why = getattr(exc, "error_string", None) or str(exc)
    if "does not exist or is not a regular file" in why:
        why = "not a recognised audio format (the header matches none)"
    return f"{what} ({why})"


def check_exists(p: Path) -> None:
    if not p.is_file():
        raise AudioReadError(p, "no such file")
    if p.stat().st_size == 0:
        raise AudioReadError(p, "empty file (0 bytes)")


def check_riff_size(p: Path) -> None:
    """A WAV whose RIFF header promises more bytes than the file holds was cut short (libsndfile reads the
    remainder silently, so the check is done here)."""
    if p.suffix.lower() != ".wav":
        return
    with open(p, "rb") as fh:
        head = fh.read(12)
    if len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        promised = int.from_bytes(head[4:8], "little") + 8
        actual = p.stat().st_size
        if promised > actual and promised != 0xFFFFFFFF + 8:
            raise AudioReadError(p, f"truncated: RIFF header says {promised} bytes, the file has {actual}")


_INT_SCALE = {np.dtype(np.int16): 1.0 / 32768.0, np.dtype(np.int32): 1.0 / 2147483648.0}


def frame_float32(frame) -> np.ndarray:  # noqa: ANN001 - av.AudioFrame
    """One decoded frame as ``(channels, samples)`` float32 full scale, whatever the decoder's sample format."""
    x = frame.to_ndarray()
    if not frame.format.is_planar:
        x = x.reshape(-1, frame.layout.nb_channels).T
    if x.dtype == np.float32:
        return x
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) * np.float32(1.0 / 128.0)
    if x.dtype in _INT_SCALE:
        return x.astype(np.float32) * np.float32(_INT_SCALE[x.dtype])
    return x.astype(np.float32)
