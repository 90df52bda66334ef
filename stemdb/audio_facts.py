"""Header facts of audio files, for :mod:`stemdb.audio` (which alone reads and writes the samples):
:class:`AudioInfo`, and how the facts soundfile and PyAV give are turned into it (FFmpeg's codec names, whether a
codec is lossy, the bit rate, the container's name). Nothing here decodes audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of one audio file (or one stream of a multi-stream file such as ``.stem.mp4``).

    ``frames`` is the number of sample frames per channel; ``duration_s`` is ``frames / sample_rate`` in seconds.
    ``format`` is the container (``WAV``, ``FLAC``, ``MP4``, ``WEBM``, ...), ``subtype`` the encoding as soundfile
    names it (``PCM_16``, ``VORBIS``) or, for PyAV formats, the codec in capitals (``AAC``, ``OPUS``).
    ``codec`` is FFmpeg's name for the codec (``pcm_s16le``, ``flac``, ``aac``, ``opus``, ``wmav2``, ``alac``);
    ``bitrate_kbps`` the stream's bit rate in kbit/s (the rate the container states for the stream, else the file's
    size x 8 / duration); ``lossy`` whether the codec discards information (FFmpeg's codec descriptor), ``None``
    when unknown.
    """

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    codec: str = ""
    bitrate_kbps: float | None = None
    lossy: bool | None = None

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def soundfile_info(p: Path, sr: int, channels: int, frames: int, fmt: str, subtype: str) -> AudioInfo:
    codec = sf_codec(fmt, subtype)
    seconds = frames / sr if sr else 0.0
    bitrate = p.stat().st_size * 8 / seconds / 1000.0 if seconds > 0 else None
    lossy = codec in SF_LOSSY if codec in SF_KNOWN else None
    return AudioInfo(sr, channels, frames, fmt, subtype, codec, bitrate, lossy)


SF_PCM = {"PCM_16": "s16", "PCM_24": "s24", "PCM_32": "s32", "FLOAT": "f32", "DOUBLE": "f64"}
SF_CODECS = {
    "PCM_U8": "pcm_u8", "PCM_S8": "pcm_s8", "ULAW": "pcm_mulaw", "ALAW": "pcm_alaw", "IMA_ADPCM": "adpcm_ima_wav",
    "MS_ADPCM": "adpcm_ms", "GSM610": "gsm_ms", "VORBIS": "vorbis", "OPUS": "opus", "MPEG_LAYER_I": "mp1",
    "MPEG_LAYER_II": "mp2", "MPEG_LAYER_III": "mp3", "ALAC_16": "alac", "ALAC_20": "alac", "ALAC_24": "alac",
    "ALAC_32": "alac",
}
#: The codecs of :data:`SF_CODECS` that FFmpeg's descriptors call lossy (a test checks the two agree); kept here so
#: the soundfile path answers without importing PyAV.
SF_LOSSY = frozenset(
    {"pcm_mulaw", "pcm_alaw", "adpcm_ima_wav", "adpcm_ms", "gsm_ms", "vorbis", "opus", "mp1", "mp2", "mp3"}
)
SF_KNOWN = frozenset(
    {*SF_CODECS.values(), "flac", *(f"pcm_{v}{e}" for v in SF_PCM.values() for e in ("le", "be"))}
)


def sf_codec(fmt: str, subtype: str) -> str:
    """FFmpeg's codec name for a soundfile (format, subtype): WAV PCM_16 -> pcm_s16le, FLAC -> flac."""
    if fmt == "FLAC":
        return "flac"
    if subtype in SF_PCM:
        return f"pcm_{SF_PCM[subtype]}{'be' if fmt in ('AIFF', 'AU') else 'le'}"
    return SF_CODECS.get(subtype, subtype.lower())


def av_info(c, s, p: Path, *, frames: int | None) -> AudioInfo:  # noqa: ANN001 - av objects
    cc = s.codec_context
    sr = int(cc.sample_rate or 0)
    if frames is None:
        if s.duration is not None and s.time_base is not None:
            frames = round(float(s.duration * s.time_base) * sr)
        elif c.duration is not None:
            frames = round(c.duration / 1_000_000 * sr)
        else:
            frames = 0
    codec = cc.codec.canonical_name
    seconds = frames / sr if sr else 0.0
    rate = s.bit_rate or cc.bit_rate
    if rate:
        bitrate: float | None = rate / 1000.0
    elif len(c.streams.audio) == 1 and seconds > 0:
        bitrate = p.stat().st_size * 8 / seconds / 1000.0
    else:
        bitrate = None
    lossy = bool(cc.codec.lossy) if cc.codec.lossy != cc.codec.lossless else None
    return AudioInfo(sr, int(cc.channels), int(frames), container_name(c, p), codec.upper(), codec, bitrate, lossy)


def container_name(c, p: Path) -> str:  # noqa: ANN001 - av container
    """The container as a short capitalised name: the file's ending when the demuxer claims it (``MP4``,
    ``M4A``, ``WEBM``), else the demuxer's first name (``ASF`` for ``.wma``)."""
    names = c.format.name.split(",")
    suffix = p.suffix.lower().lstrip(".")
    return (suffix if suffix in names else names[0]).upper()


__all__ = ["SF_CODECS", "SF_KNOWN", "SF_LOSSY", "AudioInfo", "av_info", "container_name", "sf_codec", "soundfile_info"]
