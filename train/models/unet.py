"""Spleeter-style U-Net mask estimator on STFT magnitudes.

After Jansson et al. 2017, "Singing voice separation with deep U-Net convolutional networks" (ISMIR), as
implemented by Spleeter (Hennequin et al. 2020, "Spleeter: a fast and efficient music source separation tool with
pre-trained models", JOSS). Per target, one U-Net reads the mixture magnitude ``(C, F, N)`` (audio channels as image
channels) and writes one mask per audio channel:

- encoder: ``levels`` (6; 7 adds a 1024-filter level) 5x5 stride-2 convolutions with ``base_filters * 2**i``
  filters (16-32-64-128-256-512), each followed by batch norm and leaky ReLU (slope 0.2);
- decoder: 5x5 stride-2 transposed convolutions back up, each followed by ReLU and batch norm, dropout (0.5) on the
  first three, concatenated with the encoder output of the same resolution (skip connection); the last one has a
  single filter and a 4x4 dilation-2 convolution turns it into one mask logit per audio channel;
- masks: ``sigmoid`` per target (Spleeter's default), or ``softmax`` across the targets so they sum to one per bin.

Differences from Spleeter, chosen for clarity: the skips carry the encoder's activated output (Spleeter's carry the
raw convolution output), and the frequency axis is padded (not only cropped) to a multiple of ``2**levels``.

High-frequency cut-off: with ``max_bin`` set (Spleeter uses 1024 of the 2049 bins of a 4096-point STFT, i.e.
about 11 kHz at 44.1 kHz) the network sees bins ``[0, max_bin)`` only. Bins above get, per target, channel and
frame, the **average** of that target's mask over the bins below (``high_mask="average"``, Spleeter's "average"
extension; the masks still sum to one under softmax and cymbals are not thrown away) or zero
(``high_mask="zeros"``: the estimates carry nothing above the cut-off).

Frequency and time are zero-padded to multiples of ``2**levels`` inside and cropped back, so any length works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.models import check_choice, check_fraction, check_int, check_max_bin, scale_init_
from train.models.spectral import SpectralMaskModel

MASKS = ("sigmoid", "softmax")
HIGH_MASKS = ("average", "zeros")


class _Down(nn.Sequential):
    """5x5 stride-2 conv, batch norm, leaky ReLU 0.2: halves F and N."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 5, stride=2, padding=2), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)
        )


class _Up(nn.Sequential):
    """5x5 stride-2 transposed conv, ReLU, batch norm, optional dropout: doubles F and N."""

    def __init__(self, c_in: int, c_out: int, dropout: float) -> None:
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(c_out),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class UNetBranch(nn.Module):
    """One target's U-Net: ``(B, C, F, N)`` magnitudes -> ``(B, C, F, N)`` mask logits (F, N multiples of 2**L)."""

    def __init__(self, channels: int, *, levels: int, base_filters: int, dropout: float) -> None:
        super().__init__()
        filters = [base_filters * 2**i for i in range(levels)]
        ins = [channels, *filters[:-1]]
        self.down = nn.ModuleList(_Down(c_in, c_out) for c_in, c_out in zip(ins, filters, strict=True))
        ups = []
        c_in = filters[-1]
        for i, c_out in enumerate(reversed(filters[:-1])):
            ups.append(_Up(c_in, c_out, dropout if i < 3 else 0.0))
            c_in = 2 * c_out  # after concatenation with the skip
        self.up = nn.ModuleList(ups)
        self.last_up = _Up(c_in, 1, 0.0)
        self.to_mask = nn.Conv2d(1, channels, 4, dilation=2, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        skips.pop()  # the deepest level feeds the decoder directly
        for up in self.up:
            x = torch.cat([skips.pop(), up(x)], dim=1)
        return self.to_mask(self.last_up(x))


class UNet(SpectralMaskModel):
    """Spleeter U-Net: one U-Net per target, masks on the mixture magnitude, mixture phase for the inverse.

    Args:
        targets: stem names in output order.
        channels: audio channels (1 mono, 2 stereo).
        sample_rate: Hz (recorded only).
        n_fft: STFT size in samples (4096 as Spleeter; small values for tests).
        hop_length: STFT hop in samples (1024).
        levels: encoder levels (6 as Spleeter; 7 adds the 1024-filter level).
        base_filters: filters of the first level, doubled per level (16).
        max_bin: bins the network sees (1024 as Spleeter at ``n_fft=4096``); ``None`` = all ``n_fft // 2 + 1``.
        mask: ``"sigmoid"`` (independent masks) or ``"softmax"`` (across targets, masks sum to one).
        high_mask: mask above ``max_bin``: ``"average"`` of the mask below, or ``"zeros"``.
        dropout: dropout of the first three decoder levels (0.5).
        init_scale: when set, Kaiming re-init of conv weights times this factor (see
            :func:`train.models.scale_init_`).
    """

    name = "unet"
    default_loss = "l1_spec"
    TINY = {"n_fft": 256, "hop_length": 64, "levels": 3, "base_filters": 4, "max_bin": 100, "dropout": 0.0}

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
        mask: str = "sigmoid",
        high_mask: str = "average",
        dropout: float = 0.5,
        init_scale: float | None = None,
    ) -> None:
        super().__init__(
            targets=targets, channels=channels, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length
        )
        self.levels = check_int("levels", levels, minimum=1)
        self.base_filters = check_int("base_filters", base_filters, minimum=1)
        self.max_bin = check_max_bin(max_bin, bins=self.bins, n_fft=n_fft)
        self.mask = check_choice("mask", mask, MASKS)
        self.high_mask = check_choice("high_mask", high_mask, HIGH_MASKS)
        self.dropout = check_fraction("dropout", dropout)
        self.init_scale = init_scale
        self.branches = nn.ModuleList(
            UNetBranch(self.channels, levels=self.levels, base_filters=self.base_filters, dropout=self.dropout)
            for _ in self.targets
        )
        if init_scale is not None:
            scale_init_(self, init_scale)

    def _arch_config(self) -> dict:
        return {
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "levels": self.levels,
            "base_filters": self.base_filters,
            "max_bin": self.max_bin,
            "mask": self.mask,
            "high_mask": self.high_mask,
            "dropout": self.dropout,
            "init_scale": self.init_scale,
        }

    def masks(self, mixture: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, T)`` -> (masks ``(B, S, C, F, N)`` in [0, 1], mixture complex STFT ``(B, C, F, N)``)."""
        mix_spec = self.spectrogram(mixture)
        mag = mix_spec.abs()
        low = mag[:, :, : self.max_bin] if self.max_bin is not None else mag
        f, n = low.shape[-2:]
        step = 2**self.levels
        padded = F.pad(low, (0, -n % step, 0, -f % step))
        logits = torch.stack([branch(padded)[..., :f, :n] for branch in self.branches], dim=1)
        masks = torch.sigmoid(logits) if self.mask == "sigmoid" else torch.softmax(logits.float(), dim=1)
        if f < self.bins:
            if self.high_mask == "average":
                high = masks.mean(dim=-2, keepdim=True).expand(*masks.shape[:-2], self.bins - f, n)
            else:
                high = masks.new_zeros(*masks.shape[:-2], self.bins - f, n)
            masks = torch.cat([masks, high], dim=-2)
        return masks, mix_spec

    def estimate(self, mixture: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, T)`` -> (masked magnitudes ``(B, S, C, F, N)`` float32, mixture complex STFT ``(B, C, F, N)``)."""
        masks, mix_spec = self.masks(mixture)
        return masks.float() * mix_spec.abs().unsqueeze(1), mix_spec
