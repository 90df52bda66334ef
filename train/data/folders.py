"""Rendered or real MUSDB18-HQ-layout sets: random crops as a stream (``MixtureFolders``), full tracks for
validation (``MusdbTracks``, which reads what the ``musdb`` package reads without needing ffmpeg).

Layout: ``<root>/<split>/<track>/{mixture,<target>...}.wav`` (FLAC accepted by ``MixtureFolders``) - what
``augment.build.build_remix`` writes and what MUSDB18-HQ ships.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from stemdb import audio as audio_io
from stemdb.config import MUSDB_TARGETS
from stemdb.errors import ConfigError
from train.data.base import IndexedStream

#: Entropy word of the crop generator ``SeedSequence([seed, epoch, index, CROP_TAG])``.
CROP_TAG = 0x63726F70  # "crop"
_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True)
class TrackFiles:
    """One track folder: ``files`` name -> path (``mixture`` optional), common ``frames``, rate (Hz), channels."""

    name: str
    files: dict[str, Path]
    frames: int
    sample_rate: int
    channels: int
    int16: dict[str, bool]


def scan_tracks(root: str | Path, split: str, targets: Sequence[str]) -> list[TrackFiles]:
    """Track folders under ``root/split`` that hold every target (headers only; sorted by name).

    Raises:
        ConfigError: no such folder, no complete track, or tracks at different sample rates.
    """
    base = Path(root) / split
    if not base.is_dir():
        raise ConfigError(f"root={str(root)!r}, split={split!r}: no folder {base}", key="root")
    tracks = []
    for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = {}
        for name in ("mixture", *targets):
            found = [d / f"{name}{s}" for s in _SUFFIXES if (d / f"{name}{s}").is_file()]
            if found:
                files[name] = found[0]
        if not all(t in files for t in targets):
            continue
        infos = {n: audio_io.info(p) for n, p in files.items()}
        rates = {i.sample_rate for i in infos.values()}
        if len(rates) != 1:
            raise ConfigError(f"{d}: files at different sample rates {sorted(rates)}", key="root")
        tracks.append(TrackFiles(d.name, files, min(i.frames for i in infos.values()), rates.pop(),
                                 max(i.channels for i in infos.values()),
                                 {n: i.subtype == "PCM_16" for n, i in infos.items()}))
    if not tracks:
        raise ConfigError(f"{base}: no track folder holds every target {list(targets)}", key="root")
    rates = sorted({t.sample_rate for t in tracks})
    if len(rates) != 1:
        raise ConfigError(f"{base}: tracks at different sample rates {rates}; resample the set first", key="root")
    return tracks


def read_into(path: Path, start: int, out: np.ndarray, *, int16: bool) -> None:
    """Read ``out.shape[1]`` frames from ``start`` into float32 ``out`` (C, T): int16 reads where the file is 16-bit,
    channels converted (mono copied, several averaged for mono output), zeros past the end."""
    c, t = out.shape
    a, _ = audio_io.read(path, start=start, frames=t, dtype="int16" if int16 else "float32")
    m = a.shape[1]
    scale = np.float32(1.0 / 32768.0) if int16 else np.float32(1.0)
    if a.shape[0] == c:
        np.multiply(a, scale, out=out[:, :m], casting="unsafe")
    elif a.shape[0] == 1:
        np.multiply(a[0], scale, out=out[0, :m], casting="unsafe")
        out[1:, :m] = out[0, :m]
    elif c == 1:
        np.multiply(a.mean(axis=0, dtype=np.float32), scale, out=out[0, :m])
    else:
        np.multiply(a[:c], scale, out=out[:, :m], casting="unsafe")
    if m < t:
        out[:, m:] = 0.0


class MixtureFolders(IndexedStream):
    """Random crops from a MUSDB18-HQ-layout set, as a sharded, resumable stream.

    Item ``i`` of epoch ``e``: a track drawn with probability proportional to its length and a uniform window
    start, both from ``default_rng(SeedSequence([seed, e, i, CROP_TAG]))``; yields ``(mixture (C, T), targets
    (S, C, T))`` (``index`` first with ``with_index``) of ``dtype``, ``T = round(seconds * sample_rate)``. The mixture
    is the track's ``mixture`` file when there is one (a real mix), else the sum of the targets. Tracks shorter than
    ``T`` are zero-padded.

    Args:
        root: the set's folder (holding ``split``).
        split: sub-folder, e.g. ``train``, ``valid``, ``test``.
        targets: stem names in output order.
        seconds: crop length (s).
        mono: one channel (average of the file's channels).
        seed, epoch_length, rank, world_size, with_index, batch_size, dtype: see :class:`IndexedStream`.
    """

    def __init__(self, root: str | Path, *, split: str = "train", targets: Sequence[str] = MUSDB_TARGETS,
                 seconds: float = 6.0, seed: int = 0, epoch_length: int | None = 1000, rank: int | None = None,
                 world_size: int | None = None, with_index: bool = False, mono: bool = False,
                 dtype: str = "float32", batch_size: int = 1) -> None:
        super().__init__(seed=seed, epoch_length=epoch_length, rank=rank, world_size=world_size,
                         with_index=with_index, batch_size=batch_size, dtype=dtype)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 600:
            raise ConfigError(f"seconds={seconds!r} is not allowed: a duration in (0, 600] seconds", key="seconds")
        if not targets:
            raise ConfigError("targets=() is not allowed: name at least one stem", key="targets")
        self.root = Path(root)
        self._targets = tuple(targets)
        self.tracks = scan_tracks(root, split, self._targets)
        self.sample_rate = self.tracks[0].sample_rate
        self.mono = bool(mono)
        self._channels = 1 if mono else max(t.channels for t in self.tracks)
        self.seconds = float(seconds)
        self._frames = int(round(self.seconds * self.sample_rate))
        self._cum = np.cumsum([t.frames for t in self.tracks], dtype=np.float64)

    @property
    def targets(self) -> tuple[str, ...]:
        return self._targets

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def on_grid16(self) -> bool:
        averaged = self.mono and any(t.channels > 1 for t in self.tracks)  # a mean of two samples is off-grid
        return not averaged and all(all(t.int16.values()) for t in self.tracks)

    def crop(self, index: int, epoch: int | None = None) -> tuple[TrackFiles, int]:
        """``(track, start frame)`` of item ``index`` of ``epoch`` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch), int(index), CROP_TAG]))
        k = int(np.searchsorted(self._cum, rng.random() * self._cum[-1], side="right"))
        track = self.tracks[min(k, len(self.tracks) - 1)]
        start = int(rng.integers(0, max(0, track.frames - self._frames) + 1))
        return track, start

    def _render_float(self, index: int, epoch: int, mixture: np.ndarray, targets: np.ndarray) -> None:
        track, start = self.crop(index, epoch)
        for s, name in enumerate(self._targets):
            read_into(track.files[name], start, targets[s], int16=track.int16[name])
        if "mixture" in track.files:
            read_into(track.files["mixture"], start, mixture, int16=track.int16["mixture"])
        else:
            np.sum(targets, axis=0, out=mixture)
        return None


class MusdbTracks(Dataset):
    """Full tracks of a MUSDB18(-HQ) folder, for validation, read the way the ``musdb`` package reads them (same
    tracks, order, splits and targets) but through :mod:`stemdb.audio`, so no ffmpeg program is needed.

    ``dataset[i]`` is ``(mixture (C, T), targets (S, C, T), name)``: float32 tensors at the set's rate (44.1 kHz for
    MUSDB18), ``S`` in ``targets`` order, ``T`` the whole track.

    Args:
        root: the MUSDB18(-HQ) folder (holding ``train/`` and ``test/``).
        subsets: ``"train"``, ``"test"`` or both; tracks are sorted by name within each subset, subsets in order.
        split: ``"train"`` / ``"valid"`` (MUSDB18's official validation tracks, as the installed ``musdb`` package
            lists them, within ``subsets="train"``) or None.
        targets: ``vocals``, ``drums``, ``bass``, ``other``, ``accompaniment`` (drums + bass + other),
            ``linear_mixture`` (the sum of the four), as musdb names them.
        is_wav: the HQ layout (``<track>/<stem>.wav`` folders) instead of ``<track>.stem.mp4`` files.
        mono: average the channels.
    """

    SOURCES = ("vocals", "drums", "bass", "other")
    SUMS = {"accompaniment": ("drums", "bass", "other"), "linear_mixture": ("vocals", "drums", "bass", "other")}

    def __init__(self, root: str | Path, *, subsets: str | Sequence[str] = "test", split: str | None = None,
                 targets: Sequence[str] = MUSDB_TARGETS, is_wav: bool = True, mono: bool = False) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ConfigError(f"root={str(root)!r} is not a folder", key="root")
        subsets = [subsets] if isinstance(subsets, str) else list(subsets)
        if split not in (None, "train", "valid"):
            raise ConfigError(f"split={split!r} is not allowed: None, 'train' or 'valid'", key="split")
        if split is not None and subsets != ["train"]:
            raise ConfigError(f"split={split!r} needs subsets='train' (got {subsets!r})", key="split")
        allowed = (*self.SOURCES, *self.SUMS)
        unknown = [t for t in targets if t not in allowed]
        if unknown:
            raise ConfigError(f"targets {unknown} are not allowed: musdb knows {list(allowed)}", key="targets")
        from stemdb.scan import musdb_validation_tracks  # the package's list, read without importing musdb

        valid = musdb_validation_tracks()
        self.tracks: list[tuple[str, Path]] = []
        for subset in subsets:
            folder = root / subset
            entries = sorted(folder.iterdir()) if folder.is_dir() else []
            for e in entries:
                name = e.name[: -len(".stem.mp4")] if not is_wav and audio_io.is_stem_mp4(e) else e.name
                usable = e.is_dir() and (e / "mixture.wav").is_file() if is_wav else audio_io.is_stem_mp4(e)
                if not usable or (split == "valid" and name not in valid) or (split == "train" and name in valid):
                    continue
                self.tracks.append((name, e))
        if not self.tracks:
            raise ConfigError(f"no tracks under {root} (subsets={subsets!r}, split={split!r}, is_wav={is_wav})",
                              key="root")
        self.targets = tuple(targets)
        self.is_wav = bool(is_wav)
        self.mono = bool(mono)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.tracks]

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} tracks")
        name, path = self.tracks[i]
        mix, stems = self._read(path)
        tgt = np.stack([self._chan(self._target(stems, t)) for t in self.targets])
        return torch.from_numpy(self._chan(mix)), torch.from_numpy(tgt), name

    def _read(self, path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if self.is_wav:
            mix = audio_io.read(path / "mixture.wav")[0]
            return mix, {s: audio_io.read(path / f"{s}.wav")[0] for s in self.SOURCES}
        data, _ = audio_io.read_stem_mp4(path)  # streams: mixture, drums, bass, other, vocals
        return data[0], {s: data[audio_io.STEM_MP4_STREAMS.index(s)] for s in self.SOURCES}

    def _target(self, stems: dict[str, np.ndarray], name: str) -> np.ndarray:
        if name in self.SUMS:
            return np.sum([stems[s].astype(np.float64) for s in self.SUMS[name]], axis=0).astype(np.float32)
        return stems[name]

    def _chan(self, a: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(a, dtype=np.float32)
        return x.mean(axis=0, keepdims=True) if self.mono else x
