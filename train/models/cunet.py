"""Conditioned U-Net: one Spleeter-sized U-Net for every target, steered by FiLM layers.

After Meseguer-Brocal & Peeters 2019, "Conditioned-U-Net: Introducing a control mechanism in the U-Net for multiple
source separations" (ISMIR). The mixture magnitude ``(C, F, N)`` (audio channels as image channels, bins
``[0, max_bin)``) goes through one U-Net whatever the target; the target's one-hot vector ``z`` drives a small
control network that outputs, for every encoder layer, the FiLM parameters of ``gamma(z) * x + beta(z)``, applied
between the batch norm and the activation of that layer:

- encoder: ``levels`` 5x5 stride-2 convolutions (``base_filters * 2**i`` filters, 16-32-...-512), batch norm, FiLM,
  leaky ReLU 0.2;
- decoder (as in the authors' code): the first level takes the deepest encoder output alone, each further level the
  previous output concatenated with the encoder output of the same size; a 5x5 stride-2 transposed convolution with
  half the filters of that encoder level, batch norm, dropout 0.5 (levels ``1 .. levels - 3``), ReLU; the last level
  has one filter per audio channel and a sigmoid: the mask;
- FiLM ``"simple"``: one scalar gamma and beta per encoder layer; ``"complex"``: one per channel of each layer
  (16 + 32 + ... + 512 = 1008 pairs at the default size);
- control network (the paper's "dense" control): ``z`` -> fully connected layers of ``control_units`` (16, 64, 256
  for simple, 16, 256, 1024 for complex FiLM) with ReLU, dropout after all but the first -> two linear heads.

Differences from the authors' code, each for a reason:

- gamma is predicted as ``1 + delta`` (as in Perez et al. 2018, FiLM), so the untrained network starts as the plain
  U-Net instead of one whose every encoder layer is scaled by a near-zero gamma;
- no batch norm in the control network: its input is a one-hot vector, so the batch statistics are only a function
  of which targets happen to be in the batch (and a batch of one item cannot be normalised at all);
- stereo: audio channels are image channels (the paper separates mono 8192 Hz audio); the STFT and the
  high-frequency handling are Spleeter's, as for :class:`train.models.unet.UNet` (``max_bin``, ``high_mask``).

Every target is computed by ``forward(mixture)`` in one batched pass; ``forward(mixture, target_index)`` computes
one chosen target per item (see :mod:`train.models.conditioning`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.models import check_choice, check_fraction, check_int, check_max_bin, scale_init_
from train.models.conditioning import ConditionedSpectralModel

FILMS = ("simple", "complex")
HIGH_MASKS = ("average", "zeros")
#: The authors' control network sizes per FiLM type.
CONTROL_UNITS = {"simple": (16, 64, 256), "complex": (16, 256, 1024)}


class FiLMControl(nn.Module):
    """One-hot target ``(B,)`` indices -> ``(gammas, betas)``, each ``(B, P)`` (P FiLM parameters in all)."""

    def __init__(self, num_targets: int, units: Sequence[int], params: int, dropout: float) -> None:
        super().__init__()
        self.num_targets = num_targets
        layers: list[nn.Module] = []
        width = num_targets
        for i, n in enumerate(units):
            layers += [nn.Linear(width, n), nn.ReLU()]
            if i > 0 and dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = n
        self.body = nn.Sequential(*layers)
        self.gamma = nn.Linear(width, params)
        self.beta = nn.Linear(width, params)

    def forward(self, condition: Tensor) -> tuple[Tensor, Tensor]:
        z = F.one_hot(condition, self.num_targets).to(self.gamma.weight.dtype)
        h = self.body(z)
        return 1.0 + self.gamma(h), self.beta(h)


class _FiLMDown(nn.Module):
    """5x5 stride-2 conv, batch norm, FiLM, leaky ReLU 0.2: halves F and N."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 5, stride=2, padding=2)
        self.norm = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        """``gamma``, ``beta``: ``(B, 1)`` (simple) or ``(B, c_out)`` (complex)."""
        x = self.norm(self.conv(x))
        x = gamma[:, :, None, None] * x + beta[:, :, None, None]
        return F.leaky_relu(x, 0.2)


class _Up(nn.Sequential):
    """5x5 stride-2 transposed conv, batch norm, optional dropout, activation: doubles F and N."""

    def __init__(self, c_in: int, c_out: int, *, dropout: float, last: bool) -> None:
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1),
            nn.BatchNorm2d(c_out),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Sigmoid() if last else nn.ReLU())
        super().__init__(*layers)


class CUNet(ConditionedSpectralModel):
    """Conditioned U-Net (FiLM): one network separates every target; sigmoid masks, mixture phase.

    Args:
        targets: stem names in output order (the conditions).
        channels: audio channels (1 mono, 2 stereo).
        sample_rate: Hz (recorded only).
        n_fft: STFT size in samples (4096, Spleeter's; the paper: 1024 at 8192 Hz).
        hop_length: STFT hop in samples (1024).
        levels: encoder levels (6).
        base_filters: filters of the first level, doubled per level (16).
        max_bin: bins the network sees (1024, about 11 kHz at 44.1 kHz); ``None`` = all.
        film: ``"simple"`` (one gamma/beta per layer) or ``"complex"`` (per channel).
        control_units: widths of the control network's layers; ``None``: the authors' sizes for ``film``.
        control_dropout: dropout in the control network (0.5).
        dropout: dropout of decoder levels ``1 .. levels - 3`` (0.5).
        high_mask: mask above ``max_bin``: ``"average"`` of the mask below, or ``"zeros"``.
        init_scale: when set, Kaiming re-init of conv / linear weights times this factor.
    """

    name = "cunet"
    default_loss: ClassVar[str] = "l1_spec"
    TINY: ClassVar[dict[str, Any]] = {
        "n_fft": 256, "hop_length": 64, "levels": 3, "base_filters": 4, "max_bin": 100, "control_units": [8, 16],
        "dropout": 0.0, "control_dropout": 0.0,
    }

    def __init__(
        self,
        *,
        targets: Sequence[str],
        channels: int = 2,
        sample_rate: int = 44100,
        n_fft: int = 4096,
        hop_length: int = 1024,
        levels: int = 6,
        base_filters: int = 16,
        max_bin: int | None = 1024,
        film: str = "simple",
        control_units: Sequence[int] | None = None,
        control_dropout: float = 0.5,
        dropout: float = 0.5,
        high_mask: str = "average",
        init_scale: float | None = None,
    ) -> None:
        super().__init__(
            targets=targets, channels=channels, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length
        )
        self.levels = check_int("levels", levels, minimum=2)
        self.base_filters = check_int("base_filters", base_filters, minimum=2)
        self.max_bin = check_max_bin(max_bin, bins=self.bins, n_fft=n_fft)
        self.film = check_choice("film", film, FILMS)
        units = CONTROL_UNITS[self.film] if control_units is None else control_units
        if isinstance(units, str | bytes) or not isinstance(units, Sequence) or not units:
            raise ValueError(f"control_units must be a non-empty list of layer widths, got {control_units!r}")
        self.control_units = [check_int("control_units[]", u, minimum=1) for u in units]
        self.control_dropout = check_fraction("control_dropout", control_dropout)
        self.dropout = check_fraction("dropout", dropout)
        self.high_mask = check_choice("high_mask", high_mask, HIGH_MASKS)
        self.init_scale = init_scale

        filters = [self.base_filters * 2**i for i in range(self.levels)]
        self.film_sizes = [1 if self.film == "simple" else f for f in filters]
        self.control = FiLMControl(len(self.targets), self.control_units, sum(self.film_sizes), self.control_dropout)
        self.down = nn.ModuleList(
            _FiLMDown(c_in, c_out) for c_in, c_out in zip([self.channels, *filters[:-1]], filters, strict=True)
        )
        ups = []
        for i in range(self.levels):
            skip = filters[self.levels - 1 - i]
            c_in = skip if i == 0 else 2 * skip
            last = i == self.levels - 1
            c_out = self.channels if last else skip // 2
            drop = self.dropout if 1 <= i <= self.levels - 3 else 0.0
            ups.append(_Up(c_in, c_out, dropout=drop, last=last))
        self.up = nn.ModuleList(ups)
        if init_scale is not None:
            scale_init_(self, init_scale)

    def _arch_config(self) -> dict[str, Any]:
        return {
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "levels": self.levels,
            "base_filters": self.base_filters,
            "max_bin": self.max_bin,
            "film": self.film,
            "control_units": list(self.control_units),
            "control_dropout": self.control_dropout,
            "dropout": self.dropout,
            "high_mask": self.high_mask,
            "init_scale": self.init_scale,
        }

    def unet_mask(self, mag: Tensor, condition: Tensor) -> Tensor:
        """``(B', C, F', N')`` magnitudes (F', N' multiples of ``2**levels``), ``(B',)`` targets -> masks in [0, 1]."""
        gammas, betas = self.control(condition)
        gammas, betas = gammas.split(self.film_sizes, dim=1), betas.split(self.film_sizes, dim=1)
        x, skips = mag, []
        for down, g, b in zip(self.down, gammas, betas, strict=True):
            x = down(x, g, b)
            skips.append(x)
        x = self.up[0](skips.pop())
        for up in self.up[1:]:
            x = up(torch.cat([x, skips.pop()], dim=1))
        return x

    def _separate(self, mix_spec: Tensor, condition: Tensor) -> Tensor:
        """``(B', C, F, N)`` complex, ``(B',)`` -> masked magnitudes ``(B', C, F, N)`` float32."""
        mag = mix_spec.abs()
        low = mag[:, :, : self.max_bin] if self.max_bin is not None else mag
        f, n = low.shape[-2:]
        step = 2**self.levels
        mask = self.unet_mask(F.pad(low, (0, -n % step, 0, -f % step)), condition)[..., :f, :n].float()
        if f < self.bins:
            if self.high_mask == "average":
                high = mask.mean(dim=-2, keepdim=True).expand(*mask.shape[:-2], self.bins - f, n)
            else:
                high = mask.new_zeros(*mask.shape[:-2], self.bins - f, n)
            mask = torch.cat([mask, high], dim=-2)
        return mask * mag
