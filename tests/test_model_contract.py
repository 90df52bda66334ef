"""The model contract: every name in the model registry goes through the same checks, by parametrisation.

A model is one module and one line in :data:`train.models.MODELS`; its class declares ``name``, ``default_loss``
(a name in :data:`train.losses.LOSSES`) and ``TINY`` (constructor options for a model small enough that a forward
and backward pass on 1 s of stereo 44.1 kHz audio takes about a second on one CPU core). Each check builds it with
``model_class(name).TINY``. Checks that need trainable weights (bf16 gradients, the overfit) skip, with the reason,
for a model without any (a channel-arithmetic baseline).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from train.losses import LOSSES, loss_domain
from train.models import SeparationModel, build_model, model_class, model_names
from train.models.spectral import SpectralMaskModel
from train.step import LossStep
from train.validation import Crops, load_crops

from .conftest import MUSDB

TARGETS = ("vocals", "drums", "bass", "other")
SR = 44100
NAMES = model_names()
#: Odd lengths (not multiples of any hop or stride): 0.1 s and 0.5 s plus one sample.
LENGTHS = (4411, 22051)

torch.set_num_threads(1)


def tiny(name: str, *, channels: int = 2, seed: int = 0) -> SeparationModel:
    return build_model(name, targets=TARGETS, channels=channels, sample_rate=SR, seed=seed,
                       **model_class(name).TINY)


def n_params(model: SeparationModel) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def need_weights(model: SeparationModel) -> None:
    if n_params(model) == 0:
        pytest.skip(f"{model.name} has no trainable weights: nothing to train or to take gradients of")


@pytest.fixture(scope="module")
def fixture_batch() -> Crops:
    """Two 0.25 s stereo crops of real fixture multitracks (mixture and its four stems)."""
    return load_crops(MUSDB / "train", stems=TARGETS, channels=2, sample_rate=SR, seconds=0.25, max_tracks=2)


def real_mixture(channels: int, frames: int) -> torch.Tensor:
    """``(2, channels, frames)``: two windows of a real fixture mixture (mono: the channel mean)."""
    crops = load_crops(MUSDB / "train", stems=TARGETS, channels=channels, sample_rate=SR, seconds=frames / SR,
                       max_tracks=2)
    return crops.mixture


@pytest.mark.parametrize("name", NAMES)
def test_the_class_declares_its_contract(name: str) -> None:
    cls = model_class(name)
    assert issubclass(cls, SeparationModel) and cls.name == name
    assert cls.default_loss in LOSSES, (name, cls.default_loss)
    assert isinstance(cls.TINY, dict)
    if loss_domain(cls.default_loss) == "spec":  # a spectral loss needs the mask model's magnitudes
        assert issubclass(cls, SpectralMaskModel), name
    assert tiny(name).name == name


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_for_mono_stereo_and_odd_lengths(name: str, channels: int) -> None:
    model = tiny(name, channels=channels).eval()
    for frames in LENGTHS:
        x = real_mixture(channels, frames)
        assert x.shape == (2, channels, frames)
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, len(TARGETS), channels, frames), (name, channels, frames, tuple(y.shape))
        assert y.dtype == torch.float32 and torch.isfinite(y).all()
    with pytest.raises(ValueError):
        model(torch.zeros(1, channels + 1, LENGTHS[0]))  # the wrong channel count is refused


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name: str) -> None:
    model = tiny(name)
    cfg = model.config()
    assert json.loads(json.dumps(cfg)) == cfg  # JSON-able
    again = build_model(**cfg)
    assert type(again) is type(model) and again.config() == cfg
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_gives_identical_outputs(name: str, tmp_path: Path) -> None:
    model = tiny(name, seed=3).eval()
    path = save_checkpoint(tmp_path / "m.pt", {"model_config": model.config(), "model_state": model.state_dict()})
    loaded = model_from_checkpoint(load_checkpoint(path))
    x = real_mixture(2, LENGTHS[0])
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_on_cpu(name: str, fixture_batch: Crops) -> None:
    model = tiny(name).train()
    step = LossStep(model, model_class(name).default_loss)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        y = model(fixture_batch.mixture)
        loss = step(fixture_batch.mixture, fixture_batch.targets)
    assert y.shape == fixture_batch.targets.shape and torch.isfinite(y.float()).all()
    assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
    need_weights(model)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(g.dtype == torch.float32 for g in grads)  # the weights stay float32 under autocast
    assert sum(float(g.abs().sum()) for g in grads) > 0.0


@pytest.mark.parametrize("name", NAMES)
def test_a_short_overfit_on_a_real_fixture_batch(name: str, fixture_batch: Crops) -> None:
    """30 Adam steps on one batch of two real 0.25 s crops: the model's default loss must fall to under 75 % of
    where it started (it learns the batch, so forward, loss and backward fit together). Measured on the bundled
    models: unet 33 %, blstm 5 %, convtasnet 62 %."""
    model = tiny(name, seed=1).train()
    need_weights(model)
    step = LossStep(model, model_class(name).default_loss)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = step(fixture_batch.mixture, fixture_batch.targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:2]), (name, losses[:2], losses[-5:])


class _Centre(SeparationModel):
    """A weightless model: every target is the mixture's mid signal (a stand-in for a channel-arithmetic baseline)."""

    name = "_centre"
    default_loss = "l1_wave"
    TINY: dict = {}

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        self.check_mixture(mixture)
        mid = mixture.mean(dim=1, keepdim=True).expand_as(mixture)
        return mid.unsqueeze(1).expand(-1, len(self.targets), -1, -1).clone()

    def _arch_config(self) -> dict:
        return {}


def test_a_model_without_weights_passes_and_skips_the_weight_checks(monkeypatch: pytest.MonkeyPatch,
                                                                     fixture_batch: Crops, tmp_path: Path) -> None:
    import train.models

    monkeypatch.setitem(train.models.MODELS, "_centre", (__name__, "_Centre"))
    test_the_class_declares_its_contract("_centre")
    test_shapes_for_mono_stereo_and_odd_lengths("_centre", 1)
    test_config_round_trip("_centre")
    test_checkpoint_round_trip_gives_identical_outputs("_centre", tmp_path)
    with pytest.raises(pytest.skip.Exception, match="no trainable weights"):
        test_bf16_autocast_on_cpu("_centre", fixture_batch)
    with pytest.raises(pytest.skip.Exception, match="no trainable weights"):
        test_a_short_overfit_on_a_real_fixture_batch("_centre", fixture_batch)
