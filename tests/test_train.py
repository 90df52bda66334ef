"""The training loop, checkpoints, resume, mixed precision, DDP, separation and the train-model flow.

Tiny model configurations on CPU, one thread; training data are fixed crops of the real MUSDB fixture tracks
(``load_crops``), or the remix stream over the fixture catalogue where the stream itself is under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from typer.testing import CliRunner

from stemdb import audio
from stemdb.errors import ConfigError
from train.checkpoint import (
    CheckpointError,
    check_plain,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from train.config import train_config
from train.feed import TrainingError
from train.models import SeparationModel, build_model
from train.runlog import read_csv
from train.runtime import resolve_precision
from train.separate import crossfade_window, load_model, separate, separate_file, separate_tensor
from train.trainer import Trainer
from train.validation import ArrayDataset, Crops, load_crops

from .conftest import MUSDB, STEMS

TARGETS = ("vocals", "drums", "bass", "other")
SR = 44100
UNET = {"n_fft": 256, "hop_length": 64, "levels": 2, "base_filters": 4, "max_bin": 64, "dropout": 0.0}
TASNET = {"filters": 16, "filter_length": 16, "bottleneck": 8, "hidden": 16, "skip": 8, "kernel": 3, "blocks": 2,
          "repeats": 1}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def crops() -> Crops:
    """8 crops of 0.5 s (2 per fixture training track), stereo 44.1 kHz."""
    return load_crops(MUSDB / "train", stems=TARGETS, channels=2, sample_rate=SR, seconds=0.5, crops_per_track=2)


def unet(seed: int = 0, **kw: object) -> SeparationModel:
    return build_model("unet", targets=TARGETS, channels=2, sample_rate=SR, seed=seed, **{**UNET, **kw})


def cfg(**kw: object):  # noqa: ANN201
    base = {"steps": 4, "batch_size": 4, "lr": 3e-3, "log_every": 1, "checkpoint_every": 100}
    return train_config(base, overrides=kw)


@pytest.fixture(scope="module")
def trained(crops: Crops, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A tiny U-Net trained 16 steps on the crops, validated every 6 steps and at the end, checkpointed every 6."""
    out = tmp_path_factory.mktemp("run") / "unet"
    c = cfg(steps=16, lr=5e-3, checkpoint_every=6, keep_checkpoints=2, valid={"every": 6, "batch_size": 8})
    return Trainer(unet(), c, out=out, train_data=crops.dataset(), valid=crops,
                   stemdb_config={"remix": {"seconds": 0.5}}, catalog_fingerprint="cafe0123").fit()


# --------------------------------------------------------------------------------------------------------------
# training, logging, checkpoints


def test_training_on_fixture_audio_reduces_the_loss(trained) -> None:  # noqa: ANN001
    losses = [r["loss"] for r in trained.history]
    assert trained.step == 16 and trained.steps_run == 16 and len(losses) == 16
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:2]), losses
    assert trained.steps_per_s > 0 and trained.audio_seconds == pytest.approx(16 * 4 * 0.5)


def test_csv_and_png_are_written_next_to_each_other(trained) -> None:  # noqa: ANN001
    rows = read_csv(trained.csv)
    assert [int(r["step"]) for r in rows] == list(range(1, 17))
    assert {"step", "loss", "lr", "valid_sdr", "valid_si_sdr", "sdr_vocals", "sdr_other"} <= set(rows[0])
    valid_steps = [int(r["step"]) for r in rows if r["valid_sdr"]]
    assert valid_steps == [6, 12, 16]
    sdrs = [float(r["valid_sdr"]) for r in rows if r["valid_sdr"]]
    assert sdrs[-1] > sdrs[0]  # the training crops are the validation crops here: SDR must rise
    assert trained.png == trained.csv.parent / "train.png"
    data = trained.png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_checkpoints_describe_themselves_and_load_weights_only(trained) -> None:  # noqa: ANN001
    steps = [p.name for p in list_checkpoints(trained.out)]
    assert steps == ["step_00000012.pt", "step_00000016.pt"]  # keep_checkpoints=2 pruned step 6
    assert not [p for p in (trained.out / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files
    ck = load_checkpoint(trained.out)  # a run folder means its newest checkpoint (weights_only=True inside)
    assert ck["step"] == 16 and ck["seed"] == 0 and ck["catalog_fingerprint"] == "cafe0123"
    assert ck["model_config"]["name"] == "unet" and ck["model_config"]["n_fft"] == 256
    assert ck["stemdb_config"] == {"remix": {"seconds": 0.5}}
    assert ck["code_version"]["stemdb"] and "git" in ck["code_version"]
    assert ck["train_config"]["steps"] == 16 and ck["scaler"] is None
    assert {"optimizer", "scheduler", "model_state"} <= set(ck)
    run = json.loads((trained.out / "run.json").read_text())
    assert run["loss"] == "l1_spec" and run["precision"] == "fp32"


def test_checkpoint_round_trip_gives_identical_outputs(trained, crops: Crops) -> None:  # noqa: ANN001
    a = model_from_checkpoint(trained.checkpoint)
    b = load_model(trained.out)
    x = crops.mixture[:2]
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert torch.equal(ya, yb) and ya.shape == (2, 4, 2, x.shape[-1])
    fresh = unet(seed=1).eval()
    with torch.no_grad():
        assert not torch.equal(fresh(x), ya)  # the weights really came from the checkpoint


def test_checkpoint_refuses_what_weights_only_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint\.extra\.when: value of type \w*Path"):
        check_plain({"extra": {"when": Path("x")}})
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_checkpoint(tmp_path)
    p = save_checkpoint(tmp_path / "c.pt", {"model_state": {"w": torch.ones(2)}, "step": 3})
    assert load_checkpoint(p)["step"] == 3
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="not a stemdb-train-checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_resume_continues_step_count_lr_schedule_and_losses_exactly(crops: Crops, tmp_path: Path) -> None:
    # dropout on (random draws must line up), accumulation, a milestone every 2 steps, 2 epochs of 2 steps each
    c = cfg(steps=6, batch_size=2, accumulate=2, lr_halve_every=2, checkpoint_every=3)
    whole = Trainer(unet(dropout=0.5), c, out=tmp_path / "a", train_data=crops.dataset()).fit()
    first = Trainer(unet(dropout=0.5), c, out=tmp_path / "b", train_data=crops.dataset()).fit(max_steps=3)
    assert first.step == 3 and latest_checkpoint(tmp_path / "b").name == "step_00000003.pt"
    second = Trainer(unet(seed=5, dropout=0.5), c, out=tmp_path / "b", train_data=crops.dataset()).fit()
    assert second.resumed_from == 3 and second.step == 6 and second.steps_run == 3
    a = [(r["step"], r["epoch"], r["lr"], r["loss"]) for r in whole.history]
    b = [(r["step"], r["epoch"], r["lr"], r["loss"]) for r in first.history + second.history]
    assert a == b  # bit for bit
    assert [r[2] for r in a] == [3e-3, 3e-3, 1.5e-3, 1.5e-3, 7.5e-4, 7.5e-4]
    assert [int(r["step"]) for r in read_csv(tmp_path / "b" / "train.csv")] == [1, 2, 3, 4, 5, 6]
    wa, wb = load_checkpoint(tmp_path / "a")["model_state"], load_checkpoint(tmp_path / "b")["model_state"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_refuses_another_architecture_and_a_fresh_start_over_a_run(crops: Crops, tmp_path: Path) -> None:
    Trainer(unet(), cfg(steps=1), out=tmp_path, train_data=crops.dataset()).fit()
    with pytest.raises(TrainingError, match="cannot resume model"):
        Trainer(unet(base_filters=2), cfg(steps=2), out=tmp_path, train_data=crops.dataset()).fit()
    with pytest.raises(TrainingError, match="already has checkpoints"):
        Trainer(unet(), cfg(steps=2), out=tmp_path, train_data=crops.dataset()).fit(resume=False)


def test_bf16_autocast_runs_on_cpu(crops: Crops, tmp_path: Path) -> None:
    model = unet()
    seen: list[torch.dtype] = []
    conv = model.branches[0].down[0][0]
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    r = Trainer(model, cfg(steps=2, precision="bf16"), out=tmp_path, train_data=crops.dataset()).fit()
    assert seen and set(seen) == {torch.bfloat16}
    assert all(math.isfinite(h["loss"]) for h in r.history)
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32


def test_precision_policy_per_device() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).name == "fp32"
    fp16 = resolve_precision("fp16", cpu)
    assert fp16.scaler and fp16.adam_eps == 1e-4 and resolve_precision("bf16", cpu).adam_eps == 1e-8


def test_fp16_with_grad_scaler_trains_and_checkpoints_the_scaler(crops: Crops, tmp_path: Path) -> None:
    tr = Trainer(unet(), cfg(steps=2, precision="fp16"), out=tmp_path, train_data=crops.dataset())
    assert tr.optimizer.param_groups[0]["eps"] == 1e-4
    tr.fit()
    assert load_checkpoint(tmp_path)["scaler"]["scale"] > 0


def test_train_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"train\.precision"):
        train_config({"precision": "fp8"})
    with pytest.raises(ConfigError, match=r"train\.batch_sise: unknown key"):
        train_config({"batch_sise": 4})
    with pytest.raises(ConfigError, match="model='resnet' is not allowed"):
        train_config({"model": "resnet"})
    with pytest.raises(ConfigError, match=r"train\.loss='l1_spec' needs magnitudes"):
        Trainer(build_model("convtasnet", targets=TARGETS, **TASNET), train_config({"loss": "l1_spec"}),
                out="unused", train_data=[])
    assert train_config({"lr_halve_every": 3, "lr_milestones": [5], "steps": 10}).milestones() == [3, 5, 6, 9]


# --------------------------------------------------------------------------------------------------------------
# DDP: 2 processes (gloo) give the loss curve of 1 process with the same global batch


def _ddp_worker(rank: int, world: int, rendezvous: str, out: str, mixtures: torch.Tensor,
                targets: torch.Tensor) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        model = build_model("convtasnet", targets=TARGETS, seed=0, **TASNET)
        c = cfg(steps=4, batch_size=1, accumulate=2, lr=1e-2)
        r = Trainer(model, c, out=out, train_data=ArrayDataset(mixtures, targets)).fit()
        if rank == 0:
            Path(out, "losses.json").write_text(json.dumps([h["loss"] for h in r.history]))
    finally:
        dist.destroy_process_group()


def test_ddp_two_gloo_processes_match_one_process(crops: Crops, tmp_path: Path) -> None:
    mix, tgt = crops.mixture[:, :, :8000].clone(), crops.targets[:, :, :, :8000].clone()
    model = build_model("convtasnet", targets=TARGETS, seed=0, **TASNET)
    single = Trainer(model, cfg(steps=4, batch_size=4, lr=1e-2), out=tmp_path / "one",
                     train_data=ArrayDataset(mix, tgt)).fit()
    out = tmp_path / "two"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rdv"), str(out), mix, tgt), nprocs=2, join=True)
    two = json.loads((out / "losses.json").read_text())
    one = [h["loss"] for h in single.history]
    np.testing.assert_allclose(two, one, rtol=1e-5)
    assert len(set(np.round(one, 6))) == 4  # the curve moves: the comparison is not of constants
    ck = load_checkpoint(out)
    assert ck["world_size"] == 2 and len(list_checkpoints(out)) == 1
    w1 = load_checkpoint(tmp_path / "one")["model_state"]
    for k, v in ck["model_state"].items():
        torch.testing.assert_close(v, w1[k], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# separation


class _Gains(SeparationModel):
    """A pointwise "model": stem s is the mixture times gains[s] (no temporal context)."""

    name = "gains"

    def __init__(self, gains: tuple[float, ...], channels: int = 2) -> None:
        super().__init__(targets=[f"s{i}" for i in range(len(gains))], channels=channels, sample_rate=SR)
        self.g = torch.nn.Parameter(torch.tensor(gains).reshape(1, -1, 1, 1))

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return mixture.unsqueeze(1) * self.g

    def _arch_config(self) -> dict:
        return {}


def test_chunked_crossfade_reassembles_a_pointwise_model_exactly() -> None:
    x = torch.from_numpy(audio.read(MUSDB / "train" / "Music Delta - Rock" / "mixture.wav")[0])
    model = _Gains((0.5, -1.0, 2.0))
    for chunk, overlap in ((10_000, 0.25), (44_100, 0.5), (7_777, 0.0), (10**6, 0.25)):
        y = separate_tensor(model, x, chunk=chunk, overlap=overlap, batch_size=3)
        torch.testing.assert_close(y, model(x[None])[0], rtol=1e-5, atol=1e-6)
    w = crossfade_window(10, 3)
    assert torch.all(w > 0) and torch.equal(w[3:7], torch.ones(4)) and w[0] == 0.25


def test_separate_keeps_the_input_channels_and_rate(trained, tmp_path: Path) -> None:  # noqa: ANN001
    model = load_model(trained.out)
    assert model.train_seconds == 0.5  # from the checkpoint's stemdb config
    stereo = MUSDB / "test" / "The Easton Ellises - Falcon 69" / "mixture.wav"
    paths = separate_file(stereo, trained.out, tmp_path / "falcon", device="cpu")
    assert set(paths) == set(TARGETS)
    n = audio.info(stereo).frames
    for p in paths.values():
        i = audio.info(p)
        assert (i.channels, i.frames, i.sample_rate, i.subtype) == (2, n, SR, "FLOAT")
    mono48, sr = audio.read(STEMS / "keys" / "maestro_chamber3_excerpt_2s_48k.wav")
    out = separate(model, mono48, sr, chunk_seconds=0.3)
    assert all(v.shape == mono48.shape and v.dtype == np.float32 for v in out.values())
    voc = audio.read(STEMS / "vocals" / "vocadito_1.wav", frames=SR)[0][0]
    two = separate(_Gains((1.0, 0.5), channels=1), np.stack([voc, -voc]), SR, chunk_seconds=0.3)
    np.testing.assert_allclose(two["s1"], 0.5 * np.stack([voc, -voc]), atol=1e-6)  # each channel on its own
    lifted = separate(_Gains((1.0, 0.5), channels=2), voc[None], SR, chunk_seconds=0.3)
    np.testing.assert_allclose(lifted["s1"], 0.5 * voc[None], atol=1e-6)  # mono through a stereo model


# --------------------------------------------------------------------------------------------------------------
# command line (remix stream over the fixture catalogue) and the Prefect flow


def _tiny_yaml(path: Path, catalog: Path, **train: object) -> Path:
    data = {"catalog": str(catalog), "remix": {"seconds": 0.5},
            "train": {"model_options": UNET, "steps": 2, "batch_size": 2, "epoch_length": 4, "log_every": 1,
                      **train}}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def cli_run(fixture_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """``train --config ... --out RUN`` on the remix stream: (config, run folder, output)."""
    from pipelines.cli import app

    tmp = tmp_path_factory.mktemp("cli")
    conf = _tiny_yaml(tmp / "data.yaml", fixture_catalog)
    run = tmp / "run"
    r = CliRunner().invoke(app, ["train", "--config", str(conf), "--model", "unet", "--out", str(run),
                                 "--steps", "3", "--set", "valid.every=0", "--valid-root", str(MUSDB / "test")])
    assert r.exit_code == 0, r.output
    return conf, run, r.output


def test_cli_train_on_the_remix_stream_then_separate(cli_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    from pipelines.cli import app

    conf, run, output = cli_run
    assert "trained to step 3" in output
    ck = load_checkpoint(run)
    assert ck["step"] == 3 and ck["stream"]["stream"] == "RemixStream" and ck["stream"]["consumed"] == 2
    assert ck["epoch"] == 1 and len(ck["catalog_fingerprint"]) == 16  # 4 items per epoch, batch 2
    assert ck["stemdb_config"]["remix"]["seconds"] == 0.5
    assert read_csv(run / "train.csv")[-1]["valid_sdr"] != ""  # validated at the end on the test track
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--config", str(conf), "--out", str(run), "--set", "precision=fp7"])
    assert r.exit_code == 2 and "train.precision" in r.output

    est = tmp_path / "est"
    r = runner.invoke(app, ["separate", str(MUSDB / "test" / "The Easton Ellises - Falcon 69" / "mixture.wav"),
                            "--model", str(run), "--out", str(est), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in est.iterdir()) == sorted(f"{t}.wav" for t in TARGETS)


@pytest.mark.slow  # two museval scorings (model and mixture baseline): 10-30 s on a busy 2-core machine
def test_cli_evaluate_run_scores_against_the_mixture(cli_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    from pipelines.cli import app

    _, run, _ = cli_run
    scores = tmp_path / "scores.json"
    r = CliRunner().invoke(app, ["evaluate-run", str(run), "--musdb-root", str(MUSDB), "--split", "test",
                                 "--out", str(scores), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    s = json.loads(scores.read_text())
    assert set(s["tracks"]) == {"The Easton Ellises - Falcon 69"}
    assert set(s["median"]) == set(TARGETS) and set(s["improvement"]) == set(TARGETS)
    for stem in TARGETS:
        m, base, imp = s["median"][stem]["SDR"], s["mixture"]["median"][stem]["SDR"], s["improvement"][stem]["SDR"]
        assert imp == pytest.approx(m - base, abs=1e-6)




def test_train_model_flow_runs_once(prefect_harness, fixture_catalog: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from pipelines.train_flow import train_model_flow

    conf = _tiny_yaml(tmp_path / "data.yaml", fixture_catalog)
    s = train_model_flow(out=tmp_path / "run", config=conf, model="unet", steps=2)
    assert s["step"] == 2 and s["steps_run"] == 2 and math.isfinite(s["loss"])
    assert Path(s["checkpoint"]).is_file() and Path(s["csv"]).is_file() and Path(s["png"]).is_file()
    again = train_model_flow(out=tmp_path / "run", config=conf, model="unet", steps=3)
    assert again["resumed_from"] == 2 and again["step"] == 3
