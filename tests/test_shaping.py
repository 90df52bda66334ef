"""The one audio-shaping module (channel rule, pad/trim, resampling) and its use by the renderer's two paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from augment.config import RemixConfig
from augment.recipe import Recipe, StemPlan
from augment.render import StemSource, StemTable, read_window, render_stem
from stemdb import audio
from stemdb.shaping import channel_source, fit_channels, fit_length, resample

from .conftest import MUSDB

ROCK_DRUMS = MUSDB / "train" / "Music Delta - Rock" / "drums.wav"


def test_the_channel_rule() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert fit_channels(a, 3) is a
    np.testing.assert_array_equal(fit_channels(a, 1), a.mean(axis=0, keepdims=True))
    assert fit_channels(a, 1).dtype == np.float32
    np.testing.assert_array_equal(fit_channels(a, 2), a[:2])  # more channels than asked: the first are kept
    np.testing.assert_array_equal(fit_channels(a[:1], 3), np.repeat(a[:1], 3, axis=0))
    with pytest.raises(ValueError, match="cannot map 2 audio channels to 3"):
        fit_channels(a[:2], 3)
    with pytest.raises(ValueError, match="channels=0"):
        fit_channels(a, 0)


@pytest.mark.parametrize(("c_in", "c_out"), [(1, 1), (1, 2), (2, 1), (2, 2), (3, 2), (6, 2), (4, 1), (3, 3)])
def test_channel_by_channel_copies_follow_the_same_rule(c_in: int, c_out: int) -> None:
    a = np.random.default_rng(c_in * 10 + c_out).standard_normal((c_in, 50)).astype(np.float32)
    src = channel_source(c_in, c_out)
    rows = fit_channels(a, c_out)
    if src is None:
        assert c_out == 1 < c_in
        np.testing.assert_allclose(rows[0], a.mean(axis=0), rtol=1e-6)
    else:
        np.testing.assert_array_equal(rows, a[src])


def test_fit_length_pads_and_cuts_keeping_the_dtype() -> None:
    a = np.ones((2, 5), dtype=np.float64)
    assert fit_length(a, 5) is a
    cut = fit_length(a, 3)
    assert cut.shape == (2, 3) and cut.flags.c_contiguous and cut.dtype == np.float64
    padded = fit_length(a, 8)
    assert padded.shape == (2, 8) and padded.dtype == np.float64
    np.testing.assert_array_equal(padded[:, 5:], 0.0)
    np.testing.assert_array_equal(fit_length(np.ones((3, 2, 4), np.float32), 6)[..., 4:], 0.0)


def test_resample_changes_the_rate_and_keeps_float32() -> None:
    a, sr = audio.read(ROCK_DRUMS, frames=44100)
    assert resample(a, sr, sr) is a
    b = resample(a, sr, 48000)
    assert b.dtype == np.float32 and b.flags.c_contiguous and abs(b.shape[1] - 48000) <= 1
    back = resample(b, 48000, sr)
    core = slice(2000, 40000)  # away from the edges
    assert np.sqrt(np.mean((back[:, core] - a[:, core]) ** 2)) < 1e-3 * np.sqrt(np.mean(a[:, core] ** 2)) + 1e-6


def test_the_renderer_fast_path_keeps_the_first_channels_of_a_multichannel_stem(tmp_path: Path) -> None:
    """A 3-channel 16-bit stem rendered to stereo: the fast path (one int16 read, a scaled copy per channel) and the
    general path (:func:`read_window`, through :func:`stemdb.shaping.fit_channels`) give the same two channels,
    the first two of the file. (The fast path used to copy channel 0 to both sides.)"""
    drums, sr = audio.read(ROCK_DRUMS, frames=sr_frames(1.0))
    three = np.stack([drums[0], drums[1], -drums[0]]) * np.float32(0.5)
    path = audio.write(tmp_path / "three.wav", three, sr, subtype="PCM_16")
    written, _ = audio.read(path)
    table = StemTable({"s3": StemSource(str(path), -1, sr, written.shape[1], 3, "PCM_16")})
    plan = StemPlan(target="drums", stem_id="s3", level_db=0.0, augment={})
    recipe = Recipe(index=0, seed=0, split="train", mode="cross_song", duration_s=0.5, sample_rate=sr, channels=2,
                    subtype="PCM_16", stems=(plan,))
    fast = render_stem(plan, recipe, table, RemixConfig(augment={}))
    general = read_window(table["s3"], 0.0, recipe.frames, sr, 2, loop=False)
    np.testing.assert_allclose(fast, general, atol=1e-7)
    np.testing.assert_allclose(fast, written[:2, : recipe.frames], atol=1e-7)
    assert not np.allclose(fast[0], fast[1])


def sr_frames(seconds: float) -> int:
    return int(seconds * 44100)
