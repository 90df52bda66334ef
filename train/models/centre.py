"""The channel-subtraction baseline: vocals as what both stereo channels share, no trainable weights.

Lead vocals are usually mixed to the centre: the same signal, in phase, at the same level in both channels. For
each STFT bin of a stereo mixture ``(L, R)`` the inter-channel similarity

    ``psi = clip(2 Re(L conj(R)) / (|L|^2 + |R|^2), 0, 1)``

is 1 where the two channels are identical, 0 where they are uncorrelated, in opposite phase or one-sided, and falls
off with any difference in level or phase. The vocals estimate is the mask ``psi ** exponent`` applied to the mid
signal ``(L + R) / 2`` (the same on both channels), inside the band ``[low_hz, high_hz]`` (below it, bass and kick
drum are centred too); the accompaniment is the mixture minus the vocals, so the two always add up to the mixture.
A mono mixture is all "centre" (``psi = 1``): its vocals are the band-limited mixture.

The model estimates the targets named ``"vocals"`` and ``"accompaniment"`` only; any other target (drums, bass,
other) is returned as silence and listed as not estimated (:attr:`Centre.estimates`), so the evaluation reports it
as not estimated instead of scoring silence. It has no parameters: nothing to train, and it needs no checkpoint
(``stemdb separate --model centre song.wav``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from train.models import SeparationModel
from train.models.frontend import check_stft_sizes
from train.models.spectral import istft, stft

#: The targets this model can estimate.
ESTIMABLE = ("vocals", "accompaniment")
#: Targets of ``stemdb separate --model centre`` and ``stemdb evaluate-run centre``: the two it estimates, and
#: MUSDB18's other three, reported as not estimated.
DEFAULT_TARGETS = ("vocals", "drums", "bass", "other", "accompaniment")
EPS = 1e-12


def check_positive(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """Validate a positive finite number (or ``None`` when allowed); ``ValueError`` naming it otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number{' or null' if allow_none else ''}, got {value!r}")
    return float(value)


class Centre(SeparationModel):
    """Vocals as the centre of the stereo image; accompaniment as the rest (see the module docstring).

    Args:
        targets: stem names in output order; must include ``"vocals"`` or ``"accompaniment"``.
        channels: 1 or 2 (a mono mixture is all centre).
        sample_rate: Hz; the band edges are converted to bins with it.
        n_fft: STFT size in samples (4096: 10.8 Hz bins at 44.1 kHz).
        hop_length: STFT hop in samples (1024).
        exponent: sharpness of the mask ``psi ** exponent`` (8; larger: only the most similar bins count as
            vocals).
        low_hz: bins below this frequency are accompaniment (250 Hz, about the top of sung fundamentals; bass and
            kick drum below it are centred too); 0 for none.
        high_hz: bins above this frequency are accompaniment; ``None`` for none.
    """

    name = "centre"
    default_loss: ClassVar[str] = "si_sdr_loss"  # never used: there is nothing to train
    TINY: ClassVar[dict[str, Any]] = {"n_fft": 256, "hop_length": 64}
    #: No trainable weights: ``stemdb separate`` / ``evaluate-run`` build it by name, ``stemdb train`` refuses it.
    trainable: ClassVar[bool] = False
    #: Targets when built by name (``stemdb separate --model centre``).
    default_targets: ClassVar[tuple[str, ...]] = DEFAULT_TARGETS

    def __init__(
        self,
        *,
        targets: Sequence[str] = DEFAULT_TARGETS,
        channels: int = 2,
        sample_rate: int = 44100,
        n_fft: int = 4096,
        hop_length: int = 1024,
        exponent: float = 8.0,
        low_hz: float = 250.0,
        high_hz: float | None = None,
    ) -> None:
        super().__init__(targets=targets, channels=channels, sample_rate=sample_rate)
        if self.channels > 2:
            raise ValueError(f"channels must be 1 or 2 for the centre model (it compares left and right), "
                             f"got {channels}")
        if not set(self.targets) & set(ESTIMABLE):
            raise ValueError(f"targets {list(self.targets)} include none the centre model estimates; allowed: "
                             f"targets including {' or '.join(map(repr, ESTIMABLE))}")
        self.n_fft, self.hop_length = check_stft_sizes(n_fft, hop_length)
        self.exponent = check_positive("exponent", exponent)
        if isinstance(low_hz, bool) or not isinstance(low_hz, int | float) or not 0 <= low_hz < sample_rate / 2:
            raise ValueError(f"low_hz must be a frequency in [0, {sample_rate / 2}) Hz, got {low_hz!r}")
        self.low_hz = float(low_hz)
        self.high_hz = check_positive("high_hz", high_hz, allow_none=True)
        if self.high_hz is not None and self.high_hz <= self.low_hz:
            raise ValueError(f"high_hz={high_hz} must be above low_hz={low_hz}")
        freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float32) * (sample_rate / n_fft)
        band = freqs >= self.low_hz
        if self.high_hz is not None:
            band &= freqs <= self.high_hz
        self.register_buffer("band", band.float().reshape(-1, 1), persistent=False)

    @property
    def estimates(self) -> tuple[str, ...]:
        """The targets this model estimates (the others come out silent and are reported as not estimated)."""
        return tuple(t for t in self.targets if t in ESTIMABLE)

    def _arch_config(self) -> dict[str, Any]:
        return {
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "exponent": self.exponent,
            "low_hz": self.low_hz,
            "high_hz": self.high_hz,
        }

    def mask(self, spec: Tensor) -> Tensor:
        """``(B, C, F, N)`` complex mixture STFT -> ``(B, F, N)`` float32 centre mask in [0, 1]."""
        if spec.shape[1] == 1:
            psi = torch.ones(spec.shape[0], *spec.shape[2:], device=spec.device)
        else:
            left, right = spec[:, 0], spec[:, 1]
            cross = (left * right.conj()).real
            power = left.abs().square() + right.abs().square()
            psi = (2 * cross / (power + EPS)).clamp(0.0, 1.0)
        return psi.pow(self.exponent) * self.band

    def forward(self, mixture: Tensor) -> Tensor:
        """``(B, C, T)`` mixture -> ``(B, S, C, T)`` float32: vocals (centre), accompaniment (the rest), silence for
        any other target."""
        self.check_mixture(mixture)
        length = mixture.shape[-1]
        x = mixture.float()
        spec = stft(x, n_fft=self.n_fft, hop_length=self.hop_length)
        centre = (self.mask(spec) * spec.mean(dim=1)).unsqueeze(1).expand_as(spec)
        vocals = istft(centre, n_fft=self.n_fft, hop_length=self.hop_length, length=length)
        out = torch.zeros(x.shape[0], len(self.targets), *x.shape[1:], device=x.device)
        for i, target in enumerate(self.targets):
            if target == "vocals":
                out[:, i] = vocals
            elif target == "accompaniment":
                out[:, i] = x - vocals
        return out


__all__ = ["DEFAULT_TARGETS", "ESTIMABLE", "Centre"]
