"""Target conditioning shared by the conditioned models (``cunet``, ``lasaft``).

A conditioned model holds **one** network for all of its targets and tells it which target to separate with a
condition: the target's index ``s`` in ``model.targets`` (a one-hot vector or a learned embedding inside the model).
Two ways to call it:

- ``model(mixture)`` / ``model.estimate(mixture)``: every target, as any other model: the mixture spectrogram is
  repeated once per target along the batch axis (``B * S`` items, item ``b * S + s`` conditioned on target ``s``),
  one batched pass, and the result is reshaped to ``(B, S, ...)``;
- ``model(mixture, target_index)`` / ``model.estimate(mixture, target_index)`` with ``target_index`` a ``(B,)``
  integer tensor: one chosen target per item, output ``(B, 1, ...)``. This is what a trainer that draws the target
  per item uses; :func:`select_targets` picks the matching true stems ``(B, 1, C, T)`` from ``(B, S, C, T)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from train.models.spectral import SpectralMaskModel, apply_mixture_phase, istft


def check_target_index(target_index: Tensor, *, batch: int, num_targets: int) -> Tensor:
    """Validate a per-item target choice: an integer tensor of shape ``(batch,)`` with values in ``[0, S)``.

    Returns:
        the indices as int64 on the same device.

    Raises:
        ValueError: naming the expected shape or range and what was given.
    """
    if not isinstance(target_index, Tensor) or target_index.is_floating_point() or target_index.is_complex():
        raise ValueError(f"target_index must be an integer tensor of shape ({batch},), got {target_index!r}")
    if tuple(target_index.shape) != (batch,):
        raise ValueError(f"target_index must have shape ({batch},) (one target per item), "
                         f"got {tuple(target_index.shape)}")
    if batch and (int(target_index.min()) < 0 or int(target_index.max()) >= num_targets):
        raise ValueError(f"target_index values must be in 0..{num_targets - 1} (the model's targets), "
                         f"got {target_index.tolist()}")
    return target_index.long()


def select_targets(stems: Tensor, target_index: Tensor) -> Tensor:
    """The true stem of each item's chosen target: ``(B, S, C, T)`` and ``(B,)`` -> ``(B, 1, C, T)``.

    Works for any trailing shape (e.g. magnitudes ``(B, S, C, F, N)`` -> ``(B, 1, C, F, N)``).
    """
    if stems.dim() < 3:
        raise ValueError(f"stems must be (B, S, ...) with S targets, got shape {tuple(stems.shape)}")
    idx = check_target_index(target_index, batch=stems.shape[0], num_targets=stems.shape[1])
    return stems[torch.arange(stems.shape[0], device=stems.device), idx.to(stems.device)].unsqueeze(1)


class ConditionedSpectralModel(SpectralMaskModel):
    """Base class of the conditioned spectrogram models: one network, one pass per target, batched.

    Subclasses implement :meth:`_separate`, which maps the mixture STFT of ``B'`` items and one condition per item
    to one spectrogram estimate per item: real magnitudes (the mixture phase is used for the inverse, as for the
    mask models) or a complex spectrogram (used as it is).
    """

    #: One set of weights for every target; the target is an input (see the module docstring).
    conditioned: ClassVar[bool] = True

    def target_index(self, names: str | Sequence[str]) -> Tensor:
        """Indices ``(len(names),)`` int64 of target names in :attr:`targets` (one name: shape ``(1,)``).

        Raises:
            ValueError: a name that is not one of the model's targets (the message lists them).
        """
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in self.targets]
        if unknown:
            raise ValueError(f"unknown target(s) {unknown}; this model separates {', '.join(self.targets)}")
        return torch.tensor([self.targets.index(n) for n in names], dtype=torch.long)

    def _separate(self, mix_spec: Tensor, condition: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``(B', C, F, N)`` complex mixture STFT and ``(B',)`` target indices -> ``(B', C, F, N)`` estimates."""
        raise NotImplementedError

    def spectra(self, mixture: Tensor, target_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Spectrogram estimates of every target, or of one chosen target per item.

        Args:
            mixture: ``(B, C, T)`` waveform.
            target_index: ``None`` (every target) or ``(B,)`` integer indices into :attr:`targets`.

        Returns:
            (estimates ``(B, S', C, F, N)``, real magnitudes or complex, ``S' = S`` or 1; mixture complex STFT
            ``(B, C, F, N)``).
        """
        mix_spec = self.spectrogram(mixture)
        b, s = mix_spec.shape[0], len(self.targets)
        if target_index is None:
            condition = torch.arange(s, device=mix_spec.device).repeat(b)
            spec_in, per_item = mix_spec.repeat_interleave(s, dim=0), s
        else:
            condition = check_target_index(target_index, batch=b, num_targets=s).to(mix_spec.device)
            spec_in, per_item = mix_spec, 1
        est = self._separate(spec_in, condition)
        return est.reshape(b, per_item, *est.shape[1:]), mix_spec

    def estimate(self, mixture: Tensor, target_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(B, C, T)`` -> (magnitude estimates ``(B, S', C, F, N)`` float32, mixture complex STFT ``(B, C, F, N)``).

        ``target_index`` as in :meth:`spectra`; the magnitudes are the targets of the spectral losses.
        """
        est, mix_spec = self.spectra(mixture, target_index)
        return (est.abs() if est.is_complex() else est.float()), mix_spec

    def forward(self, mixture: Tensor, target_index: Tensor | None = None) -> Tensor:
        """``(B, C, T)`` mixture -> ``(B, S, C, T)`` float32 waveforms, or ``(B, 1, C, T)`` with ``target_index``."""
        est, mix_spec = self.spectra(mixture, target_index)
        spec = est if est.is_complex() else apply_mixture_phase(est, mix_spec)
        return istft(spec, n_fft=self.n_fft, hop_length=self.hop_length, length=mixture.shape[-1])


__all__ = ["ConditionedSpectralModel", "check_target_index", "select_targets"]
