"""PHASEN: a two-stream network that estimates an amplitude mask and the phase, sized for 44.1 kHz music.

After Yin, Luo, Xiong & Zeng 2020, "PHASEN: A Phase-and-Harmonics-Aware Speech Enhancement Network" (AAAI). On the
mixture STFT ``X`` ``(B, C, F, N)`` (``torch.stft``, Hann window), the real and imaginary parts of the ``C`` audio
channels are ``2C`` input maps of ``F x N``, and

1. **stream A** (amplitude) starts with two convolutions (7 bins x 1 frame, then 1 x 7), each with batch norm and
   ReLU, to ``amp_channels`` (C_A) maps; **stream P** (phase) with two convolutions (3 x 5, then 1 x 25) to
   ``phase_channels`` (C_P) maps;
2. ``blocks`` **two-stream blocks** (TSB) follow. In each, stream A runs a frequency transformation block (FTB), three
   convolutions (5 x 5, 1 x 25, 5 x 5; batch norm, ReLU) and a second FTB; stream P runs global layer norm, a 3 x 5
   convolution, global layer norm and a 1 x 25 convolution. Then the streams exchange information:
   ``A <- A * tanh(conv1x1(P))`` and ``P <- P * tanh(conv1x1(A))`` (both from the block's outputs);
3. an **FTB** (the "harmonics" part: a learned full-band map along frequency) is: attention (1x1 convolution to
   ``attention_channels`` = 5 maps, batch norm, ReLU, the ``5 x F`` values of each frame as a 1-D signal over time
   convolved by a kernel of 9 frames to ``F`` values, batch norm, ReLU) multiplied into the input, a ``F x F``
   linear layer along frequency (Freq-FC, no bias), concatenated with the input, 1x1 convolution back to C_A, batch
   norm, ReLU;
4. **amplitude mask**: 1x1 convolution to 8 maps, the ``8 F`` values of each frame through a bidirectional LSTM
   (``lstm_hidden`` units each way, float32 with autocast off) and three linear layers (``fc_hidden``, ReLU,
   ``fc_hidden``, ReLU, ``S C F``, sigmoid): one mask in [0, 1] per target, audio channel and bin;
5. **phase**: 1x1 convolution of stream P to ``2 S C`` maps, each (real, imaginary) pair normalised to unit length;
6. estimate ``|X| * mask * phase`` per target and channel, inverse STFT (``torch.istft``) to ``(B, S, C, T)``.

Kernels are written bins x frames. The paper writes them frames x bins (T x F maps): its "25 x 1" convolutions
span 25 frames of one bin, the long *time* context, as in the public implementations; the FTBs give the long
frequency context.

Scaling to 44.1 kHz music (the paper: 16 kHz speech, 25 ms Hann window, 10 ms hop, 512-point FFT, 257 bins):
window and hop keep about their durations, rounded to powers of two: ``n_fft = 1024`` (23.2 ms; 513 bins 43 Hz
apart, the paper's are 31 Hz), ``hop_length = 512`` (11.6 ms); the 25-frame kernels then span 290 ms (the paper:
250 ms) and the 9-frame attention kernel 104 ms. The FTB layers grow with the bins (the attention convolution has
``45 F^2`` weights: 11.8 M per FTB at 513 bins). The paper's widths are C_A = 96, C_P = 48, a 600-unit BLSTM and
600-unit linear layers; music at 44.1 kHz has about twice the time-frequency bins per second of 16 kHz speech at
this hop, so the defaults halve the convolution widths (C_A = 48, C_P = 24; the convolutions cost about a quarter)
and keep 300 LSTM units each way (600 together) and 600-unit linear layers. ``amp_channels=96,
phase_channels=48`` restores the paper's widths.

Any length works (``torch.stft`` pads; the inverse is cropped to ``T``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from train.models import SeparationModel, check_int
from train.models.frontend import check_stft_sizes
from train.models.spectral import istft, num_bins, stft

#: ``|z|`` of the phase maps is ``sqrt(|z|^2 + EPS^2)``: a finite gradient where a phase map is zero.
EPS = 1e-8


def conv_bn_relu(c_in: int, c_out: int, kernel: tuple[int, int]) -> nn.Sequential:
    """``(B, c_in, F, N)`` -> ``(B, c_out, F, N)``: same-size convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=(kernel[0] // 2, kernel[1] // 2)), nn.BatchNorm2d(c_out), nn.ReLU()
    )


def conv(c_in: int, c_out: int, kernel: tuple[int, int]) -> nn.Conv2d:
    """Same-size 2-D convolution (odd kernels)."""
    return nn.Conv2d(c_in, c_out, kernel, padding=(kernel[0] // 2, kernel[1] // 2))


class GlobalLayerNorm2d(nn.Module):
    """Normalise ``(B, C, F, N)`` over channels, bins and frames per item (float32 statistics), learned per-channel
    gain and bias."""

    def __init__(self, channels: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        y = x.float()
        mean = y.mean(dim=(1, 2, 3), keepdim=True)
        var = (y - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True)
        return ((y - mean) / torch.sqrt(var + self.eps) * self.gain + self.bias).to(x.dtype)


class FTB(nn.Module):
    """Frequency transformation block on ``(B, C_A, F, N)`` maps (see the module docstring)."""

    def __init__(self, channels: int, bins: int, attention_channels: int) -> None:
        super().__init__()
        self.attn_in = nn.Sequential(nn.Conv2d(channels, attention_channels, 1), nn.BatchNorm2d(attention_channels),
                                     nn.ReLU())
        self.attn_time = nn.Sequential(nn.Conv1d(attention_channels * bins, bins, 9, padding=4),
                                       nn.BatchNorm1d(bins), nn.ReLU())
        self.freq_fc = nn.Linear(bins, bins, bias=False)
        self.out = conv_bn_relu(2 * channels, channels, (1, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, _, f, n = x.shape
        a = self.attn_in(x).reshape(b, -1, n)  # (B, C_r F, N)
        a = self.attn_time(a).unsqueeze(1)  # (B, 1, F, N)
        y = self.freq_fc((x * a).transpose(2, 3)).transpose(2, 3)
        return self.out(torch.cat([x, y], dim=1))


class TwoStreamBlock(nn.Module):
    """One TSB: ``(A (B, C_A, F, N), P (B, C_P, F, N))`` -> the same shapes."""

    def __init__(self, amp: int, phase: int, bins: int, attention_channels: int) -> None:
        super().__init__()
        self.amp = nn.Sequential(
            FTB(amp, bins, attention_channels),
            conv_bn_relu(amp, amp, (5, 5)),
            conv_bn_relu(amp, amp, (1, 25)),
            conv_bn_relu(amp, amp, (5, 5)),
            FTB(amp, bins, attention_channels),
        )
        self.phase = nn.Sequential(
            GlobalLayerNorm2d(phase), conv(phase, phase, (3, 5)),
            GlobalLayerNorm2d(phase), conv(phase, phase, (1, 25)),
        )
        self.p_to_a = nn.Conv2d(phase, amp, 1)
        self.a_to_p = nn.Conv2d(amp, phase, 1)

    def forward(self, a: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        a, p = self.amp(a), self.phase(p)
        return a * torch.tanh(self.p_to_a(p)), p * torch.tanh(self.a_to_p(a))


class PHASEN(SeparationModel):
    """PHASEN for ``channels``-channel music at 44.1 kHz: amplitude masks and estimated phases per target.

    Args:
        targets: stem names in output order.
        channels: audio channels (1 mono, 2 stereo).
        sample_rate: Hz (recorded only; the defaults are chosen for 44.1 kHz).
        n_fft: STFT size in samples (1024); even.
        hop_length: STFT hop in samples (512).
        amp_channels: C_A, maps of the amplitude stream (48; the paper 96).
        phase_channels: C_P, maps of the phase stream (24; the paper 48).
        blocks: two-stream blocks (3).
        attention_channels: C_r of the FTB attention (5).
        lstm_hidden: BLSTM units per direction (300).
        fc_hidden: width of the two hidden linear layers of the amplitude mask (600).
    """

    name = "phasen"
    default_loss: ClassVar[str] = "l1_wave"
    TINY: ClassVar[dict[str, Any]] = {"n_fft": 256, "hop_length": 128, "amp_channels": 4, "phase_channels": 4,
                                      "blocks": 1, "lstm_hidden": 16, "fc_hidden": 32}

    def __init__(
        self,
        *,
        targets: Sequence[str],
        channels: int = 2,
        sample_rate: int = 44100,
        n_fft: int = 1024,
        hop_length: int = 512,
        amp_channels: int = 48,
        phase_channels: int = 24,
        blocks: int = 3,
        attention_channels: int = 5,
        lstm_hidden: int = 300,
        fc_hidden: int = 600,
    ) -> None:
        super().__init__(targets=targets, channels=channels, sample_rate=sample_rate)
        self.n_fft, self.hop_length = check_stft_sizes(n_fft, hop_length)
        self.amp_channels = check_int("amp_channels", amp_channels, minimum=1)
        self.phase_channels = check_int("phase_channels", phase_channels, minimum=1)
        self.blocks = check_int("blocks", blocks, minimum=1)
        self.attention_channels = check_int("attention_channels", attention_channels, minimum=1)
        self.lstm_hidden = check_int("lstm_hidden", lstm_hidden, minimum=1)
        self.fc_hidden = check_int("fc_hidden", fc_hidden, minimum=1)
        self.bins = num_bins(self.n_fft)
        c, bins, outs = self.channels, self.bins, len(self.targets) * self.channels
        a, p = self.amp_channels, self.phase_channels

        self.amp_in = nn.Sequential(conv_bn_relu(2 * c, a, (7, 1)), conv_bn_relu(a, a, (1, 7)))
        self.phase_in = nn.Sequential(conv(2 * c, p, (3, 5)), conv(p, p, (1, 25)))
        self.tsbs = nn.ModuleList(TwoStreamBlock(a, p, bins, self.attention_channels) for _ in range(self.blocks))
        self.amp_reduce = conv_bn_relu(a, 8, (1, 1))
        self.lstm = nn.LSTM(8 * bins, self.lstm_hidden, bidirectional=True)
        self.amp_out = nn.Sequential(
            nn.Linear(2 * self.lstm_hidden, self.fc_hidden), nn.ReLU(),
            nn.Linear(self.fc_hidden, self.fc_hidden), nn.ReLU(),
            nn.Linear(self.fc_hidden, outs * bins), nn.Sigmoid(),
        )
        self.phase_out = nn.Conv2d(p, 2 * outs, 1)

    def _arch_config(self) -> dict[str, Any]:
        return {
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "amp_channels": self.amp_channels,
            "phase_channels": self.phase_channels,
            "blocks": self.blocks,
            "attention_channels": self.attention_channels,
            "lstm_hidden": self.lstm_hidden,
            "fc_hidden": self.fc_hidden,
        }

    def estimate(self, mixture: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, C, T)`` -> (amplitude masks ``(B, S, C, F, N)`` in [0, 1], unit phases ``(B, S, C, F, N)``
        complex64, mixture STFT ``(B, C, F, N)`` complex64)."""
        self.check_mixture(mixture)
        spec = stft(mixture, n_fft=self.n_fft, hop_length=self.hop_length)
        b, c, f, n = spec.shape
        s = len(self.targets)
        x = torch.cat([spec.real, spec.imag], dim=1)  # (B, 2C, F, N)
        a, p = self.amp_in(x), self.phase_in(x)
        for tsb in self.tsbs:
            a, p = tsb(a, p)
        a = self.amp_reduce(a).permute(3, 0, 1, 2).reshape(n, b, 8 * f)
        with torch.autocast(device_type=a.device.type, enabled=False):
            a, _ = self.lstm(a.float())
        masks = self.amp_out(a).float().reshape(n, b, s, c, f).permute(1, 2, 3, 4, 0)
        ph = self.phase_out(p).float().reshape(b, s, c, 2, f, n)
        re, im = ph[:, :, :, 0], ph[:, :, :, 1]
        norm = torch.sqrt(re * re + im * im + EPS * EPS)
        return masks, torch.complex(re / norm, im / norm), spec

    def forward(self, mixture: Tensor) -> Tensor:
        """``(B, C, T)`` mixture -> ``(B, S, C, T)`` float32 waveform estimates."""
        masks, phases, spec = self.estimate(mixture)
        est = (spec.abs().unsqueeze(1) * masks) * phases
        return istft(est, n_fft=self.n_fft, hop_length=self.hop_length, length=mixture.shape[-1])


__all__ = ["FTB", "PHASEN", "GlobalLayerNorm2d", "TwoStreamBlock"]
