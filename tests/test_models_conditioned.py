"""The conditioned and band-split models (CU-Net, LaSAFT, D3Net / MMDenseLSTM) and the mel-weighted loss.

Tiny configurations on CPU, one thread; the overfitting tests train on crops of the real MUSDB fixture tracks
(``train.validation.load_crops``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from train.config import train_config
from train.losses import LOSSES, get_loss, loss_domain, mel_l1_spec
from train.models import build_model, model_class
from train.models.conditioning import ConditionedSpectralModel, check_target_index, select_targets
from train.models.d3net import D2Block
from train.models.spectral import SpectralMaskModel, apply_mixture_phase, istft
from train.trainer import Trainer
from train.validation import load_crops

MUSDB = Path(__file__).parent / "data" / "musdb"
SR = 44100
STEMS = ("vocals", "drums", "bass", "other")
NAMES = ("cunet", "lasaft", "d3net")
#: Every architecture variant: (model name, options on top of the class's TINY configuration).
VARIANTS = [("cunet", {}), ("cunet", {"film": "complex"}), ("lasaft", {}), ("d3net", {}),
            ("d3net", {"mmdenselstm": True})]
VARIANT_IDS = ["cunet", "cunet-complex", "lasaft", "d3net", "mmdenselstm"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(name: str, *, targets=STEMS, channels: int = 2, seed: int = 0, **kw):
    return build_model(name, targets=targets, channels=channels, sample_rate=SR, seed=seed,
                       **{**model_class(name).TINY, **kw})


def crops(seconds: float, tracks: int = 1):
    """``tracks`` crops (one per fixture training track, from the middle): mixture (N, 2, T), stems (N, 4, 2, T)."""
    c = load_crops(MUSDB / "train", stems=STEMS, channels=2, sample_rate=SR, seconds=seconds, max_tracks=tracks)
    return c.mixture, c.targets


# ---------------------------------------------------------------------------------------------------- contract


def test_registered_with_a_default_loss_and_a_tiny_configuration():
    for name in NAMES:
        cls = model_class(name)
        assert cls.name == name and cls.default_loss in LOSSES
        assert isinstance(tiny(name), SpectralMaskModel)
    assert model_class("cunet").conditioned and model_class("lasaft").conditioned
    assert not getattr(model_class("d3net"), "conditioned", False)


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("channels", [1, 2])
def test_forward_shapes_mono_stereo_odd_and_short_lengths(name, kw, channels):
    mix, _ = crops(0.25)
    model = tiny(name, channels=channels, **kw)
    for length in (5001, 37):  # odd, and shorter than one STFT frame
        x = mix[:, :channels, :length].repeat(2, 1, 1)
        y = model(x)
        assert y.shape == (2, 4, channels, length) and y.dtype == torch.float32
        assert torch.isfinite(y).all() and y.abs().sum() > 0
        mags, mix_spec = model.estimate(x)
        assert mags.shape == (2, 4, channels, *mix_spec.shape[-2:]) and (mags >= 0).all()


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_config_and_checkpoint_round_trip(name, kw, tmp_path):
    mix, _ = crops(0.25)
    model = tiny(name, targets=("vocals", "bass", "other"), seed=1, **kw)
    model.train()
    model(mix)  # move the batch-norm running statistics away from their initial values
    model.eval()
    cfg = json.loads(json.dumps(model.config()))
    assert cfg["name"] == name and cfg["targets"] == ["vocals", "bass", "other"]
    assert build_model(**cfg).config() == model.config()
    path = save_checkpoint(tmp_path / "ck.pt", {"model_config": model.config(), "model_state": model.state_dict()})
    rebuilt = model_from_checkpoint(load_checkpoint(path))
    with torch.no_grad():
        assert not torch.equal(tiny(name, targets=("vocals", "bass", "other"), seed=2, **kw).eval()(mix), model(mix))
        assert torch.equal(rebuilt(mix), model(mix))


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_bf16_autocast_on_cpu_runs_and_is_finite(name, kw):
    mix, stems = crops(0.25)
    model = tiny(name, **kw)
    lstm_dtypes = []
    for m in model.modules():
        if isinstance(m, torch.nn.LSTM):
            m.register_forward_hook(lambda mod, args, out: lstm_dtypes.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(mix)
        loss = get_loss("l1_wave")(y, stems)
    assert y.shape == stems.shape and torch.isfinite(y).all()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # one LSTM per sub-network (2 bands + full band) and target, each run in float32
    assert lstm_dtypes == ([torch.float32] * 3 * 4 if kw.get("mmdenselstm") else [])


def test_option_errors_name_the_option():
    with pytest.raises(ValueError, match="film must be one of 'simple', 'complex', got 'fancy'"):
        tiny("cunet", film="fancy")
    with pytest.raises(ValueError, match="control_units"):
        tiny("cunet", control_units=[])
    with pytest.raises(ValueError, match="blocks must be odd"):
        tiny("lasaft", blocks=4)
    with pytest.raises(ValueError, match=r"band_split must increase strictly inside \(0, max_bin=100\)"):
        tiny("d3net", band_split=[120])
    with pytest.raises(ValueError, match="band_growth must be a list of 2 lists"):
        tiny("d3net", band_growth=[[4, 4, 4]])
    with pytest.raises(ValueError, match=r"band_layers\[1\] must have 3 entries"):
        tiny("d3net", band_layers=[[2, 2, 2], [1, 1]])
    with pytest.raises(ValueError, match="full_growth must have an odd number"):
        tiny("d3net", full_growth=[4, 4], full_layers=[2, 2], full_blocks=[1, 1])
    with pytest.raises(ValueError, match="mmdenselstm must be true or false"):
        tiny("d3net", mmdenselstm="yes")


# ---------------------------------------------------------------------------------------------------- conditioning


@pytest.mark.parametrize("name", ["cunet", "lasaft"])
def test_one_target_per_item_matches_the_all_target_pass_and_targets_differ(name):
    mix, _ = crops(0.25, tracks=2)
    model = tiny(name, seed=3).eval()
    with torch.no_grad():
        every = model(mix)  # (2, 4, 2, T)
        idx = torch.tensor([2, 0])
        chosen = model(mix, idx)
        assert chosen.shape == (2, 1, 2, mix.shape[-1])
        torch.testing.assert_close(chosen, select_targets(every, idx), atol=1e-5, rtol=1e-4)
        mags, _ = model.estimate(mix, idx)
        torch.testing.assert_close(mags, select_targets(model.estimate(mix)[0], idx), atol=1e-4, rtol=1e-4)
    # one network, different outputs per condition
    for a in range(4):
        for b in range(a + 1, 4):
            assert (every[:, a] - every[:, b]).abs().max() > 1e-4 * every.abs().max(), (a, b)
    assert torch.equal(model.target_index(["other", "vocals"]), torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="unknown target"):
        model.target_index("piano")


@pytest.mark.parametrize(("name", "condition_params"), [
    ("cunet", lambda m: m.control.body[0].weight.shape[0]),  # one-hot input: units[0] weights per target
    ("lasaft", lambda m: m.embedding_dim),                    # one embedding row per target
])
def test_checkpoint_holds_one_network_for_all_targets(name, condition_params):
    def count(m):
        return sum(p.numel() for p in m.parameters())

    one, four = tiny(name, targets=("vocals",)), tiny(name)
    # four targets cost only the conditioning inputs of three more targets, not three more networks
    assert count(four) - count(one) == 3 * condition_params(one)
    assert set(one.state_dict()) == set(four.state_dict())
    # D3Net, by contrast, holds one network per target
    assert count(tiny("d3net")) == 4 * count(tiny("d3net", targets=("vocals",)))


def test_target_index_is_validated():
    assert torch.equal(check_target_index(torch.tensor([0, 3], dtype=torch.int32), batch=2, num_targets=4),
                       torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        check_target_index(torch.tensor([0]), batch=2, num_targets=4)
    with pytest.raises(ValueError, match=r"values must be in 0\.\.3"):
        check_target_index(torch.tensor([0, 4]), batch=2, num_targets=4)
    with pytest.raises(ValueError, match="integer tensor"):
        check_target_index(torch.tensor([0.0, 1.0]), batch=2, num_targets=4)
    stems = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 1, 3)
    assert torch.equal(select_targets(stems, torch.tensor([1, 3])), stems[[0, 1], [1, 3]].unsqueeze(1))
    model = tiny("cunet")
    with pytest.raises(ValueError, match=r"target_index must have shape \(1,\)"):
        model(torch.zeros(1, 2, 1000), torch.tensor([0, 1]))


def test_lasaft_estimates_complex_spectra_and_inverts_them_with_their_own_phase():
    mix, _ = crops(0.25)
    model = tiny("lasaft", init_scale=1.0).eval()  # drawn last layer: a non-silent estimate to look at
    with torch.no_grad():
        spectra, mix_spec = model.spectra(mix)
        assert spectra.is_complex() and spectra.shape == (1, 4, *mix_spec.shape[1:])
        torch.testing.assert_close(model.estimate(mix)[0], spectra.abs())
        wave = model(mix)
    kw = {"n_fft": model.n_fft, "hop_length": model.hop_length, "length": mix.shape[-1]}
    torch.testing.assert_close(wave, istft(spectra, **kw))
    with_mixture_phase = istft(apply_mixture_phase(spectra.abs(), mix_spec), **kw)
    assert (wave - with_mixture_phase).abs().max() > 0.1 * wave.abs().max()


def test_lasaft_starts_quiet():
    mix, _ = crops(0.25)
    with torch.no_grad():
        quiet, drawn = tiny("lasaft")(mix), tiny("lasaft", init_scale=1.0)(mix)
    assert 0 < quiet.abs().max() < 0.05 * drawn.abs().max()


def test_cunet_film_modulates_every_encoder_layer():
    for film, per_layer in (("simple", [1, 1, 1]), ("complex", [4, 8, 16])):
        model = tiny("cunet", film=film, control_dropout=0.0).eval()
        assert model.film_sizes == per_layer
        gammas, betas = model.control(torch.arange(4))
        assert gammas.shape == betas.shape == (4, sum(per_layer))
        assert (gammas[0] != gammas[1]).any() and (betas[2] != betas[3]).any()


# ---------------------------------------------------------------------------------------------------- D3Net


def test_d3net_passes_the_mixture_above_max_bin_or_zeros():
    mix, _ = crops(0.25)
    for high in ("mixture", "zeros"):
        model = tiny("d3net", high_bins=high).eval()
        with torch.no_grad():
            mags, mix_spec = model.estimate(mix)
        above = mags[..., 100:, :]
        expect = mix_spec.abs()[:, None, :, 100:].expand_as(above) if high == "mixture" else torch.zeros_like(above)
        assert torch.equal(above, expect)
        assert (mags[..., :100, :] != mags[:, :1, ..., :100, :]).any()  # targets differ below


def test_d2_block_dilates_each_source_by_its_layer():
    block = D2Block(3, 2, 4, 3)
    dilations = [seq[-1].dilation for seq in block.convs]
    assert dilations == [(1, 1), (2, 2), (4, 4), (8, 8)]
    assert [seq[-1].out_channels for seq in block.convs] == [8, 6, 4, 2]
    plain = D2Block(3, 2, 4, 3, dilated=False)
    assert {seq[-1].dilation for seq in plain.convs} == {(1, 1)}
    # the summed contributions equal a concatenating dense block with the same weights
    x = torch.randn(2, 3, 12, 20, generator=torch.Generator().manual_seed(0))
    block.eval()
    with torch.no_grad():
        outs = []  # outs[i]: layer i's output, computed the textbook way from all earlier sources
        for i in range(4):
            total = block.convs[0](x)[:, 2 * i: 2 * i + 2]
            for j in range(1, i + 1):
                total = total + block.convs[j](outs[j - 1])[:, 2 * (i - j): 2 * (i - j) + 2]
            outs.append(total)
        torch.testing.assert_close(block(x), outs[-1])


def test_mmdenselstm_adds_an_lstm_at_each_bottleneck():
    plain, lstm = tiny("d3net"), tiny("d3net", mmdenselstm=True)
    assert sum(isinstance(m, torch.nn.LSTM) for m in plain.modules()) == 0
    assert sum(isinstance(m, torch.nn.LSTM) for m in lstm.modules()) == 4 * 3  # 2 bands + full band, per target
    assert {m.dilation for m in lstm.modules() if isinstance(m, torch.nn.Conv2d)} == {(1, 1)}


# ---------------------------------------------------------------------------------------------------- training

#: (model, options on top of TINY, loss, learning rate, steps). Conditioned models draw one target per item.
OVERFIT = [
    ("cunet", {"dropout": 0.0, "control_dropout": 0.0}, "l1_spec", 5e-3, 200),
    ("lasaft", {"hop_length": 128, "blocks": 3, "internal_channels": 4, "tfc_layers": 2, "latent_sources": 2,
                "dk": 4, "embedding_dim": 4, "control_layers": 2}, "l1_wave", 1e-2, 100),
    ("d3net", {"hop_length": 128}, "mse_spec", 3e-3, 40),
    ("cunet", {"dropout": 0.0, "control_dropout": 0.0}, "mel_l1_spec", 5e-3, 200),
]


@pytest.mark.parametrize(("name", "kw", "loss_name", "lr", "steps"), OVERFIT,
                         ids=["cunet", "lasaft", "d3net", "cunet-mel"])
def test_overfits_real_fixture_crops(name, kw, loss_name, lr, steps):
    mix, stems = crops(0.2, tracks=2)
    targets = ("vocals", "drums")
    stems = stems[:, :2]
    model = tiny(name, targets=targets, **kw)
    loss_fn = get_loss(loss_name)
    spectral = loss_domain(loss_name) == "spec"
    conditioned = isinstance(model, ConditionedSpectralModel)
    gen = torch.Generator().manual_seed(0)

    def loss_now(idx=None):
        target = stems if idx is None else select_targets(stems, idx)
        if spectral:
            return loss_fn(model.estimate(mix, idx)[0] if conditioned else model.estimate(mix)[0],
                           model.magnitude(target))
        return loss_fn(model(mix, idx) if conditioned else model(mix), target)

    model.eval()
    with torch.no_grad():
        first = loss_now()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, 2, (mix.shape[0],), generator=gen) if conditioned else None
        opt.zero_grad()
        loss_now(idx).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        last = loss_now()  # every target, also for the conditioned models trained on one per item
    print(f"{name} {loss_name}: {first.item():.4g} -> {last.item():.4g} ({last.item() / first.item():.2f})")
    assert last.item() < 0.55 * first.item(), (first.item(), last.item())


@pytest.mark.parametrize("name", NAMES)
def test_trainer_runs_checkpoints_and_reloads(name, tmp_path):
    c = load_crops(MUSDB / "train", stems=STEMS, channels=2, sample_rate=SR, seconds=0.25, max_tracks=2)
    model = tiny(name, seed=0)
    cfg = train_config({"model": name, "steps": 2, "batch_size": 2, "lr": 1e-3, "log_every": 1,
                        "checkpoint_every": 2, "precision": "fp32", "device": "cpu"})
    result = Trainer(model, cfg, out=tmp_path, train_data=c.dataset()).fit()
    assert result.step == 2 and np.isfinite(result.loss) and result.checkpoint is not None
    rebuilt = model_from_checkpoint(tmp_path)
    model.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(c.mixture), model(c.mixture))


# ---------------------------------------------------------------------------------------------------- mel loss


def test_mel_l1_spec_against_a_direct_computation():
    _, stems = crops(0.25)
    spec = torch.stft(stems[0, 0, 0], 4096, 1024, window=torch.hann_window(4096), return_complex=True).abs()
    est, tgt = spec.roll(1, dims=-1), spec  # (F, N), a plausible wrong estimate: the previous frame
    fb = librosa.filters.mel(sr=SR, n_fft=4096, n_mels=128, norm=None).astype(np.float64)
    fb /= fb.sum(axis=1, keepdims=True)
    expect = np.abs(fb @ est.double().numpy() - fb @ tgt.double().numpy()).mean()
    got = mel_l1_spec(est[None, None, None], tgt[None, None, None])
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(expect, rel=1e-4)
    assert mel_l1_spec(tgt[None, None, None], tgt[None, None, None]).item() == 0
    # a low bin weighs more than a high one: the same error at 100 Hz costs more than at 15 kHz
    zero = torch.zeros(1, 1, 1, 2049, 4)
    low, high = zero.clone(), zero.clone()
    low[..., round(100 * 4096 / SR), :] = 1.0
    high[..., round(15000 * 4096 / SR), :] = 1.0
    assert mel_l1_spec(low, zero).item() > 10 * mel_l1_spec(high, zero).item()
    # the sample rate moves the bands
    assert mel_l1_spec(est[None, None, None], tgt[None, None, None], sample_rate=22050).item() != got.item()
    assert loss_domain("mel_l1_spec") == "spec" and get_loss("mel_l1_spec") is mel_l1_spec


def test_mel_l1_spec_drops_empty_filters_on_a_small_stft_and_checks_its_input():
    e = torch.rand(1, 2, 1, 129, 5, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # librosa's "empty filters" warning is handled, not passed on
        value = mel_l1_spec(e, torch.zeros_like(e))  # 128 mels on 129 bins: the lowest filters are empty
    assert torch.isfinite(value) and value > 0
    with pytest.raises(ValueError, match=r"\(B, S, C, F, N\) magnitudes"):
        mel_l1_spec(e[0], e[0])
    with pytest.raises(ValueError, match="sample_rate must be a positive integer"):
        mel_l1_spec(e, e, sample_rate=0)


# ---------------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_short_training_lowers_held_out_validation_loss(name):
    """Train on crops of three fixture songs, validate on a fourth (Music Delta - Zeppelin) and the test song."""
    train = load_crops(MUSDB / "train", stems=STEMS, channels=2, sample_rate=SR, seconds=1.0, crops_per_track=3,
                       tracks=("Music Delta - Hendrix", "Music Delta - Reggae", "Music Delta - Rock"))
    held = load_crops(MUSDB / "train", stems=STEMS, channels=2, sample_rate=SR, seconds=2.0,
                      tracks=("Music Delta - Zeppelin",))
    test = load_crops(MUSDB / "test", stems=STEMS, channels=2, sample_rate=SR, seconds=2.0)
    valid_mix, valid_stems = torch.cat([held.mixture, test.mixture]), torch.cat([held.targets, test.targets])
    model = tiny(name, **OVERFIT[NAMES.index(name)][1])  # the overfitting configurations
    loss_fn = get_loss(model.default_loss)
    spectral = loss_domain(model.default_loss) == "spec"

    def valid_loss() -> float:
        model.eval()
        with torch.no_grad():
            if spectral:
                return loss_fn(model.estimate(valid_mix)[0], model.magnitude(valid_stems)).item()
            return loss_fn(model(valid_mix), valid_stems).item()

    before = valid_loss()
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        pick = torch.randint(0, train.mixture.shape[0], (2,), generator=gen)
        mix, stems = train.mixture[pick], train.targets[pick]
        model.train()
        opt.zero_grad()
        out = model.estimate(mix)[0] if spectral else model(mix)
        loss_fn(out, model.magnitude(stems) if spectral else stems).backward()
        opt.step()
    after = valid_loss()
    print(f"{name}: held-out {model.default_loss} {before:.4f} -> {after:.4f}")
    assert after < before
