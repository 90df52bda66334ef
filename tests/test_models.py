"""The bundled separation models (U-Net, BLSTM, Conv-TasNet), their STFT helpers and the training losses.

Tiny configurations on CPU; the overfitting tests train one batch of real MUSDB fixture audio.
"""

from __future__ import annotations

import functools
import io
import json
import math
from pathlib import Path

import pytest
import torch

from stemdb.audio import read
from train.losses import (
    LOSSES,
    get_loss,
    l1_spec,
    l1_wave,
    loss_domain,
    mse_spec,
    si_sdr,
    si_sdr_loss,
    smooth_l1_spec,
    weighted_l1_spec,
)
from train.models import build_model, scale_init_
from train.models.spectral import SpectralMaskModel, apply_mixture_phase, istft, num_frames, stft

ROCK = Path(__file__).parent / "data" / "musdb" / "train" / "Music Delta - Rock"
SR = 44100

#: Tiny configurations: a forward pass on 1 s of stereo audio takes milliseconds. The tests parametrised over these
#: cover the three original models; Demucs, DCCRN, PHASEN and centre are in test_models_waveform.py.
TINY = {
    "unet": {"n_fft": 256, "hop_length": 64, "levels": 3, "base_filters": 4, "max_bin": 100},
    "blstm": {"n_fft": 256, "hop_length": 64, "hidden": 16, "layers": 3, "max_bin": 100},
    "convtasnet": {
        "filters": 16, "filter_length": 16, "bottleneck": 8, "hidden": 16, "skip": 8, "blocks": 3, "repeats": 2,
    },
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@functools.cache
def _rock(seconds: float = 1.0, start_s: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A crop of Music Delta - Rock: mixture (1, 2, T) and stems (1, 4, 2, T) for vocals, drums, bass, other."""
    start, frames = int(start_s * SR), int(seconds * SR)
    mix = torch.from_numpy(read(ROCK / "mixture.wav", start=start, frames=frames)[0])
    stems = [torch.from_numpy(read(ROCK / f"{k}.wav", start=start, frames=frames)[0]) for k in STEMS]
    return mix[None], torch.stack(stems)[None]


STEMS = ("vocals", "drums", "bass", "other")


def tiny(name: str, *, targets=("vocals", "drums"), channels: int = 2, seed: int = 0, **kw):
    return build_model(name, targets=targets, channels=channels, sample_rate=SR, seed=seed, **{**TINY[name], **kw})


# ---------------------------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", tuple(TINY))
@pytest.mark.parametrize("channels", [1, 2])
def test_forward_shapes_mono_stereo_odd_length(name, channels):
    mix, _ = _rock()
    x = mix[:, :channels, :5001].repeat(2, 1, 1)  # batch 2, odd length
    model = tiny(name, targets=STEMS, channels=channels)
    y = model(x)
    assert y.shape == (2, 4, channels, 5001)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert y.abs().sum() > 0


@pytest.mark.parametrize("name", ["unet", "blstm"])
def test_mask_models_estimate_magnitudes_and_mixture_stft(name):
    mix, stems = _rock(0.5)
    model = tiny(name, targets=STEMS)
    mags, mix_spec = model.estimate(mix)
    frames = num_frames(mix.shape[-1], 64)
    assert mix_spec.shape == (1, 2, 129, frames) and mix_spec.is_complex()
    assert mags.shape == (1, 4, 2, 129, frames)
    assert (mags >= 0).all()
    assert model.magnitude(stems).shape == mags.shape
    torch.testing.assert_close(mix_spec.abs(), model.magnitude(mix))


def test_conv_tasnet_shorter_than_one_filter():
    model = tiny("convtasnet")
    assert model.padded_length(7) == 16 and model.padded_length(16) == 16 and model.padded_length(17) == 24
    assert model(torch.randn(1, 2, 7, generator=torch.Generator().manual_seed(0))).shape == (1, 2, 2, 7)


def test_wrong_mixture_shape_names_the_expected_one():
    model = tiny("unet")
    with pytest.raises(ValueError, match=r"\(batch, 2, samples\)"):
        model(torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError, match=r"\(batch, 2, samples\)"):
        model(torch.zeros(2, 1000))


def test_build_model_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match=r"'wavenet'.*unet, blstm, convtasnet"):
        build_model("wavenet", targets=STEMS)
    with pytest.raises(ValueError, match=r"\['kernal'\].*kernel"):
        build_model("convtasnet", targets=STEMS, kernal=3)
    with pytest.raises(ValueError, match="mask must be one of 'sigmoid', 'softmax', got 'tanh'"):
        build_model("unet", targets=STEMS, mask="tanh")
    with pytest.raises(ValueError, match="max_bin=200 exceeds the 129 bins"):
        build_model("blstm", targets=STEMS, n_fft=256, hop_length=64, max_bin=200)
    with pytest.raises(ValueError, match="distinct"):
        build_model("unet", targets=("vocals", "vocals"))
    with pytest.raises(ValueError, match="kernel must be odd"):
        build_model("convtasnet", targets=STEMS, kernel=4)
    with pytest.raises(ValueError, match="hop_length must be at most"):
        build_model("unet", targets=STEMS, n_fft=256, hop_length=200, max_bin=None)


@pytest.mark.parametrize("name", tuple(TINY))
def test_config_is_json_and_rebuilds_the_same_architecture(name):
    model = tiny(name, targets=("vocals", "bass", "other"), channels=1, init_scale=0.5)
    cfg = json.loads(json.dumps(model.config()))
    assert cfg["name"] == name and cfg["targets"] == ["vocals", "bass", "other"] and cfg["channels"] == 1
    again = build_model(**cfg)
    assert again.config() == model.config()
    assert again.targets == ("vocals", "bass", "other")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}


@pytest.mark.parametrize("name", tuple(TINY))
def test_state_dict_round_trip_gives_identical_outputs(name):
    mix, _ = _rock(0.5)
    model = tiny(name, seed=1)
    model.train()
    model(mix)  # move the batch-norm running statistics away from their initial values
    model.eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    rebuilt = build_model(**model.config(), seed=2)
    rebuilt.load_state_dict(torch.load(buf, weights_only=True))
    rebuilt.eval()
    with torch.no_grad():
        assert not torch.equal(build_model(**model.config(), seed=2).eval()(mix), model(mix))
        assert torch.equal(rebuilt(mix), model(mix))


def test_seed_fixes_the_weights_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = tiny("convtasnet", seed=3), tiny("convtasnet", seed=3), tiny("convtasnet", seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.encoder.weight, c.encoder.weight)


def test_init_scale_scales_kaiming_weights():
    conv = torch.nn.Conv1d(64, 64, 3)
    scale_init_(conv, 0.1)
    fan_in = 64 * 3
    assert conv.weight.std().item() == pytest.approx(0.1 * math.sqrt(2 / fan_in), rel=0.1)
    assert torch.count_nonzero(conv.bias) == 0
    model = tiny("unet", init_scale=0.1)
    first = model.branches[0].down[0][0].weight
    assert first.std().item() == pytest.approx(0.1 * math.sqrt(2 / (2 * 25)), rel=0.3)
    with pytest.raises(ValueError, match="init_scale"):
        tiny("unet", init_scale=-1.0)


# ---------------------------------------------------------------------------------------------------- masks, STFT


def test_stft_round_trip_on_real_audio_odd_length():
    mix, _ = _rock(0.5)
    x = mix[..., :22049]
    spec = stft(x, n_fft=512, hop_length=128)
    assert spec.shape == (1, 2, 257, num_frames(22049, 128))
    torch.testing.assert_close(istft(spec, n_fft=512, hop_length=128, length=22049), x, atol=1e-5, rtol=0)
    same = apply_mixture_phase(spec.abs().unsqueeze(1), spec)
    torch.testing.assert_close(same[:, 0], spec, atol=1e-4, rtol=1e-4)


def test_softmax_masks_sum_to_one_also_above_max_bin():
    mix, _ = _rock(0.5)
    model = tiny("unet", targets=STEMS, mask="softmax", max_bin=50).eval()
    masks, _ = model.masks(mix)
    assert masks.shape[-2] == 129
    torch.testing.assert_close(masks.sum(dim=1), torch.ones_like(masks[:, 0]))
    # the bins above the cut-off get each target's average mask of the bins below
    torch.testing.assert_close(masks[..., 100, :], masks[..., :50, :].mean(dim=-2))
    # so the estimates of all targets add up to the mixture
    mags, mix_spec = model.estimate(mix)
    torch.testing.assert_close(mags.sum(dim=1), mix_spec.abs(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model(mix).sum(dim=1), mix, atol=1e-4, rtol=1e-3)


def test_sigmoid_masks_are_independent_and_zero_extension_drops_high_bins():
    mix, _ = _rock(0.5)
    model = tiny("unet", targets=STEMS, high_mask="zeros", max_bin=50).eval()
    masks, _ = model.masks(mix)
    assert ((masks >= 0) & (masks <= 1)).all()
    assert (masks[..., 50:, :] == 0).all()
    assert (masks.sum(dim=1)[..., :50, :] - 1).abs().max() > 0.01  # sigmoid masks are not forced to sum to one


# ---------------------------------------------------------------------------------------------------- precision


@pytest.mark.parametrize("name", tuple(TINY))
def test_bf16_autocast_on_cpu_runs_and_is_finite(name):
    mix, stems = _rock(0.25)
    model = tiny(name, targets=STEMS)
    lstm_dtypes = []
    if name == "blstm":
        model.branches[0].lstm.register_forward_hook(lambda m, args, out: lstm_dtypes.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(mix)
        loss = si_sdr_loss(y, stems)
    assert y.shape == stems.shape and torch.isfinite(y).all()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    if name == "blstm":
        assert lstm_dtypes == [torch.float32]


# ---------------------------------------------------------------------------------------------------- overfitting

#: (model, its tiny training configuration, loss, learning rate). The targets are vocals and drums of one 1 s crop.
OVERFIT = [
    ("unet", {"n_fft": 256, "hop_length": 128, "levels": 3, "base_filters": 8, "max_bin": None, "dropout": 0.0},
     "mse_spec", 3e-3),
    ("blstm", {"n_fft": 256, "hop_length": 128, "hidden": 32, "layers": 1, "max_bin": None, "dropout": 0.0},
     "l1_spec", 3e-3),
    ("convtasnet", {"filters": 256, "filter_length": 128, "bottleneck": 32, "hidden": 64, "skip": 32, "blocks": 4,
                    "repeats": 1}, "l1_wave", 1e-2),
]


@pytest.mark.parametrize(("name", "kwargs", "loss_name", "lr"), OVERFIT, ids=[o[0] for o in OVERFIT])
def test_overfits_one_batch_of_real_audio(name, kwargs, loss_name, lr):
    mix, stems = _rock(1.0)
    stems = stems[:, :2]  # vocals, drums
    model = build_model(name, targets=("vocals", "drums"), seed=0, **kwargs)
    loss_fn = get_loss(loss_name)
    spectral = loss_domain(loss_name) == "spec"
    target = model.magnitude(stems) if spectral else stems
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def loss_now() -> torch.Tensor:
        return loss_fn(model.estimate(mix)[0] if spectral else model(mix), target)

    torch.manual_seed(0)
    first = loss_now()
    for _ in range(200):
        opt.zero_grad()
        loss = loss_now()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        last = loss_now()
    assert last.item() < 0.2 * first.item(), (first.item(), last.item())


# ---------------------------------------------------------------------------------------------------- losses


def test_spectral_losses_known_values():
    t = torch.zeros(1, 2, 1, 3, 4)
    e = torch.full_like(t, 0.5)
    assert l1_spec(t, t).item() == 0 and mse_spec(t, t).item() == 0 and weighted_l1_spec(t, t).item() == 0
    assert l1_spec(e, t).item() == pytest.approx(0.5)
    assert mse_spec(e, t).item() == pytest.approx(0.25)
    assert smooth_l1_spec(e, t).item() == pytest.approx(0.125)  # 0.5 * 0.5**2 / beta, beta = 1
    assert smooth_l1_spec(e * 6, t).item() == pytest.approx(2.5)  # |3| - 0.5 * beta
    # weighted by the target: the error where the target is silent does not count
    target = torch.tensor([0.0, 1.0, 3.0]).reshape(1, 1, 1, 3, 1)
    est = torch.tensor([5.0, 2.0, 3.0]).reshape(1, 1, 1, 3, 1)
    assert weighted_l1_spec(est, target).item() == pytest.approx((1 * 1 + 3 * 0) / 4)
    assert l1_spec(est, target).item() == pytest.approx(6 / 3)


def test_si_sdr_of_real_audio_known_values():
    _, stems = _rock(0.5)
    ref = stems[:, :1, :1]  # vocals, left: (1, 1, 1, T)
    # scaled copy: scale-invariant, so the error is float rounding only
    assert si_sdr(0.3 * ref, ref).item() > 60
    # plus orthogonal zero-mean noise of the same energy: exactly 0 dB
    r = ref - ref.mean(-1, keepdim=True)
    noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))
    noise = noise - noise.mean(-1, keepdim=True)
    noise = noise - (noise * r).sum(-1, keepdim=True) / (r * r).sum(-1, keepdim=True) * r
    noise = noise * r.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)
    assert si_sdr(ref + noise, ref).item() == pytest.approx(0.0, abs=1e-3)
    assert si_sdr(ref + 0.1 * noise, ref).item() == pytest.approx(20.0, abs=1e-2)
    assert si_sdr(noise, ref).item() < -50
    # zero-mean: a DC offset on the estimate changes nothing
    assert si_sdr(ref + 0.1 * noise + 0.2, ref).item() == pytest.approx(20.0, abs=1e-2)
    assert si_sdr_loss(ref + 0.1 * noise, ref).item() == pytest.approx(-20.0, abs=1e-2)


def test_si_sdr_is_finite_for_silent_signals():
    silent = torch.zeros(1, 1, 2, 1000)
    loud = torch.ones(1, 1, 2, 1000).cumsum(-1) / 1000
    assert si_sdr(silent, silent).abs().max().item() == 0
    assert torch.isfinite(si_sdr(loud, silent)).all() and (si_sdr(loud, silent) < -50).all()
    est = loud.clone().requires_grad_()
    si_sdr_loss(est, silent).backward()
    assert torch.isfinite(est.grad).all()


def test_waveform_losses_and_dtypes():
    _, stems = _rock(0.25)
    assert l1_wave(stems, stems).item() == 0
    assert l1_wave(stems + 0.25, stems).item() == pytest.approx(0.25)
    out = si_sdr_loss(stems.bfloat16(), stems)
    assert out.dtype == torch.float32 and out.dim() == 0
    with pytest.raises(ValueError, match=r"\(B, S, C, T\) waveforms"):
        l1_wave(stems[0], stems[0])
    with pytest.raises(ValueError, match=r"\(B, S, C, F, N\) magnitudes"):
        l1_spec(stems, stems[:, :1])


def test_get_loss_names_the_allowed_losses():
    assert get_loss("si_sdr_loss") is si_sdr_loss
    assert {loss_domain(n) for n in LOSSES} == {"spec", "wave"}
    assert loss_domain("mse_spec") == "spec" and loss_domain("l1_wave") == "wave"
    with pytest.raises(ValueError, match="unknown loss name='sdr'; allowed: l1_spec, weighted_l1_spec"):
        get_loss("sdr")


def test_mask_models_share_the_spectral_base():
    assert isinstance(tiny("unet"), SpectralMaskModel) and isinstance(tiny("blstm"), SpectralMaskModel)
    assert not isinstance(tiny("convtasnet"), SpectralMaskModel)
