"""A learnable STFT: the analysis and synthesis transforms as strided 1-D convolutions initialised to a windowed DFT.

:class:`ConvSTFT` is a ``Conv1d`` with ``2F`` filters of ``n_fft`` taps (``F = n_fft // 2 + 1``) and stride ``hop``:
filter ``k`` holds ``w[n] cos(2 pi k n / n_fft)`` (real part) and ``-w[n] sin(2 pi k n / n_fft)`` (imaginary part),
``w`` the periodic Hann window. The signal is zero-padded by ``n_fft // 2`` on both sides first, so at
initialisation the output equals ``torch.stft(x, n_fft, hop, window=hann, center=True, pad_mode="constant")``
(:func:`train.models.spectral.stft`): same ``T // hop + 1`` frames, same bins, same scale.

:class:`ConvISTFT` is the matching ``ConvTranspose1d`` (overlap-add of ``a_k / n_fft * w[n] cos(.)`` and
``-a_k / n_fft * w[n] sin(.)`` filters, ``a_k = 1`` for the DC and Nyquist bins and 2 for the others), divided by the
overlap-added squared window and cropped to the original length: at initialisation it inverts :class:`ConvSTFT`
exactly as ``torch.istft`` inverts ``torch.stft``. The squared-window envelope stays fixed; only the filters learn.

Both run in float32 with autocast switched off (as the FFT-based transforms do), whatever the caller's precision.
A learnable STFT costs ``n_fft * (n_fft + 2)`` multiply-adds per frame and channel (an FFT costs about
``n_fft log2 n_fft``) and ``n_fft * (n_fft + 2)`` parameters per transform: 16.8 M each at ``n_fft = 4096``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.models import check_int


def check_stft_sizes(n_fft: int, hop_length: int) -> tuple[int, int]:
    """Validate an (``n_fft``, ``hop_length``) pair for the convolutional STFT: an even ``n_fft >= 4`` and a hop in
    ``1 .. n_fft // 2`` (a periodic Hann window then overlaps enough to invert); ``ValueError`` naming them."""
    check_int("n_fft", n_fft, minimum=4)
    check_int("hop_length", hop_length, minimum=1)
    if n_fft % 2:
        raise ValueError(f"n_fft must be even for the convolutional STFT, got n_fft={n_fft}")
    if hop_length > n_fft // 2:
        raise ValueError(f"hop_length must be at most n_fft // 2 = {n_fft // 2} for a Hann window to invert, "
                         f"got hop_length={hop_length}")
    return n_fft, hop_length


def dft_basis(n_fft: int) -> tuple[Tensor, Tensor]:
    """``(cos, sin)`` matrices ``(F, n_fft)`` float64 of ``cos(2 pi k n / n_fft)`` and ``sin(...)``, ``F = n_fft//2+1``.

    The phase index ``k * n`` is reduced modulo ``n_fft`` in integers first, so large ``n_fft`` loses no precision.
    """
    k = torch.arange(n_fft // 2 + 1, dtype=torch.int64)[:, None]
    n = torch.arange(n_fft, dtype=torch.int64)[None, :]
    angle = (k * n % n_fft).double() * (2 * math.pi / n_fft)
    return torch.cos(angle), torch.sin(angle)


class ConvSTFT(nn.Module):
    """STFT by a strided convolution (see the module docstring).

    Args:
        n_fft: frame length and DFT size in samples (even).
        hop_length: frame step in samples (at most ``n_fft // 2``).
        learnable: the filters are a trainable ``nn.Parameter`` (else a fixed buffer).
    """

    def __init__(self, n_fft: int, hop_length: int, *, learnable: bool = True) -> None:
        super().__init__()
        self.n_fft, self.hop_length = check_stft_sizes(n_fft, hop_length)
        self.bins = n_fft // 2 + 1
        cos, sin = dft_basis(n_fft)
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        weight = torch.cat([cos * window, -sin * window]).float().unsqueeze(1)  # (2F, 1, n_fft)
        if learnable:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)

    def num_frames(self, length: int) -> int:
        """Frames of a ``length``-sample signal: ``length // hop_length + 1`` (as ``torch.stft`` with center)."""
        return length // self.hop_length + 1

    def forward(self, x: Tensor) -> Tensor:
        """``(..., T)`` real waveform -> ``(..., F, N)`` complex64 spectrogram, ``N = T // hop + 1``."""
        lead, length = x.shape[:-1], x.shape[-1]
        pad = self.n_fft // 2
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = F.pad(x.reshape(-1, 1, length).float(), (pad, pad))
            out = F.conv1d(y, self.weight.float(), stride=self.hop_length)  # (B', 2F, N)
            spec = torch.complex(out[:, : self.bins], out[:, self.bins:])
        return spec.reshape(*lead, self.bins, spec.shape[-1])


class ConvISTFT(nn.Module):
    """Inverse of :class:`ConvSTFT` by a strided transposed convolution and squared-window normalisation.

    Args:
        n_fft, hop_length: as the analysis transform.
        learnable: the synthesis filters are a trainable ``nn.Parameter`` (else a fixed buffer).
    """

    def __init__(self, n_fft: int, hop_length: int, *, learnable: bool = True) -> None:
        super().__init__()
        self.n_fft, self.hop_length = check_stft_sizes(n_fft, hop_length)
        self.bins = n_fft // 2 + 1
        cos, sin = dft_basis(n_fft)
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        scale = torch.full((self.bins, 1), 2.0 / n_fft, dtype=torch.float64)
        scale[0] = scale[-1] = 1.0 / n_fft  # DC and Nyquist appear once in the one-sided spectrum
        weight = torch.cat([scale * cos * window, -scale * sin * window]).float().unsqueeze(1)  # (2F, 1, n_fft)
        if learnable:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)
        self.register_buffer("window_sq", (window**2).float().reshape(1, 1, n_fft), persistent=False)

    def forward(self, spec: Tensor, length: int) -> Tensor:
        """``(..., F, N)`` complex spectrogram -> ``(..., length)`` float32 waveform (cropped or zero-padded)."""
        if spec.shape[-2] != self.bins:
            raise ValueError(f"spectrogram has {spec.shape[-2]} bins; this transform (n_fft={self.n_fft}) takes "
                             f"{self.bins}")
        lead, frames = spec.shape[:-2], spec.shape[-1]
        pad = self.n_fft // 2
        with torch.autocast(device_type=spec.device.type, enabled=False):
            s = spec.reshape(-1, self.bins, frames)
            y = torch.cat([s.real, s.imag], dim=1).float()  # (B', 2F, N)
            wave = F.conv_transpose1d(y, self.weight.float(), stride=self.hop_length)[:, 0]
            ones = torch.ones(1, 1, frames, device=spec.device, dtype=torch.float32)
            envelope = F.conv_transpose1d(ones, self.window_sq, stride=self.hop_length)[0, 0]
            wave = wave / envelope.clamp_min(1e-11)
            wave = wave[:, pad: pad + length]
            if wave.shape[-1] < length:
                wave = F.pad(wave, (0, length - wave.shape[-1]))
        return wave.reshape(*lead, length)


__all__ = ["ConvISTFT", "ConvSTFT", "check_stft_sizes", "dft_basis"]
