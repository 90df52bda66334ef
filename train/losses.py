"""Training losses for music source separation.

Two families, each a function ``loss(estimate, target) -> scalar tensor`` (mean over every element or item):

- on magnitude spectrograms ``(B, S, C, F, N)`` (batch, sources, audio channels, bins, frames), as produced by a
  mask model's ``estimate()`` and its ``magnitude()`` of the true stems: :func:`l1_spec`, :func:`weighted_l1_spec`,
  :func:`smooth_l1_spec`, :func:`mse_spec`;
- on waveforms ``(B, S, C, T)``: :func:`si_sdr_loss` (negative SI-SDR in dB) and :func:`l1_wave`.

All losses compute in float32 whatever the input dtype (they are safe to call on bf16/fp16 outputs under
autocast) and raise ``ValueError`` when the shapes differ. :func:`get_loss` looks one up by name, and
:func:`loss_domain` says whether it wants magnitudes (``"spec"``) or waveforms (``"wave"``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]


def _pair(estimate: Tensor, target: Tensor, ndim: int, layout: str) -> tuple[Tensor, Tensor]:
    if estimate.shape != target.shape or estimate.dim() != ndim:
        raise ValueError(
            f"estimate and target must both be {layout}; got {tuple(estimate.shape)} and {tuple(target.shape)}"
        )
    return estimate.float(), target.float()


def _spec(estimate: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    return _pair(estimate, target, 5, "(B, S, C, F, N) magnitudes")


def _wave(estimate: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    return _pair(estimate, target, 4, "(B, S, C, T) waveforms")


def l1_spec(estimate: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error of magnitudes ``(B, S, C, F, N)``."""
    e, t = _spec(estimate, target)
    return (e - t).abs().mean()


def weighted_l1_spec(estimate: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """L1 of magnitudes ``(B, S, C, F, N)`` weighted by the target magnitude, normalised by the weights.

    ``sum(|target| * |estimate - target|) / (sum(|target|) + eps)``: the mean absolute error where the target
    has energy, so loud bins count more and bins silent in the target count not at all. Same units as the
    magnitudes; 0 when ``estimate == target``.
    """
    e, t = _spec(estimate, target)
    w = t.abs()
    return (w * (e - t).abs()).sum() / (w.sum() + eps)


def smooth_l1_spec(estimate: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """Smooth L1 (Huber, quadratic below ``beta``, linear above) of magnitudes ``(B, S, C, F, N)``, mean."""
    e, t = _spec(estimate, target)
    return F.smooth_l1_loss(e, t, beta=beta)


def mse_spec(estimate: Tensor, target: Tensor) -> Tensor:
    """Mean squared error of magnitudes ``(B, S, C, F, N)`` (the Open-Unmix loss)."""
    e, t = _spec(estimate, target)
    return (e - t).pow(2).mean()


def si_sdr(estimate: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SDR in dB along the last axis (Le Roux et al. 2019), per signal.

    Both signals are made zero-mean, the target is scaled by the least-squares gain
    ``alpha = <e, t> / (<t, t> + eps)``, and ``10 log10((|alpha t|^2 + eps) / (|e - alpha t|^2 + eps))`` is returned.

    Args:
        estimate, target: ``(..., T)`` waveforms of the same shape.
        eps: keeps silent signals finite: a silent target gives ``10 log10(eps / (|e|^2 + eps))`` (very low unless
            the estimate is silent too, then 0 dB).

    Returns:
        ``(...)`` float32, dB.
    """
    if estimate.shape != target.shape:
        raise ValueError(f"estimate and target shapes differ: {tuple(estimate.shape)} vs {tuple(target.shape)}")
    e = estimate.float() - estimate.float().mean(dim=-1, keepdim=True)
    t = target.float() - target.float().mean(dim=-1, keepdim=True)
    alpha = (e * t).sum(dim=-1, keepdim=True) / (t.pow(2).sum(dim=-1, keepdim=True) + eps)
    scaled = alpha * t
    signal = scaled.pow(2).sum(dim=-1)
    noise = (e - scaled).pow(2).sum(dim=-1)
    return 10 * torch.log10((signal + eps) / (noise + eps))


def si_sdr_loss(estimate: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Negative SI-SDR in dB of waveforms ``(B, S, C, T)``, averaged over batch, sources and channels.

    Lower is better; -(SI-SDR). See :func:`si_sdr` for the definition and the handling of silent targets.
    """
    e, t = _wave(estimate, target)
    return -si_sdr(e, t, eps).mean()


def l1_wave(estimate: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error of waveforms ``(B, S, C, T)`` (full-scale units)."""
    e, t = _wave(estimate, target)
    return (e - t).abs().mean()


@functools.lru_cache(maxsize=16)
def _mel_weights(bins: int, sample_rate: int, n_mels: int, device: str) -> Tensor:
    """``(M, bins)`` float32 triangular mel filters, each normalised to sum to one; empty filters dropped."""
    import warnings

    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about the empty filters dropped below
        fb = librosa.filters.mel(sr=sample_rate, n_fft=2 * (bins - 1), n_mels=n_mels, norm=None)
    fb = fb[fb.sum(axis=1) > 0]
    return torch.from_numpy(fb / fb.sum(axis=1, keepdims=True)).float().to(device)


def mel_l1_spec(estimate: Tensor, target: Tensor, *, sample_rate: int = 44100, n_mels: int = 128) -> Tensor:
    """L1 of mel-weighted magnitudes ``(B, S, C, F, N)``: the mean absolute error of their mel spectrograms.

    Each spectrogram is pooled into ``n_mels`` bands of librosa's triangular mel filters (Slaney mel scale, 0 Hz to
    ``sample_rate / 2``), each filter normalised to sum to one, so a band is the weighted mean of its bins and every
    band counts the same: a low-frequency bin weighs much more than a high one (at ``n_fft=4096`` and 44.1 kHz a
    filter spans about 6 bins at 200 Hz and about 90 at 15 kHz). Filters narrower than one bin (many bands on a small
    ``n_fft``) are empty and dropped. Same units as the magnitudes; 0 when ``estimate == target``.

    Args:
        estimate, target: ``(B, S, C, F, N)`` magnitudes of an ``n_fft = 2 * (F - 1)`` STFT.
        sample_rate: Hz of the audio (the filters' frequency axis); 44100 unless given.
        n_mels: mel bands before empty ones are dropped (128).
    """
    e, t = _spec(estimate, target)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    if isinstance(n_mels, bool) or not isinstance(n_mels, int) or n_mels < 1:
        raise ValueError(f"n_mels must be a positive integer, got {n_mels!r}")
    if e.shape[-2] < 2:
        raise ValueError(f"mel_l1_spec needs at least 2 frequency bins, got {e.shape[-2]}")
    weights = _mel_weights(e.shape[-2], sample_rate, n_mels, str(e.device))
    return torch.matmul(weights, e - t).abs().mean()


#: Loss name -> (function, domain). Domain ``"spec"``: magnitudes ``(B, S, C, F, N)``; ``"wave"``: ``(B, S, C, T)``.
LOSSES: dict[str, tuple[LossFn, str]] = {
    "l1_spec": (l1_spec, "spec"),
    "weighted_l1_spec": (weighted_l1_spec, "spec"),
    "smooth_l1_spec": (smooth_l1_spec, "spec"),
    "mse_spec": (mse_spec, "spec"),
    "mel_l1_spec": (mel_l1_spec, "spec"),
    "si_sdr_loss": (si_sdr_loss, "wave"),
    "l1_wave": (l1_wave, "wave"),
}


def _lookup(name: str) -> tuple[LossFn, str]:
    if name not in LOSSES:
        raise ValueError(f"unknown loss name={name!r}; allowed: {', '.join(LOSSES)}")
    return LOSSES[name]


def get_loss(name: str) -> LossFn:
    """The loss function called ``name`` (one of :data:`LOSSES`); ``ValueError`` naming the allowed names."""
    return _lookup(name)[0]


def loss_domain(name: str) -> str:
    """``"spec"`` (the loss takes magnitudes ``(B, S, C, F, N)``) or ``"wave"`` (waveforms ``(B, S, C, T)``)."""
    return _lookup(name)[1]


__all__ = [
    "LOSSES",
    "get_loss",
    "l1_spec",
    "l1_wave",
    "loss_domain",
    "mse_spec",
    "si_sdr",
    "si_sdr_loss",
    "smooth_l1_spec",
    "weighted_l1_spec",
]
