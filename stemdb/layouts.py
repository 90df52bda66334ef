"""The track layouts: multitrack sessions, MedleyDB, MoisesDB and Slakh2100 as catalogue jobs.

Each scanner reads a song folder's tracks and what kind each is (the taxonomy, :mod:`stemdb.taxonomy`: file-name
rules for sessions, instrument labels for the datasets), groups the tracks of one kind per song, and
:func:`scan_tracks` turns each group into one :class:`stemdb.scan.FileJob`: the track itself when a kind has one,
else the sum of its tracks materialised in ``<catalog>/cache/<source>/<song>/<kind>.flac``
(:func:`stemdb.tracks.materialise`, provenance recorded). A song's mixture file is a job of kind ``mixture``. A
track no rule maps, or of a kind the layout does not keep (with no ``other`` to fold into), becomes a job that
ingest records as a reject with reason ``unmapped: ...``; a song whose metadata cannot be read, a reject naming
the metadata file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from stemdb import audio as audio_io
from stemdb.config import (
    HashSplit,
    MedleydbLayout,
    MoisesdbLayout,
    MultitrackLayout,
    SlakhLayout,
    SourceConfig,
)
from stemdb.scan import FileJob, _job
from stemdb.taxonomy import Taxonomy, normalise
from stemdb.tracks import TrackGroup, materialise

UNMAPPED = "unmapped"


@dataclass
class SongScan:
    """What a scanner found in one song: kind -> tracks, the mixture file, problems (path, reason), flags."""

    song: str
    folder: Path
    tracks: dict[str, list[tuple[Path, str | None]]] = field(default_factory=dict)  # kind -> [(path, label)]
    mixture: Path | None = None
    problems: list[tuple[Path, str]] = field(default_factory=list)
    flags: tuple[str, ...] = ()

    def add(self, kind: str | None, path: Path, label: str | None, kinds: tuple[str, ...], why: str) -> None:
        """File ``path`` under ``kind`` (folded into ``other`` when the layout does not keep it)."""
        if kind == "mixture":
            self.mixture = path
            return
        folded = kind if kind in kinds else "other" if kind is not None and "other" in kinds else None
        if folded is None:
            reason = f"{UNMAPPED}: {why}" if kind is None else \
                f"{UNMAPPED}: kind {kind!r} ({why}) is not among the layout's kinds {list(kinds)}"
            self.problems.append((path, reason))
        else:
            self.tracks.setdefault(folded, []).append((path, label))


def scan_tracks(src: SourceConfig, root: Path, *, cache: Path | None, taxonomy: Taxonomy) -> list[FileJob]:
    """The jobs of a track-layout source (see the module docstring).

    Args:
        src: the source (its layout one of :data:`stemdb.config.TRACK_LAYOUTS`).
        root: its root folder.
        cache: the catalogue's cache folder (summed stems go to ``cache/<source>/``).
        taxonomy: the label and file-name rules.

    Raises:
        ValueError: no ``cache`` given while a song needs a sum.
    """
    lay = src.layout
    scanner = {MultitrackLayout: _multitrack, MedleydbLayout: _medleydb, MoisesdbLayout: _moisesdb,
               SlakhLayout: _slakh}[type(lay)]
    jobs: list[FileJob] = []
    for song in scanner(root, lay, taxonomy):  # type: ignore[operator]
        jobs.extend(_song_jobs(src, root, song, cache))
    return jobs


def _song_jobs(src: SourceConfig, root: Path, song: SongScan, cache: Path | None) -> Iterator[FileJob]:
    lay = src.layout
    split = None if isinstance(lay.split, HashSplit) else lay.split
    hs = (lay.split.valid, lay.split.test) if isinstance(lay.split, HashSplit) else None

    def job(base: Path, p: Path, kind: str, **extra: object) -> FileJob:
        j = _job(src, base, p, (kind,), song.song, split, hs)
        return FileJob(**{**j.__dict__, "flags": song.flags, **extra})  # type: ignore[arg-type]

    for path, reason in song.problems:
        yield job(root, path, UNMAPPED if reason.startswith(UNMAPPED) else "error", error=reason)
    if song.mixture is not None and lay.mixture:
        yield job(root, song.mixture, "mixture")
    for kind, tracks in sorted(song.tracks.items()):
        group = TrackGroup(song.song, kind, tuple(p for p, _l in tracks), labels=tuple(lb for _p, lb in tracks),
                           flags=song.flags)
        if len(tracks) == 1:
            prov = {"song": song.song, "kind": kind, "tracks": [{"path": tracks[0][0].relative_to(root).as_posix(),
                                                                "gain": 1.0, "label": tracks[0][1]}]}
            yield job(root, tracks[0][0], kind, provenance=json.dumps(prov, sort_keys=True))
            continue
        if cache is None:
            raise ValueError(f"source {src.name!r}: summing the {kind} tracks of {song.song!r} needs a cache folder")
        base = cache / src.name
        stem = base / _safe(song.song) / kind
        try:
            path, prov_json = materialise(group, root, stem)
        except Exception as exc:  # noqa: BLE001 - a bad track becomes a reject of the summed stem, the run goes on
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            yield job(base, stem.with_suffix(".flac"), kind, error=f"sum of {len(tracks)} tracks failed: {reason}")
            continue
        yield job(base, path, kind, provenance=prov_json)


def _safe(name: str) -> str:
    return re.sub(r"[\\/\0]+", "_", name).strip() or "song"


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and audio_io.is_audio_path(p) and not audio_io.is_stem_mp4(p))


def _song_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _multitrack(root: Path, lay: MultitrackLayout, tax: Taxonomy) -> Iterator[SongScan]:
    direct = [p for p in root.iterdir() if p.is_file() and audio_io.is_audio_path(p)]
    for folder in [root] if direct else _song_dirs(root):
        song = SongScan(folder.name, folder)
        for p in _audio_files(folder):
            kind = tax.kind_of_name(p.name)
            song.add(kind, p, None, lay.kinds, f"no taxonomy rule for the file name {normalise(p.stem)!r}")
        yield song


def _label_kind(tax: Taxonomy, label: object) -> tuple[str | None, str | None]:
    labels = label if isinstance(label, list) else [label]
    for lb in labels:
        kind = tax.kind_of_label(str(lb)) if lb else None
        if kind is not None:
            return kind, str(lb)
    return None, ", ".join(map(str, labels))


def _read_meta(path: Path, song: SongScan, loader) -> dict | None:  # noqa: ANN001
    try:
        data = loader(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"top level is {type(data).__name__}, not a mapping")
        return data
    except Exception as exc:  # noqa: BLE001 - recorded as a reject naming the file
        song.problems.append((path, f"bad metadata: {type(exc).__name__}: {exc}"))
        return None


def _medleydb(root: Path, lay: MedleydbLayout, tax: Taxonomy) -> Iterator[SongScan]:
    for folder in _song_dirs(root):
        metas = sorted(folder.glob("*_METADATA.yaml"))
        if not metas:
            continue
        song = SongScan(folder.name, folder)
        meta = _read_meta(metas[0], song, yaml.safe_load)
        if meta is not None:
            song.flags = tuple(f for f in ("has_bleed", "instrumental") if str(meta.get(f, "")).lower() == "yes")
            stem_dir = folder / str(meta.get("stem_dir") or f"{folder.name}_STEMS")
            raw_dir = folder / str(meta.get("raw_dir") or f"{folder.name}_RAW")
            for sid, stem in sorted((meta.get("stems") or {}).items()):
                _medleydb_stem(song, stem or {}, stem_dir, raw_dir, lay, tax, sid)
            mix = folder / str(meta.get("mix_filename") or "")
            song.mixture = mix if meta.get("mix_filename") and mix.is_file() else None
        yield song


def _medleydb_stem(song: SongScan, stem: dict, stem_dir: Path, raw_dir: Path, lay: MedleydbLayout,
                   tax: Taxonomy, sid: str) -> None:
    kind, label = _label_kind(tax, stem.get("instrument"))
    why = f"no taxonomy rule for the instrument label {label!r} (stem {sid})"
    stem_file = stem_dir / str(stem.get("filename") or "")
    if lay.use_stems and stem.get("filename") and stem_file.is_file():
        song.add(kind, stem_file, label, lay.kinds, why)
        return
    raws = [raw_dir / str(r.get("filename")) for _rid, r in sorted((stem.get("raw") or {}).items())]
    if not raws:
        song.problems.append((stem_dir / f"{sid}", f"stem {sid}: no stem file and no raw tracks listed"))
    for p in raws:
        if p.is_file():
            song.add(kind, p, label, lay.kinds, why)
        else:
            song.problems.append((p, f"missing: raw track of stem {sid} listed in the metadata is not there"))


def _moisesdb(root: Path, lay: MoisesdbLayout, tax: Taxonomy) -> Iterator[SongScan]:
    for folder in _song_dirs(root):
        if not (folder / "data.json").is_file():
            continue
        song = SongScan(folder.name, folder)
        meta = _read_meta(folder / "data.json", song, json.loads)
        for stem in (meta or {}).get("stems") or []:
            name = str(stem.get("stemName", ""))
            kind, label = _label_kind(tax, name)
            for track in stem.get("tracks") or []:
                p = folder / name / f"{track.get('id')}.{track.get('extension', 'wav')}"
                if not p.is_file():
                    song.problems.append((p, f"missing: track {track.get('id')} of stem {name!r} is not there"))
                    continue
                song.add(kind, p, track.get("trackType") or label, lay.kinds,
                         f"no taxonomy rule for the stem name {name!r}")
        yield song


def _slakh(root: Path, lay: SlakhLayout, tax: Taxonomy) -> Iterator[SongScan]:
    for folder in _song_dirs(root):
        if not (folder / "metadata.yaml").is_file():
            continue
        song = SongScan(folder.name, folder)
        meta = _read_meta(folder / "metadata.yaml", song, yaml.safe_load)
        for sid, stem in sorted(((meta or {}).get("stems") or {}).items()):
            stem = stem or {}
            p = folder / "stems" / f"{sid}.flac"
            if stem.get("audio_rendered") is False and not p.is_file():
                continue  # Slakh lists instruments it did not render
            if not p.is_file():
                song.problems.append((p, f"missing: stem {sid} is listed as rendered but is not there"))
                continue
            kind, label = ("drums", "Drums") if stem.get("is_drum") else _label_kind(tax, stem.get("inst_class"))
            song.add(kind, p, label, lay.kinds, f"no taxonomy rule for the inst_class {label!r} ({sid})")
        mix = folder / "mix.flac"
        song.mixture = mix if mix.is_file() else None
        yield song


__all__ = ["UNMAPPED", "SongScan", "scan_tracks"]
