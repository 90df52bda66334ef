"""The ``train:`` section of ``data.yaml``: :class:`TrainConfig` (and its ``valid:`` part), validated at use.

Every key is validated (unknown keys are errors); a failure is a :class:`stemdb.errors.ConfigError` naming
``train.<key>``, the value and what is allowed (through :func:`stemdb.config.validate_config`). A model's default
loss is its class's ``default_loss`` (:mod:`train.models`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stemdb.config import merge_overrides, validate_config
from train.losses import get_loss
from train.models import model_class, model_names

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # NaN/inf: never a setting


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
    Demucs-style in-batch remix (0 or 1: off). ``targets``: the stems this run's model separates (a per-target
    run: ``[vocals]``, its own loss, steps, LR and options; ``stemdb bundle`` joins such runs); empty: every stem
    the data yields. ``conditioning`` (conditioned models: ``cunet``, ``lasaft``): ``draw`` one target per item and
    step (the papers' training, one pass per item) or ``all`` targets for every item (``S`` passes per item).
    """

    model: str = "unet"
    model_options: dict[str, Any] = Field(default_factory=dict)
    targets: tuple[str, ...] = ()
    conditioning: Literal["draw", "all"] = "draw"
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
            raise ValueError(f"allowed: {', '.join(model_names())}")
        return v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        dup = sorted({t for t in v if v.count(t) > 1})
        if dup or not all(v):
            raise ValueError(f"stem names must be distinct and non-empty (repeated: {dup})")
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
        raise ValueError("allowed: auto, cpu, cuda, cuda:N")

    @field_validator("lr_milestones")
    @classmethod
    def _milestones(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(m < 1 for m in v):
            raise ValueError("must be positive step numbers")
        return tuple(sorted(set(v)))

    @property
    def loss_name(self) -> str:
        """``loss``, or the model's default (its class's ``default_loss``)."""
        return self.loss or model_class(self.model).default_loss

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
    raw = merge_overrides(mapping, overrides)
    cfg = validate_config(TrainConfig, raw, prefix="train.", what="invalid training configuration")
    root = Path(base) if base is not None else Path.cwd()

    def fix(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else (root / p).resolve()

    return cfg.model_copy(
        update={"folders": fix(cfg.folders), "valid": cfg.valid.model_copy(update={"root": fix(cfg.valid.root)})}
    )


__all__ = ["Precision", "TrainConfig", "ValidConfig", "train_config"]
