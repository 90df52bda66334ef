"""The training stack on a CUDA device: every registered model, the trainer fed by the remix stream, separation.

Each test compares the GPU against the CPU on real fixture audio, or checks what only the GPU path does (bf16
autocast on CUDA, pinned host-to-device copies, ``GpuAugment`` in the trainer). Deselected by default and skipped
without CUDA; ``bench/gpu/suite.sh`` runs them on a GPU machine (``pytest -m gpu``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from augment.config import ProjectConfig, load_project
from stemdb import audio
from train.data import RemixStream, StreamLoader
from train.models import build_model, model_class, model_names
from train.run import train_run
from train.separate import load_model, separate

from .conftest import MUSDB

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).parent.parent
TARGETS = ("vocals", "drums", "bass", "other")
SR = 44100
#: Small architectures keep each model's check to a second; a model not named here runs at its defaults.
SMALL = {
    "unet": {"n_fft": 512, "hop_length": 128, "levels": 3, "base_filters": 8, "max_bin": None, "dropout": 0.0},
    "blstm": {"n_fft": 1024, "hop_length": 256, "hidden": 64, "layers": 2, "dropout": 0.0, "max_bin": None},
    "convtasnet": {"filters": 32, "filter_length": 16, "bottleneck": 16, "hidden": 32, "skip": 16, "kernel": 3,
                   "blocks": 2, "repeats": 1},
}
BASE = load_project(ROOT / "data.yaml").remix


@pytest.fixture()
def exact_fp32() -> Iterator[None]:
    """No TF32 in matmuls and convolutions while a test compares the GPU with the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def fixture_mixture(seconds: float) -> torch.Tensor:
    """``(1, 2, T)`` float32: the start of a real fixture mixture."""
    x, sr = audio.read(MUSDB / "test" / "The Easton Ellises - Falcon 69" / "mixture.wav", frames=int(seconds * SR))
    assert sr == SR
    return torch.from_numpy(x)[None]


def small_model(name: str, seed: int = 0) -> torch.nn.Module:
    small = SMALL[name] if name in SMALL else model_class(name).TINY  # models added later declare their own
    return build_model(name, targets=TARGETS, channels=2, sample_rate=SR, seed=seed, **small)


@pytest.mark.parametrize("name", model_names())
def test_model_on_cuda_matches_the_cpu_and_trains_under_bf16_autocast(name: str, exact_fp32: None) -> None:
    x = fixture_mixture(1.0)
    model = small_model(name).eval()
    with torch.no_grad():
        cpu = model(x)
    gpu_model = copy.deepcopy(model).cuda()
    with torch.no_grad():
        gpu = gpu_model(x.cuda()).cpu()
    assert gpu.shape == cpu.shape == (1, len(TARGETS), 2, x.shape[-1])
    scale = float(cpu.abs().max())
    assert scale > 0
    assert float((gpu - cpu).abs().max()) <= 1e-3 * scale, f"{name}: GPU and CPU outputs differ"

    gpu_model.train()
    opt = torch.optim.Adam(gpu_model.parameters(), lr=1e-3)
    target = (x.cuda() / len(TARGETS)).unsqueeze(1).expand(-1, len(TARGETS), -1, -1)
    losses = []
    for _ in range(5):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = (gpu_model(x.cuda()).float() - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in gpu_model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), f"{name}: non-finite bf16 gradients"
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], f"{name}: bf16 losses {losses}"


def test_streamloader_on_cuda_delivers_the_cpu_batches(fixture_catalog: Path) -> None:
    light = {t: {"channel_swap": {"p": 0.5}, "polarity": {"p": 0.5}} for t in BASE.targets}
    cfg = BASE.model_copy(update={"augment": light})
    gpu = RemixStream(fixture_catalog, cfg, seconds=0.5, seed=3, epoch_length=6, dtype="int16")
    cpu = RemixStream(fixture_catalog, cfg, seconds=0.5, seed=3, epoch_length=6)
    got = [(m.cpu(), t.cpu(), m.device, m.dtype) for m, t in StreamLoader(gpu, batch_size=2, num_workers=2,
                                                                          device="cuda")]
    ref = list(DataLoader(cpu, batch_size=2))
    assert len(got) == len(ref) == 3
    for (m, t, dev, dtype), (rm, rt) in zip(got, ref, strict=True):
        assert dev.type == "cuda" and dtype == torch.float32
        assert torch.equal(m, rm) and torch.equal(t, rt)


def test_trainer_on_cuda_with_gpu_augment_trains_checkpoints_and_separates(
    fixture_catalog: Path, tmp_path: Path, exact_fp32: None
) -> None:
    heavy = {t: {"pitch": {"min_semitones": -2, "max_semitones": 2, "p": 0.5},
                 "stretch": {"min_rate": 0.9, "max_rate": 1.1, "p": 0.5},
                 "channel_swap": {"p": 0.5}, "polarity": {"p": 0.5}} for t in BASE.targets}
    scfg = ProjectConfig(catalog=fixture_catalog, remix=BASE.model_copy(update={"augment": heavy, "seconds": 1.0}))
    overrides = {"steps": 8, "batch_size": 2, "device": "cuda", "precision": "bf16", "num_workers": 2,
                 "gpu_augment": True, "checkpoint_every": 4, "log_every": 1, "lr": 3e-3, "model_options": SMALL["unet"],
                 "valid": {"root": str(MUSDB / "test"), "every": 4, "seconds": 2.0}}
    run = tmp_path / "run"
    r = train_run(scfg, out=run, model="unet", overrides=overrides)
    assert r.step == 8 and math.isfinite(r.loss)
    assert r.valid is not None and all(math.isfinite(v) for v in r.valid.values())

    # the checkpoint reloads onto the GPU and separates as it does on the CPU (fp32)
    gpu_model, cpu_model = load_model(run, device="cuda"), load_model(run, device="cpu")
    assert next(gpu_model.parameters()).is_cuda
    x = fixture_mixture(3.0)[0].numpy()
    on_gpu = separate(gpu_model, x, SR, chunk_seconds=1.0)
    on_cpu = separate(cpu_model, x, SR, chunk_seconds=1.0)
    for stem in TARGETS:
        assert on_gpu[stem].shape == x.shape
        scale = float(np.abs(on_cpu[stem]).max())
        assert float(np.abs(on_gpu[stem] - on_cpu[stem]).max()) <= 1e-3 * max(scale, 1e-6), stem
