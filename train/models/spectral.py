"""STFT helpers and the base class of the spectral mask models (Spleeter U-Net, Open-Unmix BLSTM).

One convention throughout: ``torch.stft`` / ``torch.istft`` with a periodic Hann window of ``n_fft`` samples,
``center=True`` with zero padding (``pad_mode="constant"``), so a signal of ``T`` samples gives ``T // hop + 1``
frames and ``F = n_fft // 2 + 1`` bins, and the inverse is cropped or padded back to exactly ``T`` samples.
The transforms always run in float32 with autocast switched off (FFTs in bf16/fp16 lose too much), whatever the
caller's autocast state; magnitudes are in linear amplitude (sum of windowed samples, not normalised).

A mask model estimates one magnitude spectrogram per target and reuses the mixture's phase for the inverse STFT
(Jansson et al. 2017; Stöter et al. 2019).

Front end: ``frontend="stft"`` (default) uses ``torch.stft`` / ``torch.istft``; ``frontend="learnable"`` replaces
both with the convolutional STFT of :mod:`train.models.frontend` (a trainable windowed-DFT filterbank, equal to
``torch.stft`` at initialisation). The targets of a spectral loss (:meth:`SpectralMaskModel.magnitude`) always come
from the fixed ``torch.stft``, so a loss cannot be lowered by shrinking the learned filterbank; the synthesis filters
learn only under a waveform loss (the spectral losses never reach them).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from train.models import SeparationModel, check_choice, check_int
from train.models.frontend import ConvISTFT, ConvSTFT

#: ``frontend`` option of the mask models: ``torch.stft`` or the learnable convolutional STFT.
FRONTENDS = ("stft", "learnable")
#: Below this mixture magnitude a bin's phase counts as undefined (learnable front end: its estimate is zero).
PHASE_EPS = 1e-8


def num_bins(n_fft: int) -> int:
    """Frequency bins of a one-sided STFT: ``n_fft // 2 + 1``."""
    return n_fft // 2 + 1


def num_frames(length: int, hop_length: int) -> int:
    """STFT frames of a ``length``-sample signal with ``center=True``: ``length // hop_length + 1``."""
    return length // hop_length + 1


def stft(x: Tensor, *, n_fft: int, hop_length: int) -> Tensor:
    """Complex STFT of the last axis.

    Args:
        x: ``(..., T)`` real waveform (any float dtype; computed in float32).

    Returns:
        ``(..., F, N)`` complex64, ``F = n_fft // 2 + 1``, ``N = T // hop_length + 1``.
    """
    lead, length = x.shape[:-1], x.shape[-1]
    with torch.autocast(device_type=x.device.type, enabled=False):
        window = torch.hann_window(n_fft, device=x.device, dtype=torch.float32)
        spec = torch.stft(
            x.reshape(-1, length).float(),
            n_fft=n_fft,
            hop_length=hop_length,
            window=window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
    return spec.reshape(*lead, *spec.shape[-2:])


def istft(spec: Tensor, *, n_fft: int, hop_length: int, length: int) -> Tensor:
    """Inverse of :func:`stft`.

    Args:
        spec: ``(..., F, N)`` complex.
        length: samples of the output (the original ``T``).

    Returns:
        ``(..., length)`` float32 waveform.
    """
    lead = spec.shape[:-2]
    with torch.autocast(device_type=spec.device.type, enabled=False):
        window = torch.hann_window(n_fft, device=spec.device, dtype=torch.float32)
        wave = torch.istft(
            spec.reshape(-1, *spec.shape[-2:]).to(torch.complex64),
            n_fft=n_fft,
            hop_length=hop_length,
            window=window,
            center=True,
            length=length,
        )
    return wave.reshape(*lead, length)


def magnitude(x: Tensor, *, n_fft: int, hop_length: int) -> Tensor:
    """Magnitude STFT ``(..., T) -> (..., F, N)`` float32 (the targets of the spectral losses)."""
    return stft(x, n_fft=n_fft, hop_length=hop_length).abs()


def apply_mixture_phase(magnitudes: Tensor, mixture_spec: Tensor) -> Tensor:
    """Complex spectrograms with the given magnitudes and the mixture's phase.

    Args:
        magnitudes: ``(B, S, C, F, N)`` non-negative estimates.
        mixture_spec: ``(B, C, F, N)`` complex mixture STFT.

    Returns:
        ``(B, S, C, F, N)`` complex64; where the mixture bin is exactly zero the phase is taken as 0.
    """
    phase = torch.angle(mixture_spec).unsqueeze(1)
    return torch.polar(magnitudes.float(), phase.expand_as(magnitudes).float())


def with_phase_of(magnitudes: Tensor, mixture_spec: Tensor, eps: float = PHASE_EPS) -> Tensor:
    """:func:`apply_mixture_phase` without ``torch.angle``, so gradients reach a learned ``mixture_spec``.

    ``magnitudes * mixture_spec / max(|mixture_spec|, eps)``: where the mixture bin is (near) zero the estimate is
    zero and its gradient finite (``angle``'s gradient is 0/0 there).

    Args:
        magnitudes: ``(B, S, C, F, N)`` non-negative estimates.
        mixture_spec: ``(B, C, F, N)`` complex mixture STFT.

    Returns:
        ``(B, S, C, F, N)`` complex64.
    """
    spec = mixture_spec.to(torch.complex64)
    unit = spec / spec.abs().clamp_min(eps)
    return magnitudes.float() * unit.unsqueeze(1)


class SpectralMaskModel(SeparationModel):
    """A model that masks the mixture's STFT magnitude per target and inverts with the mixture phase.

    Subclasses implement :meth:`estimate`; ``forward`` turns its magnitudes into waveforms. ``frontend``:
    ``"stft"`` or ``"learnable"`` (see the module docstring).
    """

    def __init__(
        self, *, targets: Any, channels: int, sample_rate: int, n_fft: int, hop_length: int, frontend: str = "stft"
    ) -> None:
        super().__init__(targets=targets, channels=channels, sample_rate=sample_rate)
        self.n_fft = check_int("n_fft", n_fft, minimum=4)
        self.hop_length = check_int("hop_length", hop_length, minimum=1)
        if self.hop_length > self.n_fft // 2:
            raise ValueError(
                f"hop_length must be at most n_fft // 2 = {self.n_fft // 2} for a Hann window to invert, "
                f"got hop_length={hop_length}"
            )
        self.bins = num_bins(self.n_fft)
        self.frontend = check_choice("frontend", frontend, FRONTENDS)
        if self.frontend == "learnable":
            self.analysis = ConvSTFT(self.n_fft, self.hop_length)
            self.synthesis = ConvISTFT(self.n_fft, self.hop_length)

    def spectrogram(self, mixture: Tensor) -> Tensor:
        """``(B, C, T)`` -> complex STFT ``(B, C, F, N)`` with this model's settings and front end."""
        self.check_mixture(mixture)
        if self.frontend == "learnable":
            return self.analysis(mixture)
        return stft(mixture, n_fft=self.n_fft, hop_length=self.hop_length)

    def magnitude(self, waveforms: Tensor) -> Tensor:
        """Magnitude STFT of any ``(..., T)`` waveforms with this model's settings: ``(..., F, N)`` float32.

        Use it on the true stems ``(B, S, C, T)`` to get the targets of a spectral loss. Always the fixed
        ``torch.stft``, also with the learnable front end.
        """
        return magnitude(waveforms, n_fft=self.n_fft, hop_length=self.hop_length)

    def estimate(self, mixture: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        """``(B, C, T)`` -> (masked magnitudes ``(B, S, C, F, N)``, mixture complex STFT ``(B, C, F, N)``)."""
        raise NotImplementedError

    def forward(self, mixture: Tensor) -> Tensor:
        """``(B, C, T)`` mixture -> ``(B, S, C, T)`` float32 waveform estimates (mixture phase)."""
        mags, mix_spec = self.estimate(mixture)
        if self.frontend == "learnable":
            return self.synthesis(with_phase_of(mags, mix_spec), mixture.shape[-1])
        return istft(
            apply_mixture_phase(mags, mix_spec),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            length=mixture.shape[-1],
        )
