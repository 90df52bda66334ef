"""LaSAFT-GPoCM-Net: a conditioned U-Net of dense time-frequency convolutions with latent source attention.

After Choi, Kim, Chung & Jung 2021, "LaSAFT: Latent Source Attentive Frequency Transformation for Conditioned Source
Separation" (ICASSP), the authors' large configuration (their Table 2 model): one network for every target.

Input and output are complex spectrograms with real and imaginary parts as image channels (``2C`` channels, laid
out ``(B, 2C, N, F)``: frequency last, where the fully connected layers act). The network maps the mixture's to the
target's directly (the paper's "mapping" mode); the estimate is inverted with its own phase. Structure:

- first conv: kernel ``(1, 2)`` over frequency, ``F = n_fft // 2 + 1`` -> ``n_fft // 2`` bins, batch norm, ReLU,
  to ``internal_channels`` (24) channels; the last conv undoes it (``(1, 2)`` kernel, one bin of padding);
- ``blocks`` (9: 4 down, 1 middle, 4 up) blocks, each a TFC (``tfc_layers`` = 5 densely connected 3x3 convolutions
  with batch norm and ReLU, growth rate = ``internal_channels``, output: the last layer) followed by a residual
  LaSAFT: a time-distributed fully connected bottleneck (``f -> max(f * L / bn_factor, min_bn_units) -> f * L``,
  batch norm and ReLU after each) gives ``L = latent_sources`` (6) frequency transformations of every frame; the
  target's embedding (``embedding_dim`` = 64, learned) makes a query of ``dk`` (32) values, attention over ``L``
  learned keys weighs the ``L`` transformations, and their weighted sum is added to the TFC output;
- down: 2x2 stride-2 conv + batch norm; up: 2x2 stride-2 transposed conv + batch norm, concatenated with the
  encoder output of the same size (so decoder TFCs read ``2 * internal_channels``);
- GPoCM after each decoder block's TFC: ``x_c <- sigmoid(beta_c + sum_j gamma_jc x_j) * x_c``, with the
  ``(internal_channels, internal_channels)`` matrix ``gamma`` and ``beta`` made from the target embedding by a
  fully connected control network (``control_layers`` = 4 widths: e, 2e, 4e, 8e, ReLU).

Differences from the authors' code: no batch norm and no dropout in the control network (batch statistics of a
batch of target embeddings depend only on which targets are drawn, and a batch of one cannot be normalised); the
spectrograms are scaled by ``1 / sqrt(n_fft)`` inside the network and back (:mod:`train.models.spectral`'s STFT is
not normalised, and a mapping network would otherwise have to learn outputs in the hundreds); frequency and time are
zero-padded to multiples of ``2 ** (blocks // 2)`` inside and cropped back, so any length works; the last conv's
weights are drawn as usual and multiplied by 0.01, a quiet first estimate (drawn as usual, the untrained estimate
is noise about as loud as the target; on two 0.2 s fixture crops, 100 steps of ``l1_wave`` lowered the loss to 0.47
of its start with the quiet init against 0.76 without).

Every target is computed by ``forward(mixture)`` in one batched pass; ``forward(mixture, target_index)`` computes
one chosen target per item (see :mod:`train.models.conditioning`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.models import check_int, scale_init_
from train.models.conditioning import ConditionedSpectralModel


class TFC(nn.Module):
    """Densely connected 2-D convolutions: ``(B, c_in, N, F)`` -> ``(B, growth, N, F)`` (the last layer's output)."""

    def __init__(self, c_in: int, growth: int, layers: int, kernel_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c_in + i * growth, growth, kernel_size, padding=kernel_size // 2),
                nn.BatchNorm2d(growth),
                nn.ReLU(),
            )
            for i in range(layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers[0](x)
        for layer in self.layers[1:]:
            x = torch.cat([out, x], dim=1)
            out = layer(x)
        return out


class LatentSourceAttentiveFT(nn.Module):
    """LaSAFT: ``L`` frequency transformations of ``(B, c, N, f)`` features, weighed by attention on the target.

    Returns ``(B, c, N, f)``, added to the input by the caller.
    """

    def __init__(self, channels: int, bins: int, *, latent: int, bn_factor: int, min_bn_units: int,
                 embedding_dim: int, dk: int) -> None:
        super().__init__()
        self.latent, self.dk = latent, dk
        hidden = max(bins * latent // bn_factor, min_bn_units)
        self.tdf = nn.Sequential(
            nn.Linear(bins, hidden, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Linear(hidden, bins * latent, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.keys = nn.Parameter(torch.randn(dk, latent))
        self.query = nn.Linear(embedding_dim, dk)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        """``x`` ``(B, c, N, f)``, ``embedding`` ``(B, E)`` -> ``(B, c, N, f)``."""
        values = self.tdf(x).unflatten(-1, (x.shape[-1], self.latent))  # (B, c, N, f, L)
        att = torch.softmax(self.query(embedding) @ self.keys / math.sqrt(self.dk), dim=-1)  # (B, L)
        return torch.matmul(values, att[:, None, None, :, None].to(values.dtype)).squeeze(-1)


class _Block(nn.Module):
    """TFC, optional GPoCM gate, residual LaSAFT."""

    def __init__(self, c_in: int, c: int, bins: int, *, tfc_layers: int, kernel_size: int, **lasaft: int) -> None:
        super().__init__()
        self.tfc = TFC(c_in, c, tfc_layers, kernel_size)
        self.lasaft = LatentSourceAttentiveFT(c, bins, **lasaft)

    def forward(self, x: Tensor, embedding: Tensor, gpocm: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self.tfc(x)
        if gpocm is not None:
            gamma, beta = gpocm  # (B, c, c), (B, c)
            mod = torch.einsum("bjc,bjnf->bcnf", gamma.to(x.dtype), x) + beta[:, :, None, None].to(x.dtype)
            x = torch.sigmoid(mod) * x
        return x + self.lasaft(x, embedding)


class GPoCMControl(nn.Module):
    """Target embedding ``(B, E)`` -> per decoder block ``(gamma (B, c, c), beta (B, c))``."""

    def __init__(self, embedding_dim: int, layers: int, channels: int, blocks: int) -> None:
        super().__init__()
        dims = [embedding_dim * 2**i for i in range(layers)]
        mlp: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            mlp += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*mlp)
        self.c, self.blocks = channels, blocks
        self.gamma = nn.Linear(dims[-1], blocks * channels * channels)
        self.beta = nn.Linear(dims[-1], blocks * channels)

    def forward(self, embedding: Tensor) -> list[tuple[Tensor, Tensor]]:
        h = self.mlp(embedding)
        gammas = self.gamma(h).unflatten(-1, (self.blocks, self.c, self.c))
        betas = self.beta(h).unflatten(-1, (self.blocks, self.c))
        return [(gammas[:, i], betas[:, i]) for i in range(self.blocks)]


class LaSAFT(ConditionedSpectralModel):
    """LaSAFT-GPoCM-Net: one network for every target, complex spectrogram mapping.

    Args:
        targets: stem names in output order (the conditions).
        channels: audio channels (1 mono, 2 stereo).
        sample_rate: Hz (recorded only).
        n_fft: STFT size in samples (4096, the authors' large model; 2048 in their base one).
        hop_length: STFT hop in samples (1024).
        blocks: TFC-LaSAFT blocks, odd: ``blocks // 2`` down and up levels around a middle block (9).
        internal_channels: feature channels and TFC growth rate (24).
        tfc_layers: convolutions per TFC (5).
        kernel_size: odd TFC kernel size (3).
        bn_factor: bottleneck factor of the frequency transformation (16).
        min_bn_units: its smallest bottleneck (16).
        latent_sources: ``L``, frequency transformations to attend over (6).
        dk: query / key size (32).
        embedding_dim: target embedding size (64).
        control_layers: layers of the GPoCM control network, widths ``embedding_dim * 2**i`` (4).
        init_scale: when set, Kaiming re-init of conv / linear weights times this factor.
    """

    name = "lasaft"
    default_loss: ClassVar[str] = "l1_wave"
    TINY: ClassVar[dict[str, Any]] = {
        "n_fft": 256, "hop_length": 64, "blocks": 5, "internal_channels": 6, "tfc_layers": 2,
        "latent_sources": 3, "dk": 8, "embedding_dim": 8, "control_layers": 2,
    }

    def __init__(
        self,
        *,
        targets: Sequence[str],
        channels: int = 2,
        sample_rate: int = 44100,
        n_fft: int = 4096,
        hop_length: int = 1024,
        blocks: int = 9,
        internal_channels: int = 24,
        tfc_layers: int = 5,
        kernel_size: int = 3,
        bn_factor: int = 16,
        min_bn_units: int = 16,
        latent_sources: int = 6,
        dk: int = 32,
        embedding_dim: int = 64,
        control_layers: int = 4,
        init_scale: float | None = None,
    ) -> None:
        super().__init__(
            targets=targets, channels=channels, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length
        )
        self.blocks = check_int("blocks", blocks, minimum=3)
        if self.blocks % 2 == 0:
            raise ValueError(f"blocks must be odd (down levels, a middle block, up levels), got {blocks}")
        self.internal_channels = check_int("internal_channels", internal_channels, minimum=1)
        self.tfc_layers = check_int("tfc_layers", tfc_layers, minimum=1)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.bn_factor = check_int("bn_factor", bn_factor, minimum=1)
        self.min_bn_units = check_int("min_bn_units", min_bn_units, minimum=1)
        self.latent_sources = check_int("latent_sources", latent_sources, minimum=1)
        self.dk = check_int("dk", dk, minimum=1)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        self.control_layers = check_int("control_layers", control_layers, minimum=1)
        self.init_scale = init_scale
        self._build_layers()
        if init_scale is not None:
            scale_init_(self, init_scale)

    def _build_layers(self) -> None:
        """The embedding, the U-Net of TFC-LaSAFT blocks, the GPoCM control and the output convolution."""
        c, levels = self.internal_channels, self.blocks // 2
        step = 2**levels
        self.dim_f = -(-(self.n_fft // 2) // step) * step  # n_fft // 2 bins, padded to a multiple of 2**levels
        lasaft = {"latent": self.latent_sources, "bn_factor": self.bn_factor, "min_bn_units": self.min_bn_units,
                  "embedding_dim": self.embedding_dim, "dk": self.dk}
        block = {"tfc_layers": self.tfc_layers, "kernel_size": self.kernel_size, **lasaft}
        self.embedding = nn.Embedding(len(self.targets), self.embedding_dim)
        self.first = nn.Sequential(nn.Conv2d(2 * self.channels, c, (1, 2)), nn.BatchNorm2d(c), nn.ReLU())
        self.encoders = nn.ModuleList(_Block(c, c, self.dim_f // 2**i, **block) for i in range(levels))
        self.downs = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 2, stride=2), nn.BatchNorm2d(c))
                                   for _ in range(levels))
        self.middle = _Block(c, c, self.dim_f // step, **block)
        self.ups = nn.ModuleList(nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2), nn.BatchNorm2d(c))
                                 for _ in range(levels))
        self.decoders = nn.ModuleList(_Block(2 * c, c, self.dim_f // 2 ** (levels - 1 - i), **block)
                                      for i in range(levels))
        self.control = GPoCMControl(self.embedding_dim, self.control_layers, c, levels)
        self.last = nn.Conv2d(c, 2 * self.channels, (1, 2), padding=(0, 1))
        with torch.no_grad():  # a quiet first estimate (see the module docstring)
            self.last.weight.mul_(0.01)
            self.last.bias.zero_()

    def _arch_config(self) -> dict[str, Any]:
        return {
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "blocks": self.blocks,
            "internal_channels": self.internal_channels,
            "tfc_layers": self.tfc_layers,
            "kernel_size": self.kernel_size,
            "bn_factor": self.bn_factor,
            "min_bn_units": self.min_bn_units,
            "latent_sources": self.latent_sources,
            "dk": self.dk,
            "embedding_dim": self.embedding_dim,
            "control_layers": self.control_layers,
            "init_scale": self.init_scale,
        }

    def network(self, x: Tensor, condition: Tensor) -> Tensor:
        """``(B', c, N', dim_f)`` features (N' a multiple of ``2**(blocks // 2)``), ``(B',)`` -> same shape."""
        embedding = self.embedding(condition)
        skips = []
        for block, down in zip(self.encoders, self.downs, strict=True):
            x = block(x, embedding)
            skips.append(x)
            x = down(x)
        x = self.middle(x, embedding)
        for block, up, gpocm in zip(self.decoders, self.ups, self.control(embedding), strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1), embedding, gpocm)
        return x

    def _separate(self, mix_spec: Tensor, condition: Tensor) -> Tensor:
        """``(B', C, F, N)`` complex, ``(B',)`` -> complex estimates ``(B', C, F, N)``."""
        b, c, f, n = mix_spec.shape
        scale = math.sqrt(self.n_fft)
        x = torch.view_as_real(mix_spec / scale)  # (B', C, F, N, 2)
        x = x.permute(0, 1, 4, 3, 2).reshape(b, 2 * c, n, f)  # channels: re/im of each audio channel
        x = self.first(x)  # (B', c, N, F - 1)
        step = 2 ** (self.blocks // 2)
        x = F.pad(x, (0, self.dim_f - (f - 1), 0, -n % step))
        x = self.network(x, condition)[:, :, :n, : f - 1]
        y = self.last(x).float()  # (B', 2C, N, F)
        y = y.reshape(b, c, 2, n, f).permute(0, 1, 4, 3, 2).contiguous()
        return torch.view_as_complex(y) * scale
