"""The loss of one model as a module: ``forward(mixture, targets) -> scalar``, so DDP sees the whole forward pass
(also the mask models' ``estimate()``), and the probe for parameters that get no gradient."""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor, nn

from stemdb.errors import ConfigError
from train.losses import get_loss, loss_domain
from train.models import SeparationModel
from train.models.spectral import SpectralMaskModel


class LossStep(nn.Module):
    """``forward(mixture (B, C, T), targets (B, S, C, T), seed=None) -> scalar loss`` for one model and one loss.

    Spectral losses compare the mask model's masked magnitudes (``model.estimate``) with the magnitudes of the true
    stems; waveform losses compare ``model(mixture)`` with the stems.

    A conditioned model (``model.conditioned``: one network for every target) with ``conditioning="draw"`` is
    trained on one target per item, drawn uniformly from a ``torch.Generator`` seeded with ``seed`` (the Trainer
    passes one per step, micro-batch and rank, so a resumed run draws the same): the loss compares that target's
    estimate with that stem. Without a seed (or with ``conditioning="all"``, or a model that is not conditioned)
    every target of every item is estimated.
    """

    def __init__(self, model: SeparationModel, loss: str, *, conditioning: str = "draw") -> None:
        super().__init__()
        self.model = model
        self.loss_name = loss
        self.draw = conditioning == "draw" and bool(getattr(model, "conditioned", False))
        self.loss_fn = get_loss(loss)
        if "sample_rate" in inspect.signature(self.loss_fn).parameters:  # mel_l1_spec: bands at the model's rate
            self.loss_fn = functools.partial(self.loss_fn, sample_rate=model.sample_rate)
        self.domain = loss_domain(loss)
        if self.domain == "spec" and not isinstance(model, SpectralMaskModel):
            raise ConfigError(
                f"train.loss={loss!r} needs magnitudes but model {model.name!r} works on waveforms; "
                "allowed for it: si_sdr_loss, l1_wave",
                key="train.loss",
            )

    def forward(self, mixture: Tensor, targets: Tensor, seed: int | None = None) -> Tensor:
        if targets.dim() != 4 or targets.shape[0] != mixture.shape[0] or targets.shape[-1] != mixture.shape[-1]:
            raise ValueError(
                f"targets must be (B, S, C, T) matching mixture {tuple(mixture.shape)}; got {tuple(targets.shape)}"
            )
        chosen: tuple[Tensor, ...] = ()
        if self.draw and seed is not None:
            from train.models.conditioning import select_targets

            gen = torch.Generator().manual_seed(seed)
            index = torch.randint(0, targets.shape[1], (targets.shape[0],), generator=gen).to(mixture.device)
            chosen, targets = (index,), select_targets(targets, index)
        if self.domain == "spec":
            mags, _ = self.model.estimate(mixture, *chosen)
            return self.loss_fn(mags, self.model.magnitude(targets))
        return self.loss_fn(self.model(mixture, *chosen), targets)


def unused_parameters(step: LossStep, *, device: torch.device, seconds: float = 0.5) -> list[str]:
    """Names of the trainable parameters that get no gradient from ``step`` (probed once, in eval mode, on
    ``seconds`` of silence; gradients and running statistics are left as they were)."""
    model = step.model
    was_training = model.training
    n = max(round(seconds * model.sample_rate), getattr(model, "n_fft", 0) * 2, 64)
    mix = torch.zeros(1, model.channels, n, device=device)
    tgt = torch.zeros(1, len(model.targets), model.channels, n, device=device)
    saved = {name: p.grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None
    try:
        model.eval()
        step(mix, tgt).backward()
        return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        model.train(was_training)
        for name, p in model.named_parameters():
            p.grad = saved[name]


__all__ = ["LossStep", "unused_parameters"]
