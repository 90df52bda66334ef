"""Open-Unmix-style BLSTM mask estimator on STFT magnitudes.

After Stöter et al. 2019, "Open-Unmix - A Reference Implementation for Music Source Separation" (JOSS). Per target,
on every STFT frame of the mixture magnitude (all audio channels together, bins ``[0, max_bin)``):

1. input normalisation ``(x + input_mean) * input_scale`` (learned per bin, initialised 0 and 1; a trainer may set
   them from dataset statistics),
2. ``fc1`` (to ``hidden``) -> batch norm -> tanh,
3. a ``layers``-deep bidirectional LSTM (``hidden // 2`` units per direction), dropout between layers,
4. skip connection: concatenate the LSTM input and output (``2 * hidden``),
5. ``fc2`` -> batch norm -> ReLU, ``fc3`` (to all ``F`` bins x channels) -> batch norm,
6. output scaling ``x * output_scale + output_mean`` (learned per bin), ReLU: a non-negative mask that multiplies the
   mixture magnitude.

The LSTM always runs in float32, autocast switched off around it (LSTMs in fp16/bf16 drift over long sequences).
The estimates are inverted with the mixture phase (Open-Unmix adds an optional multichannel Wiener filter; not
here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from train.models import check_fraction, check_int, check_max_bin, scale_init_
from train.models.spectral import SpectralMaskModel


class BLSTMBranch(nn.Module):
    """One target's network: mixture magnitude ``(B, C, F, N)`` -> non-negative mask ``(B, C, F, N)``."""

    def __init__(self, channels: int, *, bins: int, max_bin: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.channels, self.bins, self.max_bin = channels, bins, max_bin
        self.input_mean = nn.Parameter(torch.zeros(max_bin))
        self.input_scale = nn.Parameter(torch.ones(max_bin))
        self.fc1 = nn.Linear(channels * max_bin, hidden, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.lstm = nn.LSTM(
            input_size=hidden,
            hidden_size=hidden // 2,
            num_layers=layers,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.fc2 = nn.Linear(2 * hidden, hidden, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.fc3 = nn.Linear(hidden, channels * bins, bias=False)
        self.bn3 = nn.BatchNorm1d(channels * bins)
        self.output_scale = nn.Parameter(torch.ones(bins))
        self.output_mean = nn.Parameter(torch.ones(bins))

    def forward(self, mag: Tensor) -> Tensor:
        b, c, _, n = mag.shape
        x = mag[:, :, : self.max_bin].permute(3, 0, 1, 2)  # (N, B, C, max_bin)
        x = (x + self.input_mean) * self.input_scale
        x = torch.tanh(self.bn1(self.fc1(x.reshape(n * b, -1)))).reshape(n, b, -1)
        with torch.autocast(device_type=x.device.type, enabled=False):
            y, _ = self.lstm(x.float())
        x = torch.cat([x.to(y.dtype), y], dim=-1).reshape(n * b, -1)
        x = torch.relu(self.bn2(self.fc2(x)))
        x = self.bn3(self.fc3(x)).reshape(n, b, c, self.bins)
        x = torch.relu(x * self.output_scale + self.output_mean)
        return x.permute(1, 2, 3, 0)  # (B, C, F, N)


class BLSTM(SpectralMaskModel):
    """Open-Unmix: one BLSTM mask estimator per target, mixture phase for the inverse.

    Args:
        targets: stem names in output order.
        channels: audio channels (1 mono, 2 stereo).
        sample_rate: Hz (recorded only).
        n_fft: STFT size in samples (4096 as Open-Unmix).
        hop_length: STFT hop in samples (1024).
        hidden: width of the fully connected layers and of the concatenated BLSTM output (512); even.
        layers: BLSTM layers (3).
        max_bin: input bins (1487 = 16 kHz at 44.1 kHz and ``n_fft=4096``, Open-Unmix's bandwidth); ``None`` = all.
            The masks always cover all bins.
        dropout: dropout between BLSTM layers (0.4).
        init_scale: when set, Kaiming re-init of the linear weights times this factor.
    """

    name = "blstm"
    default_loss = "mse_spec"
    TINY = {"n_fft": 256, "hop_length": 64, "hidden": 16, "layers": 2, "max_bin": 100, "dropout": 0.0}

    def __init__(
        self,
        *,
        targets: Sequence[str],
        channels: int = 2,
        sample_rate: int = 44100,
        n_fft: int = 4096,
        hop_length: int = 1024,
        hidden: int = 512,
        layers: int = 3,
        max_bin: int | None = 1487,
        dropout: float = 0.4,
        init_scale: float | None = None,
    ) -> None:
        super().__init__(
            targets=targets, channels=channels, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length
        )
        self.hidden = check_int("hidden", hidden, minimum=2)
        if hidden % 2:
            raise ValueError(f"hidden must be even (two LSTM directions of hidden // 2), got {hidden}")
        self.layers = check_int("layers", layers, minimum=1)
        self.max_bin = check_max_bin(max_bin, bins=self.bins, n_fft=n_fft)
        self.dropout = check_fraction("dropout", dropout)
        self.init_scale = init_scale
        self.branches = nn.ModuleList(
            BLSTMBranch(
                self.channels,
                bins=self.bins,
                max_bin=self.max_bin or self.bins,
                hidden=self.hidden,
                layers=self.layers,
                dropout=self.dropout,
            )
            for _ in self.targets
        )
        if init_scale is not None:
            scale_init_(self, init_scale)

    def _arch_config(self) -> dict:
        return {
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "hidden": self.hidden,
            "layers": self.layers,
            "max_bin": self.max_bin,
            "dropout": self.dropout,
            "init_scale": self.init_scale,
        }

    def estimate(self, mixture: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, T)`` -> (masked magnitudes ``(B, S, C, F, N)`` float32, mixture complex STFT ``(B, C, F, N)``)."""
        mix_spec = self.spectrogram(mixture)
        mag = mix_spec.abs()
        masks = torch.stack([branch(mag) for branch in self.branches], dim=1)
        return masks.float() * mag.unsqueeze(1), mix_spec
