"""The int16 stem cache: decoded stems as memory-mapped 16-bit PCM beside the catalogue (opt-in).

With ``ingest.cache: int16`` in ``data.yaml``, ingest writes every stem whose decoded samples are 16-bit PCM
(``subtype`` ``PCM_16``: WAV, FLAC, AIFF of 16 bits) to ``<catalog>/cache/int16/<stem_id>.npy``: the samples as
``(frames, channels)`` int16 in a plain ``.npy`` file (:func:`write_pcm16`). The renderer and the
training stream then read a window as a slice of a memory map (:func:`open_pcm16`): no decoder, no
copy, no per-read syscalls once the pages are mapped. The cache holds exactly the file's samples, so a render from
the cache is bit-identical to one from the file; stems of other formats (24-bit, float, lossy codecs) are not
cached, because int16 would change them. Files are named by content hash, so duplicates share one, a re-encoded
copy finds its cache, and a stale one cannot exist. Disk cost: 2 bytes per sample and channel (about 10.6 MB per
minute of stereo 44.1 kHz), reported by :func:`cache_size`.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from stemdb import audio as audio_io
from stemdb.atomic import atomic_open, fsync_dir
from stemdb.errors import AudioReadError, AudioWriteError

log = logging.getLogger(__name__)

#: Where the cache lives, relative to the catalogue folder.
CACHE_DIR = Path("cache") / "int16"
#: Decoded sample formats the cache holds exactly.
CACHEABLE_SUBTYPES = frozenset({"PCM_16"})
#: Memory maps kept open per process (each holds one file descriptor).
OPEN_MAPS = 256


def cache_dir(catalog: str | Path) -> Path:
    """``<catalog>/cache/int16``."""
    return Path(catalog) / CACHE_DIR


def cache_path(catalog: str | Path, stem_id: str) -> Path:
    """The cache file of ``stem_id``."""
    return cache_dir(catalog) / f"{stem_id}.npy"


def cacheable(subtype: str | None) -> bool:
    """True when stems of this decoded ``subtype`` are held exactly by int16 PCM."""
    return subtype in CACHEABLE_SUBTYPES


def write_stem(catalog: str | Path, stem_id: str, audio: np.ndarray) -> Path:
    """Write a decoded stem ``(channels, frames)`` float32 (values on the 16-bit grid) to the cache, once (an
    existing file of the same content hash is kept)."""
    path = cache_path(catalog, stem_id)
    if not path.is_file():
        pcm = np.clip(np.rint(audio * np.float32(32768.0)), -32768, 32767).astype(np.int16)
        write_pcm16(path, pcm)
    return path


def write_stem_blocks(catalog: str | Path, stem_id: str, path: str | Path, stream: int = 0) -> Path:
    """:func:`write_stem` of a file decoded block by block (memory does not grow with its length).

    Raises:
        AudioReadError: the file cannot be read (nothing is written).
    """
    target = cache_path(catalog, stem_id)
    if target.is_file():
        return target
    info = audio_io.info(path, stream=stream)
    writer = Pcm16Writer(catalog, info.channels, info.frames)
    try:
        for block in audio_io.blocks(path, stream=stream):
            writer.write(np.clip(np.rint(block * np.float32(32768.0)), -32768, 32767).astype(np.int16))
    except BaseException:
        writer.discard()
        raise
    return writer.commit(stem_id)


def keep(catalog: str | Path | None, subtype: str | None, stem_id: str, audio: np.ndarray) -> Path | None:
    """:func:`write_stem` when ``catalog`` is given (the cache is on) and ``subtype`` is cacheable, else nothing."""
    return write_stem(catalog, stem_id, audio) if catalog is not None and cacheable(subtype) else None


def cached_ids(catalog: str | Path) -> frozenset[str]:
    """The ``stem_id`` of every cached stem (one directory listing)."""
    d = cache_dir(catalog)
    if not d.is_dir():
        return frozenset()
    return frozenset(e.name[:-4] for e in os.scandir(d) if e.name.endswith(".npy") and not e.name.startswith("."))


def cache_size(catalog: str | Path) -> tuple[int, int]:
    """``(files, bytes)`` of the cache on disk."""
    d = cache_dir(catalog)
    if not d.is_dir():
        return 0, 0
    sizes = [e.stat().st_size for e in os.scandir(d) if e.name.endswith(".npy") and not e.name.startswith(".")]
    return len(sizes), int(sum(sizes))


def fill(catalog: str | Path) -> int:
    """Write the missing cache files of the catalogue's live, cacheable stems (decoding each file once; rows
    measured before the cache was switched on). Near-duplicates are included, as ingest with the cache on keeps them:
    a remix with ``filters.dedupe: false`` draws them. Returns how many were written and logs the cache's size; an
    unreadable file is logged and left out (ingest records bad files, this never fails a run)."""
    from stemdb.catalog import Catalog

    cat = Catalog.open(catalog)
    df = cat.stems(columns=["stem_id", "root", "path", "stream", "subtype", "duplicate_of"], include_duplicates=True)
    df = df.sort_values("duplicate_of", na_position="first", kind="stable")  # an exact copy's canonical row first
    have = cached_ids(catalog)
    todo = df[df["subtype"].isin(CACHEABLE_SUBTYPES) & ~df["stem_id"].isin(have)].drop_duplicates("stem_id")
    written = 0
    for sid, root, path, stream in zip(todo["stem_id"], todo["root"], todo["path"], todo["stream"], strict=True):
        try:
            write_stem_blocks(catalog, str(sid), Path(root) / path, max(int(stream), 0))
        except (AudioReadError, AudioWriteError) as exc:
            log.warning("stem cache: %s left out: %s", sid, exc)
            continue
        written += 1
    files, size = cache_size(catalog)
    log.info("stem cache: %d files, %.1f MB on disk (%d written now)", files, size / 1e6, written)
    return written


class MappedStems:
    """Open memory maps of cache files, the :data:`OPEN_MAPS` most recently used kept per process."""

    def __init__(self, capacity: int = OPEN_MAPS) -> None:
        self.capacity = int(capacity)
        self._maps: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, path: str) -> np.ndarray:
        """The ``(frames, channels)`` int16 map of a cache file."""
        m = self._maps.get(path)
        if m is None:
            m = open_pcm16(path)
            self._maps[path] = m
            if len(self._maps) > self.capacity:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(path)
        return m

    def __getstate__(self) -> dict:
        return {"capacity": self.capacity, "_maps": OrderedDict()}  # maps are per process


def write_pcm16(path: str | Path, pcm: np.ndarray) -> Path:
    """Write int16 PCM ``(channels, samples)`` as an uncompressed ``.npy`` of ``(samples, channels)`` (atomic):
    the layout of the stem cache, which :func:`open_pcm16` maps into memory."""
    p = Path(path)
    if pcm.dtype != np.int16 or pcm.ndim != 2:
        raise AudioWriteError(p, f"PCM must be (channels, samples) int16, got {pcm.dtype} {pcm.shape}")
    with atomic_open(p, "wb") as fh:
        np.lib.format.write_array(fh, np.ascontiguousarray(pcm.T), allow_pickle=False)
    return p


class Pcm16Writer:
    """A cache file written block by block (:func:`write_pcm16`'s bytes, for a stem too long to hold in memory):
    into a dot-prefixed temp file in the cache folder, renamed to the stem's file by :meth:`commit` once the
    content hash is known (an existing file of that hash is kept), removed by :meth:`discard`.

    Args:
        catalog: the catalogue folder.
        channels, frames: the stem's shape; :meth:`commit` fails unless exactly ``frames`` were written.
    """

    def __init__(self, catalog: str | Path, channels: int, frames: int) -> None:
        folder = cache_dir(catalog)
        folder.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=".stream.", suffix=".tmp", dir=folder)
        self.catalog, self.frames, self.written = catalog, int(frames), 0
        self.fh = os.fdopen(fd, "wb")
        header = {"descr": np.dtype(np.int16).str, "fortran_order": False, "shape": (self.frames, int(channels))}
        np.lib.format.write_array_header_1_0(self.fh, header)

    def write(self, pcm: np.ndarray) -> None:
        """Append int16 PCM ``(channels, samples)``."""
        self.fh.write(np.ascontiguousarray(pcm.T, dtype="<i2").data)
        self.written += pcm.shape[1]

    def commit(self, stem_id: str) -> Path:
        """Close, fsync and rename to ``stem_id``'s cache file (atomic); an existing one is kept."""
        path = cache_path(self.catalog, stem_id)
        if self.written != self.frames:
            self.discard()
            raise AudioWriteError(path, f"stem cache: {self.written} frames written, {self.frames} announced")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        if path.is_file():
            os.unlink(self.tmp)
        else:
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, path)
            fsync_dir(path.parent)
        return path

    def discard(self) -> None:
        """Close and remove the temp file (a failed measurement leaves nothing)."""
        self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def open_pcm16(path: str | Path) -> np.ndarray:
    """Memory-map a file written by :func:`write_pcm16`: a read-only ``(samples, channels)`` int16 view (pages are
    read from the page cache on first touch; nothing is copied)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(fh)
            offset = fh.tell()
            mm = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
    except (OSError, ValueError) as exc:
        raise AudioReadError(p, f"not a PCM cache file ({exc})") from exc
    if dtype != np.int16 or fortran or len(shape) != 2:
        raise AudioReadError(p, f"not a PCM cache file: {dtype} {shape} fortran={fortran}")
    return np.frombuffer(mm, dtype=np.int16, count=shape[0] * shape[1], offset=offset).reshape(shape)
__all__ = ["CACHEABLE_SUBTYPES", "CACHE_DIR", "MappedStems", "Pcm16Writer", "cache_dir", "cache_path", "cache_size", "cacheable",
           "cached_ids", "fill", "keep", "open_pcm16", "write_pcm16", "write_stem", "write_stem_blocks"]
