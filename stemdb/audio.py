"""The one module that reads and writes audio.

Everything else in stemdb, augment, train and pipelines calls these functions; nothing else imports soundfile or
stempeg. Arrays are ``(channels, samples)`` float32 in memory, sample values in [-1, 1] full scale.

Native MUSDB18 ``.stem.mp4`` files hold five AAC streams (mixture, drums, bass, other, vocals in that order); a
single stream is addressed by ``stream=`` (its index). They are decoded through ``stempeg``, which needs ffmpeg on
PATH.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from stemdb.atomic import atomic_open
from stemdb.errors import AudioReadError, AudioWriteError, MissingDependencyError

#: Stream order inside a native MUSDB18 ``.stem.mp4`` file.
STEM_MP4_STREAMS: tuple[str, ...] = ("mixture", "drums", "bass", "other", "vocals")

#: File endings read through soundfile (libsndfile).
SOUNDFILE_SUFFIXES: frozenset[str] = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff"})


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of one audio file (or one stream of a ``.stem.mp4``).

    ``frames`` is the number of sample frames per channel; ``duration_s`` is ``frames / sample_rate`` in seconds.
    """

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def is_stem_mp4(path: str | Path) -> bool:
    """True for native MUSDB18 multitrack files (``*.stem.mp4``)."""
    return str(path).lower().endswith(".stem.mp4")


def is_audio_path(path: str | Path) -> bool:
    """True when ``path`` has an ending stemdb can read."""
    return is_stem_mp4(path) or Path(path).suffix.lower() in SOUNDFILE_SUFFIXES


def info(path: str | Path, *, stream: int | None = None) -> AudioInfo:
    """Read the header of ``path`` without decoding the audio (for ``.stem.mp4``: ffprobe's view of ``stream``).

    Raises:
        AudioReadError: the file is missing, empty or not audio stemdb can read.
    """
    p = Path(path)
    _check_exists(p)
    if is_stem_mp4(p):
        return _stem_mp4_info(p, 0 if stream is None else stream)
    try:
        i = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioReadError(p, f"not readable as audio ({exc})") from exc
    _check_riff_size(p)
    return AudioInfo(int(i.samplerate), int(i.channels), int(i.frames), str(i.format), str(i.subtype))


def read(
    path: str | Path,
    *,
    start: int = 0,
    frames: int | None = None,
    stream: int | None = None,
    dtype: str = "float32",
    channels_first: bool = True,
) -> tuple[np.ndarray, int]:
    """Decode audio, optionally a window of it, as ``(channels, samples)``.

    Args:
        path: the file.
        start: first frame to read (samples per channel from the start of the file).
        frames: how many frames to read; ``None`` reads to the end. A window that runs past the end is
            returned shorter (never padded here).
        stream: stream index for ``.stem.mp4`` files (see :data:`STEM_MP4_STREAMS`); ignored otherwise.
        dtype: ``"float32"`` (full scale ±1.0) or ``"int16"`` (raw PCM where the file allows; cheaper).
        channels_first: ``False`` returns the decoder's interleaved ``(samples, channels)`` array as it is, saving
            the transposing copy for callers that read channels as strided views (the renderer's fast path).

    WAV and FLAC windows are read by seeking: only the window is decoded.

    Returns:
        ``(audio, sample_rate)`` with ``audio`` of shape ``(channels, samples)``.

    Raises:
        AudioReadError: unreadable, truncated or not audio.
    """
    p = Path(path)
    if start < 0:
        raise AudioReadError(p, f"start={start} is negative")
    if frames is not None and frames < 0:
        raise AudioReadError(p, f"frames={frames} is negative")
    _check_exists(p)
    if is_stem_mp4(p):
        audio, sr = read_stem_mp4(p, streams=[0 if stream is None else stream])
        out = _as_dtype(audio[0][:, start : None if frames is None else start + frames], dtype)
        return (out if channels_first else np.ascontiguousarray(out.T)), sr
    try:
        with sf.SoundFile(str(p)) as f:
            if start:
                f.seek(min(start, f.frames))
            data = f.read(frames=-1 if frames is None else frames, dtype=dtype, always_2d=True)
            sr = int(f.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioReadError(p, f"decoding failed ({exc})") from exc
    return (np.ascontiguousarray(data.T) if channels_first else data), sr


def load(path: str | Path) -> tuple[np.ndarray, AudioInfo]:
    """Decode a whole file (not ``.stem.mp4``) and its header facts with one open: ``((channels, samples), info)``.

    Raises:
        AudioReadError: unreadable, not audio, or truncated (RIFF size, or fewer frames decoded than the header
            promises).
    """
    p = Path(path)
    _check_exists(p)
    _check_riff_size(p)
    try:
        with sf.SoundFile(str(p)) as f:
            info = AudioInfo(int(f.samplerate), int(f.channels), int(f.frames), str(f.format), str(f.subtype))
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioReadError(p, f"not readable as audio ({exc})") from exc
    if data.shape[0] != info.frames:
        raise AudioReadError(p, f"truncated: header says {info.frames} frames, decoded {data.shape[0]}")
    return np.ascontiguousarray(data.T), info


def read_stem_mp4(path: str | Path, *, streams: list[int] | None = None) -> tuple[np.ndarray, int]:
    """Decode streams of a native MUSDB18 ``.stem.mp4`` through stempeg (ffmpeg).

    Returns:
        ``(audio, sample_rate)``, ``audio`` of shape ``(streams, channels, samples)`` float32.
    """
    p = Path(path)
    _check_exists(p)
    stempeg = _stempeg()
    try:
        if streams is None:
            data, sr = stempeg.read_stems(str(p), dtype=np.float32, always_3d=True)
        else:
            parts = []
            sr = 0
            for s in streams:
                d, sr = stempeg.read_stems(str(p), stem_id=s, dtype=np.float32, always_3d=True)
                parts.append(d[0])
            data = np.stack(parts)
    except MissingDependencyError:
        raise
    except Exception as exc:  # stempeg raises plain Exceptions and ffmpeg errors of several types
        raise AudioReadError(p, f"stem.mp4 decoding failed ({exc})") from exc
    # stempeg returns (streams, samples, channels)
    return np.ascontiguousarray(np.transpose(data, (0, 2, 1)).astype(np.float32, copy=False)), int(sr)


def stem_mp4_stream_count(path: str | Path) -> int:
    """Number of audio streams in a ``.stem.mp4`` (5 for MUSDB18)."""
    stempeg = _stempeg()
    try:
        return int(stempeg.Info(str(path)).nb_audio_streams)
    except Exception as exc:
        raise AudioReadError(path, f"ffprobe could not read the streams ({exc})") from exc


def write(
    path: str | Path,
    audio: np.ndarray,
    sample_rate: int,
    *,
    subtype: str = "PCM_16",
    format: str | None = None,
) -> Path:
    """Write ``audio`` of shape ``(channels, samples)`` atomically (temp file, fsync, rename).

    Float input is clipped to ±1.0 by libsndfile when ``subtype`` is integer PCM. Parent folders are created.

    Returns:
        the final path.
    """
    p = Path(path)
    if audio.ndim != 2:
        raise AudioWriteError(p, f"audio must be (channels, samples), got shape {audio.shape}")
    fmt = format or _format_for(p)
    try:
        with atomic_open(p, "wb") as fh:
            sf.write(fh, np.ascontiguousarray(audio.T), sample_rate, subtype=subtype, format=fmt)
    except Exception as exc:
        raise AudioWriteError(p, str(exc)) from exc
    return p


def to_float32(audio: np.ndarray) -> np.ndarray:
    """Convert int16 PCM (as read with ``dtype="int16"``) to float32 full scale; float input passes through."""
    if audio.dtype == np.int16:
        return audio.astype(np.float32) * np.float32(1.0 / 32768.0)
    return audio.astype(np.float32, copy=False)


def ffmpeg_available() -> bool:
    """True when ffmpeg and ffprobe are on PATH (needed for ``.stem.mp4``)."""
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def _as_dtype(audio: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "int16":
        return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _format_for(p: Path) -> str:
    suffix = p.suffix.lower().lstrip(".")
    return {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "aif": "AIFF", "aiff": "AIFF", "mp3": "MP3"}.get(suffix, "WAV")


def _check_exists(p: Path) -> None:
    if not p.is_file():
        raise AudioReadError(p, "no such file")
    if p.stat().st_size == 0:
        raise AudioReadError(p, "empty file (0 bytes)")


def _check_riff_size(p: Path) -> None:
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


def _stem_mp4_info(p: Path, stream: int) -> AudioInfo:
    stempeg = _stempeg()
    try:
        i = stempeg.Info(str(p))
        n = int(i.nb_audio_streams)
        if not 0 <= stream < n:
            raise AudioReadError(p, f"stream={stream} out of range (file has {n} audio streams)")
        sr = int(i.sample_rate(stream))
        frames = int(round(float(i.duration(stream)) * sr))
        return AudioInfo(sr, int(i.channels(stream)), frames, "MP4", "AAC")
    except AudioReadError:
        raise
    except Exception as exc:
        raise AudioReadError(p, f"ffprobe could not read the file ({exc})") from exc


def _stempeg():  # noqa: ANN202 - module object
    if not ffmpeg_available():
        raise MissingDependencyError(
            "reading .stem.mp4 needs ffmpeg and ffprobe on PATH: `apt-get install -y ffmpeg` (Debian/Ubuntu) "
            "or `conda install ffmpeg`"
        )
    try:
        import stempeg
    except ImportError as exc:  # pragma: no cover - stempeg is a hard dependency
        raise MissingDependencyError("reading .stem.mp4 needs stempeg: `pip install stempeg`") from exc
    return stempeg
