"""The remix engine on the real fixtures: determinism, bit-exact re-render, mixture == sum, cross-song rules,
active windows, loudness calibration, MUSDB readability, config errors."""

from __future__ import annotations

import dataclasses
import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from augment.build import build_remix
from augment.config import RemixConfig, load_project
from augment.pool import build_pool
from augment.recipe import Recipe, read_recipes
from augment.remix import plan_recipes
from augment.render import StemTable, render_recipe
from stemdb import audio
from stemdb.errors import ConfigError
from stemdb.measure import integrated_loudness

from .conftest import import_or_skip

ROOT = Path(__file__).parent.parent
CFG = load_project(ROOT / "data.yaml").remix
AUG = {t: {"channel_swap": {"p": 0.5}, "polarity": {"p": 0.5}, "gain": {"min_db": -2, "max_db": 2, "p": 0.5}}
       for t in CFG.targets}
FAST = CFG.model_copy(update={"augment": AUG})


def _tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def _same_tree(a: Path, b: Path) -> None:
    ta, tb = _tree(a), _tree(b)
    assert ta == tb
    for rel in ta:
        if rel.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(a / rel), pd.read_parquet(b / rel))
        else:
            assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def test_same_seed_same_bytes_and_workers_do_not_matter(fixture_catalog: Path, tmp_path: Path) -> None:
    kw = dict(n=9, seed=7, cfg=FAST, seconds=2.0, chunk_size=3)
    s1 = build_remix(fixture_catalog, tmp_path / "a", workers=1, **kw)
    build_remix(fixture_catalog, tmp_path / "b", workers=3, **kw)
    assert s1.mixtures == 9 and s1.rendered == 9
    _same_tree(tmp_path / "a", tmp_path / "b")
    other = build_remix(fixture_catalog, tmp_path / "c", workers=1, **{**kw, "seed": 8})
    assert other.mixtures == 9
    assert _tree(tmp_path / "a") != _tree(tmp_path / "c")  # mix ids carry the plan hash


def test_rerun_is_noop_and_interrupted_build_resumes(fixture_catalog: Path, tmp_path: Path) -> None:
    kw = dict(n=6, seed=1, cfg=FAST, seconds=1.5, chunk_size=2)
    build_remix(fixture_catalog, tmp_path / "ref", **kw)
    again = build_remix(fixture_catalog, tmp_path / "ref", **kw)
    assert again.rendered == 0 and again.skipped == 6
    # simulate a kill: one chunk's record and one folder missing, a half-written temp folder left behind
    build_remix(fixture_catalog, tmp_path / "cut", **kw)
    parts = sorted((tmp_path / "cut" / ".parts").glob("chunk-*"))
    parts[1].unlink()
    recs = read_recipes(str(tmp_path / "cut" / "recipes.parquet"))
    victim = tmp_path / "cut" / recs[3].split / recs[3].mix_id
    for f in victim.iterdir():
        f.unlink()
    victim.rmdir()
    (tmp_path / "cut" / "train" / ".tmp-mix-0000003-dead-1").mkdir()
    (tmp_path / "cut" / "recipes.parquet").unlink()
    resumed = build_remix(fixture_catalog, tmp_path / "cut", **kw)
    assert resumed.rendered == 2
    _same_tree(tmp_path / "ref", tmp_path / "cut")


def test_rerender_is_bit_exact_and_mixture_is_sum(fixture_catalog: Path, tmp_path: Path) -> None:
    build_remix(fixture_catalog, tmp_path / "o", n=5, seed=3, cfg=FAST, seconds=2.0)
    table = StemTable.from_catalog(fixture_catalog)
    for rec in read_recipes(str(tmp_path / "o" / "recipes.parquet")):
        r = render_recipe(rec, table, FAST)
        # in memory: mixture is the float32 sum of the stems in target order, to the last bit
        acc = r.stems[0].copy()
        for s in r.stems[1:]:
            acc = acc + s
        np.testing.assert_array_equal(r.mixture, acc)
        folder = tmp_path / "o" / rec.split / rec.mix_id
        files = {}
        for name in ("mixture", *rec.targets):
            files[name], sr = audio.read(folder / f"{name}.wav", dtype="int16")
            assert sr == rec.sample_rate
        # files hold exactly what a re-render gives
        np.testing.assert_array_equal(audio.to_float32(files["mixture"]), r.mixture)
        for i, name in enumerate(rec.targets):
            np.testing.assert_array_equal(audio.to_float32(files[name]), r.stems[i])
        # in the 16-bit files, mixture == sum of stems within 1 LSB (here: exactly)
        total = sum(files[t].astype(np.int32) for t in rec.targets)
        assert np.max(np.abs(total - files["mixture"].astype(np.int32))) <= 1


def test_cross_song_never_repeats_a_song(fixture_catalog: Path) -> None:
    recipes = plan_recipes(fixture_catalog, n=60, seed=0, cfg=FAST, seconds=2.0)
    for r in recipes:
        songs = [s.song for s in r.stems if s.stem_id is not None]
        assert len(songs) == len(set(songs)) == 4, r.mix_id
        assert r.mode == "cross_song"
    used = {s.stem_id for r in recipes for s in r.stems}
    assert len(used) > 15  # the draws spread over the pool


def test_windows_overlap_active_regions(fixture_catalog: Path) -> None:
    pool = build_pool(fixture_catalog, FAST)
    rows = {r.stem_id: r for p in pool.pools.values() for r in p.rows}
    for r in plan_recipes(fixture_catalog, n=60, seed=5, cfg=FAST, seconds=2.0, pool=pool):
        for s in r.stems:
            row = rows[s.stem_id]
            span = r.duration_s * s.stretch_rate
            assert 0.0 <= s.offset_s <= max(0.0, row.duration_s - span) + 1e-9
            if row.duration_s > span:
                assert any(a < s.offset_s + span and b > s.offset_s for a, b in row.active), (s.stem_id, s.offset_s)
    # the fixture's silent vocals (Zeppelin) are never used
    assert pool.pools["vocals"].rows and all(r.silence_ratio < 1.0 for r in pool.pools["vocals"].rows)


def test_silent_prob_one_gives_silent_target(fixture_catalog: Path) -> None:
    cfg = FAST.model_copy(update={"silent_prob": {"vocals": 1.0}})
    table = StemTable.from_catalog(fixture_catalog)
    for r in plan_recipes(fixture_catalog, n=5, seed=0, cfg=cfg, seconds=1.0):
        assert r.stems[0].target == "vocals" and r.stems[0].stem_id is None
        out = render_recipe(r, table, cfg)
        assert not out.stems[0].any() and out.stems[1:].any()


def test_loudness_calibrated_levels_follow_the_real_multitracks(fixture_catalog: Path) -> None:
    cfg = FAST.model_copy(update={"augment": {}, "levels": FAST.levels.model_copy(update={"spread_lu": 1.0})})
    pool = build_pool(fixture_catalog, cfg)
    table = StemTable.from_catalog(fixture_catalog)
    rel: dict[str, list[float]] = {t: [] for t in cfg.targets}
    mix_err = []
    for r in plan_recipes(fixture_catalog, n=30, seed=11, cfg=cfg, seconds=3.0, pool=pool):
        out = render_recipe(r, table, cfg)
        m = integrated_loudness(out.mixture, r.sample_rate)
        mix_err.append(m - r.mix_target_lufs - out.clip_scale_db)
        for t, s in zip(r.targets, out.stems, strict=True):
            rel[t].append(integrated_loudness(s, r.sample_rate) - m)
    for t in cfg.targets:
        mean, _std, n_songs = pool.rel_lufs[t]
        assert n_songs >= 3, t  # measured on the fixture multitracks, not the fallback
        assert abs(np.mean(rel[t]) - mean) < 1.0, (t, np.mean(rel[t]), mean)
    assert abs(np.median(mix_err)) < 1.0


@pytest.mark.ffmpeg
def test_rendered_set_opens_with_musdb(fixture_catalog: Path, tmp_path: Path) -> None:
    musdb = import_or_skip("musdb")

    build_remix(fixture_catalog, tmp_path / "m", n=3, seed=0, cfg=FAST, seconds=1.0)
    db = musdb.DB(root=str(tmp_path / "m"), is_wav=True, subsets="train")
    assert len(db) == 3
    track = db[0]
    assert track.audio.shape == (44100, 2)
    np.testing.assert_allclose(sum(track.targets[t].audio for t in ("vocals", "drums", "bass", "other")),
                               track.audio, atol=1e-6)


def test_recipe_row_round_trip(fixture_catalog: Path) -> None:
    cfg = FAST.model_copy(update={"augment": {"vocals": {"pitch": {"min_semitones": -1, "max_semitones": 1, "p": 1},
                                                         "spectral_filter": {"p": 1}}}})
    r = plan_recipes(fixture_catalog, n=1, seed=2, cfg=cfg, seconds=1.0)[0]
    back = Recipe.from_record(r.to_record())
    assert back == r and back.mix_id == r.mix_id
    assert r.stems[0].augment["pitch_semitones"] != 0.0


def test_pitch_recipe_rerenders_bit_exact(fixture_catalog: Path) -> None:
    cfg = FAST.model_copy(update={"augment": {"bass": {"pitch": {"min_semitones": 1, "max_semitones": 2, "p": 1},
                                                       "stretch": {"min_rate": 0.9, "max_rate": 1.1, "p": 1}}}})
    table = StemTable.from_catalog(fixture_catalog)
    r = plan_recipes(fixture_catalog, n=1, seed=4, cfg=cfg, seconds=1.0)[0]
    a, b = render_recipe(r, table, cfg), render_recipe(Recipe.from_record(r.to_record()), table, cfg)
    np.testing.assert_array_equal(a.stems, b.stems)
    assert a.stems.shape == (4, 2, 44100)


@pytest.mark.parametrize(("update", "word"), [
    ({"targets": ("vocals", "drums", "bass", "piano")}, "remix.targets"),
    ({"augment": {"vocals": {"pitchh": {"p": 1}}}}, "pitchh"),
    ({"augment": {"vocals": {"pitch": {"min_semitones": 3, "max_semitones": 1}}}}, "min_semitones"),
])
def test_invalid_configs_name_the_key(fixture_catalog: Path, update: dict, word: str) -> None:
    cfg = RemixConfig().model_copy(update=update)
    with pytest.raises(ConfigError, match=word):
        plan_recipes(fixture_catalog, n=1, seed=0, cfg=cfg)


def test_coherent_mode_rebuilds_the_real_mixture(fixture_catalog: Path) -> None:
    cfg = FAST.model_copy(update={"mode": "coherent", "augment": {}})
    table = StemTable.from_catalog(fixture_catalog)
    for r in plan_recipes(fixture_catalog, n=4, seed=0, cfg=cfg, seconds=2.0):
        assert r.mode == "coherent"
        assert len({s.song for s in r.stems}) == 1 and len({s.offset_s for s in r.stems}) == 1
        out = render_recipe(r, table, cfg)
        song, off = r.stems[0].song, r.stems[0].offset_s
        real, sr = audio.read(ROOT / "tests" / "data" / "musdb" / "train" / song / "mixture.wav",
                              start=int(round(off * 44100)), frames=r.frames)
        # the fixture mixture is the sum of its stems within 1-3 LSB of 16-bit rounding
        assert np.max(np.abs(out.mixture - real)) <= 4 / 32768


def test_mixed_mode_uses_both(fixture_catalog: Path) -> None:
    cfg = FAST.model_copy(update={"mode": "mixed", "coherent_weight": 0.5})
    modes = [r.mode for r in plan_recipes(fixture_catalog, n=40, seed=0, cfg=cfg, seconds=1.0)]
    assert 8 <= modes.count("coherent") <= 32 and "cross_song" in modes


def test_five_target_set_with_keys(fixture_catalog: Path, tmp_path: Path) -> None:
    cfg = FAST.model_copy(update={"targets": ("vocals", "drums", "bass", "keys", "other"), "kind_map": {},
                                  "augment": {}})
    build_remix(fixture_catalog, tmp_path / "five", n=3, seed=0, cfg=cfg, seconds=1.0)
    rec = pd.read_parquet(tmp_path / "five" / "recipes.parquet")
    assert set(rec["keys_kind"]) == {"keys"}
    for mix_id in rec["mix_id"]:
        names = sorted(p.stem for p in (tmp_path / "five" / "train" / mix_id).iterdir())
        assert names == ["bass", "drums", "keys", "mixture", "other", "vocals"]


def test_clip_prevention_scales_all_stems_alike_and_never_clips(fixture_catalog: Path) -> None:
    """A mixture planned far too loud (0 LUFS) is scaled down as a whole: every stem and the mixture stay under
    the limit, so quantisation never clips a stem, and the relative levels are kept."""
    from augment.render import CLIP_LIMIT

    loud = FAST.model_copy(update={"augment": {}, "levels": FAST.levels.model_copy(update={"mix_lufs": (0.0, 0.0)})})
    table = StemTable.from_catalog(fixture_catalog)
    for r in plan_recipes(fixture_catalog, n=5, seed=2, cfg=loud, seconds=2.0):
        out = render_recipe(r, table, loud)
        assert out.clip_scale_db < -3.0
        assert np.max(np.abs(out.stems)) <= CLIP_LIMIT + 1 / 32768
        assert np.max(np.abs(out.mixture)) <= CLIP_LIMIT + 4 / 32768
        quiet = render_recipe(dataclasses.replace(r, subtype="FLOAT"), table, loud)
        assert not np.array_equal(quiet.stems, out.stems)
        # the same recipe in float: stems differ from the 16-bit render by rounding only (no clipped samples)
        assert np.max(np.abs(quiet.stems - out.stems)) <= 0.5 / 32768 + 1e-7


def test_fill_check_predicts_the_silence_padding_renders(fixture_catalog: Path) -> None:
    """Mixtures longer than the stems: the predicted silent share is the rendered mixtures' silent tail."""
    from augment.fill import fill_check

    pool = build_pool(fixture_catalog, FAST)
    recipes = plan_recipes(fixture_catalog, n=6, seed=2, cfg=FAST, seconds=20.0, pool=pool)
    check = fill_check(pool, recipes, short=FAST.short)
    table = StemTable.from_catalog(fixture_catalog)
    tails = []
    for r in recipes:
        mix = render_recipe(r, table, FAST).mixture
        last = int(np.flatnonzero(np.abs(mix).max(axis=0) > 0)[-1]) + 1
        tails.append(1.0 - last / mix.shape[1])
    assert 0.5 < check.silent_share < 0.9
    assert abs(float(np.mean(tails)) - check.silent_share) < 0.02, (tails, check)
    assert check.short_overall == 1.0 and f"about {100 * check.silent_share:.0f}% of" in check.warning()
    short = plan_recipes(fixture_catalog, n=6, seed=2, cfg=FAST, seconds=2.0, pool=pool)
    assert fill_check(pool, short, short="pad").warning() is None
    looped = FAST.model_copy(update={"short": "loop"})
    assert fill_check(pool, plan_recipes(fixture_catalog, n=6, seed=2, cfg=looped, seconds=20.0, pool=pool),
                      short="loop").warning() is None


def test_valid_split_is_a_folder_that_musdb_split_valid_does_not_read(fixture_catalog: Path, tmp_path: Path) -> None:
    """README 'Interoperability': `valid/` is a folder (what Open-Unmix's and Demucs's folder loaders read); musdb's
    split='valid' is its fixed list of MUSDB track names, so it finds none of a remix set's mixtures."""
    musdb = import_or_skip("musdb")

    cfg = FAST.model_copy(update={"valid_fraction": 0.5})
    build_remix(fixture_catalog, tmp_path / "m", n=8, seed=4, cfg=cfg, seconds=1.0)
    train = sorted(p.name for p in (tmp_path / "m" / "train").iterdir())
    valid = sorted(p.name for p in (tmp_path / "m" / "valid").iterdir())
    assert train and valid and len(train) + len(valid) == 8
    assert len(musdb.DB(root=str(tmp_path / "m"), is_wav=True, subsets="train", split="valid")) == 0
    assert sorted(t.name for t in musdb.DB(root=str(tmp_path / "m"), is_wav=True, subsets="train")) == train
