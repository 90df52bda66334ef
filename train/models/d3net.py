"""D3Net: densely connected multi-dilated DenseNets on band-split magnitude spectrograms (and MMDenseLSTM).

After Takahashi & Mitsufuji 2021, "Densely connected multidilated convolutional networks for dense prediction
tasks" (CVPR), music source separation model, and the authors' released configuration (their vocals one is the
default here). One network per target (as in the paper; train one target per run with ``targets=("bass",)`` and its
own options). Each network reads the mixture magnitude ``(C, N, F)`` (frequency last) up to ``max_bin`` (1600 of
the 2049 bins of a 4096-point STFT, about 17 kHz at 44.1 kHz) and writes the target's magnitude (not a mask):

- input normalisation ``(x - offset) * scale``, learned per bin (initialised 0 and 1);
- band split: the bins ``[0, 256)`` (below about 2.7 kHz) and ``[256, 1600)`` go to their own sub-networks
  (``band_split``), the low one much deeper; a full-band sub-network reads ``[0, 1600)``;
- each sub-network is a U-Net of D3 blocks: a 3x3 conv to ``*_features`` channels, then per level a D3 block and
  2x2 average pooling down, a D3 block at the bottleneck, and per level batch norm + 2x2 stride-2 transposed conv up,
  concatenation with the encoder output of the same size, a D3 block; growth rates, layers per D2 block and D2 blocks
  per D3 block are listed per level (odd-length lists: down levels, bottleneck, up levels);
- D2 block (``layers`` L, growth k): densely connected batch norm - ReLU - 3x3 convolutions in which every layer's
  input from the block input is dilated 1 and its input from layer ``i``'s output is dilated ``2**i`` (the
  multi-dilated convolution); the block's output is its last layer's (k channels). D3 block: M D2 blocks connected
  the same dense way (block ``i``'s output feeds every later block); its output is the last block's;
- the band outputs, brought to one channel count by batch norm + 1x1 conv where needed, are concatenated along
  frequency, then along channels with the full-band output; a final D2 block merges them, and a gated 1x1 output
  (batch norm, ``sigmoid(conv) * conv``) to one channel per audio channel, scaled and shifted per bin, ReLU;
- above ``max_bin`` the estimate is the mixture's magnitude (the authors' choice, ``high_bins="mixture"``) or zero.

``mmdenselstm=True``: the MMDenseLSTM variant (Takahashi, Goswami & Mitsufuji 2018, "MMDenseLSTM: an efficient
combination of convolutional and recurrent neural networks for audio source separation", IWAENC): plain (not
dilated) dense blocks, and at the bottleneck of every sub-network an LSTM block: batch norm, ReLU, 1x1 conv to one
channel, a bidirectional LSTM over frames (``lstm_hidden`` units per direction, run in float32), a linear layer back
to the bins, concatenated to the bottleneck features as one more channel. (The paper places LSTM blocks at several
scales with its own band limits and growth rates; this variant keeps the D3Net layout above.)

Differences from the authors' code: magnitudes are scaled by ``1 / sqrt(n_fft)`` inside the network and back (the
STFT of :mod:`train.models.spectral` is not normalised); frequency bands and frames are zero-padded to multiples of
``2**levels`` inside each sub-network and cropped back, so any band width and length work; no compression in the
transition layers (the released configurations use compression 1.0); the separated estimates are inverted with the
mixture phase, without the multichannel Wiener filter the authors apply at test time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.models import check_choice, check_int, check_max_bin, scale_init_
from train.models.spectral import SpectralMaskModel

HIGH_BINS = ("mixture", "zeros")


def _dense_sum(first: Tensor, later: Sequence[nn.Module], growth: int) -> Tensor:
    """The dense connection of D2 and D3 blocks, as sums of per-source contributions.

    ``first``: the block input's contribution to each of the ``M`` layers, ``(B, growth * M, ...)``; ``later[i-1]``
    maps layer ``i - 1``'s finished output to its contributions to layers ``i .. M-1``. Concatenating a layer's
    inputs and convolving them equals summing the convolutions of each input (with its own dilation), so each source
    is convolved once for all the layers that read it. Returns the last layer's output ``(B, growth, ...)``.
    """
    acc = list(first.split(growth, dim=1))
    for i, module in enumerate(later, start=1):
        for j, part in enumerate(module(acc[i - 1]).split(growth, dim=1)):
            acc[i + j] = acc[i + j] + part
    return acc[-1]


class D2Block(nn.Module):
    """Densely connected multi-dilated convolutions: ``(B, c_in, N, F)`` -> ``(B, growth, N, F)``."""

    def __init__(self, c_in: int, growth: int, layers: int, kernel_size: int, *, dilated: bool = True) -> None:
        super().__init__()
        self.growth = growth
        convs = []
        for i in range(layers):
            d = 2**i if dilated else 1
            c = c_in if i == 0 else growth
            convs.append(nn.Sequential(
                nn.BatchNorm2d(c),
                nn.ReLU(),
                nn.Conv2d(c, growth * (layers - i), kernel_size, padding=d * (kernel_size // 2), dilation=d),
            ))
        self.convs = nn.ModuleList(convs)

    def forward(self, x: Tensor) -> Tensor:
        return _dense_sum(self.convs[0](x), self.convs[1:], self.growth)


class D3Block(nn.Module):
    """``blocks`` densely connected D2 blocks: ``(B, c_in, N, F)`` -> ``(B, growth, N, F)``."""

    def __init__(self, c_in: int, growth: int, layers: int, blocks: int, kernel_size: int, *, dilated: bool) -> None:
        super().__init__()
        self.growth = growth
        self.blocks = nn.ModuleList(
            D2Block(c_in if i == 0 else growth, growth * (blocks - i), layers, kernel_size, dilated=dilated)
            for i in range(blocks)
        )

    def forward(self, x: Tensor) -> Tensor:
        return _dense_sum(self.blocks[0](x), self.blocks[1:], self.growth)


class BottleneckLSTM(nn.Module):
    """MMDenseLSTM's LSTM block: ``(B, c, N, f)`` -> ``(B, 1, N, f)``; the LSTM runs over frames in float32."""

    def __init__(self, channels: int, bins: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, 1, 1))
        self.lstm = nn.LSTM(bins, hidden, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(2 * hidden, bins)

    def forward(self, x: Tensor) -> Tensor:
        h = self.reduce(x).squeeze(1)  # (B, N, f)
        with torch.autocast(device_type=x.device.type, enabled=False):
            y, _ = self.lstm(h.float())
        return self.linear(y).unsqueeze(1)


class DenseUNet(nn.Module):
    """A sub-network: U-Net of D3 blocks, ``(B, c_in, N, f)`` -> ``(B, growth[-1], N, f)`` for ``f = bins``."""

    def __init__(self, c_in: int, *, bins: int, growth: Sequence[int], layers: Sequence[int],
                 blocks: Sequence[int], kernel_size: int, dilated: bool, lstm_hidden: int | None) -> None:
        super().__init__()
        n = len(growth) // 2
        self.step = 2**n
        d3 = {"kernel_size": kernel_size, "dilated": dilated}
        self.down = nn.ModuleList()
        ch = c_in
        for i in range(n):
            self.down.append(D3Block(ch, growth[i], layers[i], blocks[i], **d3))
            ch = growth[i]
        self.middle = D3Block(ch, growth[n], layers[n], blocks[n], **d3)
        ch = growth[n]
        self.lstm = None
        if lstm_hidden is not None:
            padded = -(-bins // self.step) * self.step
            self.lstm = BottleneckLSTM(ch, padded // self.step, lstm_hidden)
            ch += 1
        self.ups, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for i in range(n):
            self.ups.append(nn.Sequential(nn.BatchNorm2d(ch), nn.ConvTranspose2d(ch, ch, 2, stride=2)))
            self.up_blocks.append(D3Block(ch + growth[n - 1 - i], growth[n + 1 + i], layers[n + 1 + i],
                                          blocks[n + 1 + i], **d3))
            ch = growth[n + 1 + i]

    def forward(self, x: Tensor) -> Tensor:
        frames, bins = x.shape[-2:]
        x = F.pad(x, (0, -bins % self.step, 0, -frames % self.step))
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        x = self.middle(x)
        if self.lstm is not None:
            x = torch.cat([x, self.lstm(x).to(x.dtype)], dim=1)
        for up, block in zip(self.ups, self.up_blocks, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return x[..., :frames, :bins]


class D3NetBranch(nn.Module):
    """One target's network: mixture magnitude ``(B, C, N, max_bin)`` -> target magnitude, same shape."""

    def __init__(self, channels: int, *, edges: Sequence[int], band_features: Sequence[int],
                 band_growth: Sequence[Sequence[int]], band_layers: Sequence[Sequence[int]],
                 band_blocks: Sequence[Sequence[int]], full_features: int, full_growth: Sequence[int],
                 full_layers: Sequence[int], full_blocks: Sequence[int], final_growth: int, final_layers: int,
                 kernel_size: int, dilated: bool, lstm_hidden: int | None) -> None:
        super().__init__()
        max_bin = edges[-1]
        self.edges = list(edges)
        self.in_offset = nn.Parameter(torch.zeros(max_bin))
        self.in_scale = nn.Parameter(torch.ones(max_bin))
        k_out = max(g[-1] for g in band_growth)
        common = {"kernel_size": kernel_size, "dilated": dilated, "lstm_hidden": lstm_hidden}
        pad = kernel_size // 2
        self.band_in = nn.ModuleList(nn.Conv2d(channels, f, kernel_size, padding=pad) for f in band_features)
        self.bands = nn.ModuleList(
            DenseUNet(f, bins=hi - lo, growth=g, layers=la, blocks=b, **common)
            for f, lo, hi, g, la, b in zip(band_features, edges[:-1], edges[1:], band_growth, band_layers,
                                           band_blocks, strict=True)
        )
        self.band_out = nn.ModuleList(
            nn.Identity() if g[-1] == k_out else nn.Sequential(nn.BatchNorm2d(g[-1]), nn.Conv2d(g[-1], k_out, 1))
            for g in band_growth
        )
        self.full_in = nn.Conv2d(channels, full_features, kernel_size, padding=pad)
        self.full = DenseUNet(full_features, bins=max_bin, growth=full_growth, layers=full_layers,
                              blocks=full_blocks, **common)
        self.final = D2Block(k_out + full_growth[-1], final_growth, final_layers, kernel_size, dilated=dilated)
        self.gate_norm = nn.BatchNorm2d(final_growth)
        self.gate = nn.Conv2d(final_growth, channels, 1)
        self.filt = nn.Conv2d(final_growth, channels, 1)
        self.decode_scale = nn.Parameter(torch.ones(max_bin))
        self.decode_bias = nn.Parameter(torch.ones(max_bin))

    def forward(self, mag: Tensor) -> Tensor:
        x = (mag - self.in_offset) * self.in_scale
        bands = [
            out(net(conv(x[..., lo:hi])))
            for conv, net, out, lo, hi in zip(self.band_in, self.bands, self.band_out, self.edges[:-1],
                                              self.edges[1:], strict=True)
        ]
        full = self.full(self.full_in(x))
        h = self.gate_norm(self.final(torch.cat([torch.cat(bands, dim=-1), full], dim=1)))
        y = torch.sigmoid(self.gate(h)) * self.filt(h)
        return torch.relu(y * self.decode_scale + self.decode_bias)


def _int_list(name: str, value: Any, *, length: int | None = None, odd: bool = False) -> list[int]:
    """A non-empty list of positive integers (of ``length`` when given; of odd length with ``odd``)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{name} must be a non-empty list of integers, got {value!r}")
    out = [check_int(f"{name}[{i}]", v, minimum=1) for i, v in enumerate(value)]
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(out)}: {out}")
    if odd and len(out) % 2 == 0:
        raise ValueError(f"{name} must have an odd number of entries (down levels, bottleneck, up levels), "
                         f"got {len(out)}: {out}")
    return out


def _per_band(name: str, value: Any, bands: int, lengths: Sequence[int] | None = None) -> list[list[int]]:
    """One integer list per band (each of the matching length in ``lengths`` when given)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != bands:
        raise ValueError(f"{name} must be a list of {bands} lists (one per band), got {value!r}")
    return [_int_list(f"{name}[{i}]", v, length=None if lengths is None else lengths[i], odd=lengths is None)
            for i, v in enumerate(value)]


def _band_edges(band_split: Sequence[int], max_bin: int) -> list[int]:
    """``[0, *band_split, max_bin]``, checked to increase strictly (an empty ``band_split``: one band)."""
    no_split = isinstance(band_split, Sequence) and not isinstance(band_split, str) and len(band_split) == 0
    split = [] if no_split else _int_list("band_split", band_split)
    edges = [0, *split, max_bin]
    if any(a >= b for a, b in zip(edges[:-1], edges[1:], strict=True)):
        raise ValueError(f"band_split must increase strictly inside (0, max_bin={max_bin}), got {split}")
    return edges


class D3Net(SpectralMaskModel):
    """D3Net (or MMDenseLSTM with ``mmdenselstm=True``): one band-split network per target, magnitudes.

    Args:
        targets: stem names in output order; one network each.
        channels: audio channels (1 mono, 2 stereo).
        sample_rate: Hz (recorded only).
        n_fft: STFT size in samples (4096).
        hop_length: STFT hop in samples (1024).
        max_bin: bins the networks see (1600); the estimate above is set by ``high_bins``.
        band_split: bins where the bands split, increasing, inside ``(0, max_bin)`` (``[256]``: two bands).
        band_features: channels of each band's first conv (``[32, 8]``).
        band_growth, band_layers, band_blocks: per band, per level: D3 growth rate, layers per D2 block, D2 blocks
            per D3 block (odd-length lists; the defaults are the authors' vocals network).
        full_features, full_growth, full_layers, full_blocks: the same for the full-band sub-network.
        final_growth, final_layers: the final D2 block (12, 3).
        kernel_size: odd convolution size (3).
        high_bins: estimate above ``max_bin``: ``"mixture"`` magnitude (the authors') or ``"zeros"``.
        mmdenselstm: plain dense blocks and a BLSTM at every sub-network's bottleneck (see the module docstring).
        lstm_hidden: units per direction of those LSTMs (128).
        init_scale: when set, Kaiming re-init of conv / linear weights times this factor.
    """

    name = "d3net"
    default_loss: ClassVar[str] = "mse_spec"
    TINY: ClassVar[dict[str, Any]] = {
        "n_fft": 256, "hop_length": 64, "max_bin": 100, "band_split": [32], "band_features": [4, 2],
        "band_growth": [[4, 4, 4], [2, 2, 2]], "band_layers": [[2, 2, 2], [1, 1, 1]],
        "band_blocks": [[2, 2, 2], [1, 1, 1]], "full_features": 4, "full_growth": [4, 4, 4],
        "full_layers": [2, 2, 2], "full_blocks": [1, 1, 1], "final_growth": 4, "final_layers": 2, "lstm_hidden": 8,
    }

    def __init__(
        self,
        *,
        targets: Sequence[str],
        channels: int = 2,
        sample_rate: int = 44100,
        n_fft: int = 4096,
        hop_length: int = 1024,
        max_bin: int = 1600,
        band_split: Sequence[int] = (256,),
        band_features: Sequence[int] = (32, 8),
        band_growth: Sequence[Sequence[int]] = ((16, 18, 20, 22, 20, 18, 16), (2, 2, 2, 2, 2)),
        band_layers: Sequence[Sequence[int]] = ((5, 5, 5, 5, 4, 4, 4), (1, 1, 1, 1, 1)),
        band_blocks: Sequence[Sequence[int]] = ((2, 2, 2, 2, 2, 2, 2), (1, 1, 1, 1, 1)),
        full_features: int = 32,
        full_growth: Sequence[int] = (13, 14, 15, 16, 17, 16, 14, 12, 11),
        full_layers: Sequence[int] = (4, 5, 6, 7, 8, 6, 5, 4, 4),
        full_blocks: Sequence[int] = (2, 2, 2, 2, 2, 2, 2, 2, 2),
        final_growth: int = 12,
        final_layers: int = 3,
        kernel_size: int = 3,
        high_bins: str = "mixture",
        mmdenselstm: bool = False,
        lstm_hidden: int = 128,
        init_scale: float | None = None,
    ) -> None:
        super().__init__(
            targets=targets, channels=channels, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length
        )
        self.max_bin = check_max_bin(check_int("max_bin", max_bin, minimum=2), bins=self.bins, n_fft=n_fft)
        edges = _band_edges(band_split, self.max_bin)
        self.band_split, n_bands = edges[1:-1], len(edges) - 1
        self.band_features = _int_list("band_features", band_features, length=n_bands)
        self.band_growth = _per_band("band_growth", band_growth, n_bands)
        lengths = [len(g) for g in self.band_growth]
        self.band_layers = _per_band("band_layers", band_layers, n_bands, lengths)
        self.band_blocks = _per_band("band_blocks", band_blocks, n_bands, lengths)
        self.full_features = check_int("full_features", full_features, minimum=1)
        self.full_growth = _int_list("full_growth", full_growth, odd=True)
        self.full_layers = _int_list("full_layers", full_layers, length=len(self.full_growth))
        self.full_blocks = _int_list("full_blocks", full_blocks, length=len(self.full_growth))
        self.final_growth = check_int("final_growth", final_growth, minimum=1)
        self.final_layers = check_int("final_layers", final_layers, minimum=1)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.high_bins = check_choice("high_bins", high_bins, HIGH_BINS)
        if not isinstance(mmdenselstm, bool):
            raise ValueError(f"mmdenselstm must be true or false, got {mmdenselstm!r}")
        self.mmdenselstm = mmdenselstm
        self.lstm_hidden = check_int("lstm_hidden", lstm_hidden, minimum=1)
        self.init_scale = init_scale
        self.branches = self._build_branches(edges)
        if init_scale is not None:
            scale_init_(self, init_scale)

    def _build_branches(self, edges: list[int]) -> nn.ModuleList:
        """One :class:`D3NetBranch` per target over the band ``edges``."""
        return nn.ModuleList(
            D3NetBranch(
                self.channels, edges=edges, band_features=self.band_features, band_growth=self.band_growth,
                band_layers=self.band_layers, band_blocks=self.band_blocks, full_features=self.full_features,
                full_growth=self.full_growth, full_layers=self.full_layers, full_blocks=self.full_blocks,
                final_growth=self.final_growth, final_layers=self.final_layers, kernel_size=self.kernel_size,
                dilated=not self.mmdenselstm, lstm_hidden=self.lstm_hidden if self.mmdenselstm else None,
            )
            for _ in self.targets
        )

    def _arch_config(self) -> dict[str, Any]:
        return {
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "max_bin": self.max_bin,
            "band_split": list(self.band_split),
            "band_features": list(self.band_features),
            "band_growth": [list(g) for g in self.band_growth],
            "band_layers": [list(g) for g in self.band_layers],
            "band_blocks": [list(g) for g in self.band_blocks],
            "full_features": self.full_features,
            "full_growth": list(self.full_growth),
            "full_layers": list(self.full_layers),
            "full_blocks": list(self.full_blocks),
            "final_growth": self.final_growth,
            "final_layers": self.final_layers,
            "kernel_size": self.kernel_size,
            "high_bins": self.high_bins,
            "mmdenselstm": self.mmdenselstm,
            "lstm_hidden": self.lstm_hidden,
            "init_scale": self.init_scale,
        }

    def estimate(self, mixture: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, T)`` -> (magnitude estimates ``(B, S, C, F, N)`` float32, mixture complex STFT ``(B, C, F, N)``)."""
        mix_spec = self.spectrogram(mixture)
        mag = mix_spec.abs()
        scale = float(self.n_fft) ** 0.5
        x = mag[:, :, : self.max_bin].transpose(-1, -2) / scale  # (B, C, N, max_bin)
        high = mag[:, :, self.max_bin:]
        if self.high_bins == "zeros":
            high = torch.zeros_like(high)
        est = [torch.cat([branch(x).transpose(-1, -2).float() * scale, high], dim=-2) for branch in self.branches]
        return torch.stack(est, dim=1), mix_spec
