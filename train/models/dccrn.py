"""DCCRN: deep complex convolution recurrent network, scaled from 16 kHz speech to 44.1 kHz music.

After Hu et al. 2020, "DCCRN: Deep Complex Convolution Recurrent Network for Phase-Aware Speech Enhancement"
(Interspeech). The mixture ``(B, C, T)`` goes through

1. a **learnable STFT** (:class:`train.models.frontend.ConvSTFT`, a strided 1-D convolution initialised to the
   Hann-windowed DFT), the DC bin dropped: ``C`` complex input channels of ``F = n_fft / 2`` bins;
2. a **complex encoder**: ``len(filters)`` blocks of complex 2-D convolution (kernel ``kernel_freq x kernel_time``
   = 5 x 2, stride 2 in frequency, causal in time: one frame of left padding), batch norm on the real and imaginary
   parts (as separate channels), PReLU; the bins halve per block (512 -> 8 with the defaults);
3. a **complex LSTM** over time (``lstm_layers``; each layer two real LSTMs ``Lr``, ``Li`` applied as
   ``(Lr(re) - Li(im), Lr(im) + Li(re))``) on the flattened ``channels x bins``, and a complex linear projection back;
   the LSTMs run in float32, autocast switched off around them;
4. a **complex decoder**: mirrored complex transposed convolutions (kernel 5 x 2, stride 2 in frequency), each
   input concatenated with the encoder output of its level (real with real, imaginary with imaginary), batch norm
   and PReLU except after the last block, which outputs one complex mask per target and audio channel;
5. a **complex ratio mask** on the mixture spectrum ``X`` (the DC bin gets 0): ``mask="E"`` (the paper's best,
   polar) ``|X| tanh(|M|) e^{i(arg X + arg M)}``, or ``mask="C"`` (cartesian) the complex product ``X M``;
6. a **learnable inverse STFT** (:class:`train.models.frontend.ConvISTFT`) back to ``(B, S, C, T)``.

Scaling to 44.1 kHz (the paper: 16 kHz, 25 ms window = 400 samples, 6.25 ms hop = 100 samples, 512-point FFT):
window and hop keep their durations, rounded to powers of two: ``n_fft = 1024`` (23.2 ms) and ``hop_length = 256``
(5.8 ms). The bins are then 43 Hz apart (the paper's 31 Hz), so the 5-bin frequency kernel spans about the same
band (215 Hz vs 156 Hz) and the 2-frame time kernel the same time (11.6 ms vs 12.5 ms); the six stride-2 blocks take
512 bins to 8 (the paper: 256 to 4). Channels: the paper's DCCRN-CL counts real and imaginary parts together
(32, 64, 128, 256, 256, 256) and 256 LSTM units; ``filters`` and ``lstm_hidden`` here count complex channels (16,
32, 64, 128, 128, 128) and complex units (128), the same network. Multichannel music: the ``C`` audio channels are
the complex input channels and the masks are ``S x C`` complex output channels (the paper: one channel, one mask).

The polar mask avoids ``atan2``: it is computed as ``tanh(|M|) X (M / |M|)`` (the same value), with
``|M| = sqrt(|M|^2 + 1e-16)``, which keeps gradients finite where ``X`` or ``M`` is zero (digital silence).

Any length works (the STFT pads; the frequency axis is zero-padded to a multiple of ``2 ** len(filters)`` inside
and cropped back); the output has exactly ``T`` samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.models import SeparationModel, check_choice, check_int
from train.models.frontend import ConvISTFT, ConvSTFT, check_stft_sizes

MASKS = ("E", "C")
#: ``|z|`` is computed as ``sqrt(|z|^2 + EPS^2)``: finite gradients at ``z = 0`` (unit phasors of zero bins are 0).
EPS = 1e-8

Complex = tuple[Tensor, Tensor]


def magnitude(re: Tensor, im: Tensor, eps: float = EPS) -> Tensor:
    """``sqrt(re^2 + im^2 + eps^2)``: ``|z|`` with a finite gradient at ``z = 0``."""
    return torch.sqrt(re * re + im * im + eps * eps)


def unit(re: Tensor, im: Tensor, eps: float = EPS) -> Complex:
    """``z / sqrt(|z|^2 + eps^2)`` of ``z = re + i im`` (the unit phasor; 0 at 0), as (real, imaginary)."""
    mag = magnitude(re, im, eps)
    return re / mag, im / mag


class ComplexConv2d(nn.Module):
    """Complex 2-D convolution (or transposed convolution) on ``(re, im)`` pairs of ``(B, C, F, N)`` maps:
    ``(Wr * re - Wi * im, Wr * im + Wi * re)``; ``kwargs`` go to ``nn.Conv2d`` / ``nn.ConvTranspose2d``."""

    def __init__(self, c_in: int, c_out: int, *, transposed: bool = False, **kwargs: Any) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.real = conv(c_in, c_out, **kwargs)
        self.imag = conv(c_in, c_out, **kwargs)

    def forward(self, x: Complex) -> Complex:
        re, im = x
        both = torch.cat([re, im])  # one call per weight: the real and imaginary inputs as one batch
        r, i = self.real(both).chunk(2), self.imag(both).chunk(2)
        return r[0] - i[1], r[1] + i[0]


class ComplexNormAct(nn.Module):
    """Batch norm over the real and imaginary parts as ``2C`` channels, then one PReLU (the paper's "naive" BN)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(2 * channels)
        self.act = nn.PReLU()

    def forward(self, x: Complex) -> Complex:
        y = self.act(self.norm(torch.cat(x, dim=1)))
        re, im = y.chunk(2, dim=1)
        return re, im


class EncoderBlock(nn.Module):
    """Complex conv (stride 2 in frequency, causal in time) -> norm -> PReLU: halves the bins, keeps the frames."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.time_pad = kernel[1] - 1
        self.conv = ComplexConv2d(c_in, c_out, kernel_size=kernel, stride=(2, 1), padding=(kernel[0] // 2, 0))
        self.post = ComplexNormAct(c_out)

    def forward(self, x: Complex) -> Complex:
        re, im = (F.pad(t, (self.time_pad, 0)) for t in x)
        return self.post(self.conv((re, im)))


class DecoderBlock(nn.Module):
    """Complex transposed conv (stride 2 in frequency) -> [norm -> PReLU]: doubles the bins, keeps the frames."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], *, last: bool) -> None:
        super().__init__()
        self.time_crop = kernel[1] - 1
        self.conv = ComplexConv2d(c_in, c_out, transposed=True, kernel_size=kernel, stride=(2, 1),
                                  padding=(kernel[0] // 2, 0), output_padding=(1, 0))
        self.post = None if last else ComplexNormAct(c_out)

    def forward(self, x: Complex) -> Complex:
        re, im = self.conv(x)
        re, im = re[..., self.time_crop:], im[..., self.time_crop:]
        return (re, im) if self.post is None else self.post((re, im))


class ComplexLSTM(nn.Module):
    """Stacked complex LSTM over time of ``(N, B, D)`` real and imaginary features, then a complex linear layer
    back to ``D``; float32 always."""

    def __init__(self, dim: int, hidden: int, layers: int, *, bidirectional: bool) -> None:
        super().__init__()
        out = hidden * (2 if bidirectional else 1)
        self.real = nn.ModuleList()
        self.imag = nn.ModuleList()
        for layer in range(layers):
            d_in = dim if layer == 0 else out
            self.real.append(nn.LSTM(d_in, hidden, bidirectional=bidirectional))
            self.imag.append(nn.LSTM(d_in, hidden, bidirectional=bidirectional))
        self.proj_real = nn.Linear(out, dim)
        self.proj_imag = nn.Linear(out, dim)

    def forward(self, re: Tensor, im: Tensor) -> Complex:
        with torch.autocast(device_type=re.device.type, enabled=False):
            re, im = re.float(), im.float()
            for lstm_r, lstm_i in zip(self.real, self.imag, strict=True):
                both = torch.cat([re, im], dim=1)  # (N, 2B, D): the real and imaginary parts as one batch
                r, i = lstm_r(both)[0].chunk(2, dim=1), lstm_i(both)[0].chunk(2, dim=1)
                re, im = r[0] - i[1], r[1] + i[0]
            return (self.proj_real(re) - self.proj_imag(im), self.proj_real(im) + self.proj_imag(re))


class DCCRN(SeparationModel):
    """DCCRN for ``channels``-channel music at 44.1 kHz.

    Args:
        targets: stem names in output order.
        channels: audio channels (1 mono, 2 stereo): the complex input channels, masks per channel.
        sample_rate: Hz (recorded only; the defaults are chosen for 44.1 kHz).
        n_fft: STFT size and window length in samples (1024); even.
        hop_length: STFT hop in samples (256).
        filters: complex channels of the encoder blocks ((16, 32, 64, 128, 128, 128)); the decoder mirrors them.
        kernel_freq: frequency extent of the (transposed) convolution kernels (5; odd).
        kernel_time: time extent (2; causal).
        lstm_hidden: complex units per LSTM direction (128).
        lstm_layers: complex LSTM layers (2).
        bidirectional: bidirectional LSTMs (the paper: unidirectional, for streaming).
        mask: ``"E"`` (polar, bounded magnitude) or ``"C"`` (cartesian complex ratio mask).
        learnable_stft: the STFT and inverse STFT filters train (else fixed at the windowed DFT).
    """

    name = "dccrn"
    default_loss: ClassVar[str] = "si_sdr_loss"
    TINY: ClassVar[dict[str, Any]] = {"n_fft": 256, "hop_length": 128, "filters": [4, 8, 8], "lstm_hidden": 16,
                                      "lstm_layers": 1}

    def __init__(
        self,
        *,
        targets: Sequence[str],
        channels: int = 2,
        sample_rate: int = 44100,
        n_fft: int = 1024,
        hop_length: int = 256,
        filters: Sequence[int] = (16, 32, 64, 128, 128, 128),
        kernel_freq: int = 5,
        kernel_time: int = 2,
        lstm_hidden: int = 128,
        lstm_layers: int = 2,
        bidirectional: bool = False,
        mask: str = "E",
        learnable_stft: bool = True,
    ) -> None:
        super().__init__(targets=targets, channels=channels, sample_rate=sample_rate)
        self.n_fft, self.hop_length = check_stft_sizes(n_fft, hop_length)
        if isinstance(filters, str | bytes) or not isinstance(filters, Sequence) or not filters:
            raise ValueError(f"filters must be a non-empty list of channel counts, got {filters!r}")
        self.filters = tuple(check_int("filters[]", f, minimum=1) for f in filters)
        if (n_fft // 2) < 2 ** len(self.filters):
            raise ValueError(f"n_fft={n_fft} has {n_fft // 2} bins (DC dropped), fewer than the 2**{len(self.filters)} "
                             f"that {len(self.filters)} stride-2 blocks halve; allowed: n_fft >= "
                             f"{2 ** (len(self.filters) + 1)} or fewer filters")
        self.kernel_freq = check_int("kernel_freq", kernel_freq, minimum=1)
        if kernel_freq % 2 == 0:
            raise ValueError(f"kernel_freq must be odd (symmetric padding), got {kernel_freq}")
        self.kernel_time = check_int("kernel_time", kernel_time, minimum=1)
        self.lstm_hidden = check_int("lstm_hidden", lstm_hidden, minimum=1)
        self.lstm_layers = check_int("lstm_layers", lstm_layers, minimum=1)
        for flag, value in (("bidirectional", bidirectional), ("learnable_stft", learnable_stft)):
            if not isinstance(value, bool):
                raise ValueError(f"{flag} must be true or false, got {value!r}")
        self.bidirectional, self.learnable_stft = bidirectional, learnable_stft
        self.mask = check_choice("mask", mask, MASKS)

        self.stft = ConvSTFT(self.n_fft, self.hop_length, learnable=learnable_stft)
        self.istft = ConvISTFT(self.n_fft, self.hop_length, learnable=learnable_stft)
        kernel = (self.kernel_freq, self.kernel_time)
        ins = [self.channels, *self.filters[:-1]]
        self.encoder = nn.ModuleList(EncoderBlock(a, b, kernel) for a, b in zip(ins, self.filters, strict=True))
        self.bins_low = self._padded_bins() // 2 ** len(self.filters)
        self.lstm = ComplexLSTM(self.filters[-1] * self.bins_low, self.lstm_hidden, self.lstm_layers,
                                bidirectional=bidirectional)
        outs = [*reversed(ins[1:]), len(self.targets) * self.channels]
        self.decoder = nn.ModuleList(
            DecoderBlock(2 * c_in, c_out, kernel, last=i == len(outs) - 1)
            for i, (c_in, c_out) in enumerate(zip(reversed(self.filters), outs, strict=True))
        )

    def _arch_config(self) -> dict[str, Any]:
        return {
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "filters": list(self.filters),
            "kernel_freq": self.kernel_freq,
            "kernel_time": self.kernel_time,
            "lstm_hidden": self.lstm_hidden,
            "lstm_layers": self.lstm_layers,
            "bidirectional": self.bidirectional,
            "mask": self.mask,
            "learnable_stft": self.learnable_stft,
        }

    def _padded_bins(self) -> int:
        step = 2 ** len(self.filters)
        bins = self.n_fft // 2
        return bins + (-bins % step)

    def masks(self, spec: Tensor) -> Complex:
        """Complex masks of a mixture STFT ``(B, C, F, N)`` (all bins): ``(re, im)`` each ``(B, S, C, F, N)``, 0 at
        the DC bin."""
        b, c, bins, n = spec.shape
        pad = self._padded_bins() - (bins - 1)
        x = (F.pad(spec.real[:, :, 1:], (0, 0, 0, pad)), F.pad(spec.imag[:, :, 1:], (0, 0, 0, pad)))
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        re, im = x
        ch, low = re.shape[1], re.shape[2]
        seq = [t.permute(3, 0, 1, 2).reshape(n, b, ch * low) for t in (re, im)]
        re, im = self.lstm(*seq)
        x = tuple(t.reshape(n, b, ch, low).permute(1, 2, 3, 0).to(skips[-1][0].dtype) for t in (re, im))
        for block in self.decoder:
            skip = skips.pop()
            x = block((torch.cat([x[0], skip[0]], dim=1), torch.cat([x[1], skip[1]], dim=1)))
        s = len(self.targets)
        re, im = (F.pad(t[:, :, : bins - 1].float(), (0, 0, 1, 0)).reshape(b, s, c, bins, n) for t in x)
        return re, im

    def forward(self, mixture: Tensor) -> Tensor:
        """``(B, C, T)`` mixture -> ``(B, S, C, T)`` float32 waveform estimates."""
        self.check_mixture(mixture)
        spec = self.stft(mixture)  # (B, C, F, N) complex64
        m_re, m_im = self.masks(spec)
        x_re, x_im = spec.real.unsqueeze(1), spec.imag.unsqueeze(1)
        if self.mask == "E":
            gain = torch.tanh(magnitude(m_re, m_im))
            vr, vi = unit(m_re, m_im)
            re, im = gain * (x_re * vr - x_im * vi), gain * (x_re * vi + x_im * vr)
        else:
            re, im = x_re * m_re - x_im * m_im, x_re * m_im + x_im * m_re
        return self.istft(torch.complex(re, im), mixture.shape[-1])


__all__ = ["DCCRN", "ComplexConv2d", "ComplexLSTM", "magnitude", "unit"]
