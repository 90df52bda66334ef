"""Scanning sources: the files of a source as :class:`FileJob` objects (path, kind, song, split, size, mtime), with no
decoding. Stems layout: the kind from folder rules, the song per the source's ``song`` rule, the split fixed or by a
hash of the song. MUSDB layout: ``train/`` and ``test/`` track folders or ``.stem.mp4`` files, MUSDB's 14-track
validation list from the installed ``musdb`` package.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from stemdb import audio as audio_io
from stemdb.config import TRACK_LAYOUTS, HashSplit, MusdbLayout, SourceConfig, StemsLayout
from stemdb.errors import AudioReadError
from stemdb.taxonomy import Taxonomy

MUSDB_SPLITS = ("train", "test")


@dataclass(frozen=True)
class FileJob:
    """One file to measure. A ``.stem.mp4`` yields one row per stream (``kinds`` in stream order)."""

    source: str
    root: str
    path: str  # relative to root, POSIX
    kinds: tuple[str, ...]  # one kind for plain files; the stream kinds for .stem.mp4
    song: str | None  # None: the file's own stem_id
    split: str | None  # None: decided from the song by a HashSplit
    origin: str
    licence: str
    bytes: int
    mtime: float
    max_channels: int
    hash_split: tuple[float, float] | None = None  # (valid, test) fractions when split is None
    error: str | None = None  # known unusable at scan (unmapped track, bad metadata): becomes a reject
    flags: tuple[str, ...] = ()  # flags the layout gives the row (MedleyDB's has_bleed, instrumental)
    provenance: str | None = None  # JSON: the source tracks of a stem summed from several (stemdb.tracks)

    @property
    def is_stem_mp4(self) -> bool:
        return audio_io.is_stem_mp4(self.path)

    def row_keys(self) -> list[str]:
        if self.is_stem_mp4:
            return [f"{self.source}:{self.path}#{i}" for i in range(len(self.kinds))]
        return [f"{self.source}:{self.path}"]



def scan_source(src: SourceConfig, *, cache: Path | None = None, taxonomy: Taxonomy | None = None) -> list[FileJob]:
    """List the files of one source as jobs (no decoding, except that the track layouts sum a song's tracks of
    one kind into ``cache``: :mod:`stemdb.layouts`). Raises AudioReadError when the root is missing."""
    root = Path(src.root)
    if not root.is_dir():
        raise AudioReadError(root, f"source {src.name!r}: root folder does not exist")
    if isinstance(src.layout, TRACK_LAYOUTS):
        from stemdb.layouts import scan_tracks

        return scan_tracks(src, root, cache=cache, taxonomy=taxonomy or Taxonomy())
    if isinstance(src.layout, MusdbLayout):
        return _scan_musdb(src, root, src.layout)
    return _scan_stems(src, root, src.layout, taxonomy or Taxonomy())


def _job(
    src: SourceConfig,
    root: Path,
    p: Path,
    kinds: tuple[str, ...],
    song: str | None,
    split: str | None,
    hash_split: tuple[float, float] | None = None,
) -> FileJob:
    try:
        st = p.stat()
        size, mtime = int(st.st_size), float(st.st_mtime)
    except OSError:  # dangling link and the like: the measurement step records the reason
        size, mtime = -1, 0.0
    return FileJob(
        source=src.name,
        root=str(root),
        path=p.relative_to(root).as_posix(),
        kinds=kinds,
        song=song,
        split=split,
        origin=src.origin,
        licence=src.licence,
        bytes=size,
        mtime=mtime,
        max_channels=src.max_channels,
        hash_split=hash_split,
    )


@lru_cache(maxsize=1)
def musdb_validation_tracks() -> frozenset[str]:
    """MUSDB18's official validation track names, read from the installed ``musdb`` package's config."""
    import importlib.util

    import yaml

    spec = importlib.util.find_spec("musdb")
    if spec is None or spec.origin is None:
        return frozenset()
    cfg = Path(spec.origin).parent / "configs" / "mus.yaml"
    data = yaml.safe_load(cfg.read_text()) if cfg.is_file() else {}
    return frozenset(data.get("validation_tracks", []))


def _scan_musdb(src: SourceConfig, root: Path, layout: MusdbLayout) -> list[FileJob]:
    split_dirs = [(s, root / s) for s in MUSDB_SPLITS if (root / s).is_dir()] or [("train", root)]
    valid = musdb_validation_tracks() if layout.validation else frozenset()
    jobs: list[FileJob] = []
    for split, d in split_dirs:
        for entry in sorted(d.iterdir()):
            if entry.is_file() and audio_io.is_stem_mp4(entry):
                track = entry.name[: -len(".stem.mp4")]
                sp = "valid" if split == "train" and track in valid else split
                jobs.append(_job(src, root, entry, audio_io.STEM_MP4_STREAMS, track, sp))
            elif entry.is_dir():
                track = entry.name
                sp = "valid" if split == "train" and track in valid else split
                for f in sorted(entry.iterdir()):
                    kind = f.name.split(".")[0].lower()
                    if kind in layout.stems and (audio_io.is_audio_path(f) or f.is_symlink()):
                        jobs.append(_job(src, root, f, (kind,), track, sp))
    return jobs


def _scan_stems(src: SourceConfig, root: Path, layout: StemsLayout, taxonomy: Taxonomy) -> list[FileJob]:
    rules = {k.lower(): v for k, v in layout.kinds.items()}
    seen: set[Path] = set()
    files: list[Path] = []
    for pattern in layout.globs:
        for p in root.glob(pattern):
            if p not in seen and (p.is_file() or p.is_symlink()) and not p.name.startswith("."):
                seen.add(p)
                files.append(p)
    jobs = []
    regex = re.compile(layout.song[len("regex:") :]) if layout.song.startswith("regex:") else None
    for p in sorted(files):
        rel_parts = p.relative_to(root).parts
        folders = [f.lower() for f in rel_parts[:-1]]
        kind = next((rules[f] for f in folders if f in rules), folders[0] if folders else "other")
        error = None
        if layout.names:
            kind = taxonomy.kind_of_name(p.name) or next((rules[f] for f in folders if f in rules), "unmapped")
            error = f"unmapped: no taxonomy rule for the file name and no folder in kinds ({p.name!r})" \
                if kind == "unmapped" else None
        if layout.song == "parent":
            song: str | None = "/".join(rel_parts[:-1]) or p.stem
        elif regex is not None:
            m = regex.search(p.stem)
            song = (m.group(1) if m and m.groups() else m.group(0)) if m else p.stem
        else:
            song = None
        if isinstance(layout.split, HashSplit):
            job = _job(src, root, p, (kind,), song, None, (layout.split.valid, layout.split.test))
        else:
            job = _job(src, root, p, (kind,), song, layout.split)
        jobs.append(job if error is None else replace(job, error=error))
    return jobs


def hash_split(song: str, valid: float, test: float) -> str:
    """Deterministic split of a song id: a uniform number from its hash against the fractions."""
    u = int.from_bytes(hashlib.blake2b(song.encode(), digest_size=8).digest(), "big") / 2**64
    return "test" if u < test else "valid" if u < test + valid else "train"
