"""The training loop: mixed precision, gradient accumulation, LR milestones, checkpoints, resume, DDP, logging.

::

    from train.loop import Trainer, train_config
    cfg = train_config({"steps": 1000, "batch_size": 4, "lr_halve_every": 300})
    trainer = Trainer(model, cfg, out="runs/unet1", train_data=stream, valid=crops)
    result = trainer.fit()          # resumes from runs/unet1/checkpoints/ when there is one

or, from a ``data.yaml`` (what ``stemdb train``, ``python -m train`` and the ``train-model`` flow call)::

    from train.loop import train_run
    result = train_run("data.yaml", out="runs/unet1", model="unet", overrides={"steps": 1000})

Training practice (options of :class:`TrainConfig`, the ``train:`` section of ``data.yaml``):

- **precision**: ``auto`` is bf16 autocast on GPUs that support it, fp16 autocast with a ``GradScaler`` on the
  others, fp32 on CPU; ``bf16`` / ``fp16`` / ``fp32`` force one (bf16 autocast works on CPU too). The models keep
  their STFTs, LSTMs and normalisation statistics in float32 themselves. Adam's ``eps`` is 1e-4 under fp16
  (1e-8 would vanish in half precision), 1e-8 otherwise.
- **gradient accumulation**: ``accumulate`` micro-batches of ``batch_size`` items per optimizer step and process;
  the global batch is ``batch_size * accumulate * world_size``. Under DDP only the last micro-batch synchronises.
- **LR milestones**: ``MultiStepLR`` multiplying by ``lr_gamma`` (0.5: halving) at ``lr_milestones`` and/or every
  ``lr_halve_every`` optimizer steps.
- **speed switches**: ``torch.backends.cudnn.benchmark`` on CUDA and ``torch.set_flush_denormal(True)`` on CPU (both
  process-wide switches, set when a Trainer is built on that device; denormals make CPU convolutions 10-100x slower).
- **randomness**: the weights come from ``build_model(seed=...)``; dropout draws from torch's generator re-seeded
  at every step from (seed, step, rank) inside ``torch.random.fork_rng`` (the caller's random state is untouched and
  a resumed run draws exactly what an uninterrupted one draws); data order comes from explicit generators seeded
  from (seed, epoch, rank).
- **checkpoints** every ``checkpoint_every`` steps and at the end (rank 0 only; :mod:`train.checkpoint`), carrying
  everything a resume needs: step, epoch, position in the epoch, optimizer, scheduler, scaler and stream state.
  :meth:`Trainer.fit` resumes from the newest checkpoint in ``out`` and continues the step count and the LR
  schedule exactly.
- **logging**: ``<out>/train.csv`` (step, epoch, loss, lr, elapsed seconds, validation SDR / SI-SDR overall and per
  stem) and ``<out>/train.png`` (loss and SDR curves, matplotlib Agg), rewritten at every checkpoint; validation
  uses the fast whole-signal metrics of :mod:`train.metrics` on fixed crops of real multitracks (:func:`load_crops`).
- **DDP**: under ``torchrun`` (or :func:`init_distributed` with ``RANK``/``WORLD_SIZE`` set) the loss module is
  wrapped in ``DistributedDataParallel``; each rank reads its own share of the data (the stream's rank sharding, or
  a ``DistributedSampler`` for map-style datasets).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import Tensor, nn

from stemdb import audio
from stemdb.config import StemdbConfig, load_config
from stemdb.errors import ConfigError, StemdbError
from train.checkpoint import (
    checkpoint_path,
    code_version,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from train.losses import get_loss, loss_domain
from train.metrics import sdr, si_sdr
from train.models import SeparationModel, build_model, model_names
from train.models.spectral import SpectralMaskModel

logger = logging.getLogger(__name__)

#: The loss each model trains with unless ``train.loss`` says otherwise.
DEFAULT_LOSS: dict[str, str] = {"unet": "l1_spec", "blstm": "mse_spec", "convtasnet": "l1_wave"}
DEFAULT_LOSS["cunet"] = "l1_spec"
DEFAULT_LOSS["lasaft"] = "l1_wave"
DEFAULT_LOSS["d3net"] = "mse_spec"
#: Validation crops whose reference is quieter than this (RMS, dBFS) are not scored (instrumental vocals, rests).
SILENT_REFERENCE_DBFS: float = -60.0
CSV_NAME = "train.csv"
PNG_NAME = "train.png"
RUN_JSON = "run.json"

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class TrainingError(StemdbError):
    """Training cannot go on: non-finite loss, data that yields nothing, a checkpoint of another model."""


# --------------------------------------------------------------------------------------------------------------
# configuration


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidConfig(_Frozen):
    """Validation during training: fixed crops of real multitracks scored with fast SDR / SI-SDR.

    ``root``: a MUSDB18-HQ-layout folder (``<root>/[split/]<track>/<stem>.{wav,flac}``); ``None`` turns validation
    off. ``tracks``: names to use (default: the first ``max_tracks`` in name order). ``seconds``: crop length;
    ``crops_per_track`` crops evenly spaced over each track. ``every``: steps between validations (0: only at the
    end of :meth:`Trainer.fit`).
    """

    root: Path | None = None
    tracks: tuple[str, ...] = ()
    max_tracks: int = Field(4, ge=1)
    seconds: float = Field(10.0, gt=0.0, le=600.0)
    crops_per_track: int = Field(1, ge=1)
    every: int = Field(500, ge=0)
    batch_size: int = Field(4, ge=1)


class TrainConfig(_Frozen):
    """The ``train:`` section of ``data.yaml``; every key is validated (unknown keys are errors).

    Steps count optimizer steps; ``batch_size`` is per process and per micro-batch (see the module docstring).
    ``seconds`` defaults to ``remix.seconds``. ``data``: ``stream`` (the on-the-fly remix stream over the catalogue)
    or ``folders`` (random crops of rendered or real MUSDB18-HQ-layout folders at ``folders``, split
    ``folders_split``). ``sample_rate`` (e.g. 33075, 22050) and ``mono`` are the stream's output overrides (the
    model is built for what the stream yields); ``gpu_augment``: the recipe's pitch shift / time stretch run on the
    training device (:class:`train.gpu_augment.GpuAugment`) instead of the CPU renderer. ``epoch_length``: items
    per epoch (``None``: an endless stream; the LR schedule counts steps either way).
    ``max_minutes``: stop after this much training time (all ranks together). ``in_batch_remix``: group size of the
    Demucs-style in-batch remix (0 or 1: off).
    """

    model: str = "unet"
    model_options: dict[str, Any] = Field(default_factory=dict)
    loss: str | None = None
    data: Literal["stream", "folders"] = "stream"
    folders: Path | None = None
    folders_split: str = "train"
    sample_rate: int | None = Field(None, ge=8000, le=192000)
    mono: bool = False
    gpu_augment: bool = False
    seconds: float | None = Field(None, gt=0.0, le=600.0)
    batch_size: int = Field(4, ge=1)
    accumulate: int = Field(1, ge=1)
    steps: int = Field(100_000, ge=1)
    max_minutes: float | None = Field(None, gt=0.0)
    lr: float = Field(1e-3, gt=0.0)
    lr_milestones: tuple[int, ...] = ()
    lr_halve_every: int | None = Field(None, ge=1)
    lr_gamma: float = Field(0.5, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float | None = Field(None, gt=0.0)
    precision: Precision = "auto"
    device: str = "auto"
    seed: int = Field(0, ge=0)
    num_workers: int = Field(0, ge=0)
    epoch_length: int | None = Field(None, ge=1)
    in_batch_remix: int = Field(0, ge=0)
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    log_every: int = Field(10, ge=1)
    valid: ValidConfig = ValidConfig()
    cudnn_benchmark: bool = True
    flush_denormal: bool = True

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if v not in model_names():
            raise ValueError(f"model={v!r} is not allowed; allowed: {', '.join(model_names())}")
        return v

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                get_loss(v)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v == "auto" or v == "cpu" or v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"device={v!r} is not allowed; allowed: auto, cpu, cuda, cuda:N")

    @field_validator("lr_milestones")
    @classmethod
    def _milestones(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(m < 1 for m in v):
            raise ValueError(f"lr_milestones={list(v)} must be positive step numbers")
        return tuple(sorted(set(v)))

    @property
    def loss_name(self) -> str:
        """``loss``, or the model's default (:data:`DEFAULT_LOSS`)."""
        return self.loss or DEFAULT_LOSS[self.model]

    def milestones(self) -> list[int]:
        """Optimizer steps at which the LR is multiplied by ``lr_gamma`` (up to ``steps``)."""
        ms = set(self.lr_milestones)
        if self.lr_halve_every:
            ms.update(range(self.lr_halve_every, self.steps + 1, self.lr_halve_every))
        return sorted(ms)


def train_config(
    mapping: Mapping[str, Any] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    base: str | Path | None = None,
) -> TrainConfig:
    """Validate a ``train:`` mapping (plus ``overrides``, ``None`` values ignored) into a :class:`TrainConfig`.

    Args:
        mapping: the ``train:`` section of ``data.yaml``.
        overrides: keys that win over ``mapping`` (nested dicts, e.g. ``{"valid": {"every": 10}}``, are merged).
        base: folder that relative ``folders`` / ``valid.root`` paths are resolved against (the YAML's folder).

    Raises:
        ConfigError: unknown keys or bad values; the message names each key (``train.<key>``), value and what is
            allowed.
    """
    raw = _merge(dict(mapping or {}), {k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        cfg = TrainConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = "train." + ".".join(str(p) for p in err["loc"])
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{key}: {what} (got {err.get('input')!r})")
        first = "train." + ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise ConfigError("invalid training configuration:\n  " + "\n  ".join(lines), key=first) from exc
    root = Path(base) if base is not None else Path.cwd()

    def fix(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else (root / p).resolve()

    return cfg.model_copy(
        update={"folders": fix(cfg.folders), "valid": cfg.valid.model_copy(update={"root": fix(cfg.valid.root)})}
    )


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


# --------------------------------------------------------------------------------------------------------------
# devices, precision, distributed


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (e.g. ``(seed, epoch, rank)``)."""
    h = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 1


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``... in the
    environment) when ``WORLD_SIZE > 1`` and none is initialised yet; returns ``(rank, world_size)``.

    ``backend``: ``nccl`` when CUDA is available, else ``gloo`` (CPU). On CUDA the process takes the GPU
    ``LOCAL_RANK``.
    """
    if dist.is_initialized():
        return dist_info()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    logger.info("joined process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return dist_info()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; ``cuda`` under DDP also takes LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device: 'cuda' asked for but torch sees no CUDA device", key="train.device")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


@dataclass(frozen=True)
class AmpPolicy:
    """What ``precision`` resolves to on a device: the autocast dtype (``None``: fp32) and whether a GradScaler
    is used (fp16 only)."""

    name: Literal["fp32", "bf16", "fp16"]
    dtype: torch.dtype | None
    scaler: bool

    @property
    def adam_eps(self) -> float:
        """1e-4 under fp16, 1e-8 otherwise."""
        return 1e-4 if self.name == "fp16" else 1e-8

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """``torch.autocast`` for this policy (a null context in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_precision(precision: Precision, device: torch.device) -> AmpPolicy:
    """``auto``: bf16 on CUDA devices that support it, fp16 + GradScaler on older ones, fp32 on CPU."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "bf16":
        return AmpPolicy("bf16", torch.bfloat16, scaler=False)
    if precision == "fp16":
        return AmpPolicy("fp16", torch.float16, scaler=True)
    if precision == "fp32":
        return AmpPolicy("fp32", None, scaler=False)
    raise ConfigError(f"train.precision={precision!r} is not allowed; allowed: auto, fp32, bf16, fp16",
                      key="train.precision")


# --------------------------------------------------------------------------------------------------------------
# the loss as a module (so DDP sees the whole forward, also for the mask models' estimate())


class LossStep(nn.Module):
    """``forward(mixture (B, C, T), targets (B, S, C, T)) -> scalar loss`` for one model and one loss.

    Spectral losses compare the mask model's masked magnitudes (``model.estimate``) with the magnitudes of the true
    stems; waveform losses compare ``model(mixture)`` with the stems.
    """

    def __init__(self, model: SeparationModel, loss: str) -> None:
        super().__init__()
        self.model = model
        self.loss_name = loss
        self.loss_fn = get_loss(loss)
        self.domain = loss_domain(loss)
        if self.domain == "spec" and not isinstance(model, SpectralMaskModel):
            raise ConfigError(
                f"train.loss={loss!r} needs magnitudes but model {model.name!r} works on waveforms; "
                "allowed for it: si_sdr_loss, l1_wave",
                key="train.loss",
            )

    def forward(self, mixture: Tensor, targets: Tensor) -> Tensor:
        if targets.dim() != 4 or targets.shape[0] != mixture.shape[0] or targets.shape[-1] != mixture.shape[-1]:
            raise ValueError(
                f"targets must be (B, S, C, T) matching mixture {tuple(mixture.shape)}; got {tuple(targets.shape)}"
            )
        if self.domain == "spec":
            mags, _ = self.model.estimate(mixture)
            return self.loss_fn(mags, self.model.magnitude(targets))
        return self.loss_fn(self.model(mixture), targets)


def unused_parameters(step: LossStep, *, device: torch.device, seconds: float = 0.5) -> list[str]:
    """Names of the trainable parameters that get no gradient from ``step`` (probed once, in eval mode, on
    ``seconds`` of silence; gradients and running statistics are left as they were)."""
    model = step.model
    was_training = model.training
    n = max(round(seconds * model.sample_rate), getattr(model, "n_fft", 0) * 2, 64)
    mix = torch.zeros(1, model.channels, n, device=device)
    tgt = torch.zeros(1, len(model.targets), model.channels, n, device=device)
    saved = {name: p.grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None
    try:
        model.eval()
        step(mix, tgt).backward()
        return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        model.train(was_training)
        for name, p in model.named_parameters():
            p.grad = saved[name]


# --------------------------------------------------------------------------------------------------------------
# data


def is_indexed_stream(data: Any) -> bool:
    """True for the sharded, resumable streams of :mod:`train.data` (``RemixStream``, ``MixtureFolders``)."""
    import sys

    mod = sys.modules.get("train.data.base")
    return mod is not None and isinstance(data, mod.IndexedStream)


class ArrayDataset(torch.utils.data.Dataset):
    """A map-style dataset of fixed examples held in memory: item ``i`` is ``(mixtures[i], targets[i])``.

    Args:
        mixtures: ``(N, C, T)`` float.
        targets: ``(N, S, C, T)`` float.
    """

    def __init__(self, mixtures: Tensor, targets: Tensor) -> None:
        if mixtures.dim() != 3 or targets.dim() != 4 or targets.shape[0] != mixtures.shape[0] or (
            targets.shape[2:] != mixtures.shape[1:]
        ):
            raise ValueError(
                f"mixtures must be (N, C, T) and targets (N, S, C, T) of the same N, C, T; got "
                f"{tuple(mixtures.shape)} and {tuple(targets.shape)}"
            )
        self.mixtures, self.targets = mixtures.float(), targets.float()

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
        return ArrayDataset(self.mixture, self.targets)


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
    present, else the sum of the stems. Audio is resampled (soxr) to ``sample_rate`` and down- or up-mixed to
    ``channels`` (mono: channel mean; more: the mono signal repeated).

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
        stem_arrays = [_fit(layers[s] if layers[s] is not None else zeros, length) for s in stems]
        mix = _fit(layers["mixture"], length) if layers["mixture"] is not None else np.sum(stem_arrays, axis=0)
        for k in range(crops_per_track):
            start = max(0, length - frames) * (2 * k + 1) // (2 * crops_per_track)
            crop_names.append(f"{name}@{start / sample_rate:.2f}")
            mixes.append(_fit(mix[:, start:start + frames], frames))
            tgts.append(np.stack([_fit(a[:, start:start + frames], frames) for a in stem_arrays]))
    return Crops(tuple(crop_names), tuple(stems), torch.from_numpy(np.stack(mixes)),
                 torch.from_numpy(np.stack(tgts)), sample_rate)


def _read_stem(folder: Path, stem: str, sample_rate: int, channels: int) -> np.ndarray | None:
    for suffix in (".wav", ".flac"):
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            a, sr = audio.read(p)
            return to_channels(resample(a, sr, sample_rate), channels)
    return None


def resample(a: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """``(C, N)`` float32 resampled from ``sr_in`` to ``sr_out`` Hz with soxr (HQ); unchanged when equal."""
    if sr_in == sr_out:
        return a
    import soxr

    return np.ascontiguousarray(soxr.resample(a.T, sr_in, sr_out, quality="HQ").T.astype(np.float32))


def to_channels(a: np.ndarray, channels: int) -> np.ndarray:
    """``(C, N)`` -> ``(channels, N)``: same, mean to mono, or mono repeated (other cases raise ValueError)."""
    if a.shape[0] == channels:
        return a
    if channels == 1:
        return a.mean(axis=0, keepdims=True)
    if a.shape[0] == 1:
        return np.repeat(a, channels, axis=0)
    raise ValueError(f"cannot map {a.shape[0]} audio channels to {channels}; allowed: same, to mono, from mono")


def _fit(a: np.ndarray, n: int) -> np.ndarray:
    if a.shape[1] >= n:
        return np.ascontiguousarray(a[:, :n], dtype=np.float32)
    return np.pad(a, ((0, 0), (0, n - a.shape[1]))).astype(np.float32)


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


# --------------------------------------------------------------------------------------------------------------
# logging: CSV + PNG


def csv_columns(stems: Sequence[str]) -> list[str]:
    """The columns of ``train.csv``."""
    return ["step", "epoch", "loss", "lr", "elapsed_s", "valid_sdr", "valid_si_sdr", *[f"sdr_{s}" for s in stems]]


class CsvLog:
    """``train.csv``: one row per logged step; :meth:`truncate` drops rows after a resumed checkpoint's step."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path, self.columns = Path(path), list(columns)

    def truncate(self, after_step: int) -> None:
        """Keep the header and the rows with ``step <= after_step`` (rewritten atomically)."""
        rows = [r for r in read_csv(self.path) if int(r["step"]) <= after_step] if self.path.is_file() else []
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, row: Mapping[str, Any]) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as fh:
            w = csv.DictWriter(fh, self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``train.csv`` as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def plot_history(csv_path: str | Path, png_path: str | Path, *, title: str | None = None) -> Path:
    """Draw the loss curve and the validation SDR / SI-SDR curves of a ``train.csv`` into a PNG (Agg, atomic).

    Returns:
        ``png_path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_csv(csv_path)

    def series(col: str) -> tuple[list[int], list[float]]:
        pts = [(int(r["step"]), float(r[col])) for r in rows if r.get(col) not in (None, "")]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_sdr = fig.subplots(1, 2)
    x, y = series("loss")
    ax_loss.plot(x, y, color="tab:blue", lw=1)
    if y and min(y) > 0:
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    ax_loss.grid(alpha=0.3)
    stem_cols = [c for c in (rows[0].keys() if rows else []) if c.startswith("sdr_")]
    for col in stem_cols:
        x, y = series(col)
        if x:
            ax_sdr.plot(x, y, lw=0.8, alpha=0.6, marker=".", label=col[4:])
    for col, style in (("valid_sdr", "k-"), ("valid_si_sdr", "k--")):
        x, y = series(col)
        if x:
            ax_sdr.plot(x, y, style, lw=1.8, marker="o", ms=3, label="SDR" if col == "valid_sdr" else "SI-SDR")
    ax_sdr.set(xlabel="step", ylabel="dB", title="validation SDR")
    ax_sdr.grid(alpha=0.3)
    if ax_sdr.lines:
        ax_sdr.legend(fontsize=7, loc="best")
    else:
        ax_sdr.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax_sdr.transAxes)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png = Path(png_path)
    tmp = png.with_name(f".{png.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, png)
    return png


# --------------------------------------------------------------------------------------------------------------
# the trainer


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did. ``loss``: the last logged loss; ``valid``: the last validation metrics;
    ``steps_run``: optimizer steps in this call; rates are over this call's training time (validation and
    checkpoint writing excluded); ``history``: the rows logged in this call."""

    out: Path
    step: int
    epoch: int
    loss: float
    valid: dict[str, float]
    checkpoint: Path | None
    csv: Path
    png: Path | None
    steps_run: int
    train_seconds: float
    audio_seconds: float
    resumed_from: int | None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steps_per_s(self) -> float:
        return self.steps_run / self.train_seconds if self.train_seconds > 0 else math.nan

    @property
    def audio_seconds_per_s(self) -> float:
        """Seconds of mixture audio trained on per second, all ranks together."""
        return self.audio_seconds / self.train_seconds if self.train_seconds > 0 else math.nan

    def line(self) -> str:
        v = self.valid.get("valid_sdr", math.nan)
        return (f"trained to step {self.step} ({self.steps_run} steps, {self.steps_per_s:.2f} steps/s, "
                f"{self.audio_seconds_per_s:.1f} audio-s/s), loss {self.loss:.4g}, valid SDR {v:.2f} dB; "
                f"checkpoint {self.checkpoint}")


class Trainer:
    """Trains one :class:`SeparationModel` into a run folder ``out``.

    Args:
        model: the model (built with ``build_model(..., seed=...)``); moved to the device here.
        config: :class:`TrainConfig`.
        out: the run folder (``checkpoints/``, ``train.csv``, ``train.png``, ``run.json``).
        train_data: one of
            - a :mod:`train.data` stream (``RemixStream``, ``MixtureFolders``): batched by
              :class:`train.data.StreamLoader` (``batch_size``, ``num_workers``, straight to the device, GPU
              pitch/stretch when the stream defers it); ``set_epoch`` at each epoch, its ``state_dict()`` in every
              checkpoint and ``load_state_dict()`` on resume (exact mid-epoch position, each rank its own share);
            - another ``torch.utils.data.IterableDataset`` of ``(mixture (C, T), targets (S, C, T))`` or
              ``(index, mixture, targets)`` items: a DataLoader batches it (``set_epoch`` called when it has one);
              a resume skips the batches already trained on;
            - a map-style ``Dataset`` of such items (e.g. :class:`ArrayDataset`): shuffled per epoch by a
              ``DistributedSampler`` (seeded from ``seed``; each rank its share, ``drop_last``);
            - any re-iterable of ready batches ``(mixture (B, C, T), targets (B, S, C, T))`` (one pass = one epoch).
        valid: validation crops (:func:`load_crops`), scored on rank 0 every ``valid.every`` steps and at the end.
        stemdb_config: the resolved ``data.yaml`` as JSON data, recorded in checkpoints and ``run.json``.
        catalog_fingerprint: the training catalogue's fingerprint, recorded likewise (a resume warns on a change).
        extra: more plain metadata for the checkpoints (e.g. the data source).
    """

    def __init__(
        self,
        model: SeparationModel,
        config: TrainConfig,
        *,
        out: str | Path,
        train_data: Any,
        valid: Crops | None = None,
        stemdb_config: Mapping[str, Any] | None = None,
        catalog_fingerprint: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if config.model != model.name:
            config = config.model_copy(update={"model": model.name})
        self.cfg = config
        self.out = Path(out)
        self.rank, self.world = dist_info()
        self.device = resolve_device(config.device)
        self.amp = resolve_precision(config.precision, self.device)
        self._process_switches()
        self.model = model.to(self.device)
        self.loss_step = LossStep(self.model, config.loss_name)
        self.ddp = self.world > 1
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            unused = unused_parameters(self.loss_step, device=self.device)
            if unused:  # e.g. Conv-TasNet's last residual convolution, whose output nothing reads
                logger.info("DDP: %d parameter tensors get no gradient (%s); find_unused_parameters on",
                            len(unused), ", ".join(unused[:4]))
            self.wrapped: nn.Module = DistributedDataParallel(
                self.loss_step, device_ids=ids, find_unused_parameters=bool(unused)
            )
        else:
            self.wrapped = self.loss_step
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, eps=self.amp.adam_eps, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=config.milestones(), gamma=config.lr_gamma
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp.scaler)
        self.train_data = train_data
        self.valid = valid
        self.meta = {
            "stemdb_config": dict(stemdb_config) if stemdb_config is not None else None,
            "catalog_fingerprint": catalog_fingerprint,
            "extra": dict(extra or {}),
        }
        self.step = 0
        self.epoch = 0
        self.batches_in_epoch = 0
        self.elapsed_s = 0.0
        self.resumed_from: int | None = None
        self._stream_state: dict | None = None
        self._loader: Any = None
        self.csv = CsvLog(self.out / CSV_NAME, csv_columns(self.model.targets))

    # -- setup ---------------------------------------------------------------------------------------------------
    def _process_switches(self) -> None:
        if self.device.type == "cuda" and self.cfg.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        if self.device.type == "cpu" and self.cfg.flush_denormal:
            torch.set_flush_denormal(True)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The checkpoint payload (tensors and plain data only)."""
        stream = self.train_data.state_dict() if is_indexed_stream(self.train_data) else None
        return {
            "model_config": self.model.config(),
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "train_config": self.cfg.model_dump(mode="json"),
            **self.meta,
            "code_version": code_version(),
            "seed": self.cfg.seed,
            "step": self.step,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "world_size": self.world,
            "elapsed_s": self.elapsed_s,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.amp.scaler else None,
            "stream": stream,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def save(self) -> Path | None:
        """Write a checkpoint for the current step (rank 0; others return ``None``), prune old ones, redraw the
        PNG."""
        if not self.is_main:
            return None
        path = save_checkpoint(checkpoint_path(self.out, self.step), self.state())
        prune_checkpoints(self.out, self.cfg.keep_checkpoints)
        self._plot()
        logger.info("checkpoint %s", path)
        return path

    def load(self, path: str | Path) -> None:
        """Restore model, optimizer, scheduler, scaler, counters and stream position from a checkpoint.

        Raises:
            TrainingError: the checkpoint holds another architecture.
        """
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt["model_config"] != self.model.config():
            raise TrainingError(
                f"{ckpt['path']}: checkpoint of model {ckpt['model_config']} cannot resume model "
                f"{self.model.config()} (start a new run folder, or use the same model options)"
            )
        fp = self.meta["catalog_fingerprint"]
        if ckpt.get("catalog_fingerprint") not in (None, fp):
            logger.warning("resuming %s: catalogue fingerprint changed (%s -> %s); the data is not the same",
                           ckpt["path"], ckpt.get("catalog_fingerprint"), fp)
        self.model.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scheduler.milestones = Counter(self.cfg.milestones())  # the current config's schedule wins
        if self.amp.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.batches_in_epoch = int(ckpt["batches_in_epoch"])
        self.elapsed_s = float(ckpt.get("elapsed_s", 0.0))
        self._stream_state = ckpt.get("stream")
        if ckpt.get("world_size", 1) != self.world:
            logger.warning("resuming a %s-process run with %d processes: the data order changes",
                           ckpt.get("world_size"), self.world)
        self.resumed_from = self.step

    # -- data ----------------------------------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int, skip: int) -> Iterator[Any]:
        data = self.train_data
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, epoch, self.rank, "loader"))
        pin = self.device.type == "cuda"
        if is_indexed_stream(data):
            self._start_stream_epoch(data, epoch)
            return iter(self._stream_loader(data))
        if isinstance(data, torch.utils.data.IterableDataset):
            if hasattr(data, "set_epoch"):
                data.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                data, batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers, drop_last=True,
                pin_memory=pin, generator=gen,
            )
            it: Iterator[Any] = iter(loader)
        elif isinstance(data, torch.utils.data.Dataset):
            sampler = torch.utils.data.DistributedSampler(
                data, num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.cfg.seed % 2**31,
                drop_last=True,
            )
            sampler.set_epoch(epoch)
            indices = list(sampler)
            usable = len(indices) // self.cfg.batch_size * self.cfg.batch_size
            indices = indices[skip * self.cfg.batch_size: usable]
            skip = 0
            loader = torch.utils.data.DataLoader(
                data, batch_size=self.cfg.batch_size, sampler=indices, num_workers=self.cfg.num_workers,
                drop_last=True, pin_memory=pin, generator=gen,
            )
            it = iter(loader)
        else:
            if hasattr(data, "set_epoch"):
                data.set_epoch(epoch)
            it = iter(data)
        for _ in range(skip):
            next(it, None)
        return it

    def _start_stream_epoch(self, stream: Any, epoch: int) -> None:
        """Position a ``train.data`` stream at ``epoch``, or at the checkpoint's resume point within it."""
        state, self._stream_state = self._stream_state, None
        if state is not None and int(state.get("epoch", -1)) == epoch:
            if state.get("world_size") == self.world:
                stream.load_state_dict({**state, "rank": self.rank})  # every rank consumed as many items
                return
            logger.warning("stream state of a %s-process run: epoch %d restarts from its beginning",
                           state.get("world_size"), epoch)
        stream.set_epoch(epoch)
        stream.load_state_dict(stream.state_dict(consumed=0))  # from the epoch's first item, whatever came before

    def _stream_loader(self, stream: Any) -> Any:
        if self._loader is None:
            from train.data import StreamLoader

            augment = None
            if stream.has_aug_params:
                from train.gpu_augment import GpuAugment

                augment = GpuAugment().to(self.device)
            self._loader = StreamLoader(
                stream, batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers, drop_last=True,
                device=self.device, augment=augment, persistent_workers=self.cfg.num_workers > 0,
            )
        return self._loader

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            skip = self.batches_in_epoch
            n = 0
            for batch in self._epoch_batches(self.epoch, skip):
                n += 1
                self.batches_in_epoch += 1
                yield self._unpack(batch)
            if n == 0 and skip == 0:
                raise TrainingError(
                    f"training data yielded no batch in epoch {self.epoch} (fewer items than batch_size="
                    f"{self.cfg.batch_size} per process, or a one-shot iterator that is used up)"
                )
            self.epoch += 1
            self.batches_in_epoch = 0

    def _unpack(self, batch: Any) -> tuple[Tensor, Tensor]:
        if isinstance(batch, Mapping):
            mix, tgt = batch["mixture"], batch["targets"]
        else:
            parts = [b for b in batch if not isinstance(b, Mapping)]  # a stream's pitch/rate dict: see GpuAugment
            if len(parts) == 3:  # (index, mixture, targets)
                parts = parts[1:]
            if len(parts) != 2:
                raise TrainingError(f"a batch must be (mixture, targets) or (index, mixture, targets); got "
                                    f"{len(batch)} parts")
            mix, tgt = parts
        mix = torch.as_tensor(mix).to(self.device, torch.float32, non_blocking=True)
        tgt = torch.as_tensor(tgt).to(self.device, torch.float32, non_blocking=True)
        if tgt.dim() != 4 or tgt.shape[1] != len(self.model.targets):
            raise TrainingError(
                f"targets batch has shape {tuple(tgt.shape)}; expected (B, {len(self.model.targets)}, C, T) for "
                f"targets {list(self.model.targets)}"
            )
        return mix, tgt

    # -- one optimizer step ----------------------------------------------------------------------------------------
    def train_step(self, batches: Iterator[tuple[Tensor, Tensor]]) -> tuple[Tensor, float]:
        """One optimizer step over ``accumulate`` micro-batches; returns (mean loss as a 0-d tensor on the device,
        seconds of mixture audio this process trained on)."""
        self.model.train()
        acc = self.cfg.accumulate
        total = torch.zeros((), device=self.device)
        audio_s = 0.0
        for micro in range(acc):
            mix, tgt = next(batches)
            # after the data (a DataLoader may draw from the global generator when it starts an epoch)
            torch.manual_seed(derive_seed(self.cfg.seed, self.step, micro, self.rank, "step"))
            if self.cfg.in_batch_remix > 1:
                mix, tgt = self._remix(mix, tgt, micro)
            audio_s += mix.shape[0] * mix.shape[-1] / self.model.sample_rate
            last = micro == acc - 1
            sync = contextlib.nullcontext() if (not self.ddp or last) else self.wrapped.no_sync()
            with sync:
                with self.amp.autocast(self.device):
                    loss = self.wrapped(mix, tgt)
                self.scaler.scale(loss / acc).backward()
            total += loss.detach().float()
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return total / acc, audio_s

    def _remix(self, mix: Tensor, tgt: Tensor, micro: int) -> tuple[Tensor, Tensor]:
        from train.gpu_augment import in_batch_remix

        g = self.cfg.in_batch_remix
        if tgt.shape[0] % g:
            raise ConfigError(f"train.in_batch_remix={g} must divide batch_size={tgt.shape[0]}",
                              key="train.in_batch_remix")
        gen = torch.Generator(device=self.device).manual_seed(derive_seed(self.cfg.seed, self.step, micro, "remix"))
        tgt = in_batch_remix(tgt, group_size=g, generator=gen, first_group=self.rank * (tgt.shape[0] // g))
        return tgt.sum(dim=1), tgt

    # -- the loop ----------------------------------------------------------------------------------------------------
    def fit(self, *, resume: bool = True, max_steps: int | None = None) -> TrainResult:
        """Train until ``config.steps`` (or the absolute step ``max_steps``, or ``max_minutes``), resuming from the
        newest checkpoint in ``out`` when ``resume``; log every ``log_every`` steps, validate every
        ``valid.every`` steps and at the end, checkpoint every ``checkpoint_every`` steps and at the end.

        Raises:
            TrainingError: ``resume=False`` on a run folder that has checkpoints, a non-finite loss, data that
                yields no batch, or a checkpoint of another architecture.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        latest = latest_checkpoint(self.out)
        if latest is not None and self.step == 0:
            if not resume:
                raise TrainingError(f"{self.out}: run folder already has checkpoints ({latest.name}); "
                                    "resume it or train into a new folder")
            self.load(latest)
            logger.info("resumed %s at step %d (epoch %d)", latest, self.step, self.epoch)
        if self.is_main:
            if self.csv.path.is_file():
                self.csv.truncate(self.step)
            self._write_run_json()
        stop = min(self.cfg.steps, max_steps if max_steps is not None else self.cfg.steps)
        start_step, history = self.step, []
        loss_sum = torch.zeros((), device=self.device)
        n_sum, last_loss, last_valid, valid_step, last_ckpt = 0, math.nan, {}, -1, None
        train_s, audio_s = 0.0, 0.0
        budget = self.cfg.max_minutes * 60 if self.cfg.max_minutes else None
        every_valid = self.cfg.valid.every if self.valid is not None else 0

        def log_row() -> None:
            nonlocal n_sum, last_loss, last_valid, valid_step
            row: dict[str, Any] = {"step": self.step, "epoch": self.epoch, "lr": lr,
                                   "elapsed_s": round(self.elapsed_s, 3)}
            if n_sum:
                last_loss = self._mean_loss(loss_sum, n_sum)
                loss_sum.zero_()
                n_sum = 0
                row["loss"] = last_loss
            if self.valid is not None and (self.step == stop_now or (every_valid and self.step % every_valid == 0)):
                last_valid, valid_step = self._validate(), self.step
                row.update(last_valid)
            history.append(row)
            if self.is_main:
                self.csv.append(row)
                logger.info("step %d loss %.5g lr %.3g%s", self.step, last_loss, lr,
                            f" valid SDR {last_valid.get('valid_sdr', math.nan):.2f} dB"
                            if valid_step == self.step else "")

        stop_now = stop
        lr = self.optimizer.param_groups[0]["lr"]
        with torch.random.fork_rng(devices=self._rng_devices()):
            batches = self._batches()
            while self.step < stop:
                if self._out_of_time(budget):
                    stop_now = self.step
                    break
                lr = self.optimizer.param_groups[0]["lr"]
                t0 = time.perf_counter()
                loss, a_s = self.train_step(batches)
                loss_sum += loss
                n_sum += 1
                logging_now = self.step % self.cfg.log_every == 0
                if self.device.type == "cuda" and logging_now:
                    torch.cuda.synchronize(self.device)
                dt = time.perf_counter() - t0
                train_s += dt
                self.elapsed_s += dt
                audio_s += a_s * self.world
                if logging_now or (every_valid and self.step % every_valid == 0):
                    log_row()
                if self.step % self.cfg.checkpoint_every == 0:
                    last_ckpt = self.save()
        if self.step > start_step:
            if n_sum or (self.valid is not None and valid_step != self.step):
                stop_now = self.step
                log_row()
            if last_ckpt is None or self.step % self.cfg.checkpoint_every:
                last_ckpt = self.save()
        elif self.is_main:
            self._plot()
        png = self.out / PNG_NAME
        return TrainResult(
            out=self.out, step=self.step, epoch=self.epoch, loss=last_loss, valid=last_valid,
            checkpoint=last_ckpt if last_ckpt is not None else latest_checkpoint(self.out),
            csv=self.csv.path, png=png if png.is_file() else None, steps_run=self.step - start_step,
            train_seconds=train_s, audio_seconds=audio_s, resumed_from=self.resumed_from, history=history,
        )

    def _out_of_time(self, budget: float | None) -> bool:
        if budget is None:
            return False
        if not self.ddp:
            return self.elapsed_s >= budget
        flag = torch.tensor([1.0 if self.elapsed_s >= budget else 0.0], device=self.device)
        if self.ddp:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _mean_loss(self, loss_sum: Tensor, n: int) -> float:
        value = (loss_sum / max(n, 1)).detach().clone()
        if self.ddp:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world
        out = float(value.item())
        if not math.isfinite(out):
            raise TrainingError(
                f"loss is {out} at step {self.step} (precision {self.amp.name}); lower train.lr, set train.grad_clip "
                "or use precision fp32/bf16"
            )
        return out

    def _validate(self) -> dict[str, float]:
        if not self.is_main or self.valid is None:
            return {}
        return validate(self.model, self.valid, device=self.device, amp=self.amp,
                        batch_size=self.cfg.valid.batch_size)

    def _plot(self) -> None:
        if self.csv.path.is_file():
            try:
                plot_history(self.csv.path, self.out / PNG_NAME, title=f"{self.out.name}: {self.model.name}")
            except Exception as exc:  # a plot must never stop a training run
                logger.warning("could not draw %s: %s", self.out / PNG_NAME, exc)

    def _write_run_json(self) -> None:
        from stemdb.catalog import write_json_atomic

        write_json_atomic({
            "model_config": self.model.config(),
            "train_config": self.cfg.model_dump(mode="json"),
            **self.meta,
            "code_version": code_version(),
            "world_size": self.world,
            "device": str(self.device),
            "precision": self.amp.name,
            "loss": self.cfg.loss_name,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }, self.out / RUN_JSON)


# --------------------------------------------------------------------------------------------------------------
# from data.yaml to a trained run


def build_train_data(scfg: StemdbConfig, tcfg: TrainConfig, *, seconds: float) -> tuple[Any, str | None, dict]:
    """The training stream ``tcfg.data`` names: ``(stream, catalogue fingerprint or None, description)``.

    ``stream``: :class:`train.data.RemixStream` over ``scfg.catalog`` with ``scfg.remix``; ``folders``:
    :class:`train.data.MixtureFolders` random crops of ``tcfg.folders`` (split ``tcfg.folders_split``). Both read
    rank and world size from ``torch.distributed`` (each rank its own share), yield ``int16`` when training on CUDA
    from 16-bit material (half the bytes to move) and are batched by :class:`train.data.StreamLoader` in the
    Trainer.
    """
    from stemdb.catalog import Catalog
    from train.data import MixtureFolders, RemixStream

    cuda = resolve_device(tcfg.device).type == "cuda"
    if tcfg.data == "folders":
        if tcfg.folders is None:
            raise ConfigError("train.folders: needed when train.data is 'folders'", key="train.folders")
        ds = MixtureFolders(tcfg.folders, split=tcfg.folders_split, targets=scfg.remix.targets, seconds=seconds,
                            seed=tcfg.seed, epoch_length=tcfg.epoch_length, batch_size=tcfg.batch_size,
                            mono=tcfg.mono)
        return ds, None, {"data": "folders", "folders": str(tcfg.folders), "split": tcfg.folders_split}
    dtype = "int16" if cuda and scfg.remix.subtype == "PCM_16" else "float32"
    ds = RemixStream(scfg.catalog, scfg, seconds=seconds, seed=tcfg.seed, epoch_length=tcfg.epoch_length,
                     batch_size=tcfg.batch_size, sample_rate=tcfg.sample_rate, mono=tcfg.mono,
                     gpu_augment=tcfg.gpu_augment, dtype=dtype)
    fingerprint = Catalog.open(scfg.catalog).fingerprint()
    return ds, fingerprint, {"data": "stream", "catalog": str(scfg.catalog)}


def load_project(config: str | Path | StemdbConfig | None) -> tuple[StemdbConfig, Path]:
    """``(StemdbConfig, folder relative train paths resolve against)`` from a path, a config or ``None``
    (``./data.yaml`` when present, else the defaults)."""
    if isinstance(config, StemdbConfig):
        return config, Path.cwd()
    if config is None and Path("data.yaml").is_file():
        config = Path("data.yaml")
    if config is None:
        return load_config(None), Path.cwd()
    return load_config(config), Path(config).resolve().parent


def train_run(
    config: str | Path | StemdbConfig | None = None,
    *,
    out: str | Path,
    model: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = True,
    train_data: Any = None,
    valid: Crops | None = None,
    max_steps: int | None = None,
) -> TrainResult:
    """Train a bundled model as ``data.yaml`` describes (its ``remix`` targets, channels and rate; its ``train:``
    section, with ``overrides`` and ``model`` on top) into the run folder ``out``.

    Joins the ``torchrun`` process group when the environment describes one. ``train_data`` / ``valid`` replace
    the configured data (tests, benchmarks); otherwise the data comes from :func:`build_train_data` and the
    validation crops from ``train.valid.root``.
    """
    scfg, base = load_project(config)
    tcfg = train_config(scfg.train, overrides={**(overrides or {}), "model": model}, base=base)
    init_distributed()
    rank, _ = dist_info()
    seconds = tcfg.seconds or scfg.remix.seconds
    fingerprint, extra = None, {"data": "given"}
    if train_data is None:
        train_data, fingerprint, extra = build_train_data(scfg, tcfg, seconds=seconds)
    targets = tuple(getattr(train_data, "targets", scfg.remix.targets))
    channels = int(getattr(train_data, "channels", 1 if tcfg.mono else scfg.remix.channels))
    rate = int(getattr(train_data, "sample_rate", tcfg.sample_rate or scfg.remix.sample_rate))
    net = build_model(tcfg.model, targets=targets, channels=channels, sample_rate=rate, seed=tcfg.seed,
                      **tcfg.model_options)
    if valid is None and tcfg.valid.root is not None and rank == 0:
        v = tcfg.valid
        valid = load_crops(v.root, stems=targets, channels=channels, sample_rate=rate, seconds=v.seconds,
                           max_tracks=v.max_tracks, crops_per_track=v.crops_per_track, tracks=v.tracks)
    trainer = Trainer(net, tcfg, out=out, train_data=train_data, valid=valid,
                      stemdb_config=scfg.model_dump(mode="json"), catalog_fingerprint=fingerprint, extra=extra)
    return trainer.fit(resume=resume, max_steps=max_steps)


def iter_batches(mixtures: Tensor, targets: Tensor, *, batch_size: int) -> Iterable[tuple[Tensor, Tensor]]:
    """A re-iterable of ready batches over fixed tensors, in order (no shuffling): a tiny data source for
    benchmarks and smoke runs."""

    class _Batches:
        def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
            for i in range(0, mixtures.shape[0] - batch_size + 1, batch_size):
                yield mixtures[i:i + batch_size], targets[i:i + batch_size]

    return _Batches()


__all__ = [
    "DEFAULT_LOSS",
    "AmpPolicy",
    "ArrayDataset",
    "Crops",
    "CsvLog",
    "LossStep",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "ValidConfig",
    "build_train_data",
    "derive_seed",
    "dist_info",
    "init_distributed",
    "iter_batches",
    "load_crops",
    "load_project",
    "plot_history",
    "read_csv",
    "resolve_device",
    "resolve_precision",
    "train_config",
    "train_run",
    "validate",
]
