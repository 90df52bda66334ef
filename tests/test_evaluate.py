"""Evaluation: SI-SDR / SDR metrics, BSSEval v4 SDR through museval, folder scoring and the scores JSON.

museval is slow (about 2-6 s per 4-stem track on this machine, whatever the length: the 4096x4096 filter solves
dominate), so the expensive scorings are module-scoped fixtures shared by several tests.

stemdb scores through ``museval.metrics`` alone, which needs no ffmpeg. The direct ``museval.evaluate`` calls that
cross-check it import museval's package, whose musdb/stempeg chain needs the ffmpeg program: those tests are marked
``ffmpeg`` and skip without it; the values they pin (from museval 0.4.1) are checked either way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from stemdb import audio
from tests.conftest import MUSDB, STEM_MP4, import_or_skip
from train.bsseval import MAX_DB, bss_sdr, score_track
from train.evaluate import (
    EvaluationError,
    MissingEstimateError,
    find_tracks,
    median_scores,
    read_scores,
    score_folders,
    score_mixture,
    sdr_improvement,
    write_scores,
)
from train.metrics import sdr, si_sdr

STEMS = ("vocals", "drums", "bass", "other")
HENDRIX = "Music Delta - Hendrix"
ZEPPELIN = "Music Delta - Zeppelin"
SR = 44100

# BSSEval v4 SDR of the identity "model" (estimate = mixture.wav) on Hendrix, measured with a direct call
# `museval.evaluate([vocals, drums, bass, other], [mixture] * 4, win=44100, hop=44100)` (museval 0.4.1, float64
# arrays read from the fixture), then np.nanmedian over windows.
HENDRIX_IDENTITY_SDR = {"vocals": -2.79082, "drums": -2.81688, "bass": -5.72618, "other": -9.64527}
# The same kind of direct call for the near-oracle estimates (vocals, bass) and for vocals/accompaniment against the
# mixture (museval 0.4.1); the ffmpeg-marked tests below repeat the calls.
NEAR_ORACLE_SDR = {"vocals": 40.119369, "bass": 39.581097}
HENDRIX_VOCALS_ACC_SDR = {"vocals": -2.790825, "accompaniment": 2.790817}


def load_track(name: str, split: str = "train") -> dict[str, np.ndarray]:
    folder = MUSDB / split / name
    return {stem: audio.read(folder / f"{stem}.wav")[0] for stem in (*STEMS, "mixture")}


def no_nan_tokens(text: str) -> dict:
    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def hendrix() -> dict[str, np.ndarray]:
    return load_track(HENDRIX)


@pytest.fixture(scope="module")
def identity_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The identity "model" (every stem's estimate is the mixture) on Hendrix and Zeppelin, written as files and
    scored with score_folders through the process pool (2 workers)."""
    est = tmp_path_factory.mktemp("identity")
    for name in (HENDRIX, ZEPPELIN):
        mix, sr = audio.read(MUSDB / "train" / name / "mixture.wav")
        for stem in STEMS:
            audio.write(est / name / f"{stem}.wav", mix, sr)
    return est, score_folders(est, MUSDB, workers=2)


ORACLE_STEMS = ("vocals", "bass")  # two stems keep the direct museval comparison cheap (2048-wide solves)


@pytest.fixture(scope="module")
def near_oracle(hendrix: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """True stems plus independent noise 40 dB below each stem (finite SDR, unlike the exact oracle)."""
    rng = np.random.default_rng(7)
    ests = {}
    for stem in ORACLE_STEMS:
        ref = hendrix[stem]
        rms = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2)))
        ests[stem] = (ref + rng.standard_normal(ref.shape) * rms * 0.01).astype(np.float32)
    refs = {s: hendrix[s] for s in ORACLE_STEMS}
    return refs, ests


# ---------------------------------------------------------------------------------------------------------------
# train.metrics
# ---------------------------------------------------------------------------------------------------------------


def test_si_sdr_self_scaled_and_noise(hendrix: dict[str, np.ndarray]) -> None:
    ref = hendrix["vocals"]
    rng = np.random.default_rng(0)
    est = ref + 0.05 * rng.standard_normal(ref.shape).astype(np.float32)
    base = float(si_sdr(est, ref))
    assert float(si_sdr(ref, ref)) > 100.0
    assert 0.0 < base < 40.0
    for scale in (0.25, 3.0, -2.0):
        assert float(si_sdr(scale * est, ref)) == pytest.approx(base, abs=1e-6)
        assert float(si_sdr(est, scale * ref)) == pytest.approx(base, abs=1e-6)
    # a DC offset is removed before scoring
    assert float(si_sdr(est + 0.1, ref)) == pytest.approx(base, abs=1e-6)
    noise = rng.standard_normal(ref.shape).astype(np.float32)
    assert float(si_sdr(noise, ref)) < -20.0
    # the plain SDR is not scale-invariant: a 6 dB quieter copy loses
    assert float(sdr(est, ref)) > float(sdr(0.5 * est, ref))


def test_metrics_torch_matches_numpy_and_batches(hendrix: dict[str, np.ndarray]) -> None:
    refs = np.stack([hendrix[s] for s in STEMS])  # (4, 2, T)
    ests = np.broadcast_to(hendrix["mixture"], refs.shape).copy()
    np_si, np_sdr = si_sdr(ests, refs), sdr(ests, refs)
    assert isinstance(np_si, np.ndarray) and np_si.shape == (4,)
    t_si = si_sdr(torch.from_numpy(ests), torch.from_numpy(refs))
    t_sdr = sdr(torch.from_numpy(ests), torch.from_numpy(refs))
    assert isinstance(t_si, torch.Tensor) and t_si.shape == (4,)
    np.testing.assert_allclose(t_si.numpy(), np_si, atol=1e-3)
    np.testing.assert_allclose(t_sdr.numpy(), np_sdr, atol=1e-3)
    # plain SDR of the mixture as estimate is the source-to-rest energy ratio, by definition
    rest = refs.sum(axis=0, keepdims=True) - refs
    expected = 10 * np.log10((refs.astype(np.float64) ** 2).sum((1, 2)) / (rest.astype(np.float64) ** 2).sum((1, 2)))
    np.testing.assert_allclose(np_sdr, expected, atol=0.05)  # mixture.wav = sum of stems within 1-3 LSB
    # bf16 runs (computed in float32) and gradients flow for use as a validation metric
    assert torch.isfinite(si_sdr(torch.from_numpy(ests).bfloat16(), torch.from_numpy(refs).bfloat16())).all()
    x = torch.from_numpy(ests).requires_grad_()
    si_sdr(x, torch.from_numpy(refs)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_metrics_validate_inputs() -> None:
    with pytest.raises(ValueError, match="shape"):
        si_sdr(np.zeros((2, 10)), np.zeros((2, 11)))
    with pytest.raises(ValueError, match="at least 2 dims"):
        sdr(np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError, match="eps"):
        si_sdr(np.zeros((1, 4)), np.ones((1, 4)), eps=-1.0)
    with pytest.raises(ValueError, match="both torch tensors or both numpy"):
        si_sdr(torch.zeros(1, 4), np.ones((1, 4)))
    assert float(sdr(np.zeros((2, 100)), np.ones((2, 100)))) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# bss_sdr and score_track on arrays
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.ffmpeg
def test_bss_sdr_agrees_with_museval(near_oracle) -> None:  # noqa: ANN001
    museval = import_or_skip("museval")
    refs, ests = near_oracle
    ours = bss_sdr(refs, ests, SR)
    sdr_direct, *_ = museval.evaluate(
        [refs[s].T.astype(np.float64) for s in ORACLE_STEMS], [ests[s].T.astype(np.float64) for s in ORACLE_STEMS],
        win=SR, hop=SR,
    )
    for i, stem in enumerate(ORACLE_STEMS):
        assert ours[stem] == pytest.approx(float(np.nanmedian(sdr_direct[i])), abs=1e-9)


def test_bss_sdr_pinned_and_oracle_beats_identity(near_oracle, identity_run) -> None:  # noqa: ANN001
    refs, ests = near_oracle
    ours = bss_sdr(refs, ests, SR)
    for stem in ORACLE_STEMS:
        assert ours[stem] == pytest.approx(NEAR_ORACLE_SDR[stem], abs=1e-5)
    identity = identity_run[1]["tracks"][HENDRIX]
    for stem in ORACLE_STEMS:
        assert ours[stem] > 30.0, stem  # noise 40 dB down
        assert identity[stem]["SDR"] < 0.0, stem
        assert ours[stem] > identity[stem]["SDR"] + 30.0


def test_exact_oracle_is_clipped_not_infinite(hendrix: dict[str, np.ndarray]) -> None:
    vocals = {"vocals": hendrix["vocals"]}
    assert bss_sdr(vocals, vocals, SR)["vocals"] == math.inf  # museval's own value for a perfect estimate
    scores = score_track(vocals, vocals, SR)["vocals"]
    assert scores["SDR"] == MAX_DB
    assert scores["SI-SDR"] > 80.0


@pytest.mark.ffmpeg
def test_museval_would_crash_on_a_silent_reference() -> None:
    museval = import_or_skip("museval")
    zep = load_track(ZEPPELIN)
    refs = [zep[s].T.astype(np.float64) for s in STEMS]
    with pytest.raises(ValueError, match="silent"):  # why the stem must be taken out of the joint evaluation
        museval.evaluate(refs, refs, win=SR, hop=SR)


def test_silent_reference_is_not_scored() -> None:
    zep = load_track(ZEPPELIN)
    assert not np.any(zep["vocals"])
    ests = {"vocals": zep["mixture"], "bass": zep["mixture"]}
    scores = score_track(zep, ests, SR)
    assert scores["vocals"] == {"SDR": None, "SI-SDR": None}
    alone = bss_sdr({"bass": zep["bass"]}, {"bass": zep["mixture"]}, SR)["bass"]
    assert scores["bass"]["SDR"] == pytest.approx(alone, abs=1e-9)
    assert scores["bass"]["SDR"] < 0.0


def test_silent_estimate_scores_zero_db(hendrix: dict[str, np.ndarray]) -> None:
    ests = {"vocals": np.zeros_like(hendrix["vocals"]), "drums": hendrix["mixture"]}
    got = bss_sdr(hendrix, ests, SR)
    assert got["vocals"] == 0.0
    alone = bss_sdr({"drums": hendrix["drums"]}, {"drums": hendrix["mixture"]}, SR)["drums"]
    assert got["drums"] == pytest.approx(alone, abs=1e-9)


def test_bss_sdr_validates_inputs(hendrix: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="no reference"):
        bss_sdr({"vocals": hendrix["vocals"]}, {"piano": hendrix["mixture"]}, SR)
    with pytest.raises(ValueError, match="channel"):
        bss_sdr({"vocals": hendrix["vocals"]}, {"vocals": hendrix["mixture"][:1]}, SR)
    with pytest.raises(ValueError, match="sample_rate"):
        bss_sdr({"vocals": hendrix["vocals"]}, {"vocals": hendrix["mixture"]}, 0)
    with pytest.raises(ValueError, match="window_s"):
        bss_sdr({"vocals": hendrix["vocals"]}, {"vocals": hendrix["mixture"]}, SR, window_s=0.0)
    with pytest.raises(ValueError, match="estimates is empty"):
        bss_sdr({"vocals": hendrix["vocals"]}, {}, SR)


# ---------------------------------------------------------------------------------------------------------------
# Folders and JSON
# ---------------------------------------------------------------------------------------------------------------


def test_score_folders_identity_values_shape_and_silent_vocals(identity_run, tmp_path: Path) -> None:
    _, scores = identity_run
    assert set(scores) == {"median", "tracks"}
    assert list(scores["tracks"]) == [HENDRIX, ZEPPELIN]
    for track in scores["tracks"].values():
        assert list(track) == list(STEMS)
        for value in track.values():
            assert set(value) == {"SDR", "SI-SDR"}
    assert list(scores["median"]) == list(STEMS)
    # the pool's numbers are museval's (pinned from a direct museval.evaluate call)
    for stem, expected in HENDRIX_IDENTITY_SDR.items():
        assert scores["tracks"][HENDRIX][stem]["SDR"] == pytest.approx(expected, abs=1e-4)
    # Zeppelin is instrumental: its vocals are not scored and the median over tracks skips them
    assert scores["tracks"][ZEPPELIN]["vocals"] == {"SDR": None, "SI-SDR": None}
    assert scores["median"]["vocals"] == scores["tracks"][HENDRIX]["vocals"]
    for stem in ("drums", "bass", "other"):
        pair = [scores["tracks"][t][stem]["SDR"] for t in (HENDRIX, ZEPPELIN)]
        assert all(isinstance(v, float) for v in pair)
        assert scores["median"][stem]["SDR"] == pytest.approx(float(np.median(pair)))

    out = write_scores(scores, tmp_path / "sub" / "scores.json")
    text = out.read_text()
    loaded = no_nan_tokens(text)
    assert loaded == scores
    assert loaded["tracks"][ZEPPELIN]["vocals"]["SDR"] is None
    assert read_scores(out) == scores
    assert not [p for p in out.parent.iterdir() if p.name != "scores.json"]  # no temp file left behind


def test_write_scores_nan_and_inf_become_null(tmp_path: Path) -> None:
    scores = {"median": {"vocals": {"SDR": float("nan"), "SI-SDR": np.float64(3.5)}},
              "tracks": {"a": {"vocals": {"SDR": float("inf"), "SI-SDR": np.nan}}}}
    text = write_scores(scores, tmp_path / "s.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = no_nan_tokens(text)
    assert loaded == {"median": {"vocals": {"SDR": None, "SI-SDR": 3.5}},
                      "tracks": {"a": {"vocals": {"SDR": None, "SI-SDR": None}}}}


def test_missing_estimate_names_the_file(tmp_path: Path) -> None:
    mix, sr = audio.read(MUSDB / "train" / HENDRIX / "mixture.wav")
    for stem in ("vocals", "drums", "other"):
        audio.write(tmp_path / HENDRIX / f"{stem}.wav", mix, sr)
    with pytest.raises(MissingEstimateError) as info:
        score_folders(tmp_path, MUSDB / "train")  # a flat folder of reference tracks
    assert info.value.path == str(tmp_path / HENDRIX / "bass.wav")
    assert str(tmp_path / HENDRIX / "bass.wav") in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_estimate_track_without_reference_and_rate_mismatch(tmp_path: Path) -> None:
    mix, sr = audio.read(MUSDB / "train" / HENDRIX / "mixture.wav")
    audio.write(tmp_path / "est" / "Not A Track" / "vocals.wav", mix, sr)
    with pytest.raises(EvaluationError, match="no reference track named 'Not A Track'"):
        score_folders(tmp_path / "est", MUSDB)
    audio.write(tmp_path / "est2" / HENDRIX / "vocals.wav", mix, 48000)
    with pytest.raises(EvaluationError, match="48000 Hz"):
        score_folders(tmp_path / "est2", MUSDB, stems=["vocals"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="no track folders"):
        score_folders(tmp_path / "empty", MUSDB)


def test_find_tracks_layouts() -> None:
    root = find_tracks(MUSDB)
    assert set(root) == {HENDRIX, ZEPPELIN, "Music Delta - Reggae", "Music Delta - Rock",
                         "The Easton Ellises - Falcon 69"}
    assert root[HENDRIX] == MUSDB / "train" / HENDRIX
    assert set(find_tracks(MUSDB / "train")) == set(root) - {"The Easton Ellises - Falcon 69"}
    assert find_tracks(STEM_MP4) == {}
    assert find_tracks(STEM_MP4, allow_stem_mp4=True) == {
        "The Easton Ellises - Falcon 69": STEM_MP4 / "test" / "The Easton Ellises - Falcon 69.stem.mp4"}


@pytest.fixture(scope="module")
def vocals_accompaniment() -> dict:
    return score_mixture(MUSDB / "train", tracks=[HENDRIX], stems=["vocals", "accompaniment"])


def test_score_mixture_and_vocals_accompaniment(vocals_accompaniment: dict) -> None:
    track = vocals_accompaniment["tracks"][HENDRIX]
    assert list(track) == ["vocals", "accompaniment"]
    for stem, expected in HENDRIX_VOCALS_ACC_SDR.items():
        assert track[stem]["SDR"] == pytest.approx(expected, abs=1e-5)
    assert vocals_accompaniment["median"] == track


@pytest.mark.ffmpeg
def test_vocals_accompaniment_as_museval(vocals_accompaniment: dict, hendrix: dict[str, np.ndarray]) -> None:
    museval = import_or_skip("museval")
    track = vocals_accompaniment["tracks"][HENDRIX]
    acc = hendrix["drums"] + hendrix["bass"] + hendrix["other"]
    direct, *_ = museval.evaluate([hendrix["vocals"].T.astype(np.float64), acc.T.astype(np.float64)],
                                  [hendrix["mixture"].T.astype(np.float64)] * 2, win=SR, hop=SR)
    assert track["vocals"]["SDR"] == pytest.approx(float(np.nanmedian(direct[0])), abs=1e-6)
    assert track["accompaniment"]["SDR"] == pytest.approx(float(np.nanmedian(direct[1])), abs=1e-6)


def test_stem_mp4_references() -> None:
    scores = score_mixture(STEM_MP4, stems=["vocals"])
    mp4 = STEM_MP4 / "test" / "The Easton Ellises - Falcon 69.stem.mp4"
    streams, sr = audio.read_stem_mp4(mp4, streams=[0, 4])
    expected = bss_sdr({"vocals": streams[1]}, {"vocals": streams[0]}, sr)["vocals"]
    got = scores["tracks"]["The Easton Ellises - Falcon 69"]["vocals"]["SDR"]
    assert got == pytest.approx(expected, abs=1e-9)
    assert got < 0.0


def test_sdr_improvement_pairs_tracks() -> None:
    model = {"median": {}, "tracks": {
        "a": {"vocals": {"SDR": 5.0, "SI-SDR": 4.0}, "bass": {"SDR": 2.0, "SI-SDR": 1.0}},
        "b": {"vocals": {"SDR": None, "SI-SDR": None}, "bass": {"SDR": 4.0, "SI-SDR": 2.0}},
        "c": {"vocals": {"SDR": 9.0, "SI-SDR": 9.0}, "bass": {"SDR": 9.0, "SI-SDR": 9.0}},  # no baseline
    }}
    mixture = {"median": {}, "tracks": {
        "a": {"vocals": {"SDR": -3.0, "SI-SDR": -4.0}, "bass": {"SDR": -8.0, "SI-SDR": -9.0}},
        "b": {"vocals": {"SDR": None, "SI-SDR": None}, "bass": {"SDR": -6.0, "SI-SDR": -7.0}},
    }}
    got = sdr_improvement(model, mixture)
    assert got == {"vocals": {"SDR": 8.0, "SI-SDR": 8.0}, "bass": {"SDR": 10.0, "SI-SDR": 9.5}}
    with pytest.raises(ValueError, match="share no track"):
        sdr_improvement(model, {"tracks": {"z": {}}})
    with pytest.raises(ValueError, match="'tracks'"):
        sdr_improvement({"median": {}}, mixture)


def test_median_scores_skips_none() -> None:
    tracks = {"a": {"vocals": {"SDR": None, "SI-SDR": None}}, "b": {"vocals": {"SDR": 1.0, "SI-SDR": 2.0}},
              "c": {"vocals": {"SDR": 3.0, "SI-SDR": 4.0}}}
    assert median_scores(tracks) == {"vocals": {"SDR": 2.0, "SI-SDR": 3.0}}
    assert median_scores({"a": {"vocals": {"SDR": None, "SI-SDR": None}}}) == {
        "vocals": {"SDR": None, "SI-SDR": None}}
