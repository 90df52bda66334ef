"""Conv-TasNet: waveform-domain separation with a learned filterbank and a temporal convolutional network.

After Luo & Mesgarani 2019, "Conv-TasNet: Surpassing Ideal Time-Frequency Magnitude Masking for Speech
Separation" (IEEE/ACM TASLP). The mixture ``(B, C, T)`` goes through

1. an **encoder**: a 1-D convolution of ``N`` filters of ``L`` samples, stride ``L // 2``, ReLU, with the audio
   channels (stereo: 2) as its input channels, giving ``(B, N, K)`` frames;
2. a **separator** (TCN): global layer norm (gLN), 1x1 bottleneck to ``B`` channels, ``R`` repeats of ``X``
   residual blocks (1x1 conv to ``H`` -> PReLU -> gLN -> depthwise conv of kernel ``P`` and dilation ``2**x`` ->
   PReLU -> gLN -> 1x1 residual (``B``) and skip (``Sc``) outputs); the summed skips -> PReLU -> 1x1 conv give one
   mask per target over the ``N`` encoder channels (sigmoid, or ReLU as Demucs' variant);
3. a **decoder**: a transposed 1-D convolution (shared by the targets) from each masked representation back to
   ``C`` audio channels.

Defaults for 44.1 kHz music (the paper's are for 8 kHz speech): ``L = 20`` samples (0.45 ms; 50% overlap, so 4410
frames per second), ``N = 256`` filters, ``B = Sc = 256``, ``H = 512``, ``P = 3``, ``X = 8``, ``R = 4``, the setting of
the Conv-TasNet baseline of Défossez et al. 2019 ("Music Source Separation in the Waveform Domain") on MUSDB18.
The TCN's receptive field is ``1 + R * (P - 1) * (2**X - 1)`` frames = 2041 frames, about 0.46 s.

Any length works: the input is zero-padded on the right to a whole number of frames and the output cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.models import SeparationModel, check_choice, check_int, scale_init_

MASKS = ("sigmoid", "relu")


class GlobalLayerNorm(nn.Module):
    """gLN: normalise ``(B, C, K)`` over channels and time per example, learned per-channel gain and bias.

    Statistics are computed in float32 (also under autocast) and the result cast back to the input's dtype.
    """

    def __init__(self, channels: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        y = x.float()
        mean = y.mean(dim=(1, 2), keepdim=True)
        var = (y - mean).pow(2).mean(dim=(1, 2), keepdim=True)
        return ((y - mean) / torch.sqrt(var + self.eps) * self.gain + self.bias).to(x.dtype)


class TemporalBlock(nn.Module):
    """One TCN block: ``(B, bottleneck, K)`` -> (residual ``(B, bottleneck, K)``, skip ``(B, skip, K)``)."""

    def __init__(self, bottleneck: int, hidden: int, skip: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(bottleneck, hidden, 1),
            nn.PReLU(),
            GlobalLayerNorm(hidden),
            nn.Conv1d(
                hidden, hidden, kernel, dilation=dilation, padding=(kernel - 1) * dilation // 2, groups=hidden
            ),
            nn.PReLU(),
            GlobalLayerNorm(hidden),
        )
        self.residual = nn.Conv1d(hidden, bottleneck, 1)
        self.skip = nn.Conv1d(hidden, skip, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.body(x)
        return x + self.residual(y), self.skip(y)


class ConvTasNet(SeparationModel):
    """Conv-TasNet for ``channels``-channel music at 44.1 kHz.

    Args:
        targets: stem names in output order.
        channels: audio channels, the encoder's input and the decoder's output channels.
        sample_rate: Hz (recorded only; the defaults below are chosen for 44.1 kHz).
        filters: ``N``, encoder filters (256).
        filter_length: ``L``, encoder/decoder filter length in samples (20); stride ``L // 2``.
        bottleneck: ``B``, channels of the TCN residual path (256).
        hidden: ``H``, channels inside a TCN block (512).
        skip: ``Sc``, channels of the TCN skip path (256).
        kernel: ``P``, depthwise kernel size (3; odd).
        blocks: ``X``, blocks per repeat, dilations ``1 .. 2**(X-1)`` (8).
        repeats: ``R``, repeats of the block stack (4).
        mask: ``"sigmoid"`` (as the paper) or ``"relu"``.
        init_scale: when set, Kaiming re-init of the conv weights times this factor.
    """

    name = "convtasnet"
    default_loss = "l1_wave"
    TINY = {"filters": 16, "filter_length": 16, "bottleneck": 8, "hidden": 16, "skip": 8, "blocks": 3,
            "repeats": 2}

    def __init__(
        self,
        *,
        targets: Sequence[str],
        channels: int = 2,
        sample_rate: int = 44100,
        filters: int = 256,
        filter_length: int = 20,
        bottleneck: int = 256,
        hidden: int = 512,
        skip: int = 256,
        kernel: int = 3,
        blocks: int = 8,
        repeats: int = 4,
        mask: str = "sigmoid",
        init_scale: float | None = None,
    ) -> None:
        super().__init__(targets=targets, channels=channels, sample_rate=sample_rate)
        self.filters = check_int("filters", filters, minimum=1)
        self.filter_length = check_int("filter_length", filter_length, minimum=2)
        self.bottleneck = check_int("bottleneck", bottleneck, minimum=1)
        self.hidden = check_int("hidden", hidden, minimum=1)
        self.skip = check_int("skip", skip, minimum=1)
        self.kernel = check_int("kernel", kernel, minimum=1)
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (symmetric padding keeps the length), got {kernel}")
        self.blocks = check_int("blocks", blocks, minimum=1)
        self.repeats = check_int("repeats", repeats, minimum=1)
        self.mask = check_choice("mask", mask, MASKS)
        self.init_scale = init_scale
        self.stride = self.filter_length // 2
        n_src = len(self.targets)

        self.encoder = nn.Conv1d(self.channels, filters, filter_length, stride=self.stride, bias=False)
        self.norm = GlobalLayerNorm(filters)
        self.to_bottleneck = nn.Conv1d(filters, bottleneck, 1)
        self.tcn = nn.ModuleList(
            TemporalBlock(bottleneck, hidden, skip, kernel, 2**x) for _ in range(repeats) for x in range(blocks)
        )
        self.to_masks = nn.Sequential(nn.PReLU(), nn.Conv1d(skip, n_src * filters, 1))
        self.decoder = nn.ConvTranspose1d(filters, self.channels, filter_length, stride=self.stride, bias=False)
        if init_scale is not None:
            scale_init_(self, init_scale)

    def _arch_config(self) -> dict:
        return {
            "filters": self.filters,
            "filter_length": self.filter_length,
            "bottleneck": self.bottleneck,
            "hidden": self.hidden,
            "skip": self.skip,
            "kernel": self.kernel,
            "blocks": self.blocks,
            "repeats": self.repeats,
            "mask": self.mask,
            "init_scale": self.init_scale,
        }

    def padded_length(self, length: int) -> int:
        """Samples after right zero-padding ``length`` to a whole number of frames (at least one frame)."""
        frames = max(0, -(-(length - self.filter_length) // self.stride))
        return self.filter_length + frames * self.stride

    def masks(self, mixture: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, T)`` -> (masks ``(B, S, N, K)``, encoder output ``(B, N, K)``)."""
        self.check_mixture(mixture)
        length = mixture.shape[-1]
        x = F.pad(mixture, (0, self.padded_length(length) - length))
        w = torch.relu(self.encoder(x))
        y = self.to_bottleneck(self.norm(w))
        skips = 0
        for block in self.tcn:
            y, s = block(y)
            skips = skips + s
        logits = self.to_masks(skips).reshape(w.shape[0], len(self.targets), self.filters, w.shape[-1])
        masks = torch.sigmoid(logits) if self.mask == "sigmoid" else torch.relu(logits)
        return masks, w

    def forward(self, mixture: Tensor) -> Tensor:
        """``(B, C, T)`` mixture -> ``(B, S, C, T)`` waveform estimates (the mixture's dtype)."""
        masks, w = self.masks(mixture)
        b, s = masks.shape[:2]
        out = self.decoder((masks * w.unsqueeze(1)).reshape(b * s, self.filters, -1))
        return out[..., : mixture.shape[-1]].reshape(b, s, self.channels, -1).to(mixture.dtype)
