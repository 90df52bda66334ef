"""Bundled music source-separation models and the contract they share.

Every model maps a mixture waveform to one waveform estimate per target::

    model = build_model("unet", targets=("vocals", "drums", "bass", "other"), channels=2, sample_rate=44100)
    estimates = model(mixture)          # (B, C, T) float -> (B, S, C, T), S = len(model.targets), same T
    again = build_model(**model.config())   # config() is JSON-able and rebuilds the same architecture

Models (each its own small module):

- ``"unet"``: :class:`train.models.unet.UNet`, the Spleeter U-Net (Jansson et al. 2017; Hennequin et al. 2020),
  sigmoid or softmax masks on STFT magnitudes.
- ``"blstm"``: :class:`train.models.blstm.BLSTM`, the Open-Unmix BLSTM mask estimator (Stöter et al. 2019).
- ``"convtasnet"``: :class:`train.models.convtasnet.ConvTasNet`, the waveform-domain Conv-TasNet (Luo &
  Mesgarani 2019) scaled to 44.1 kHz.
- ``"demucs"``: :class:`train.models.demucs.Demucs`, the waveform U-Net with a BLSTM (Défossez et al. 2019).
- ``"dccrn"``: :class:`train.models.dccrn.DCCRN`, the deep complex convolution recurrent network (Hu et al. 2020)
  scaled to 44.1 kHz, on the learnable STFT of :mod:`train.models.frontend`.
- ``"phasen"``: :class:`train.models.phasen.PHASEN`, the two-stream amplitude/phase network (Yin et al. 2020).
- ``"centre"``: :class:`train.models.centre.Centre`, the channel-subtraction baseline (no trainable weights;
  estimates vocals and accompaniment only).

The mask models (U-Net, BLSTM) also expose ``estimate(mixture)`` returning the masked magnitudes and the mixture
STFT, so spectral losses (:mod:`train.losses`) can be computed on magnitudes; see
:class:`train.models.spectral.SpectralMaskModel`.

The model modules are imported lazily by :func:`build_model`, so importing this package costs only torch.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

#: Model name -> ``(module, class name)``; the module is imported on first use.
MODELS: dict[str, tuple[str, str]] = {
    "unet": ("train.models.unet", "UNet"),
    "blstm": ("train.models.blstm", "BLSTM"),
    "convtasnet": ("train.models.convtasnet", "ConvTasNet"),
    "demucs": ("train.models.demucs", "Demucs"),
    "dccrn": ("train.models.dccrn", "DCCRN"),
    "phasen": ("train.models.phasen", "PHASEN"),
    "centre": ("train.models.centre", "Centre"),
    "cunet": ("train.models.cunet", "CUNet"),
    "lasaft": ("train.models.lasaft", "LaSAFT"),
    "d3net": ("train.models.d3net", "D3Net"),
    "bundle": ("train.models.bundle", "Bundle"),
}


class SeparationModel(nn.Module):
    """Base class of the bundled models.

    Subclasses set ``targets`` (stem names, in output order), ``channels`` (audio channels in and out) and
    ``sample_rate`` (Hz; recorded for the user, the layers do not depend on it), implement ``forward`` and
    ``_arch_config`` (the architecture kwargs of their ``__init__``), and declare the class attributes ``name``,
    ``default_loss`` and ``TINY``. Adding a model: one module, one line in :data:`MODELS`; the contract test runs it
    through every check.
    """

    #: The name :func:`build_model` knows this model by.
    name: str = ""
    #: The loss (a name in :data:`train.losses.LOSSES`) the trainer uses unless ``train.loss`` says otherwise.
    default_loss: ClassVar[str]
    #: Constructor options of a model small enough that a forward and backward pass on 1 s of stereo 44.1 kHz
    #: audio takes about a second on one CPU core: what the contract test (tests/test_model_contract.py) builds.
    TINY: ClassVar[dict[str, Any]]
    #: False for a model without trainable weights (``centre``): separation builds it by name, training refuses it.
    trainable: ClassVar[bool] = True

    def __init__(self, *, targets: Sequence[str], channels: int, sample_rate: int) -> None:
        super().__init__()
        self.targets: tuple[str, ...] = check_targets(targets)
        self.channels: int = check_int("channels", channels, minimum=1)
        self.sample_rate: int = check_int("sample_rate", sample_rate, minimum=1)

    def forward(self, mixture: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``(B, C, T)`` mixture -> ``(B, S, C, T)`` waveform estimates."""
        raise NotImplementedError

    def _arch_config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able kwargs that rebuild this architecture: ``build_model(**model.config())``."""
        return {
            "name": self.name,
            "targets": list(self.targets),
            "channels": self.channels,
            "sample_rate": self.sample_rate,
            **self._arch_config(),
        }

    def check_mixture(self, mixture: Tensor) -> None:
        """Raise ``ValueError`` unless ``mixture`` is a floating ``(B, C, T)`` tensor with this model's C."""
        if mixture.dim() != 3 or mixture.shape[1] != self.channels or not mixture.is_floating_point():
            raise ValueError(
                f"mixture must be a float tensor of shape (batch, {self.channels}, samples); "
                f"got shape {tuple(mixture.shape)} dtype {mixture.dtype}"
            )
        if mixture.shape[-1] < 1:
            raise ValueError("mixture has no samples (T=0)")


def model_names() -> tuple[str, ...]:
    """The names :func:`build_model` accepts."""
    return tuple(MODELS)


def model_class(name: str) -> type[SeparationModel]:
    """The class registered under ``name``; ``ValueError`` naming the allowed names otherwise."""
    if name not in MODELS:
        raise ValueError(f"unknown model name={name!r}; allowed: {', '.join(MODELS)}")
    module, cls = MODELS[name]
    return getattr(importlib.import_module(module), cls)


def build_model(
    name: str,
    *,
    targets: Sequence[str],
    channels: int = 2,
    sample_rate: int = 44100,
    seed: int | None = None,
    **kwargs: Any,
) -> SeparationModel:
    """Build a bundled model by name.

    Args:
        name: one of :func:`model_names` (``"unet"``, ``"blstm"``, ``"convtasnet"``, ``"demucs"``...).
        targets: stem names in output order, e.g. ``("vocals", "drums", "bass", "other")``.
        channels: audio channels of the mixture and of each estimate (1 mono, 2 stereo).
        sample_rate: Hz, recorded in :meth:`SeparationModel.config`.
        seed: when given, the initial weights are drawn from ``torch.manual_seed(seed)`` inside
            ``torch.random.fork_rng`` (the caller's random state is left as it was), so the same seed gives the
            same weights. Not part of ``config()``: a rebuilt model takes its weights from a checkpoint.
        **kwargs: the architecture options of the model's class (see its ``__init__``); for a mask model also
            ``band_split_hz`` and ``low_options`` (:mod:`train.models.bandsplit`).

    Raises:
        ValueError: unknown ``name`` or unknown kwargs (the message lists the allowed ones), or a bad value.
    """
    cls = model_class(name)
    if "band_split_hz" in kwargs:  # a low-band and a full-band copy of a mask model, merged
        from train.models.bandsplit import BandSplit

        cls, kwargs = BandSplit, {"base": name, **kwargs}
        return _build(cls, seed, targets=tuple(targets), channels=channels, sample_rate=sample_rate, **kwargs)
    allowed = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind == p.KEYWORD_ONLY and p.name not in ("targets", "channels", "sample_rate")
    ]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; allowed: {', '.join(allowed)}")
    return _build(cls, seed, targets=tuple(targets), channels=channels, sample_rate=sample_rate, **kwargs)


def _build(cls: type[SeparationModel], seed: int | None, **kwargs: Any) -> SeparationModel:
    """``cls(**kwargs)``, its weights drawn from ``torch.manual_seed(seed)`` in a forked random state if given."""
    if seed is None:
        return cls(**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(**kwargs)


def scale_init_(module: nn.Module, scale: float) -> nn.Module:
    """Kaiming init scaling: re-draw every conv / linear weight Kaiming-normal (fan-in, ReLU gain), times ``scale``.

    Biases are set to zero; normalisation layers and LSTMs keep their own init. A ``scale`` below 1 (e.g. 0.1)
    starts a deep stack close to identity-like small updates, which steadies the first steps of training in
    mixed precision. Draws from torch's current random state (wrap in ``build_model(seed=...)`` to pin it).

    Returns:
        ``module`` (changed in place).
    """
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"init_scale must be a positive finite number, got {scale!r}")
    kinds = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, kinds):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                m.weight.mul_(scale)
                if m.bias is not None:
                    m.bias.zero_()
    return module


def check_targets(targets: Sequence[str]) -> tuple[str, ...]:
    """Validate target names: a non-empty sequence of distinct non-empty strings."""
    if isinstance(targets, str):
        raise ValueError(f"targets must be a sequence of stem names, not the single string {targets!r}")
    out = tuple(targets)
    if not out or not all(isinstance(t, str) and t for t in out) or len(set(out)) != len(out):
        raise ValueError(f"targets must be distinct non-empty stem names, got {list(out)!r}")
    return out


def check_int(name: str, value: Any, *, minimum: int) -> int:
    """Validate an integer option ``name`` (``>= minimum``); ``ValueError`` naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """Validate a string option ``name`` against ``allowed``; ``ValueError`` naming them otherwise."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return str(value)


def check_max_bin(max_bin: int | None, *, bins: int, n_fft: int) -> int | None:
    """Validate a high-frequency cut-off: a bin count in ``1..bins``, or ``None`` for all bins."""
    if max_bin is None:
        return None
    check_int("max_bin", max_bin, minimum=1)
    if max_bin > bins:
        raise ValueError(f"max_bin={max_bin} exceeds the {bins} bins of n_fft={n_fft}; "
                         f"allowed: 1..{bins} or None (all bins)")
    return int(max_bin)


def check_fraction(name: str, value: Any) -> float:
    """Validate a probability-like option in ``[0, 1)`` (dropout)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


__all__ = [
    "MODELS",
    "check_max_bin",
    "SeparationModel",
    "build_model",
    "check_choice",
    "check_fraction",
    "check_int",
    "check_targets",
    "model_class",
    "model_names",
    "scale_init_",
]
