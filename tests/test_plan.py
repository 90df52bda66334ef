"""The vectorised planner (issue 17): counter-based uniforms equal numpy's Philox, every recipe a pure function of
(seed, index) whatever block it is planned in, the ragged loudness helper equals the per-window one, and the
transforms' column draws equal their one-at-a-time draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from augment.config import load_project
from augment.pool import build_pool
from augment.remix import plan_block, plan_mixture
from augment.rng import TAG, philox4x64, seed_key, uniforms
from augment.transforms import TRANSFORMS, Gain, SpectralFilter
from stemdb.levels import window_lufs, windows_lufs

ROOT = Path(__file__).parent.parent
CFG = load_project(ROOT / "data.yaml").remix


def _numpy_philox_at(key: np.ndarray, counter: tuple[int, int, int, int]) -> np.random.Philox:
    """numpy's own Philox bit generator positioned so its next block is the one of ``counter`` (numpy increments
    the counter before computing a block, so it is set one below, with the borrow carried)."""
    c = [int(x) for x in counter]
    for j in range(4):  # c - 1 over four 64-bit words
        c[j] = (c[j] - 1) % 2**64
        if c[j] != 2**64 - 1:
            break
    bg = np.random.Philox(key=key)
    state = bg.state
    state["state"]["counter"] = np.array(c, dtype=np.uint64)
    state["buffer_pos"] = 4
    bg.state = state
    return bg


@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3])
@pytest.mark.parametrize("index", [0, 1, 12345, 2**33 + 1])
def test_uniforms_equal_numpys_philox_bit_for_bit(seed: int, index: int) -> None:
    key = seed_key(seed)
    ref = _numpy_philox_at(key, (0, index, TAG, 0))
    raw = ref.random_raw(8)  # blocks (0, index, TAG, 0) and (1, index, TAG, 0)
    ctr = np.array([[0, index, TAG, 0], [1, index, TAG, 0]], dtype=np.uint64)
    assert np.array_equal(philox4x64(ctr, key).ravel(), raw)
    want = np.random.Generator(_numpy_philox_at(key, (0, index, TAG, 0))).random(7)
    assert np.array_equal(uniforms(seed, np.array([index]), 7)[0], want)


def test_uniforms_rows_depend_on_the_index_alone() -> None:
    a = uniforms(3, np.arange(100), 37)
    b = uniforms(3, np.array([99, 5, 0]), 37)
    assert np.array_equal(b, a[[99, 5, 0]])
    assert np.array_equal(uniforms(3, np.arange(10), 10), a[:10, :10])  # more columns never change the first
    assert not np.array_equal(uniforms(4, np.arange(10), 10), a[:10, :10])
    assert a.min() >= 0.0 and a.max() < 1.0 and abs(a.mean() - 0.5) < 0.02
    with pytest.raises(ValueError, match="seed"):
        seed_key(-1)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=40, unique=True))
def test_a_recipe_is_the_same_in_any_block(fixture_pool, idx: list[int]) -> None:  # noqa: ANN001
    pool, cfg = fixture_pool
    block = plan_block(pool, cfg, seed=11, indices=idx)
    alone = plan_mixture(idx[0], seed=11, pool=pool, cfg=cfg)
    assert block.recipe(0) == alone
    rev = plan_block(pool, cfg, seed=11, indices=idx[::-1])
    assert list(rev.mix_ids[::-1]) == list(block.mix_ids)


@pytest.fixture(scope="module")
def fixture_pool(fixture_catalog: Path):  # noqa: ANN201
    return build_pool(fixture_catalog, CFG), CFG


def test_block_table_round_trips_to_the_same_recipes(fixture_pool) -> None:  # noqa: ANN001
    pool, cfg = fixture_pool
    block = plan_block(pool, cfg, seed=2, indices=range(64))
    t = block.table()
    assert t.num_rows == 64 and t.column("recipe_version").to_pylist() == [2] * 64
    from augment.recipe import Recipe

    again = [Recipe.from_record(r) for r in t.to_pylist()]
    assert again == block.recipes()
    assert [r.mix_id for r in again] == list(block.mix_ids)  # the hash survives the Parquet round trip


def test_windows_lufs_equals_window_lufs() -> None:
    rng = np.random.default_rng(0)
    profiles = [rng.uniform(1e-6, 1e-2, size=n) * (rng.random(n) > 0.2) for n in (3, 40, 61, 120, 7)]
    values = np.concatenate(profiles)
    lengths = np.array([p.size for p in profiles])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    k = rng.integers(0, len(profiles), size=200)
    start_s = rng.uniform(0, 8, size=200).round(1)
    dur = rng.uniform(0.2, 6, size=200).round(1)
    got = windows_lufs(values, starts[k], lengths[k], start_s, dur)
    want = np.array([window_lufs(profiles[j], s, d) for j, s, d in zip(k, start_s, dur, strict=True)])
    assert np.array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    assert fin.sum() > 50
    np.testing.assert_allclose(got[fin], want[fin], rtol=0, atol=1e-9)


def test_column_draws_follow_the_coin_and_the_ranges() -> None:
    u = np.random.default_rng(1).random((400, 2))
    cols = Gain(min_db=-4.0, max_db=2.0, p=0.3).draw_columns(u)
    on = u[:, 0] < 0.3
    assert 80 < on.sum() < 160
    np.testing.assert_array_equal(cols["gain_db"][~on], 0.0)
    np.testing.assert_allclose(cols["gain_db"][on], -4.0 + 6.0 * u[on, 1])
    flat = Gain(min_db=1.5, max_db=1.5, p=1.0).draw_columns(u)["gain_db"]
    assert np.all(flat == 1.5)  # a degenerate range gives exactly its value
    sf = SpectralFilter(min_gain_db=0.0, max_gain_db=0.0, p=1.0).draw_columns(np.random.default_rng(2).random((5, 4)))
    assert np.all(sf["filter_gain_db"] == 0.0) and np.all(sf["filter_freq_hz"] == 0.0)  # 0 dB is neutral
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        Gain().draw_columns(u[:, :1])


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_single_draw_is_row_zero_of_the_column_draw(name: str) -> None:
    t = TRANSFORMS[name](p=0.5)
    for seed in range(6):
        u = np.random.default_rng(seed).random((1, t.n_draws))
        one = t.draw(np.random.default_rng(seed)).to_record()
        cols = t.draw_columns(u)
        for key, v in cols.items():
            assert (one[key] is None and np.isnan(v[0])) or one[key] == v[0], (name, key, one[key], v[0])
