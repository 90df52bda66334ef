"""Per-target runs, conditioned training that draws the target per item, bundles of runs, and band-split training.

Tiny models on CPU, one thread, a few steps on crops of the real MUSDB fixture tracks; the command-line test trains
from ``data.yaml`` on the fixture catalogue's remix stream.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from stemdb.errors import ConfigError
from train.bundle import BundleError, bundle_runs
from train.checkpoint import load_checkpoint
from train.config import train_config
from train.feed import BatchFeed, TrainingError
from train.models import build_model, model_class
from train.models.conditioning import select_targets
from train.models.spectral import SpectralMaskModel, apply_mixture_phase, istft
from train.run import run_targets
from train.separate import load_model
from train.step import LossStep
from train.trainer import Trainer
from train.validation import Crops, load_crops

from .conftest import MUSDB

TARGETS = ("vocals", "drums", "bass", "other")
SR = 44100
FALCON = MUSDB / "test" / "The Easton Ellises - Falcon 69"

torch.set_num_threads(1)




@pytest.fixture(scope="module")
def crops() -> Crops:
    """Four 0.25 s stereo crops of the fixture training tracks, all four stems."""
    return load_crops(MUSDB / "train", stems=TARGETS, channels=2, sample_rate=SR, seconds=0.25, max_tracks=4)


def tiny(name: str, targets=TARGETS, seed: int = 0, **kw):  # noqa: ANN001, ANN201
    return build_model(name, targets=targets, channels=2, sample_rate=SR, seed=seed,
                       **{**model_class(name).TINY, **kw})


def cfg(**kw: object):  # noqa: ANN201
    base = {"steps": 2, "batch_size": 2, "lr": 1e-3, "log_every": 1, "checkpoint_every": 100, "device": "cpu",
            "precision": "fp32"}
    return train_config(base, overrides=kw)


# ---------------------------------------------------------------------------------------------------- per target


def test_the_feed_picks_a_per_target_runs_stems_by_name(crops: Crops) -> None:
    data = crops.dataset()
    feed = BatchFeed(data, targets=("bass", "vocals"), batch_size=2, num_workers=0, seed=0, rank=0, world=1,
                     device=torch.device("cpu"))
    mix, tgt = feed.unpack((crops.mixture, crops.targets))
    assert torch.equal(mix, crops.mixture)  # the mixture of every stem, not of the picked ones
    assert torch.equal(tgt, crops.targets[:, [2, 0]])
    mix, tgt = next(feed.batches())
    assert tgt.shape == (2, 2, 2, crops.mixture.shape[-1])
    with pytest.raises(TrainingError, match=r"no stem\(s\) \['piano'\]"):
        BatchFeed(data, targets=("piano",), batch_size=2, num_workers=0, seed=0, rank=0, world=1,
                  device=torch.device("cpu"))


def test_train_targets_is_checked_against_the_data() -> None:
    assert run_targets(cfg(targets=["drums"]), TARGETS) == ("drums",)
    assert run_targets(cfg(), TARGETS) == TARGETS
    with pytest.raises(ConfigError, match=r"train.targets: \['piano'\]"):
        run_targets(cfg(targets=["piano"]), TARGETS)
    with pytest.raises(ConfigError, match="train.targets"):
        cfg(targets=["vocals", "vocals"])


def test_a_per_target_run_trains_its_stem_only(crops: Crops, tmp_path: Path) -> None:
    model = tiny("unet", targets=("drums",))
    result = Trainer(model, cfg(targets=["drums"]), out=tmp_path, train_data=crops.dataset()).fit()
    assert result.step == 2 and math.isfinite(result.loss)
    ck = load_checkpoint(tmp_path)
    assert ck["model_config"]["targets"] == ["drums"] and ck["train_config"]["targets"] == ["drums"]


# ---------------------------------------------------------------------------------------------------- conditioning


def test_a_conditioned_model_is_trained_on_one_drawn_target_per_item(crops: Crops) -> None:
    model = tiny("cunet", dropout=0.0, control_dropout=0.0).eval()
    mix, stems = crops.mixture[:3], crops.targets[:3]
    step = LossStep(model, "l1_spec")
    assert step.draw
    drawn = step(mix, stems, seed=7)
    index = torch.randint(0, 4, (3,), generator=torch.Generator().manual_seed(7))
    expect = torch.nn.functional.l1_loss(model.estimate(mix, index)[0],
                                         model.magnitude(select_targets(stems, index)))
    assert drawn.item() == pytest.approx(expect.item(), rel=1e-6)
    assert step(mix, stems, seed=7).item() == drawn.item()  # the seed fixes the draw
    every = step(mix, stems)  # no seed (the DDP probe, validation): every target
    assert every.item() == pytest.approx(LossStep(model, "l1_spec", conditioning="all")(mix, stems, 7).item())
    assert every.item() != pytest.approx(drawn.item())
    assert not LossStep(tiny("unet"), "l1_spec").draw  # one network per target: nothing to draw


def test_the_trainer_draws_a_target_per_item_for_conditioned_models(crops: Crops, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny("cunet")
    calls: list[tuple[int, ...]] = []
    real = model.estimate

    def spy(mixture, target_index=None):  # noqa: ANN001, ANN202
        calls.append(tuple(target_index.shape) if target_index is not None else ())
        return real(mixture, target_index)

    monkeypatch.setattr(model, "estimate", spy)
    Trainer(model, cfg(steps=3), out=tmp_path / "draw", train_data=crops.dataset()).fit()
    assert calls == [(2,)] * 3  # one (B,) index per step: one target per item
    calls.clear()
    Trainer(model, cfg(steps=1, conditioning="all"), out=tmp_path / "all", train_data=crops.dataset()).fit()
    assert calls == [()]


def test_the_loss_step_gives_the_mel_loss_the_models_rate(crops: Crops) -> None:
    from train.losses import mel_l1_spec

    model = build_model("unet", targets=TARGETS, channels=2, sample_rate=22050, seed=0,
                        **model_class("unet").TINY).eval()
    mix, stems = crops.mixture[:2], crops.targets[:2]
    with torch.no_grad():
        got = LossStep(model, "mel_l1_spec")(mix, stems)
        mags = model.estimate(mix)[0]
        assert got.item() == pytest.approx(mel_l1_spec(mags, model.magnitude(stems), sample_rate=22050).item())
        assert got.item() != pytest.approx(mel_l1_spec(mags, model.magnitude(stems)).item())


# ---------------------------------------------------------------------------------------------------- bundle


def test_a_bundle_gives_each_stem_from_its_member() -> None:
    voc = tiny("cunet", seed=1)  # a conditioned 4-target network used for vocals only
    rest = tiny("unet", targets=("drums", "bass", "other"), seed=2)
    bundle = build_model("bundle", targets=TARGETS, channels=2, sample_rate=SR,
                         members=[{**voc.config(), "use": ["vocals"]}, rest.config()]).eval()
    bundle.members[0].load_state_dict(voc.state_dict())
    bundle.members[1].load_state_dict(rest.state_dict())
    x = load_crops(MUSDB / "train", stems=TARGETS, channels=2, sample_rate=SR, seconds=0.2, max_tracks=2).mixture
    with torch.no_grad():
        out = bundle(x)
        assert torch.allclose(out[:, 0], voc.eval()(x)[:, 0], atol=1e-5)
        assert torch.equal(out[:, 1:], rest.eval()(x))
    again = build_model(**json.loads(json.dumps(bundle.config())))
    assert again.uses == [["vocals"], ["drums", "bass", "other"]]


@pytest.mark.parametrize(("members", "message"), [
    ([{"name": "unet", "targets": ["vocals", "drums"]}, {"name": "unet", "targets": ["drums"]}],
     "stem 'drums' is given by two bundle members"),
    ([{"name": "unet", "targets": ["vocals"]}], r"stem\(s\) \['drums'\] given by no bundle member"),
    ([{"name": "unet", "targets": ["vocals", "piano"]}], "gives stem 'piano', not a bundle target"),
    ([{"name": "unet", "targets": ["vocals"], "use": ["drums"]}], r"use \['drums'\] is not among its targets"),
    ([{"name": "unet", "targets": ["vocals", "drums"], "channels": 1}], "has channels=1, the bundle 2"),
])
def test_a_bundle_names_a_missing_or_duplicated_stem(members, message) -> None:  # noqa: ANN001
    opts = model_class("unet").TINY
    with pytest.raises(ValueError, match=message):
        build_model("bundle", targets=("vocals", "drums"), members=[{**opts, **m} for m in members])


def _run(crops: Crops, out: Path, name: str, targets: tuple[str, ...], **options) -> Path:  # noqa: ANN003
    model = tiny(name, targets=targets, **options)
    Trainer(model, cfg(targets=list(targets)), out=out, train_data=crops.dataset()).fit()
    return out


def test_bundle_runs_joins_per_target_runs_into_one_checkpoint(crops: Crops, tmp_path: Path) -> None:
    a = _run(crops, tmp_path / "voc", "cunet", ("vocals",))
    b = _run(crops, tmp_path / "rest", "unet", ("drums", "bass", "other"))
    path = bundle_runs([a, b], out=tmp_path / "bundle")
    bundle = load_model(tmp_path / "bundle")
    assert bundle.name == "bundle" and bundle.targets == TARGETS and path.name == "step_00000000.pt"
    x = crops.mixture[:2]
    with torch.no_grad():
        out = bundle(x)
        assert torch.equal(out[:, :1], load_model(a)(x))
        assert torch.equal(out[:, 1:], load_model(b)(x))
    meta = json.loads((tmp_path / "bundle" / "run.json").read_text())
    assert [r["stems"] for r in meta["bundle"]] == [["vocals"], ["drums", "bass", "other"]]
    assert bundle_runs([a, b], out=tmp_path / "bundle") == path  # a rerun replaces it
    with pytest.raises(BundleError, match=r"stem\(s\) \['drums', 'bass', 'other'\] separated by none"):
        bundle_runs([a], out=tmp_path / "b2")
    with pytest.raises(BundleError, match="stem 'vocals' is separated by two runs"):
        bundle_runs([a, a, b], out=tmp_path / "b3")
    with pytest.raises(BundleError, match="holds training checkpoints"):
        bundle_runs([a, b], out=a)


def _yaml(path: Path, catalog: Path) -> Path:
    path.write_text(yaml.safe_dump({"catalog": str(catalog), "remix": {"seconds": 0.5},
                                    "train": {"steps": 2, "batch_size": 2, "epoch_length": 4, "log_every": 1}}))
    return path


def test_cli_per_target_runs_of_two_architectures_bundle_and_separate(fixture_catalog: Path, tmp_path: Path) -> None:
    from pipelines.cli import app

    conf, runner = _yaml(tmp_path / "data.yaml", fixture_catalog), CliRunner()
    runs = {"voc": ("cunet", ["vocals"]), "rhythm": ("unet", ["drums", "bass"]), "other": ("unet", ["other"])}
    for run, (model, stems) in runs.items():
        opts = json.dumps(model_class(model).TINY)
        args = ["train", "--config", str(conf), "--model", model, "--out", str(tmp_path / run),
                f"--set=model_options={opts}", *[a for s in stems for a in ("--target", s)]]
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        assert load_checkpoint(tmp_path / run)["model_config"]["targets"] == stems
    r = runner.invoke(app, ["bundle", *[str(tmp_path / run) for run in runs], "--out", str(tmp_path / "bundle")])
    assert r.exit_code == 0, r.output
    est = tmp_path / "est"
    r = runner.invoke(app, ["separate", str(FALCON / "mixture.wav"), "--model", str(tmp_path / "bundle"),
                            "--out", str(est), "--device", "cpu", "--chunk-seconds", "2"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in est.iterdir()) == sorted(f"{t}.wav" for t in TARGETS)
    r = runner.invoke(app, ["bundle", str(tmp_path / "voc"), "--out", str(tmp_path / "b2")])
    assert r.exit_code == 2 and "separated by none" in r.output


@pytest.mark.parametrize("model", ["lasaft", "d3net"])
def test_cli_trains_the_new_models_from_data_yaml(model: str, fixture_catalog: Path, tmp_path: Path) -> None:
    """``stemdb train --model lasaft|d3net`` on the fixture catalogue's remix stream (``cunet``: the test above)."""
    from pipelines.cli import app

    conf = _yaml(tmp_path / "data.yaml", fixture_catalog)
    r = CliRunner().invoke(app, ["train", "--config", str(conf), "--model", model, "--out", str(tmp_path / "run"),
                                 f"--set=model_options={json.dumps(model_class(model).TINY)}"])
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(tmp_path / "run")
    assert ck["step"] == 2 and ck["model_config"]["name"] == model and ck["stream"]["stream"] == "RemixStream"
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["loss"] == model_class(model).default_loss and run["parameters"] > 0


@pytest.mark.slow  # museval scoring of the fixture test track, model and mixture baseline: 10-30 s
def test_a_bundle_evaluates(crops: Crops, tmp_path: Path) -> None:
    from train.separate import evaluate_run

    a = _run(crops, tmp_path / "voc", "cunet", ("vocals",))
    b = _run(crops, tmp_path / "rest", "unet", ("drums", "bass", "other"))
    bundle_runs([a, b], out=tmp_path / "bundle")
    s = evaluate_run(tmp_path / "bundle", MUSDB, split="test", device="cpu", chunk_seconds=2.0)
    assert set(s["median"]) == set(TARGETS) and set(s["tracks"]) == {FALCON.name}
    assert all(np.isfinite(s["median"][t]["SDR"]) for t in ("vocals", "drums", "bass"))


# ---------------------------------------------------------------------------------------------------- band split


@pytest.mark.parametrize("name", ["unet", "blstm"])
@pytest.mark.parametrize("channels", [1, 2])
def test_band_split_shapes_and_config_round_trip(name: str, channels: int) -> None:
    model = build_model(name, targets=("vocals", "drums"), channels=channels, sample_rate=SR, seed=0,
                        band_split_hz=2756, **model_class(name).TINY).eval()
    assert model.name == name and model.low_bins == round(2756 * 256 / SR) and isinstance(model, SpectralMaskModel)
    x = torch.randn(2, channels, 4411, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, 2, channels, 4411) and torch.isfinite(y).all()
        again = build_model(**json.loads(json.dumps(model.config())))
        again.load_state_dict(model.state_dict())
        assert torch.equal(again.eval()(x), y)


def test_band_split_of_ideal_masks_gives_back_the_mixture(crops: Crops, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both bands estimate with ideal ratio masks (each stem's share of the summed stem magnitudes): the merged
    estimates add up to the mixture magnitude, and their waveforms (mixture phase) to the mixture."""
    model = build_model("unet", targets=TARGETS, channels=2, sample_rate=SR, band_split_hz=2756,
                        **model_class("unet").TINY)
    with torch.no_grad():
        model.low_weight.copy_(torch.linspace(-3, 3, model.low_bins))  # a different mix in every low bin
    mix, stems = crops.targets[:2].sum(1), crops.targets[:2]

    def ideal(net, scale):  # noqa: ANN001, ANN202 - a sub-model's estimate with ideal masks
        def estimate(mixture):  # noqa: ANN001, ANN202
            spec = net.spectrogram(mixture)
            mags = net.magnitude(stems)
            masks = mags / mags.sum(1, keepdim=True).clamp_min(1e-12)
            masks = masks ** scale / (masks ** scale).sum(1, keepdim=True).clamp_min(1e-12)  # still sum to one
            return masks * spec.abs().unsqueeze(1), spec
        return estimate

    monkeypatch.setattr(model.full, "estimate", ideal(model.full, 1.0))
    monkeypatch.setattr(model.low, "estimate", ideal(model.low, 2.0))  # another mask: the merge must mix them
    mags, spec = model.estimate(mix)
    assert torch.allclose(mags.sum(1), spec.abs(), atol=1e-3 * spec.abs().max())
    low_only = ideal(model.low, 2.0)(mix)[0][..., :model.low_bins, :]
    assert not torch.allclose(mags[..., :model.low_bins, :], low_only)  # both bands contribute
    waves = istft(apply_mixture_phase(mags, spec), n_fft=model.n_fft, hop_length=model.hop_length,
                  length=mix.shape[-1])
    assert torch.allclose(waves.sum(1), mix, atol=1e-4)


def test_band_split_is_refused_where_it_cannot_work() -> None:
    for name in ("convtasnet", "cunet", "lasaft", "d3net"):
        with pytest.raises(ValueError, match=f"band_split_hz.*model '{name}'"):
            build_model(name, targets=TARGETS, band_split_hz=2756, **model_class(name).TINY)
    opts = model_class("unet").TINY
    for hz in (0, -5, 30000, "low"):
        with pytest.raises(ValueError, match="band_split_hz"):
            build_model("unet", targets=TARGETS, band_split_hz=hz, **opts)
    with pytest.raises(ValueError, match="n_fft or hop_length"):
        build_model("unet", targets=TARGETS, band_split_hz=2756, low_options={"hop_length": 32}, **opts)
    with pytest.raises(ValueError, match="unknown option"):
        build_model("unet", targets=TARGETS, band_split_hz=2756, low_options={"depth": 3}, **opts)


def test_band_split_trains(crops: Crops, tmp_path: Path) -> None:
    model = build_model("unet", targets=TARGETS, channels=2, sample_rate=SR, seed=0, band_split_hz=2756,
                        low_options={"base_filters": 8}, **model_class("unet").TINY)
    before = model.low_weight.detach().clone()
    result = Trainer(model, cfg(steps=40, batch_size=4, lr=3e-3, log_every=5), out=tmp_path,
                     train_data=crops.dataset()).fit()
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last < 0.8 * first, (first, last)
    assert not torch.equal(model.low_weight.detach().cpu(), before)  # the merge weights learn too
    rebuilt = load_model(tmp_path)
    assert rebuilt.config() == model.config()


# ---------------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
@pytest.mark.parametrize(("name", "targets", "options"), [
    ("unet", TARGETS, {"band_split_hz": 2756, "low_options": {"base_filters": 8}}),
    ("cunet", ("vocals", "bass"), {"dropout": 0.0, "control_dropout": 0.0}),
], ids=["unet-band-split", "cunet-per-target-draw"])
def test_short_training_lowers_held_out_validation_loss(name, targets, options, tmp_path: Path) -> None:  # noqa: ANN001
    """The Trainer on 1 s crops of three fixture songs; the loss on Music Delta - Zeppelin and the test song."""
    train = load_crops(MUSDB / "train", stems=TARGETS, channels=2, sample_rate=SR, seconds=1.0, crops_per_track=3,
                       tracks=("Music Delta - Hendrix", "Music Delta - Reggae", "Music Delta - Rock"))
    held = [load_crops(MUSDB / split, stems=targets, channels=2, sample_rate=SR, seconds=2.0, tracks=tracks)
            for split, tracks in (("train", ("Music Delta - Zeppelin",)), ("test", ()))]
    model = tiny(name, targets=targets, **options)
    step = LossStep(model, model_class(name).default_loss)

    def valid_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(np.mean([step(h.mixture, h.targets).item() for h in held]))  # every target

    before = valid_loss()
    Trainer(model, cfg(steps=150, lr=3e-3, log_every=50, targets=list(targets)), out=tmp_path,
            train_data=train.dataset()).fit()
    after = valid_loss()
    print(f"{name} {options}: held-out {step.loss_name} {before:.4f} -> {after:.4f}")
    assert after < before
