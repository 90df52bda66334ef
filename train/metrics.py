"""Fast separation metrics for validation during training: SI-SDR and plain SDR, in torch or numpy.

Both functions take ``estimate`` and ``reference`` of shape ``(..., C, T)`` (any leading batch/source dimensions,
``C`` channels, ``T`` samples) and return one value in dB per leading index, shape ``(...)``. The channels of one
signal are concatenated into a single vector of ``C * T`` samples, so a stereo track gets one number.

They work on ``torch.Tensor`` (any device, differentiable; half precision is computed in float32) and on
``numpy.ndarray`` (computed in float64), returning the same kind they were given. This module never imports torch
itself, so numpy-only callers (``train.evaluate`` and its worker processes) do not pay for it.

These are the quick, whole-signal numbers for training curves. The MUSDB18 benchmark number is BSSEval v4 SDR
through museval (:func:`train.bsseval.bss_sdr`), which is windowed, filter-tolerant and much slower.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["si_sdr", "sdr"]


def si_sdr(estimate: Any, reference: Any, *, eps: float = 1e-8) -> Any:
    """Scale-invariant SDR in dB (Le Roux et al., "SDR - half-baked or well done?", ICASSP 2019).

    Each channel of both signals is made zero-mean over time, the channels are concatenated, the reference is
    scaled by the least-squares gain ``a = <est, ref> / |ref|^2`` and
    ``SI-SDR = 10 log10(|a ref|^2 / |est - a ref|^2)``. Rescaling the estimate (or the reference) by any non-zero
    factor leaves the value unchanged.

    Args:
        estimate: ``(..., C, T)`` estimated source, torch tensor or numpy array.
        reference: ``(..., C, T)`` true source, same shape and kind as ``estimate``.
        eps: small energy (in squared sample units) added to denominators and numerators so that silent inputs
            give finite values; it bounds the result at about ``10 log10(|ref|^2 / eps)`` dB.

    Returns:
        SI-SDR in dB, shape ``(...)`` (a 0-d array/tensor for a single ``(C, T)`` signal).

    Raises:
        ValueError: shapes differ, fewer than 2 dimensions, or ``eps`` is negative.
    """
    est, ref, backend = _prepare(estimate, reference, eps)
    est = est - est.mean(**backend.axis(-1, keep=True))
    ref = ref - ref.mean(**backend.axis(-1, keep=True))
    est = est.reshape(*est.shape[:-2], -1)
    ref = ref.reshape(*ref.shape[:-2], -1)
    dot = (est * ref).sum(**backend.axis(-1, keep=True))
    ref_energy = (ref * ref).sum(**backend.axis(-1, keep=True))
    target = dot / (ref_energy + eps) * ref
    noise = est - target
    num = (target * target).sum(**backend.axis(-1, keep=False))
    den = (noise * noise).sum(**backend.axis(-1, keep=False))
    return backend.db((num + eps) / (den + eps))


def sdr(estimate: Any, reference: Any, *, eps: float = 1e-8) -> Any:
    """Plain energy-ratio SDR in dB (the "new SDR" / utterance SDR of the MDX 2021 challenge).

    ``SDR = 10 log10(|ref|^2 / |ref - est|^2)`` over the concatenated channels, with no projection, no mean removal
    and no scale invariance: a silent estimate scores 0 dB, the mixture scores the source-to-rest ratio.

    Args:
        estimate: ``(..., C, T)`` estimated source, torch tensor or numpy array.
        reference: ``(..., C, T)`` true source, same shape and kind as ``estimate``.
        eps: small energy added to numerator and denominator (keeps silent references and perfect estimates
            finite).

    Returns:
        SDR in dB, shape ``(...)``.

    Raises:
        ValueError: shapes differ, fewer than 2 dimensions, or ``eps`` is negative.
    """
    est, ref, backend = _prepare(estimate, reference, eps)
    ref = ref.reshape(*ref.shape[:-2], -1)
    err = ref - est.reshape(*est.shape[:-2], -1)
    num = (ref * ref).sum(**backend.axis(-1, keep=False))
    den = (err * err).sum(**backend.axis(-1, keep=False))
    return backend.db((num + eps) / (den + eps))


class _Numpy:
    @staticmethod
    def axis(dim: int, *, keep: bool) -> dict[str, Any]:
        return {"axis": dim, "keepdims": keep}

    @staticmethod
    def db(ratio: np.ndarray) -> np.ndarray:
        return 10.0 * np.log10(ratio)


class _Torch:
    @staticmethod
    def axis(dim: int, *, keep: bool) -> dict[str, Any]:
        return {"dim": dim, "keepdim": keep}

    @staticmethod
    def db(ratio: Any) -> Any:
        return 10.0 * ratio.log10()


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _prepare(estimate: Any, reference: Any, eps: float) -> tuple[Any, Any, type[_Numpy] | type[_Torch]]:
    if eps < 0:
        raise ValueError(f"eps={eps!r} is negative; allowed: eps >= 0")
    est_t, ref_t = _is_tensor(estimate), _is_tensor(reference)
    if est_t != ref_t:
        raise ValueError(
            f"estimate is {type(estimate).__name__} and reference is {type(reference).__name__}; "
            "allowed: both torch tensors or both numpy arrays"
        )
    if est_t:
        if estimate.dtype in _torch_half_types() or not estimate.is_floating_point():
            estimate, reference = estimate.float(), reference.float()
        backend: type[_Numpy] | type[_Torch] = _Torch
    else:
        estimate = np.asarray(estimate, dtype=np.float64)
        reference = np.asarray(reference, dtype=np.float64)
        backend = _Numpy
    if tuple(estimate.shape) != tuple(reference.shape):
        raise ValueError(
            f"estimate shape {tuple(estimate.shape)} != reference shape {tuple(reference.shape)}; "
            "allowed: identical shapes (..., channels, samples)"
        )
    if estimate.ndim < 2:
        raise ValueError(
            f"estimate has shape {tuple(estimate.shape)}; allowed: (..., channels, samples) with at least 2 dims"
        )
    if est_t and reference.dtype != estimate.dtype:
        reference = reference.to(estimate.dtype)
    return estimate, reference, backend


def _torch_half_types() -> tuple[Any, ...]:
    torch = sys.modules["torch"]
    return (torch.float16, torch.bfloat16)
