"""``compare-datasets``: compare.yaml validation, the verdicts, ``train --init``, and a tiny comparison end to end on
the fixtures (2 variants x 1 seed, 3 steps each: the files, the JSON numbers against an evaluation of the same
estimates, a rerun that redoes nothing, the flow, and the page in headless Chromium). The tiny run claims no quality
result: 3 steps of a 4-filter U-Net separate nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from stemdb.errors import ConfigError
from tests.browser import Chromium, chromium_binary
from tests.conftest import MUSDB
from train.compare.config import compare_config, load_compare
from train.compare.results import paired, spread, verdict, vs_reference
from train.compare.variants import BUILTIN_VARIANTS, run_specs

FALCON = "The Easton Ellises - Falcon 69"


TINY_UNET = {"n_fft": 256, "hop_length": 64, "levels": 3, "base_filters": 4, "max_bin": 100, "dropout": 0.0}


def tiny(catalog: Path, **over: object) -> dict:
    """A comparison of 2 variants x 1 seed, 3 steps of a tiny U-Net, Falcon 69 (the fixtures' test song) held out."""
    raw = {"catalog": str(catalog), "test": {"root": str(MUSDB), "split": "test"}, "model": "unet",
           "model_options": TINY_UNET, "budget": {"steps": 3}, "seeds": [0], "variants": ["real", "naive"],
           "remix": {"seconds": 1.0},
           "train": {"batch_size": 1, "device": "cpu", "log_every": 1,
                     "valid": {"root": str(MUSDB / "test"), "every": 2, "seconds": 2.0}},
           "scoring": {"workers": 2, "excerpt_seconds": 2.0}}
    raw.update(over)
    return raw


# --------------------------------------------------------------------------------------------------------------
# compare.yaml


def test_config_loads_and_expands_runs(tmp_path: Path) -> None:
    raw = tiny(tmp_path / "cat", seeds=[0, 1], variants=["real", "tempo", "pretrain", "loud"],
               custom={"loud": {"base": "calibrated", "remix": {"levels": {"spread_lu": 1.0}}}})
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_compare(path)
    specs = run_specs(cfg)
    assert [s.key for s in specs] == [f"{v}/seed-{s}" for v in ("real", "tempo", "pretrain", "loud") for s in (0, 1)]
    by = {s.key: s for s in specs}
    assert by["real/seed-0"].phases[0].remix.mode == "coherent"
    tempo = by["tempo/seed-1"].phases[0]
    assert (tempo.remix.mode, tempo.remix.levels.mode, tempo.remix.tempo.enabled) == ("cross_song", "calibrated", True)
    assert tempo.train["seed"] == 1 and tempo.train["steps"] == 3 and tempo.train["model_options"] == TINY_UNET
    pre = by["pretrain/seed-0"].phases
    assert [p.folder for p in pre] == ["pretrain/seed-0-pretrain", "pretrain/seed-0"]
    assert pre[0].remix.mode == "cross_song" and pre[1].remix.mode == "coherent"
    assert pre[1].init_from == pre[0].folder
    assert pre[0].budget.steps + pre[1].budget.steps == 3  # the same budget as every other run, split in two
    assert by["loud/seed-0"].phases[0].remix.levels.spread_lu == 1.0
    assert set(BUILTIN_VARIANTS) == {"real", "naive", "calibrated", "tempo", "mixed", "pretrain"}


@pytest.mark.parametrize(("change", "message"), [
    ({"sedes": [0]}, r"sedes.*allowed keys there: project, catalog, test"),
    ({"test": {"root": "x", "bogus": 1}}, r"test\.bogus.*allowed keys there: root, split"),
    ({"seeds": [1, 1]}, r"seeds.*distinct"),
    ({"budget": {"steps": 10, "minutes": 2}}, r"budget.*exactly one of steps or minutes"),
    ({"variants": ["real", "fancy"]}, r"variants\[1\]='fancy' is not allowed; allowed: real, naive, calibrated"),
    ({"custom": {"real": {"remix": {}}}}, r"custom\.real: a built-in variant has this name"),
    ({"variants": ["a"], "custom": {"a": {"base": "b"}, "b": {"base": "a"}}}, r"cycle \(a -> b -> a\)"),
    ({"variants": ["a"], "custom": {"a": {"train": {"batch_size": 8}}}}, r"custom\.a\.train\.batch_size: not allowed"),
    ({"variants": ["a"], "custom": {"a": {"remix": {"mode": "sideways"}}}}, r"custom\.a\.remix\.mode.*sideways"),
    ({"train": {"steps": 5}}, r"train\.steps: set it with compare.yaml's 'budget.steps'"),
    ({"scoring": {"workers": 0}}, r"scoring\.workers.*0"),
])
def test_bad_config_names_key_value_and_allowed(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compare_config(tiny(tmp_path / "cat", **change), base=tmp_path)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="compare config not found"):
        load_compare(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------------------------------------------
# verdicts and spreads


def test_verdict_needs_every_seed_to_agree() -> None:
    assert verdict([0.4, 0.9, 0.2]) == "better by 0.40 dB in 3 of 3 seeds"
    assert verdict([-0.4, -0.9, -0.2]) == "worse by 0.40 dB in 3 of 3 seeds"
    assert verdict([0.4, -0.1, 0.9]) == "within seed spread (-0.10 to +0.90 dB over 3 seeds)"
    assert verdict([0.0, 0.5]).startswith("within seed spread")  # a zero is no agreement in sign
    assert verdict([-1.0, -2.0], lower_is_better=True) == "better by 1.50 dB in 2 of 2 seeds"
    assert verdict([1.3]) == "one seed only (+1.30 dB): no seed spread to judge by"
    assert verdict([None, math.nan]) == "not scored"


def test_paired_differences_and_reference_verdicts() -> None:
    def scores(values: dict[str, float]) -> dict:
        return {"median": {}, "tracks": {song: {"vocals": {"SDR": v, "SIR": v, "level_error": -v}}
                                         for song, v in values.items()}}

    real = {"0": scores({"a": 1.0, "b": 2.0}), "1": scores({"a": 0.0, "b": 1.0})}
    good = {"0": scores({"a": 2.0, "b": 3.5}), "1": scores({"a": 0.5, "b": 2.0})}
    mixed = {"0": scores({"a": 2.0, "b": 3.0}), "1": scores({"a": -1.0, "b": 0.0})}
    out = vs_reference({"real": real, "good": good, "mixed": mixed}, ["vocals"])
    assert set(out) == {"good", "mixed"}
    assert out["good"]["vocals"]["SDR"]["per_seed"] == {"0": 1.25, "1": 0.75}  # medians of (1, 1.5) and (0.5, 1)
    assert out["good"]["vocals"]["SDR"]["verdict"] == "better by 1.00 dB in 2 of 2 seeds"
    assert out["mixed"]["vocals"]["SDR"]["verdict"] == "within seed spread (-1.00 to +1.00 dB over 2 seeds)"
    # level error: |estimate - reference level| grows for "good" (-2.75 vs -1.5 on seed 0): worse
    assert out["good"]["vocals"]["level_error"]["verdict"] == "worse by 1.00 dB in 2 of 2 seeds"
    s = spread({"0": {"a": 1.0, "b": 3.0}, "1": {"a": 5.0, "b": 7.0}})
    assert s == {"median": 4.0, "seeds": [2.0, 6.0], "songs": [3.0, 5.0], "n": 4}
    assert paired({"0": {"a": 3.0, "c": 1.0}}, {"a": 1.0}, by_seed=False) == {"0": {"a": 2.0}}


# --------------------------------------------------------------------------------------------------------------
# train --init


def test_init_starts_from_another_runs_weights(fixture_catalog: Path, tmp_path: Path) -> None:
    import torch

    from augment.config import ProjectConfig, RemixConfig
    from train.checkpoint import CheckpointError, load_checkpoint
    from train.run import train_run

    project = ProjectConfig(catalog=fixture_catalog, remix=RemixConfig(seconds=1.0))
    ov = {"model": "unet", "model_options": TINY_UNET, "batch_size": 1, "device": "cpu", "steps": 2}
    first = train_run(project, out=tmp_path / "a", overrides=ov)
    second = train_run(project, out=tmp_path / "b", overrides={**ov, "steps": 1, "seed": 5}, init=tmp_path / "a")
    assert second.step == 1  # the step count starts fresh
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["extra"]["init"]["checkpoint"] == str(first.checkpoint) and run["extra"]["init"]["step"] == 2
    ckpt = load_checkpoint(tmp_path / "b")
    assert ckpt["extra"]["init"]["checkpoint"] == str(first.checkpoint)
    # one step from the first run's weights stays near them; a fresh model (another seed) does not
    a = load_checkpoint(tmp_path / "a")["model_state"]
    weights = [k for k in a if a[k].is_floating_point() and "running_" not in k]  # not the norm statistics

    def drift(state: dict) -> float:
        return max(float((state[k] - a[k]).abs().max()) for k in weights)

    assert drift(ckpt["model_state"]) < 0.0015  # one Adam step at lr 1e-3 moves a weight by about lr at most
    fresh = train_run(project, out=tmp_path / "c", overrides={**ov, "steps": 1, "seed": 5})
    assert drift(load_checkpoint(fresh.checkpoint)["model_state"]) > 0.05
    with pytest.raises(CheckpointError, match="cannot start model"):
        train_run(project, out=tmp_path / "d", overrides={**ov, "model_options": {**TINY_UNET, "levels": 2}},
                  init=tmp_path / "a")
    assert torch.is_tensor(next(iter(a.values())))


# --------------------------------------------------------------------------------------------------------------
# end to end on the fixtures


def flat(tracks: dict) -> dict[str, float | None]:
    """``{track: {stem: {metric: v}}}`` as ``{"track/stem/metric": v}`` (pytest.approx compares flat mappings)."""
    return {f"{t}/{s}/{m}": v for t, stems in tracks.items() for s, ms in stems.items() for m, v in ms.items()}


@pytest.fixture(scope="module")
def tiny_run(fixture_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """``stemdb compare`` (the CLI, in-process) on the tiny config; returns (out folder, results, stdout)."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    work = tmp_path_factory.mktemp("compare")
    (work / "compare.yaml").write_text(yaml.safe_dump(tiny(fixture_catalog)))
    res = CliRunner().invoke(app, ["compare", "--config", str(work / "compare.yaml"), "--out", str(work / "out")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return work / "out", json.loads((work / "out" / "results.json").read_text()), res.output


def test_tiny_comparison_writes_every_file(tiny_run: tuple[Path, dict, str]) -> None:
    out, r, stdout = tiny_run
    for run in ("real/seed-0", "naive/seed-0"):
        folder = out / "runs" / run
        assert (folder / "train.csv").is_file() and list((folder / "checkpoints").glob("step_*.pt"))
        assert sorted(p.name for p in (folder / "estimates" / FALCON).iterdir()) == [
            "bass.wav", "drums.wav", "other.wav", "vocals.wav"]
        assert (folder / "scores.json").is_file() and (folder / "compare-run.json").is_file()
    assert (out / "report.html").stat().st_size > 50_000 and (out / "baselines.json").is_file()
    assert r["facts"]["steps_per_run"] == {"real/seed-0": 3, "naive/seed-0": 3} and r["facts"]["equal_steps"]
    assert r["tracks"] == [FALCON] and r["stems"] == ["vocals", "drums", "bass", "other"]
    assert list(r["table"]) == ["mixture_n", "mixture", "real", "naive"]
    assert r["vs_real"]["naive"]["vocals"]["SDR"]["verdict"].startswith("one seed only")
    assert r["timing"]["scored_tracks"] == 4 and r["timing"]["scoring_s_per_audio_minute"] > 0
    assert "median SDR (dB) over seeds and songs" in stdout and "s per minute of audio" in stdout


def test_tiny_comparison_numbers_are_the_evaluation_of_its_estimates(tiny_run: tuple[Path, dict, str]) -> None:
    from train.evaluate import score_folders, score_mixture

    out, r, _ = tiny_run
    stems = r["stems"]
    direct = score_folders(out / "runs" / "naive" / "seed-0" / "estimates", MUSDB, stems=stems)
    # the same numbers up to BLAS summation order (the comparison scored in a pool, this in one process)
    assert flat(r["runs_scores"]["naive"]["0"]["tracks"]) == pytest.approx(flat(direct["tracks"]), abs=1e-6)
    mix_n = score_mixture(MUSDB, tracks=[FALCON], stems=stems, scale=0.25)
    assert flat(r["baselines"]["mixture_n"]["tracks"]) == pytest.approx(flat(mix_n["tracks"]), abs=1e-6)
    for stem in stems:  # one song, one seed: the table's median is that song's value; improvement is the difference
        sdr = direct["tracks"][FALCON][stem]["SDR"]
        assert r["table"]["naive"][stem]["SDR"]["median"] == pytest.approx(sdr, abs=1e-6)
        assert r["improvement"]["mixture_n"]["naive"][stem]["SDR"]["median"] == pytest.approx(
            sdr - mix_n["tracks"][FALCON][stem]["SDR"], abs=1e-6)
    # mixture / 4 and the mixture differ by exactly the scale in level, by construction
    for stem in stems:
        lev_n = r["baselines"]["mixture_n"]["tracks"][FALCON][stem]["level_error"]
        lev = r["baselines"]["mixture"]["tracks"][FALCON][stem]["level_error"]
        assert lev_n - lev == pytest.approx(20 * math.log10(0.25), abs=1e-3)


def test_rerun_trains_and_scores_nothing(tiny_run: tuple[Path, dict, str], fixture_catalog: Path) -> None:
    from train.compare import run_comparison

    out, r, _ = tiny_run
    ckpts = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.pt")}
    again = run_comparison(out.parent / "compare.yaml", out)
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.pt")} == ckpts
    assert again["timing"]["scored_tracks"] == 0
    assert again["table"] == r["table"]


def test_flow_reuses_the_runs_and_writes_the_report(tiny_run: tuple[Path, dict, str], prefect_harness) -> None:  # noqa: ANN001
    from pipelines.compare_flow import compare_datasets_flow

    out, r, _ = tiny_run
    (out / "report.html").unlink()
    s = compare_datasets_flow(config=out.parent / "compare.yaml", out=out)
    assert s["runs"] == 2 and Path(s["report"]).is_file() and s["timing"]["scored_tracks"] == 0
    assert json.loads((out / "results.json").read_text())["table"] == r["table"]
    with pytest.raises(ConfigError, match="compare config not found"):
        compare_datasets_flow(config=out.parent / "missing.yaml", out=out)


AUDIO_JS = """Promise.all([...document.querySelectorAll('audio')].map(a => new Promise(r => {
  const done = () => r({ok: a.readyState >= 1 && a.duration > 0, duration: a.duration});
  if (a.readyState >= 1) return done();
  a.addEventListener('loadedmetadata', done); a.addEventListener('error', () => r({ok: false, error: a.error.code}));
  setTimeout(() => r({ok: false, error: 'timeout'}), 10000); a.load(); })))"""


@pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.browser
def test_report_opens_in_chromium(tiny_run: tuple[Path, dict, str], tmp_path: Path) -> None:
    out, r, _ = tiny_run
    with Chromium(tmp_path / "profile") as browser:
        page = browser.load(out / "report.html", screenshot=tmp_path / "report.png", probe=AUDIO_JS)
    assert page.errors == [], page.errors
    assert len(page.images) == 2 and all(i["complete"] and i["naturalWidth"] > 0 for i in page.images)
    assert all(u.startswith(("file:", "data:")) for u in page.requests), page.requests
    # mixture, reference vocals and one excerpt per variant; each decodes to its 2 s
    assert len(page.probe) == 4 and all(a["ok"] and a["duration"] == pytest.approx(2.0, abs=0.05) for a in page.probe)
    for text in ("Equal budgets", "3 optimizer steps", "mixture / N (no model)", "Difference to real",
                 "one seed only", "seconds per minute of audio", "Only 1 seed"):
        assert text in page.text, text
    assert (tmp_path / "report.png").stat().st_size > 10_000
