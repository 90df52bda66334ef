"""Batched pitch shift, time stretch and in-batch remix on torch tensors, for a batch already on the device.

Everything here is device-agnostic (CPU or CUDA tensors) and batched: per-item parameters are handled by per-item
index grids and ``torch.gather``, never by Python loops over batch items, so one call costs a fixed number of kernel
launches whatever the batch holds.

Parameter semantics are those of the recipe columns and of the CPU transforms in ``augment.transforms``
(``pitch_semitones`` in [-24, 24], duration kept; ``stretch_rate`` > 1 faster, ``round(N / rate)`` samples); the CPU
renderer runs Signalsmith Stretch, this module a phase vocoder (as librosa's), so the audio differs in detail, not in
meaning:

* **time stretch** by ``rate`` (> 1 is faster and shorter): a phase vocoder on ``torch.stft`` (Hann window,
  ``center=True`` with **zero** padding; reflect padding puts the start of slowed-down tones about 13 dB off), output
  length ``round(T / rate)`` samples, then cropped or zero-padded to ``out_frames``. The result equals
  ``librosa.effects.time_stretch`` with the same ``n_fft`` and hop within 1e-6 of full scale in float64 (3e-5 in
  float32), except in the last ``n_fft`` samples, where librosa renormalises the final partial frames and we let
  them fade out.
* **pitch shift** by ``semitones``: time stretch by ``r = 2 ** (-semitones / 12)``, then resample by ``r`` (read the
  stretched signal at positions ``j / r``), same length as the input. Pitch and stretch together take one phase
  vocoder pass (rate ``r * rate``) and one resampling.

The phase vocoder, the resampler and their accuracy are :mod:`train.vocoder`'s.

Costs and device syncs: the per-item parameters are read on the host (pass them as CPU tensors, as a DataLoader yields
them, to avoid a device sync); items whose parameters are the identity (0 semitones, rate 1.0) are copied, not
processed; items with a pitch shift and items with only a stretch are processed as two batched groups (the latter
without the resampler).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor, nn

from train.vocoder import crop_or_pad, stretch_items

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_SEMITONES",
    "GpuAugment",
    "in_batch_remix",
    "pitch_shift",
    "pitch_stretch",
    "time_stretch",
]

#: Largest pitch shift accepted, in semitones either way (the intermediate signal grows by ``2 ** (|st| / 12)``).
MAX_SEMITONES = 24.0



# --------------------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------------------


def _check_signal(x: Tensor, name: str, *, min_dim: int = 1) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[-1] < 1:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(x.shape)}")


def _check_stft(n_fft: int, hop: int) -> None:
    if not isinstance(n_fft, int) or n_fft < 16 or n_fft % 2:
        raise ValueError(f"n_fft must be an even int >= 16, got {n_fft!r}")
    if not isinstance(hop, int) or not 1 <= hop <= n_fft // 2:
        raise ValueError(f"hop must be an int in [1, n_fft // 2 = {n_fft // 2}], got {hop!r}")


def _check_out_frames(out_frames: int) -> None:
    if isinstance(out_frames, bool) or not isinstance(out_frames, int | np.integer) or out_frames < 1:
        raise ValueError(f"out_frames must be a positive int (samples), got {out_frames!r}")


def _host_params(value: Tensor | float, name: str, batch: int) -> Tensor:
    """Per-item parameters as a float64 CPU tensor of shape ``(batch,)``; a scalar is broadcast."""
    t = value.detach() if isinstance(value, Tensor) else torch.as_tensor(value)
    t = t.to("cpu", torch.float64)
    if t.dim() == 0:
        t = t.expand(batch)
    elif t.shape != (batch,):
        raise ValueError(
            f"{name} must be a scalar or have shape ({batch},) (one per item), got {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t.contiguous()


def _check_rate(rate: Tensor, name: str = "rate") -> None:
    if (rate <= 0).any():
        raise ValueError(f"{name} must be > 0 (1.0 = unchanged, > 1 faster), got {rate.tolist()}")


def _check_semitones(st: Tensor, name: str = "semitones") -> None:
    if (st.abs() > MAX_SEMITONES).any():
        raise ValueError(
            f"{name} must lie in [-{MAX_SEMITONES}, {MAX_SEMITONES}] semitones, got {st.tolist()}"
        )


# --------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------


def time_stretch(
    x: Tensor, rate: Tensor | float, *, out_frames: int, n_fft: int = 2048, hop: int = 512
) -> Tensor:
    """Time-stretch each item of a batch by its own rate, keeping the pitch.

    Args:
        x: ``(B, ..., T)`` float audio (e.g. ``(B, C, T)``), any device; a 1-D ``(T,)`` signal needs a scalar rate.
        rate: ``(B,)`` per item, or a scalar for all; > 1 is faster (shorter), 1.0 leaves the item untouched.
        out_frames: output length in samples; the stretched item (``round(T / rate)`` samples) is cropped or
            zero-padded to it.
        n_fft, hop: STFT size and hop in samples (Hann window).

    Returns:
        ``(B, ..., out_frames)``, same dtype and device as ``x``; items with rate 1.0 are ``x`` cropped or padded,
        bit for bit.

    Raises:
        ValueError: a bad shape, dtype, ``rate`` <= 0 or not finite, or bad ``out_frames`` / ``n_fft`` / ``hop``.
    """
    return pitch_stretch(x, 0.0, rate, out_frames=out_frames, n_fft=n_fft, hop=hop)


def pitch_shift(x: Tensor, semitones: Tensor | float, *, n_fft: int = 2048, hop: int = 512) -> Tensor:
    """Shift the pitch of each item of a batch by its own number of semitones, keeping the length.

    Args:
        x: ``(B, ..., T)`` float audio, any device; a 1-D ``(T,)`` signal needs scalar semitones.
        semitones: ``(B,)`` per item or a scalar, in [-MAX_SEMITONES, MAX_SEMITONES]; 0 leaves the item untouched.
        n_fft, hop: STFT size and hop in samples.

    Returns:
        ``(B, ..., T)``, same dtype and device as ``x``.

    Raises:
        ValueError: a bad shape or dtype, ``semitones`` out of range or not finite, bad ``n_fft`` / ``hop``.
    """
    _check_signal(x, "x")
    return pitch_stretch(x, semitones, 1.0, out_frames=int(x.shape[-1]), n_fft=n_fft, hop=hop)


def pitch_stretch(
    x: Tensor,
    semitones: Tensor | float,
    rate: Tensor | float,
    *,
    out_frames: int,
    n_fft: int = 2048,
    hop: int = 512,
) -> Tensor:
    """Pitch shift and time stretch in one pass: one phase vocoder at rate ``2 ** (-st / 12) * rate``, then one
    resampling by ``2 ** (-st / 12)``. Same as :func:`pitch_shift` followed by :func:`time_stretch`.

    Args:
        x: ``(B, ..., T)`` float audio; ``semitones`` and ``rate`` are ``(B,)`` or scalars (see the two functions).
        out_frames: output length in samples; an item's own length is ``round(T / rate)``.

    Returns:
        ``(B, ..., out_frames)``, same dtype and device as ``x``.
    """
    _check_signal(x, "x")
    _check_stft(n_fft, hop)
    _check_out_frames(out_frames)
    out_frames = int(out_frames)
    squeeze = x.dim() == 1
    xb = x.unsqueeze(0) if squeeze else x
    batch = int(xb.shape[0])
    st = _host_params(semitones, "semitones", batch)
    rt = _host_params(rate, "rate", batch)
    _check_semitones(st)
    _check_rate(rt)

    lead = xb.shape[1:-1]
    n_time = int(xb.shape[-1])
    flat = xb.reshape(batch, -1, n_time)  # (B, R, T), R = channels (or 1)
    pitched = st != 0
    stretched_only = (~pitched) & (rt != 1)
    groups = [(m, w) for m, w in ((stretched_only, False), (pitched, True)) if bool(m.any())]
    if len(groups) == 1 and bool(groups[0][0].all()):  # every item in one group: no gather, no scatter
        out = stretch_items(flat, st, rt, out_frames=out_frames, n_fft=n_fft, hop=hop, with_pitch=groups[0][1])
    else:
        out = crop_or_pad(flat, out_frames).clone()  # identity items, bit for bit
        for mask, with_pitch in groups:
            idx_host = torch.nonzero(mask).flatten()
            idx = idx_host.to(flat.device, non_blocking=True)
            y = stretch_items(
                flat.index_select(0, idx),
                st[idx_host],
                rt[idx_host],
                out_frames=out_frames,
                n_fft=n_fft,
                hop=hop,
                with_pitch=with_pitch,
            )
            out.index_copy_(0, idx, y)
    out = out.reshape(batch, *lead, out_frames)
    return out[0] if squeeze else out


class GpuAugment(nn.Module):
    """Per-stem pitch shift and time stretch for a training batch already on the device.

    ``forward(stems, pitch, rate, *, out_frames)`` takes stems ``(B, S, C, T)`` float and per-item, per-stem
    parameters ``pitch`` ``(B, S)`` in semitones and ``rate`` ``(B, S)`` (> 1 faster), as drawn by the seeded recipe
    (pass them as CPU tensors to avoid a device sync). Stems with 0 st and rate 1.0 are copied untouched. Returns
    ``(stems, mixture)``: stems ``(B, S, C, out_frames)`` and ``mixture = stems.sum(1)`` ``(B, C, out_frames)``, in
    the input's dtype. To keep every stretched stem full length, feed ``T >= ceil(out_frames * max(rate))`` samples
    (the CPU renderer reads ``ceil(out_frames * rate) + 8``); items with a lower rate use the start of their window.
    """

    def __init__(self, *, n_fft: int = 2048, hop: int = 512) -> None:
        super().__init__()
        _check_stft(n_fft, hop)
        self.n_fft = n_fft
        self.hop = hop

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, hop={self.hop}"

    def forward(
        self, stems: Tensor, pitch: Tensor, rate: Tensor, *, out_frames: int
    ) -> tuple[Tensor, Tensor]:
        _check_signal(stems, "stems")
        if stems.dim() != 4:
            raise ValueError(f"stems must have shape (B, S, C, T), got {tuple(stems.shape)}")
        b, s, c, t = (int(v) for v in stems.shape)
        for name, p in (("pitch", pitch), ("rate", rate)):
            if not isinstance(p, Tensor) or tuple(p.shape) != (b, s):
                shape = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
                raise ValueError(f"{name} must be a tensor of shape (B, S) = ({b}, {s}), got {shape}")
        out = pitch_stretch(
            stems.reshape(b * s, c, t),
            pitch.reshape(-1),
            rate.reshape(-1),
            out_frames=out_frames,
            n_fft=self.n_fft,
            hop=self.hop,
        ).reshape(b, s, c, -1)
        return out, out.sum(1)


def in_batch_remix(
    stems: Tensor, *, group_size: int, generator: torch.Generator, first_group: int = 0
) -> Tensor:
    """Demucs-style in-batch remix: permute each stem independently across the items of fixed-size groups.

    The batch is cut into consecutive groups of ``group_size`` items; within each group, stem ``s`` of item ``i``
    is replaced by stem ``s`` of item ``perm[g, s][i]`` of the same group, one random permutation per (group, stem).
    The caller recomputes the mixture as ``stems.sum(1)``.

    Split-invariance: the keys for group ``g`` are row ``first_group + g`` of one draw of shape
    ``(first_group + n_groups, S, group_size)`` from ``generator``. Ranks that hold consecutive slices of a global
    batch, each with a generator in the same state (seeded from (seed, step), not from the rank) and
    ``first_group = rank * n_groups``, together produce exactly what one device produces on the whole batch.
    Draws happen on ``generator.device``; CPU and CUDA generators give different streams.

    Args:
        stems: ``(B, S, C, T)``, any dtype and device; ``B`` a multiple of ``group_size``.
        group_size: items per group (>= 1; 1 returns the stems unchanged).
        generator: the source of randomness; the same state gives the same permutation.
        first_group: global index of this batch's first group (default 0).

    Returns:
        ``(B, S, C, T)``, a new tensor.

    Raises:
        ValueError: a bad shape, ``group_size`` < 1 or not dividing ``B``, ``first_group`` < 0.
    """
    if not isinstance(stems, Tensor) or stems.dim() != 4:
        shape = tuple(stems.shape) if isinstance(stems, Tensor) else type(stems).__name__
        raise ValueError(f"stems must be a tensor of shape (B, S, C, T), got {shape}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(first_group, bool) or not isinstance(first_group, int) or first_group < 0:
        raise ValueError(f"first_group must be an int >= 0, got {first_group!r}")
    b, s = int(stems.shape[0]), int(stems.shape[1])
    if b % group_size:
        raise ValueError(f"group_size={group_size} must divide the batch size B={b}")
    n_groups = b // group_size
    keys = torch.rand((first_group + n_groups, s, group_size), generator=generator, device=generator.device)[
        first_group:
    ]
    perm = keys.argsort(dim=-1).to(stems.device)  # (G, S, group_size): source item within the group
    base = torch.arange(n_groups, device=stems.device).view(n_groups, 1, 1) * group_size
    src = (base + perm).permute(0, 2, 1).reshape(b, s)  # (B, S): source batch index of each output stem
    return stems[src, torch.arange(s, device=stems.device).view(1, s)]
