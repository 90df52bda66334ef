"""Band-split training for the spectral mask models: ``model_options: {band_split_hz: 2756}``.

D3Net (Takahashi & Mitsufuji 2021) gives the low band, where most vocal, bass and drum energy lies, a network of
its own next to the full-band one and merges the two. ``build_model(name, band_split_hz=F, low_options={...},
**options)`` does the same for any mask model with a ``max_bin`` option (``unet``, ``blstm``; not the conditioned
``cunet``, nor ``d3net``, which splits bands itself):

- the **full-band** model: ``name`` with ``options``, as without the split;
- the **low-band** model: ``name`` with ``options`` updated by ``low_options`` (e.g. more filters: the "more
  detailed" low-band network) and ``max_bin = round(F * n_fft / sample_rate)``, so it sees bins ``[0, k)`` only
  (2756 Hz at 44.1 kHz and ``n_fft=4096``: 256 bins, the report's low band);
- the **merge**, per low bin ``f < k``: ``a_f * low + (1 - a_f) * full`` of the two magnitude estimates with
  ``a_f = sigmoid(w_f)`` a learned weight per bin shared by all targets (0.5 at the start); above ``k`` the full
  model's estimate. D3Net merges with a final dense block over both outputs; a convex weight per bin keeps the mask
  models' property that masks summing to one over the targets give estimates summing to the mixture (tested with
  ideal masks), and costs ``k`` parameters.

The wrapper reports the base model's ``name``; its ``config()`` is the full model's plus ``band_split_hz`` and
``low_options``, so ``build_model(**model.config())`` rebuilds it and checkpoints need nothing new.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from train.models import build_model, model_class
from train.models.spectral import SpectralMaskModel


def low_band_bins(band_split_hz: float, *, n_fft: int, sample_rate: int, bins: int) -> int:
    """The low band's bin count ``round(band_split_hz * n_fft / sample_rate)``, checked to lie in ``1..bins-1``."""
    if isinstance(band_split_hz, bool) or not isinstance(band_split_hz, int | float) or band_split_hz <= 0:
        raise ValueError(f"band_split_hz must be a positive frequency in Hz, got {band_split_hz!r}")
    k = round(band_split_hz * n_fft / sample_rate)
    if not 1 <= k < bins:
        raise ValueError(f"band_split_hz={band_split_hz} is bin {k} of n_fft={n_fft} at {sample_rate} Hz; "
                         f"allowed: a frequency between bins 1 and {bins - 1}")
    return k


class BandSplit(SpectralMaskModel):
    """A low-band and a full-band copy of one mask model, merged per bin (see the module docstring).

    Args:
        base: the registered mask model's name.
        band_split_hz: the top of the low band in Hz.
        low_options: options of the low-band model on top of ``options``.
        **options: the base model's options (both copies).
    """

    def __init__(self, *, base: str, targets: Any, channels: int, sample_rate: int, band_split_hz: float,
                 low_options: Mapping[str, Any] | None = None, **options: Any) -> None:
        cls = model_class(base)
        params = inspect.signature(cls.__init__).parameters
        if not issubclass(cls, SpectralMaskModel) or "max_bin" not in params or getattr(cls, "conditioned", False):
            raise ValueError(f"band_split_hz needs a spectral mask model with a max_bin option (unet, blstm); "
                             f"model {base!r} has none")
        if "band_split" in params:
            raise ValueError(f"band_split_hz: model {base!r} splits bands itself (its band_split option, in bins)")
        if not isinstance(low_options or {}, Mapping) or "max_bin" in (low_options or {}):
            raise ValueError(f"low_options must be a mapping of {base} options without max_bin, got {low_options!r}")
        full = build_model(base, targets=targets, channels=channels, sample_rate=sample_rate, **options)
        super().__init__(targets=targets, channels=channels, sample_rate=sample_rate, n_fft=full.n_fft,
                         hop_length=full.hop_length)
        self.name = base  # the trainer's default loss and the CLI's --model stay the base model's
        self.low_bins = low_band_bins(band_split_hz, n_fft=full.n_fft, sample_rate=sample_rate, bins=full.bins)
        self.band_split_hz, self.low_options = float(band_split_hz), dict(low_options or {})
        low = build_model(base, targets=targets, channels=channels, sample_rate=sample_rate,
                          **{**options, **self.low_options, "max_bin": self.low_bins})
        if (low.n_fft, low.hop_length) != (full.n_fft, full.hop_length):
            raise ValueError("low_options must not change n_fft or hop_length (the two bands share one STFT)")
        self.full, self.low = full, low
        self.low_weight = nn.Parameter(torch.zeros(self.low_bins))

    def config(self) -> dict[str, Any]:
        return {**self.full.config(), "band_split_hz": self.band_split_hz, "low_options": dict(self.low_options)}

    def _arch_config(self) -> dict[str, Any]:
        cfg = self.config()
        return {k: v for k, v in cfg.items() if k not in ("name", "targets", "channels", "sample_rate")}

    def estimate(self, mixture: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, T)`` -> (merged magnitudes ``(B, S, C, F, N)`` float32, mixture complex STFT ``(B, C, F, N)``)."""
        full, mix_spec = self.full.estimate(mixture)
        low, _ = self.low.estimate(mixture)
        k = self.low_bins
        a = torch.sigmoid(self.low_weight.float())[:, None]  # (k, 1): per bin, over frames
        merged = a * low[..., :k, :].float() + (1 - a) * full[..., :k, :].float()
        return torch.cat([merged, full[..., k:, :].float()], dim=-2), mix_spec


__all__ = ["BandSplit", "low_band_bins"]
