"""Where and how a training process runs: its rank in the process group, its device, its precision policy, and
the seeds derived for it.

- **distributed**: under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` in the
  environment) :func:`init_distributed` joins the process group (``nccl`` on CUDA, ``gloo`` on CPU);
  :func:`dist_info` is ``(rank, world_size)``.
- **precision**: ``auto`` is bf16 autocast on GPUs that support it, fp16 autocast with a ``GradScaler`` on the
  others, fp32 on CPU; ``bf16`` / ``fp16`` / ``fp32`` force one (bf16 autocast works on CPU too). Adam's ``eps``
  is 1e-4 under fp16 (1e-8 would vanish in half precision), 1e-8 otherwise (:class:`AmpPolicy`).
- **seeds**: :func:`derive_seed` is a pure function of its parts, e.g. ``(seed, step, micro, rank)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist

from stemdb.errors import ConfigError
from train.config import Precision

logger = logging.getLogger(__name__)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (e.g. ``(seed, epoch, rank)``)."""
    h = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 1


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``... in the
    environment) when ``WORLD_SIZE > 1`` and none is initialised yet; returns ``(rank, world_size)``.

    ``backend``: ``nccl`` when CUDA is available, else ``gloo`` (CPU). On CUDA the process takes the GPU
    ``LOCAL_RANK``.
    """
    if dist.is_initialized():
        return dist_info()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    logger.info("joined process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return dist_info()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; ``cuda`` under DDP also takes LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device: 'cuda' asked for but torch sees no CUDA device", key="train.device")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


@dataclass(frozen=True)
class AmpPolicy:
    """What ``precision`` resolves to on a device: the autocast dtype (``None``: fp32) and whether a GradScaler
    is used (fp16 only)."""

    name: Literal["fp32", "bf16", "fp16"]
    dtype: torch.dtype | None
    scaler: bool

    @property
    def adam_eps(self) -> float:
        """1e-4 under fp16, 1e-8 otherwise."""
        return 1e-4 if self.name == "fp16" else 1e-8

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """``torch.autocast`` for this policy (a null context in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_precision(precision: Precision, device: torch.device) -> AmpPolicy:
    """``auto``: bf16 on CUDA devices that support it, fp16 + GradScaler on older ones, fp32 on CPU."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "bf16":
        return AmpPolicy("bf16", torch.bfloat16, scaler=False)
    if precision == "fp16":
        return AmpPolicy("fp16", torch.float16, scaler=True)
    if precision == "fp32":
        return AmpPolicy("fp32", None, scaler=False)
    raise ConfigError(f"train.precision={precision!r} is not allowed; allowed: auto, fp32, bf16, fp16",
                      key="train.precision")


__all__ = ["AmpPolicy", "derive_seed", "dist_info", "init_distributed", "resolve_device", "resolve_precision"]
