"""Summing a song's tracks of one kind into one stem file, once, in the catalogue's cache.

A multitrack song (a studio session, a MedleyDB or MoisesDB song) often has several tracks of one kind (kick,
snare and overheads; lead and backing vocals). :func:`materialise` sums them sample for sample (mono tracks
repeated to the widest track's channels, shorter tracks zero-padded at the end, each times its gain) and writes
the sum as lossless audio: FLAC 24-bit when the sum stays within full scale (a sum of 16-bit tracks is then held
exactly), else 32-bit float WAV (nothing clipped). Beside it a JSON sidecar records the provenance (each source
track's path, gain, content hash, size and mtime); a later run whose tracks are unchanged finds the sidecar equal
and writes nothing, so the stem file keeps its size and mtime and ingest skips it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stemdb import audio as audio_io
from stemdb.atomic import write_text_atomic
from stemdb.errors import AudioReadError
from stemdb.measure import content_hash
from stemdb.shaping import fit_channels


@dataclass(frozen=True)
class TrackGroup:
    """The tracks of one kind in one song (absolute paths), with their gains and labels, and row flags."""

    song: str
    kind: str
    tracks: tuple[Path, ...]
    gains: tuple[float, ...] = ()
    labels: tuple[str | None, ...] = ()
    flags: tuple[str, ...] = field(default=())

    def gain(self, i: int) -> float:
        return self.gains[i] if self.gains else 1.0


def _signature(group: TrackGroup, root: Path) -> list[dict]:
    out = []
    for i, p in enumerate(group.tracks):
        st = p.stat()
        out.append({"path": p.relative_to(root).as_posix(), "gain": group.gain(i), "bytes": int(st.st_size),
                    "mtime_ns": int(st.st_mtime_ns),
                    "label": group.labels[i] if group.labels else None})
    return out


def materialise(group: TrackGroup, root: Path, out_stem: Path) -> tuple[Path, str]:
    """The summed stem of ``group`` (written when missing or its tracks changed) and its provenance JSON.

    Args:
        group: the tracks (under ``root``) to sum.
        root: the source root (paths in the provenance are relative to it).
        out_stem: the stem file's path without its ending (``.flac`` or ``.wav`` is added).

    Raises:
        AudioReadError: a track is unreadable, or the tracks' sample rates differ (naming the tracks).
    """
    sig = _signature(group, root)
    sidecar = out_stem.with_suffix(".json")
    with contextlib.suppress(OSError, ValueError):
        old = json.loads(sidecar.read_text())
        done = Path(old["file"])
        if old["signature"] == sig and done.is_file() and done.parent == out_stem.parent:
            return done, old["provenance"]
    total, rate, hashes = _sum_tracks(group)
    peak = float(np.max(np.abs(total))) if total.size else 0.0
    path = out_stem.with_suffix(".flac" if peak <= 1.0 else ".wav")
    audio_io.write(path, total, rate, subtype="PCM_24" if path.suffix == ".flac" else "FLOAT")
    other = out_stem.with_suffix(".wav" if path.suffix == ".flac" else ".flac")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(other)
    tracks = [{k: s[k] for k in ("path", "gain", "label")} | {"content_hash": h} for s, h in zip(sig, hashes,
                                                                                                   strict=True)]
    provenance = json.dumps({"song": group.song, "kind": group.kind, "tracks": tracks}, sort_keys=True)
    write_text_atomic(sidecar, json.dumps({"file": str(path), "signature": sig, "provenance": provenance},
                                          indent=1, sort_keys=True))
    return path, provenance


def _sum_tracks(group: TrackGroup) -> tuple[np.ndarray, int, list[str]]:
    loaded = []
    for p in group.tracks:
        a, info = audio_io.load(p)
        loaded.append((a, int(info.sample_rate)))
    rates = {r for _a, r in loaded}
    if len(rates) > 1:
        names = ", ".join(f"{p.name} ({r} Hz)" for p, (_a, r) in zip(group.tracks, loaded, strict=True))
        raise AudioReadError(group.tracks[0].parent, f"tracks of {group.kind!r} in song {group.song!r} have "
                                                     f"different sample rates: {names}; resample them first")
    channels = max(a.shape[0] for a, _r in loaded)
    length = max(a.shape[1] for a, _r in loaded)
    total = np.zeros((channels, length), np.float64)
    hashes = []
    for i, (a, rate) in enumerate(loaded):
        total[:, : a.shape[1]] += group.gain(i) * fit_channels(a, channels).astype(np.float64)
        hashes.append(content_hash(a, rate))
    return total.astype(np.float32), rates.pop(), hashes


__all__ = ["TrackGroup", "materialise"]
