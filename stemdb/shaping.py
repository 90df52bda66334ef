"""Audio shaping: channel fitting, pad/trim and resampling of ``(channels, samples)`` arrays, with one rule each.

Used wherever audio is brought to a target layout: the remix renderer (:mod:`augment.render`), the trainer's
validation crops (:mod:`train.validation`), separation and evaluation (:mod:`train.separate`,
:mod:`train.evaluate`).

Channel rule (:func:`fit_channels`), for ``C`` input channels and ``channels`` asked:

- ``C == channels``: unchanged;
- ``channels == 1``: the mean of all input channels;
- ``C == 1``: the mono signal repeated on every channel;
- ``C > channels > 1``: the first ``channels`` channels are kept (front left/right in the usual multichannel
  orders), the others dropped;
- ``1 < C < channels``: an error (there is no one right way to invent the missing channels).
"""

from __future__ import annotations

import numpy as np

#: soxr quality used for every resampling.
RESAMPLE_QUALITY = "HQ"


def fit_channels(a: np.ndarray, channels: int) -> np.ndarray:
    """``(C, N)`` -> ``(channels, N)`` by the module's channel rule (a view or the input itself when nothing is
    computed; the mean keeps the input's float dtype).

    Raises:
        ValueError: ``1 < C < channels``, or ``channels < 1``.
    """
    c_in = a.shape[0]
    if channels < 1:
        raise ValueError(f"channels={channels}; allowed: 1 or more")
    if c_in == channels:
        return a
    if channels == 1:
        return a.mean(axis=0, keepdims=True, dtype=a.dtype if a.dtype.kind == "f" else np.float32)
    if c_in == 1:
        return np.repeat(a, channels, axis=0)
    if c_in > channels:
        return a[:channels]
    raise ValueError(f"cannot map {c_in} audio channels to {channels}; allowed: the same count, to mono, from "
                     "mono, or to fewer channels (the first are kept)")


def channel_source(c_in: int, channels: int) -> list[int] | None:
    """For each output channel, the input channel it copies under the channel rule (``None``: the output is the
    mean of all inputs, ``channels == 1 < c_in``). For renderers that copy channel by channel."""
    if channels == 1 and c_in > 1:
        return None
    if c_in == 1:
        return [0] * channels
    if c_in >= channels:
        return list(range(channels))
    raise ValueError(f"cannot map {c_in} audio channels to {channels}; allowed: the same count, to mono, from "
                     "mono, or to fewer channels (the first are kept)")


def fit_length(a: np.ndarray, frames: int) -> np.ndarray:
    """``(..., N)`` -> ``(..., frames)``: cut at the end or zero-padded at the end; C-contiguous, dtype kept."""
    n = a.shape[-1]
    if n == frames:
        return a
    if n > frames:
        return np.ascontiguousarray(a[..., :frames])
    out = np.zeros((*a.shape[:-1], frames), dtype=a.dtype)
    out[..., :n] = a
    return out


def resample(a: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """``(C, N)`` float32 audio from ``sr_in`` to ``sr_out`` Hz with soxr (HQ), as C-contiguous float32; the input
    itself when the rates are equal."""
    if sr_in == sr_out:
        return a
    import soxr

    return np.ascontiguousarray(soxr.resample(a.T, sr_in, sr_out, quality=RESAMPLE_QUALITY).T, dtype=np.float32)


__all__ = ["RESAMPLE_QUALITY", "channel_source", "fit_channels", "fit_length", "resample"]
