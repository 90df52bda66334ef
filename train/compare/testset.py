"""The held-out songs of a comparison, as a MUSDB18-HQ-layout folder that :mod:`train.evaluate` scores against.

A ``test.root`` folder is used where it is (``split`` / ``tracks`` pick from it); it is copied into
``<out>/testset/`` only when ``crop_seconds`` asks for the songs' beginnings. ``test.catalog_split`` takes the
catalogue's multitracks of that split (the targets of the remix config, catalogue kinds mapped to targets as the
remixer maps them; several stems of one target are summed; the mixture row, else the sum of the stems) and writes
them to ``<out>/testset/<song>/{mixture,<targets>}.wav`` (float WAV, the remix config's rate and channels). Either
way a held-out song that is also a training song of the catalogue is an error: the comparison would be scored on
what it trained on. ``testset/manifest.json`` records what was written; a rerun with the same inputs writes nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from augment.config import ProjectConfig
from augment.pool import target_of
from stemdb import audio
from stemdb.atomic import write_text_atomic
from stemdb.catalog import Catalog
from stemdb.config import fingerprint_of
from stemdb.errors import ConfigError
from stemdb.shaping import fit_channels, fit_length, resample
from train.compare.config import TestSet
from train.evaluate import MIXTURE, ReferenceTrack, find_tracks

logger = logging.getLogger(__name__)

TESTSET = "testset"


@dataclass(frozen=True)
class HeldOut:
    """The songs scored: ``root`` (MUSDB18-HQ layout), their names, and their durations in seconds."""

    root: Path
    tracks: tuple[str, ...]
    seconds: dict[str, float]

    @property
    def minutes(self) -> float:
        return sum(self.seconds.values()) / 60.0


def prepare_test_set(test: TestSet, project: ProjectConfig, out: Path) -> HeldOut:
    """Resolve (and where needed write) the held-out songs; see the module docstring.

    Raises:
        ConfigError: no songs, a named track missing, or a held-out song that the catalogue trains on.
    """
    catalog = Catalog.open(project.catalog)
    if test.catalog_split is not None:
        root, names = _from_catalog(test, project, catalog, Path(out) / TESTSET)
    else:
        assert test.root is not None
        root, names = _from_root(test, Path(out) / TESTSET)
    trained = set(catalog.stems(split="train", columns=["song"])["song"])
    leaked = sorted(set(names) & trained)
    if leaked:
        raise ConfigError(f"test: held-out songs {leaked} are training songs of the catalogue {project.catalog}; "
                          "hold them out of the catalogue (or pick other songs)", key="test")
    found = find_tracks(root, allow_stem_mp4=True)
    seconds = {n: _seconds(ReferenceTrack(n, found[n])) for n in names}
    return HeldOut(root, tuple(names), seconds)


def _from_root(test: TestSet, dest: Path) -> tuple[Path, list[str]]:
    assert test.root is not None
    found = find_tracks(test.root, allow_stem_mp4=True)
    names = sorted(n for n, p in found.items() if test.split is None or p.parent.name == test.split)
    if test.tracks:
        missing = sorted(set(test.tracks) - set(names))
        if missing:
            raise ConfigError(f"test.tracks: {missing} not under {test.root}"
                              + (f" (split {test.split})" if test.split else ""), key="test.tracks")
        names = list(test.tracks)
    if not names:
        raise ConfigError(f"test.root={str(test.root)!r}: no MUSDB18-HQ-layout tracks there"
                          + (f" in split {test.split!r}" if test.split else ""), key="test.root")
    if test.crop_seconds is None:
        return test.root, names
    stamp = {"root": str(test.root), "tracks": names, "crop_seconds": test.crop_seconds,
             "files": {n: _stat(found[n]) for n in names}}
    if not _is_current(dest, stamp):
        for name in names:
            ref = ReferenceTrack(name, found[name])
            stems = [s for s in ref.stems()]
            data, rate = _read_stems(ref, stems)
            frames = round(test.crop_seconds * rate)
            for stem, x in data.items():
                audio.write(dest / name / f"{stem}.wav", fit_length(x, min(frames, x.shape[1])), rate,
                            subtype="FLOAT")
        _stamp(dest, stamp)
    return dest, names


def _from_catalog(test: TestSet, project: ProjectConfig, catalog: Catalog, dest: Path) -> tuple[Path, list[str]]:
    rcfg = project.remix
    df = catalog.stems(split=test.catalog_split)
    songs: dict[str, Any] = {}
    for (song, source), rows in df.groupby(["song", "source"], sort=True):
        targets = {target_of(k, rcfg) for k in rows["kind"]}
        if not set(rcfg.targets) <= targets:
            continue
        lossy = bool(rows["lossy"].fillna(False).any()) if "lossy" in rows else False
        rank = (lossy, -float(rows["duration_s"].max()), str(source))  # lossless, longer, then by source name
        if song not in songs or rank < songs[song][0]:
            songs[song] = (rank, rows)
    if test.tracks:
        missing = sorted(set(test.tracks) - set(songs))
        if missing:
            raise ConfigError(f"test.tracks: {missing} are not complete multitracks of split {test.catalog_split!r} "
                              f"in {project.catalog}", key="test.tracks")
        songs = {s: songs[s] for s in test.tracks}
    if not songs:
        raise ConfigError(f"test.catalog_split={test.catalog_split!r}: no multitrack song of that split in "
                          f"{project.catalog} has every target ({', '.join(rcfg.targets)})", key="test.catalog_split")
    names = sorted(songs)
    stamp = {"catalog": catalog.fingerprint(), "split": test.catalog_split, "tracks": names,
             "crop_seconds": test.crop_seconds, "remix": fingerprint_of(rcfg)}
    if not _is_current(dest, stamp):
        for song in names:
            _write_song(songs[song][1], rcfg, dest / song, test.crop_seconds)
        _stamp(dest, stamp)
    return dest, names


def _write_song(rows: Any, rcfg: Any, folder: Path, crop_s: float | None) -> None:
    """A catalogue multitrack as ``folder/{mixture,<targets>}.wav`` at the remix rate and channel count."""
    rate, ch = rcfg.sample_rate, rcfg.channels
    parts: dict[str, list[np.ndarray]] = {}
    for row in rows.itertuples():
        x, sr = audio.read(Path(row.root) / row.path, stream=None if row.stream < 0 else int(row.stream))
        key = MIXTURE if row.kind == MIXTURE else target_of(row.kind, rcfg)
        if key == MIXTURE or key in rcfg.targets:
            parts.setdefault(key, []).append(fit_channels(resample(x, sr, rate), ch))
    n = max(a.shape[1] for group in parts.values() for a in group)
    if crop_s is not None:
        n = min(n, round(crop_s * rate))
    stems = {t: np.sum([fit_length(a, n) for a in parts[t]], axis=0, dtype=np.float32) for t in rcfg.targets}
    mixture = (fit_length(parts[MIXTURE][0], n) if MIXTURE in parts
               else np.sum(list(stems.values()), axis=0, dtype=np.float32))
    for name, x in {MIXTURE: mixture, **stems}.items():
        audio.write(folder / f"{name}.wav", x, rate, subtype="FLOAT")


def _read_stems(ref: ReferenceTrack, stems: list[str]) -> tuple[dict[str, np.ndarray], int]:
    if ref.is_stem_mp4:
        data, rate = audio.read_stem_mp4(ref.path, streams=[audio.STEM_MP4_STREAMS.index(s) for s in stems])
        return dict(zip(stems, data, strict=True)), rate
    out, rate = {}, 0
    for stem in stems:
        path = ref.stem_path(stem)
        assert path is not None
        out[stem], rate = audio.read(path)
    return out, rate


def _seconds(ref: ReferenceTrack) -> float:
    path = ref.stem_path(MIXTURE) or ref.path
    info = audio.info(path, stream=0 if ref.is_stem_mp4 else None)
    return info.frames / info.sample_rate


def _stat(path: Path) -> list:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _is_current(dest: Path, stamp: dict[str, Any]) -> bool:
    manifest = dest / "manifest.json"
    try:
        return json.loads(manifest.read_text(encoding="utf-8")) == json.loads(json.dumps(stamp))
    except (OSError, ValueError):
        return False


def _stamp(dest: Path, stamp: dict[str, Any]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest / "manifest.json", json.dumps(stamp, indent=2) + "\n")


__all__ = ["TESTSET", "HeldOut", "prepare_test_set"]
