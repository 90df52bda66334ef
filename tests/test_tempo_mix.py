"""Tempo-aware mixing on a catalogue ingested with tempo and beat tracking on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from augment.config import RemixConfig, TempoConfig
from augment.recipe import Recipe
from augment.remix import plan_recipes
from augment.render import StemTable, render_recipe
from stemdb.config import IngestConfig
from stemdb.ingest import ingest_sources

from .conftest import fixture_sources


@pytest.fixture(scope="module")
def tempo_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tempo-cat")
    ingest_sources(fixture_sources(with_mp4=False), root, cfg=IngestConfig(tempo=True, workers=1))
    return root


def _cfg(max_rate_change: float) -> RemixConfig:
    return RemixConfig(augment={}, tempo=TempoConfig(enabled=True, max_rate_change=max_rate_change))


def test_tempo_aware_mixing_aligns_beats(tempo_catalog: Path) -> None:
    aligned = plan_recipes(tempo_catalog, n=40, seed=0, cfg=_cfg(0.15), seconds=4.0)
    unaligned = plan_recipes(tempo_catalog, n=40, seed=0, cfg=_cfg(1e-9), seconds=4.0)
    a = [r.beat_score for r in aligned if r.beat_score is not None]
    b = [r.beat_score for r in unaligned if r.beat_score is not None]
    assert len(a) >= 20 and len(b) >= 20
    assert np.mean(a) > np.mean(b) + 0.05, (np.mean(a), np.mean(b))  # 0.28 vs 0.18 on 60 mixtures
    for r in aligned:
        for s in r.stems:
            assert abs(s.stretch_rate - 1.0) <= 0.15 + 1e-9
    stretched = [s for r in aligned for s in r.stems if s.stretch_rate != 1.0]
    assert stretched, "some stems must have been stretched to the reference tempo"


def test_tempo_recipe_renders_and_rerenders_bit_exact(tempo_catalog: Path) -> None:
    cfg = _cfg(0.15)
    recipes = plan_recipes(tempo_catalog, n=20, seed=1, cfg=cfg, seconds=2.0)
    r = next(r for r in recipes if any(s.stretch_rate != 1.0 for s in r.stems))
    table = StemTable.from_catalog(tempo_catalog)
    a = render_recipe(r, table, cfg)
    b = render_recipe(Recipe.from_record(r.to_record()), table, cfg)
    assert a.stems.shape == (4, 2, 88200)
    np.testing.assert_array_equal(a.stems, b.stems)
    np.testing.assert_array_equal(a.mixture, b.mixture)
