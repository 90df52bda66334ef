"""Validation during training: fixed crops of real multitracks (:func:`load_crops`) scored with the fast
whole-signal SDR / SI-SDR of :mod:`train.metrics` (:func:`validate`), and the in-memory datasets built on them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from stemdb import audio
from stemdb.errors import ConfigError
from stemdb.shaping import fit_channels, fit_length, resample
from train.metrics import sdr, si_sdr
from train.models import SeparationModel
from train.runtime import AmpPolicy

#: Validation crops whose reference is quieter than this (RMS, dBFS) are not scored (instrumental vocals, rests).
SILENT_REFERENCE_DBFS: float = -60.0


class ArrayDataset(torch.utils.data.Dataset):
    """A map-style dataset of fixed examples held in memory: item ``i`` is ``(mixtures[i], targets[i])``.

    Args:
        mixtures: ``(N, C, T)`` float.
        targets: ``(N, S, C, T)`` float.
        stems: the names of the ``S`` axis, when known (a per-target run picks its stems by name).
    """

    def __init__(self, mixtures: Tensor, targets: Tensor, stems: Sequence[str] | None = None) -> None:
        if mixtures.dim() != 3 or targets.dim() != 4 or targets.shape[0] != mixtures.shape[0] or (
            targets.shape[2:] != mixtures.shape[1:]
        ):
            raise ValueError(
                f"mixtures must be (N, C, T) and targets (N, S, C, T) of the same N, C, T; got "
                f"{tuple(mixtures.shape)} and {tuple(targets.shape)}"
            )
        self.mixtures, self.targets = mixtures.float(), targets.float()
        self.stems = tuple(stems) if stems is not None else None
        if self.stems is not None and len(self.stems) != targets.shape[1]:
            raise ValueError(f"stems {list(self.stems)} do not name the {targets.shape[1]} targets")

    def __len__(self) -> int:
        return self.mixtures.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.mixtures[i], self.targets[i]


@dataclass(frozen=True)
class Crops:
    """Fixed crops of multitracks: ``names[i]`` is ``"<track>@<start_s>"``; ``mixture`` ``(N, C, T)``,
    ``targets`` ``(N, S, C, T)`` float32 in ``stems`` order; ``sample_rate`` in Hz."""

    names: tuple[str, ...]
    stems: tuple[str, ...]
    mixture: Tensor
    targets: Tensor
    sample_rate: int

    def dataset(self) -> ArrayDataset:
        """The crops as an :class:`ArrayDataset` (to train on them)."""
        return ArrayDataset(self.mixture, self.targets, self.stems)


def load_crops(
    root: str | Path,
    *,
    stems: Sequence[str],
    channels: int,
    sample_rate: int,
    seconds: float,
    max_tracks: int = 4,
    crops_per_track: int = 1,
    tracks: Sequence[str] = (),
) -> Crops:
    """Read fixed crops of MUSDB18-HQ-layout tracks (through :mod:`stemdb.audio`).

    Track folders are found as :func:`train.evaluate.find_tracks` finds them (split folders allowed); ``tracks``
    picks names, else the first ``max_tracks`` in name order. Each track gives ``crops_per_track`` crops of
    ``seconds`` evenly spaced over its length (one crop: the middle); a track shorter than a crop is zero-padded.
    A missing stem file is silence (not scored by :func:`validate`); the mixture is ``mixture.{wav,flac}`` when
    present, else the sum of the stems. Audio is resampled (soxr) to ``sample_rate`` and its channels fitted to
    ``channels`` by :mod:`stemdb.shaping`'s rule.

    Raises:
        ConfigError: no track folders under ``root``, or a named track that is not there.
    """
    from train.evaluate import find_tracks

    found = find_tracks(Path(root))
    if not found:
        raise ConfigError(f"train.valid.root={str(root)!r}: no MUSDB18-HQ-layout track folders there",
                          key="train.valid.root")
    missing = [t for t in tracks if t not in found]
    if missing:
        raise ConfigError(f"train.valid.tracks: {missing} not under {root} (have {sorted(found)})",
                          key="train.valid.tracks")
    names = list(tracks) or sorted(found)[:max_tracks]
    frames = round(seconds * sample_rate)
    crop_names, mixes, tgts = [], [], []
    for name in names:
        folder = found[name]
        layers = {s: _read_stem(folder, s, sample_rate, channels) for s in ("mixture", *stems)}
        length = max(a.shape[1] for a in layers.values() if a is not None)
        zeros = np.zeros((channels, length), np.float32)
        stem_arrays = [fit_length(layers[s] if layers[s] is not None else zeros, length) for s in stems]
        mix = fit_length(layers["mixture"], length) if layers["mixture"] is not None else np.sum(stem_arrays, axis=0)
        for k in range(crops_per_track):
            start = max(0, length - frames) * (2 * k + 1) // (2 * crops_per_track)
            crop_names.append(f"{name}@{start / sample_rate:.2f}")
            mixes.append(fit_length(mix[:, start:start + frames], frames))
            tgts.append(np.stack([fit_length(a[:, start:start + frames], frames) for a in stem_arrays]))
    return Crops(tuple(crop_names), tuple(stems), torch.from_numpy(np.stack(mixes)),
                 torch.from_numpy(np.stack(tgts)), sample_rate)


def _read_stem(folder: Path, stem: str, sample_rate: int, channels: int) -> np.ndarray | None:
    for suffix in (".wav", ".flac"):
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            a, sr = audio.read(p)
            return fit_channels(resample(a, sr, sample_rate), channels)
    return None


@torch.no_grad()
def validate(
    model: SeparationModel,
    crops: Crops,
    *,
    device: torch.device | str = "cpu",
    amp: AmpPolicy | None = None,
    batch_size: int = 4,
) -> dict[str, float]:
    """Fast validation: whole-crop SDR and SI-SDR (:mod:`train.metrics`) of the model's estimates.

    Crops whose reference is below :data:`SILENT_REFERENCE_DBFS` are not scored. Per stem the median over the
    scored crops; ``valid_sdr`` / ``valid_si_sdr`` are the means of the stems' medians (NaN if nothing scored).

    Returns:
        ``{"valid_sdr", "valid_si_sdr", "sdr_<stem>"...}`` in dB.
    """
    device = torch.device(device)
    amp = amp or AmpPolicy("fp32", None, False)
    was_training = model.training
    model.eval()
    sdrs, sis = [], []
    try:
        for i in range(0, crops.mixture.shape[0], batch_size):
            mix = crops.mixture[i:i + batch_size].to(device)
            ref = crops.targets[i:i + batch_size].to(device)
            with amp.autocast(device):
                est = model(mix)
            est = est.float()
            rms_db = 10 * torch.log10(ref.pow(2).mean(dim=(-1, -2)) + 1e-20)
            silent = rms_db < SILENT_REFERENCE_DBFS
            sdrs.append(sdr(est, ref).masked_fill(silent, float("nan")).cpu())
            sis.append(si_sdr(est, ref).masked_fill(silent, float("nan")).cpu())
    finally:
        model.train(was_training)
    sdr_all, si_all = torch.cat(sdrs).numpy(), torch.cat(sis).numpy()
    out: dict[str, float] = {}
    per_sdr, per_si = [], []
    with np.errstate(all="ignore"), _quiet_nan_warnings():
        for s, stem in enumerate(crops.stems):
            a, b = sdr_all[:, s], si_all[:, s]
            per_sdr.append(float(np.nanmedian(a)) if np.isfinite(a).any() else math.nan)
            per_si.append(float(np.nanmedian(b)) if np.isfinite(b).any() else math.nan)
            out[f"sdr_{stem}"] = per_sdr[-1]
        out["valid_sdr"] = float(np.nanmean(per_sdr)) if np.isfinite(per_sdr).any() else math.nan
        out["valid_si_sdr"] = float(np.nanmean(per_si)) if np.isfinite(per_si).any() else math.nan
    return out


@contextlib.contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


__all__ = ["SILENT_REFERENCE_DBFS", "ArrayDataset", "Crops", "load_crops", "validate"]
