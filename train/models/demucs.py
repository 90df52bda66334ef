"""Demucs: a waveform U-Net with a bidirectional LSTM at the bottleneck.

After Défossez, Usunier, Bottou & Bach 2019, "Music Source Separation in the Waveform Domain" (arXiv:1911.13254).
The mixture ``(B, C, T)`` is

1. standardised (``normalize``): minus the mean, over the standard deviation, of its mono downmix (per item; the
   estimates are scaled back), so the network sees the same level whatever the song's loudness;
2. up-sampled by 2 with a windowed-sinc interpolator (``resample``; the estimates are down-sampled back), which the
   report credits with +0.25 dB SDR: the first layers then see a finer time grid;
3. encoded by ``depth`` blocks ``Conv1d(kernel 8, stride 4) -> ReLU -> Conv1d(1x1, 2 x channels) -> GLU`` whose
   channels start at ``base_channels`` and double per block (64, 128, ..., 2048);
4. passed through a ``lstm_layers``-deep bidirectional LSTM (hidden size = the bottleneck channels) and a linear
   layer back to the bottleneck channels; the LSTM always runs in float32, autocast switched off around it;
5. decoded by the mirrored blocks ``x + skip -> Conv1d(kernel context=3, 2 x channels) -> GLU ->
   ConvTranspose1d(kernel 8, stride 4) -> ReLU`` (no ReLU after the last one, which outputs ``S * C`` channels),
   where ``skip`` is the encoder output of the same level, centre-cropped (the convolutions have no padding).

Any length works: the input is zero-padded on both sides to the nearest *valid* length (every strided convolution
then covers its input exactly, see :meth:`Demucs.valid_length`) and the output is centre-cropped back to ``T``, so
the padding doubles as context at the chunk edges.

Initialisation: ``rescale`` (0.1, the report credits +0.4 dB) divides the weights and bias of every convolution by
``sqrt(std(weight) / rescale)``, moving each layer's weight standard deviation to ``sqrt(std * rescale)``.

Defaults: the paper's layout (depth 6, kernel 8, stride 4, LSTM 2 layers, context 3, L1 loss) with 64 initial
channels, the width of the Demucs v2 release (265.7 M parameters for 4 stereo targets); ``base_channels=100``
restores the paper's width (648.5 M parameters here, a 2.6 GB float32 model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.models import SeparationModel, check_int

#: Zero crossings on each side of the windowed-sinc interpolator of :func:`upsample2` / :func:`downsample2`.
SINC_ZEROS = 56


def sinc_taps(zeros: int = SINC_ZEROS, *, device: torch.device | None = None) -> Tensor:
    """``(2 * zeros,)`` float32 taps of a half-sample interpolator: ``sinc(d) * hann(d / zeros)`` at the offsets
    ``d = -zeros + 1/2, ..., zeros - 1/2`` (``sinc(d) = sin(pi d) / (pi d)``; the Hann taper is
    ``(1 + cos(pi d / zeros)) / 2``). Symmetric, so it serves as a correlation or a convolution kernel alike."""
    d = torch.arange(2 * zeros, dtype=torch.float64) - zeros + 0.5
    taper = 0.5 * (1 + torch.cos(math.pi * d / zeros))
    return (torch.sin(math.pi * d) / (math.pi * d) * taper).float().to(device)


def _half_sample(x: Tensor, taps: Tensor) -> Tensor:
    """``(B, C, T)`` -> ``(B, C, T + 1)``: ``out[i]`` is ``x`` interpolated at position ``i - 1/2`` (zeros outside)."""
    b, c, t = x.shape
    zeros = taps.numel() // 2
    y = F.conv1d(F.pad(x.reshape(b * c, 1, t), (zeros, zeros)), taps.to(x.dtype).view(1, 1, -1))
    return y.reshape(b, c, t + 1)


def upsample2(x: Tensor, zeros: int = SINC_ZEROS) -> Tensor:
    """``(B, C, T)`` -> ``(B, C, 2T)`` band-limited up-sampling by 2: the input samples at even positions, the
    windowed-sinc interpolation between neighbours at odd positions."""
    half = _half_sample(x, sinc_taps(zeros, device=x.device))[..., 1:]  # positions n + 1/2
    return torch.stack([x, half], dim=-1).reshape(*x.shape[:-1], 2 * x.shape[-1])


def downsample2(x: Tensor, zeros: int = SINC_ZEROS) -> Tensor:
    """``(B, C, T)`` -> ``(B, C, ceil(T / 2))`` band-limited down-sampling by 2 (the inverse of :func:`upsample2` for
    signals below a quarter of the rate): the mean of the even samples and of the odd samples interpolated onto
    the even positions (a half-band low-pass), then decimated. An odd ``T`` is zero-padded by one sample first."""
    if x.shape[-1] % 2:
        x = F.pad(x, (0, 1))
    even, odd = x[..., ::2], x[..., 1::2]
    return 0.5 * (even + _half_sample(odd, sinc_taps(zeros, device=x.device))[..., :-1])


def center_trim(x: Tensor, length: int) -> Tensor:
    """The centre ``length`` samples of the last axis (the extra sample of an odd difference is cut at the end)."""
    excess = x.shape[-1] - length
    if excess < 0:
        raise ValueError(f"cannot centre-trim {x.shape[-1]} samples to {length}")
    start = excess // 2
    return x[..., start: start + length]


def rescale_convs_(module: nn.Module, reference: float) -> nn.Module:
    """Divide the weight and bias of every ``Conv1d`` / ``ConvTranspose1d`` in ``module`` by
    ``sqrt(std(weight) / reference)`` (in place); returns ``module``."""
    if not (isinstance(reference, int | float) and not isinstance(reference, bool) and math.isfinite(reference)
            and reference > 0):
        raise ValueError(f"rescale must be a positive finite number or None, got {reference!r}")
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv1d | nn.ConvTranspose1d):
                scale = math.sqrt(m.weight.std().item() / reference)
                m.weight.div_(scale)
                if m.bias is not None:
                    m.bias.div_(scale)
    return module


class BLSTM(nn.Module):
    """Bidirectional LSTM over time of ``(B, D, L)`` features, then a linear layer ``2D -> D``; float32 always."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=layers, bidirectional=True)
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            y, _ = self.lstm(x.permute(2, 0, 1).float())  # (L, B, 2D)
            return self.linear(y).permute(1, 2, 0)


class Demucs(SeparationModel):
    """Demucs (waveform U-Net + BLSTM) for ``channels``-channel audio.

    Args:
        targets: stem names in output order.
        channels: audio channels in and out (1 mono, 2 stereo).
        sample_rate: Hz (recorded only; defaults chosen for 44.1 kHz).
        base_channels: channels of the first encoder block (64; the paper used 100).
        depth: encoder / decoder blocks (6).
        kernel_size: kernel of the strided (transposed) convolutions (8).
        stride: their stride (4); at most ``kernel_size``.
        growth: channel multiplier per block (2.0).
        lstm_layers: BLSTM layers at the bottleneck (2; 0: none).
        context: kernel of the decoder's convolution before each transposed convolution (3).
        rescale: reference of the initial weight rescaling (0.1; ``None``: PyTorch's default initialisation).
        resample: up-sample the input by 2 and down-sample the output back (windowed sinc).
        normalize: standardise the input by its mono downmix's mean and standard deviation.
    """

    name = "demucs"
    default_loss: ClassVar[str] = "l1_wave"
    TINY: ClassVar[dict[str, Any]] = {"base_channels": 8, "depth": 4, "lstm_layers": 1}

    def __init__(
        self,
        *,
        targets: Sequence[str],
        channels: int = 2,
        sample_rate: int = 44100,
        base_channels: int = 64,
        depth: int = 6,
        kernel_size: int = 8,
        stride: int = 4,
        growth: float = 2.0,
        lstm_layers: int = 2,
        context: int = 3,
        rescale: float | None = 0.1,
        resample: bool = True,
        normalize: bool = True,
    ) -> None:
        super().__init__(targets=targets, channels=channels, sample_rate=sample_rate)
        self.base_channels = check_int("base_channels", base_channels, minimum=1)
        self.depth = check_int("depth", depth, minimum=1)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        self.stride = check_int("stride", stride, minimum=1)
        if self.stride > self.kernel_size:
            raise ValueError(f"stride must be at most kernel_size={kernel_size} (else samples are skipped), "
                             f"got stride={stride}")
        if isinstance(growth, bool) or not isinstance(growth, int | float) or not growth >= 1:
            raise ValueError(f"growth must be a number >= 1, got {growth!r}")
        self.growth = float(growth)
        self.lstm_layers = check_int("lstm_layers", lstm_layers, minimum=0)
        self.context = check_int("context", context, minimum=1)
        for flag, value in (("resample", resample), ("normalize", normalize)):
            if not isinstance(value, bool):
                raise ValueError(f"{flag} must be true or false, got {value!r}")
        self.resample, self.normalize = resample, normalize
        self.rescale = rescale

        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        c_in, width = self.channels, self.base_channels
        for level in range(self.depth):
            self.encoder.append(nn.Sequential(
                nn.Conv1d(c_in, width, self.kernel_size, self.stride), nn.ReLU(),
                nn.Conv1d(width, 2 * width, 1), nn.GLU(dim=1),
            ))
            c_out = c_in if level > 0 else len(self.targets) * self.channels
            decode: list[nn.Module] = [
                nn.Conv1d(width, 2 * width, self.context), nn.GLU(dim=1),
                nn.ConvTranspose1d(width, c_out, self.kernel_size, self.stride),
            ]
            if level > 0:
                decode.append(nn.ReLU())
            self.decoder.insert(0, nn.Sequential(*decode))
            c_in, width = width, int(self.growth * width)
        self.bottleneck = c_in
        self.lstm = BLSTM(c_in, self.lstm_layers) if self.lstm_layers else None
        if rescale is not None:
            rescale_convs_(self, rescale)

    def _arch_config(self) -> dict[str, Any]:
        return {
            "base_channels": self.base_channels,
            "depth": self.depth,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "growth": self.growth,
            "lstm_layers": self.lstm_layers,
            "context": self.context,
            "rescale": self.rescale,
            "resample": self.resample,
            "normalize": self.normalize,
        }

    # -- lengths ---------------------------------------------------------------------------------------------------
    def valid_length(self, length: int) -> int:
        """The smallest input length ``>= length`` whose output covers ``length`` samples, every strided
        convolution fitting its input exactly (samples of the model's rate, before the internal up-sampling)."""
        n = max(1, math.ceil(self._inner_needed(length) / 2)) if self.resample else self._inner_needed(length)
        while self.output_length(n) < length:  # the rounding above errs low only by a few samples, if ever
            n += 1
        return max(n, length)

    def _inner_needed(self, length: int) -> int:
        """Length at the network's own rate (after up-sampling) that makes every layer exact and long enough."""
        n = 2 * length if self.resample else length
        for _ in range(self.depth):
            n = max(1, math.ceil((n - self.kernel_size) / self.stride) + 1) + self.context - 1
        for _ in range(self.depth):
            n = (n - 1) * self.stride + self.kernel_size
        return n

    def output_length(self, length: int) -> int:
        """Samples the network outputs for an input of ``length`` samples (0 when it is too short)."""
        n = 2 * length if self.resample else length
        for _ in range(self.depth):
            if n < self.kernel_size:
                return 0
            n = (n - self.kernel_size) // self.stride + 1
        for _ in range(self.depth):
            n -= self.context - 1
            if n < 1:
                return 0
            n = (n - 1) * self.stride + self.kernel_size
        return math.ceil(n / 2) if self.resample else n

    def receptive_field(self) -> int:
        """About how many input samples (at the model's rate) one output sample of the convolutions depends on.

        Each encoder convolution adds ``(kernel - 1) * step``, each decoder block ``(context - 1) * step`` and
        ``(ceil(kernel / stride) - 1) * step`` (its transposed convolution), ``step`` being the spacing of that
        block's input samples at the network's own rate; the centre-cropped skips can add a few samples more. Not
        counted: the BLSTM (it sees the whole input) and the tails of the resampling filters (``SINC_ZEROS``
        samples each side)."""
        field, step = 1, 1
        for _ in range(self.depth):
            field += (self.kernel_size - 1) * step
            step *= self.stride
        for _ in range(self.depth):
            field += (self.context - 1 + math.ceil(self.kernel_size / self.stride) - 1) * step
            step //= self.stride
        return math.ceil(field / 2) if self.resample else field

    # -- forward ---------------------------------------------------------------------------------------------------
    def forward(self, mixture: Tensor) -> Tensor:
        """``(B, C, T)`` mixture -> ``(B, S, C, T)`` waveform estimates (float32 under autocast too)."""
        self.check_mixture(mixture)
        b, length = mixture.shape[0], mixture.shape[-1]
        x = mixture.float()
        if self.normalize:
            mono = x.mean(dim=1, keepdim=True)
            mean, std = mono.mean(dim=-1, keepdim=True), mono.std(dim=-1, keepdim=True, correction=0)
            x = (x - mean) / (1e-5 + std)
        delta = self.valid_length(length) - length
        x = F.pad(x, (delta // 2, delta - delta // 2))
        if self.resample:
            x = upsample2(x)
        skips = []
        for encode in self.encoder:
            x = encode(x)
            skips.append(x)
        if self.lstm is not None:
            x = self.lstm(x)
        for decode in self.decoder:
            x = decode(x + center_trim(skips.pop(), x.shape[-1]))
        x = x.float()
        if self.resample:
            x = downsample2(x)
        x = center_trim(x, length).reshape(b, len(self.targets), self.channels, length)
        if self.normalize:
            x = x * (1e-5 + std).unsqueeze(1) + mean.unsqueeze(1)
        return x


__all__ = ["BLSTM", "Demucs", "center_trim", "downsample2", "rescale_convs_", "sinc_taps", "upsample2"]
