"""The one module that reads and writes audio.

Everything else in stemdb, augment, train and pipelines calls these functions; nothing else imports soundfile or
PyAV. Arrays are ``(channels, samples)`` float32 in memory, sample values in [-1, 1] full scale.

Two decoders, chosen by the file's ending (the faster one per format, docs/benchmarks.md "Decoding"):

- soundfile (libsndfile) for WAV, AIFF, FLAC, Ogg (Vorbis, Opus: ``.ogg``, ``.oga``, ``.opus``) and MP3, with
  windowed reads by seeking (exact: a window equals the slice of the whole decode);
- PyAV (FFmpeg's libraries, bundled in the ``av`` wheel; no ffmpeg program is run) for native MUSDB18
  ``.stem.mp4`` multitracks, M4A/MP4 (AAC, ALAC), raw AAC, WebM, Matroska audio and WMA (and ``.opus`` where the
  installed libsndfile predates Opus). These are decoded from the start of the stream (a window stops decoding at
  its end), because seeking in them is not sample-exact for every codec; a window costs up to a whole decode.

:func:`blocks` decodes a whole file in fixed-size blocks (memory of one block, whatever the file's length), for
the block-wise measurement of long files at ingest (:mod:`stemdb.ingest_stream`).

The stem cache (``ingest.cache: int16``, :mod:`stemdb.stem_cache`) holds 16-bit PCM as plain ``.npy`` files,
written by :func:`write_pcm16` and memory-mapped by :func:`open_pcm16`.

Native MUSDB18 ``.stem.mp4`` files hold five AAC streams (mixture, drums, bass, other, vocals in that order); a single
stream is addressed by ``stream=`` (its index among the file's audio streams).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import soundfile as sf

from stemdb.atomic import WriteGuard, atomic_open
from stemdb.audio_checks import check_exists, check_riff_size, frame_float32, sf_reason
from stemdb.audio_facts import AudioInfo, av_info, soundfile_info
from stemdb.errors import AudioReadError, AudioWriteError, MissingDependencyError

#: Stream order inside a native MUSDB18 ``.stem.mp4`` file.
STEM_MP4_STREAMS: tuple[str, ...] = ("mixture", "drums", "bass", "other", "vocals")

#: True when the installed libsndfile decodes Ogg Opus (1.0.29 and later; the soundfile wheels bundle 1.2).
_LIBSNDFILE_OPUS: bool = "OPUS" in sf.available_subtypes("OGG")

#: File endings read through soundfile (libsndfile). Where both decoders read a format, soundfile's exact seeking
#: makes a 1 s window 20-600x cheaper, and whole files decode about as fast or faster, except Ogg Opus (PyAV 2.3-2.5x
#: faster there; windows decide, as the renderer reads many; docs/benchmarks.md "Decoding").
SOUNDFILE_SUFFIXES: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", *([".opus"] if _LIBSNDFILE_OPUS else [])}
)

#: File endings decoded in-process by PyAV (``.stem.mp4`` is an ``.mp4``).
PYAV_SUFFIXES: frozenset[str] = frozenset(
    {".m4a", ".m4b", ".mp4", ".aac", ".webm", ".weba", ".mka", ".wma", *([] if _LIBSNDFILE_OPUS else [".opus"])}
)

#: Frames per libsndfile write call (see :func:`write`).
_WRITE_BLOCK = 1 << 16

_PYAV_HINT = "`pip install av` (a wheel that bundles FFmpeg's libraries; no ffmpeg program is needed)"


def is_stem_mp4(path: str | Path) -> bool:
    """True for native MUSDB18 multitrack files (``*.stem.mp4``)."""
    return str(path).lower().endswith(".stem.mp4")


def is_audio_path(path: str | Path) -> bool:
    """True when ``path`` has an ending stemdb can read."""
    suffix = Path(path).suffix.lower()
    return suffix in SOUNDFILE_SUFFIXES or suffix in PYAV_SUFFIXES


def uses_pyav(path: str | Path) -> bool:
    """True when ``path`` is decoded by PyAV rather than soundfile (see :data:`PYAV_SUFFIXES`)."""
    return Path(path).suffix.lower() in PYAV_SUFFIXES


def info(path: str | Path, *, stream: int | None = None, frames: int | None = None) -> AudioInfo:
    """Read the header of ``path`` without decoding the audio.

    Args:
        path: the file.
        stream: audio stream index for PyAV formats (0 when ``None``); ignored for soundfile formats.
        frames: for PyAV formats, the decoded frame count when known (from :func:`blocks`): the facts are then
            :func:`load`'s (the bit rate of a file whose streams state none is its size over the decoded duration).

    For soundfile formats ``frames`` is exact. For PyAV formats it is the duration the container states times the
    rate, which can differ from the decoded count (:func:`load`, the one ingest records) by the encoder's padding:
    AAC in MP4 states the duration without the tail padding that FFmpeg decodes (up to 1024 frames), WebM rounds
    to 1 ms, WMA carries no priming information.

    Raises:
        AudioReadError: the file is missing, empty or not audio stemdb can read.
    """
    p = Path(path)
    check_exists(p)
    if uses_pyav(p):
        with _av_open(p) as c:
            s = _av_stream(c, p, 0 if stream is None else stream)
            return av_info(c, s, p, frames=frames)
    try:
        i = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioReadError(p, sf_reason(exc)) from exc
    check_riff_size(p)
    return soundfile_info(p, int(i.samplerate), int(i.channels), int(i.frames), str(i.format), str(i.subtype))


def read(
    path: str | Path,
    *,
    start: int = 0,
    frames: int | None = None,
    stream: int | None = None,
    dtype: str = "float32",
    channels_first: bool = True,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Decode audio, optionally a window of it, as ``(channels, samples)``.

    Args:
        path: the file.
        start: first frame to read (samples per channel from the start of the file).
        frames: how many frames to read; ``None`` reads to the end. A window that runs past the end is
            returned shorter (never padded here).
        stream: audio stream index for PyAV formats (``.stem.mp4``: see :data:`STEM_MP4_STREAMS`; 0 when
            ``None``); ignored for soundfile formats.
        dtype: ``"float32"`` (full scale ±1.0) or ``"int16"`` (raw PCM where the file allows; cheaper).
        channels_first: ``False`` returns the decoder's interleaved ``(samples, channels)`` array as it is, saving
            the transposing copy for callers that read channels as strided views (the renderer's fast path).
        out: with ``channels_first=False``, a reused ``(>= frames, channels)`` buffer of ``dtype`` that soundfile
            formats decode into (no fresh array, so no page faults per read); the result is a view of it.

    Soundfile windows are read by seeking: only the window is decoded. PyAV formats are decoded from the start up
    to the window's end.

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
    check_exists(p)
    if uses_pyav(p):
        stop = None if frames is None else start + frames
        arrays, infos = _av_decode(p, [0 if stream is None else stream], stop=stop)
        out = _as_dtype(arrays[0][:, start:stop], dtype)
        return (out if channels_first else np.ascontiguousarray(out.T)), infos[0].sample_rate
    try:
        with sf.SoundFile(str(p)) as f:
            if start:
                f.seek(min(start, f.frames))
            n = -1 if frames is None else frames
            use = out is not None and not channels_first and frames is not None and out.shape[0] >= frames \
                and out.shape[1:] == (f.channels,) and out.dtype == np.dtype(dtype)
            data = f.read(frames=n, dtype=dtype, always_2d=True, out=out[:frames] if use else None)
            sr = int(f.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioReadError(p, sf_reason(exc, "decoding failed")) from exc
    return (np.ascontiguousarray(data.T) if channels_first else data), sr


def load(path: str | Path, *, stream: int = 0) -> tuple[np.ndarray, AudioInfo]:
    """Decode a whole file and its header facts with one open: ``((channels, samples), info)``.

    ``stream`` picks the audio stream of a PyAV format (``.stem.mp4``: the mixture by default); ``info.frames`` is
    the decoded count.

    Raises:
        AudioReadError: unreadable, not audio, or truncated (RIFF size, or fewer frames decoded than the header
            promises).
    """
    p = Path(path)
    check_exists(p)
    if uses_pyav(p):
        arrays, infos = _av_decode(p, [stream], stop=None)
        return arrays[0], infos[0]
    check_riff_size(p)
    try:
        with sf.SoundFile(str(p)) as f:
            info = soundfile_info(p, int(f.samplerate), int(f.channels), int(f.frames), str(f.format), str(f.subtype))
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioReadError(p, sf_reason(exc)) from exc
    if data.shape[0] != info.frames:
        raise AudioReadError(p, f"truncated: header says {info.frames} frames, decoded {data.shape[0]}")
    return np.ascontiguousarray(data.T), info


def blocks(path: str | Path, *, block_frames: int = 1 << 18, stream: int = 0) -> Iterator[np.ndarray]:
    """Decode a whole file block by block: ``(channels, frames)`` float32 arrays of ``block_frames`` frames (the
    last one shorter), whose concatenation is :func:`load`'s array; memory holds about one block, whatever the
    file's length. ``stream`` picks the audio stream of a PyAV format.

    Raises (while iterating):
        AudioReadError: unreadable, not audio, or truncated (as :func:`load`).
    """
    p = Path(path)
    if block_frames < 1:
        raise AudioReadError(p, f"block_frames={block_frames} must be >= 1")
    check_exists(p)
    if uses_pyav(p):
        return _av_blocks(p, stream, block_frames)
    check_riff_size(p)
    return _sf_blocks(p, block_frames)


def _sf_blocks(p: Path, block_frames: int) -> Iterator[np.ndarray]:
    got = 0
    try:
        with sf.SoundFile(str(p)) as f:
            expected = int(f.frames)
            buf = np.empty((block_frames, f.channels), np.float32)
            while (data := f.read(block_frames, dtype="float32", always_2d=True, out=buf)).shape[0]:
                got += data.shape[0]
                yield data.T.copy()  # a fresh array: buf is reused (a mono .T is a view of it)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioReadError(p, sf_reason(exc)) from exc
    if got != expected:
        raise AudioReadError(p, f"truncated: header says {expected} frames, decoded {got}")


def _av_blocks(p: Path, stream: int, block_frames: int) -> Iterator[np.ndarray]:
    av = _av()
    with _av_open(p) as c:
        s = _av_stream(c, p, stream)
        parts: list[np.ndarray] = []
        held = 0
        try:
            for packet in c.demux(s):
                for frame in packet.decode():
                    a = frame_float32(frame)
                    if a.shape[0] != s.codec_context.channels:
                        raise AudioReadError(p, f"stream {stream}: the channel count changes within the stream")
                    parts.append(a)
                    held += a.shape[1]
                    while held >= block_frames:
                        joined = np.concatenate(parts, axis=1)
                        yield joined[:, :block_frames]
                        parts, held = [joined[:, block_frames:]], held - block_frames
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise AudioReadError(p, sf_reason(exc, "decoding failed")) from exc
        if held:
            yield np.concatenate(parts, axis=1)


def load_streams(
    path: str | Path, *, streams: list[int] | None = None
) -> tuple[list[np.ndarray], list[AudioInfo]]:
    """Decode several audio streams of one file in a single pass (every stream when ``streams`` is ``None``).

    For a ``.stem.mp4`` the streams are in :data:`STEM_MP4_STREAMS` order. A soundfile format has one stream.

    Returns:
        ``(arrays, infos)``: per stream a ``(channels, samples)`` float32 array and its facts (``frames`` decoded).
        Streams may differ in length; nothing is padded here.

    Raises:
        AudioReadError: unreadable, no audio stream, or a stream index out of range.
    """
    p = Path(path)
    check_exists(p)
    if uses_pyav(p):
        return _av_decode(p, streams, stop=None)
    if streams not in (None, [0]):
        raise AudioReadError(p, f"streams={streams} out of range (the file has 1 audio stream)")
    a, i = load(p)
    return [a], [i]


def read_stem_mp4(path: str | Path, *, streams: list[int] | None = None) -> tuple[np.ndarray, int]:
    """Decode streams of a native MUSDB18 ``.stem.mp4`` (every stream when ``streams`` is ``None``), one pass.

    Streams shorter than the longest are padded with zeros at the end (never truncated).

    Returns:
        ``(audio, sample_rate)``, ``audio`` of shape ``(streams, channels, samples)`` float32.

    Raises:
        AudioReadError: unreadable, or the streams differ in rate or channel count.
    """
    p = Path(path)
    arrays, infos = load_streams(p, streams=streams)
    if len({i.sample_rate for i in infos}) > 1 or len({a.shape[0] for a in arrays}) > 1:
        facts = [(i.sample_rate, a.shape[0]) for a, i in zip(arrays, infos, strict=True)]
        raise AudioReadError(p, f"streams differ in (sample rate, channels): {facts}")
    n = max(a.shape[1] for a in arrays)
    out = np.zeros((len(arrays), arrays[0].shape[0], n), dtype=np.float32)
    for k, a in enumerate(arrays):
        out[k, :, : a.shape[1]] = a
    return out, infos[0].sample_rate


def stem_mp4_stream_count(path: str | Path) -> int:
    """Number of audio streams in a ``.stem.mp4`` (5 for MUSDB18), from the header."""
    p = Path(path)
    check_exists(p)
    with _av_open(p) as c:
        return len(c.streams.audio)


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
    Frames go to libsndfile in blocks of :data:`_WRITE_BLOCK`: libvorbis overflows its stack when one call hands it
    more than about a minute of audio (an Ogg Vorbis write of 60 s stereo crashed the process in one call).

    Returns:
        the final path.
    """
    p = Path(path)
    if audio.ndim != 2:
        raise AudioWriteError(p, f"audio must be (channels, samples), got shape {audio.shape}")
    fmt = format or _format_for(p)
    frames = np.ascontiguousarray(audio.T)
    guard: WriteGuard | None = None
    try:
        with atomic_open(p, "wb") as fh:
            guard = WriteGuard(fh)
            with sf.SoundFile(guard, "w", sample_rate, audio.shape[0], subtype=subtype, format=fmt) as f:
                for i in range(0, max(frames.shape[0], 1), _WRITE_BLOCK):
                    f.write(frames[i : i + _WRITE_BLOCK])
                    guard.check()
            guard.check()
    except Exception as exc:
        cause = guard.error if guard is not None and guard.error is not None else exc
        raise AudioWriteError(p, _why(cause)) from cause
    return p


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"write failed: {exc.strerror} (errno {exc.errno})"
    return str(exc) or type(exc).__name__


def to_float32(audio: np.ndarray) -> np.ndarray:
    """Convert int16 PCM (as read with ``dtype="int16"``) to float32 full scale; float input passes through."""
    if audio.dtype == np.int16:
        return audio.astype(np.float32) * np.float32(1.0 / 32768.0)
    return audio.astype(np.float32, copy=False)


def _as_dtype(audio: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "int16":
        return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _format_for(p: Path) -> str:
    suffix = p.suffix.lower().lstrip(".")
    return {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "aif": "AIFF", "aiff": "AIFF", "mp3": "MP3"}.get(suffix, "WAV")


# --------------------------------------------------------------------------------------------------------------
# PyAV


@functools.cache
def _av() -> ModuleType:
    """The ``av`` module, with FFmpeg's own messages routed to Python logging (logger ``libav``) at ERROR level,
    so warnings about cover-art streams do not land on the terminal of every ingest worker."""
    try:
        import av
        import av.logging
    except ImportError as exc:  # pragma: no cover - av is a hard dependency
        raise MissingDependencyError(f"decoding this format needs PyAV: {_PYAV_HINT}") from exc
    av.logging.set_level(av.logging.ERROR)
    return av


@contextlib.contextmanager
def _av_open(p: Path) -> Iterator:
    """``with _av_open(path) as container``: a PyAV container, open errors as AudioReadError naming the file."""
    av = _av()
    try:
        c = av.open(str(p), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise AudioReadError(p, f"not readable as audio ({exc})") from exc
    try:
        yield c
    finally:
        c.close()


def _av_stream(c, p: Path, index: int):  # noqa: ANN001, ANN202 - av objects
    n = len(c.streams.audio)
    if n == 0:
        raise AudioReadError(p, "no audio stream in the file")
    if not 0 <= index < n:
        raise AudioReadError(p, f"stream={index} out of range (the file has {n} audio streams)")
    return c.streams.audio[index]


def _av_decode(p: Path, streams: list[int] | None, *, stop: int | None) -> tuple[list[np.ndarray], list[AudioInfo]]:
    """Decode audio streams of ``p`` in one demuxing pass; with ``stop``, each stream only until it has ``stop``
    frames (the window's end). Infos carry the decoded frame count when the whole stream was decoded."""
    av = _av()
    with _av_open(p) as c:
        n = len(c.streams.audio)
        wanted = list(range(n)) if streams is None else list(streams)
        chosen = {i: _av_stream(c, p, i) for i in dict.fromkeys(wanted)}
        by_index = {s.index: k for k, s in chosen.items()}
        parts: dict[int, list[np.ndarray]] = {k: [] for k in chosen}
        got = dict.fromkeys(chosen, 0)
        try:
            for packet in c.demux(list(chosen.values())):
                k = by_index[packet.stream.index]
                if stop is not None and got[k] >= stop:
                    if all(v >= stop for v in got.values()):
                        break
                    continue
                for frame in packet.decode():
                    a = frame_float32(frame)
                    parts[k].append(a)
                    got[k] += a.shape[1]
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise AudioReadError(p, sf_reason(exc, "decoding failed")) from exc
        arrays: dict[int, np.ndarray] = {}
        infos: dict[int, AudioInfo] = {}
        for k, s in chosen.items():
            channels = s.codec_context.channels
            if {a.shape[0] for a in parts[k]} - {channels}:
                raise AudioReadError(p, f"stream {k}: the channel count changes within the stream")
            arrays[k] = np.concatenate(parts[k], axis=1) if parts[k] else np.zeros((channels, 0), np.float32)
            whole = stop is None
            infos[k] = av_info(c, s, p, frames=arrays[k].shape[1] if whole else None)
    return [arrays[k] for k in wanted], [infos[k] for k in wanted]
