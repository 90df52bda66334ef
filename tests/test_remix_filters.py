"""Remix quality filters (``remix.filters``): validation, and that each filter changes which stems a remix draws."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from augment.config import RemixConfig, remix_section
from augment.pool import build_pool
from augment.remix import plan_recipes
from stemdb.catalog import Catalog
from stemdb.config import IngestConfig, SourceConfig, StemsLayout, fingerprint_of
from stemdb.errors import ConfigError
from stemdb.ingest import ingest_sources

from .conftest import STEMS

LOSSY = "bass/country1_bass_64k.mp3"  # the only copy of that recording: lossy, narrow
NEAR = "vocals/csd_en001b (site 2).mp3"  # a re-encoded, trimmed copy of vocals/csd_en001b.wav


def _mp3(src: Path, dst: Path, kbps: int, trim_s: float = 0.0) -> None:
    x, sr = sf.read(src, dtype="float32", always_2d=True)
    sf.write(dst, x[int(trim_s * sr):], sr, format="MP3", subtype="MPEG_LAYER_III", bitrate_mode="CONSTANT",
             compression_level=(320 - kbps) / 288)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("filters")
    root = tmp / "lib"
    shutil.copytree(STEMS, root, ignore=shutil.ignore_patterns("*.md"))
    country = root / "bass" / "musicdelta_country1_electric_bass.wav"
    _mp3(country, root / LOSSY, 64)
    country.unlink()
    _mp3(root / "vocals" / "csd_en001b.wav", root / NEAR, 128, trim_s=1.0)
    cat = tmp / "cat"
    ingest_sources([SourceConfig(name="lib", root=root, layout=StemsLayout(kinds={"keys": "other"}))], cat,
                   cfg=IngestConfig(tempo=False, workers=1))
    return cat


def _pool_paths(cat: Path, cfg: RemixConfig) -> set[str]:
    pool = build_pool(cat, cfg)
    return {r.key.split(":", 1)[1] for t in cfg.targets for r in pool.pools[t].rows}


def _drawn(cat: Path, cfg: RemixConfig) -> set[str]:
    df = Catalog.open(cat).stems(include_duplicates=True).set_index("stem_id")
    recipes = plan_recipes(cat, n=80, seed=3, cfg=cfg, seconds=1.0)
    return {df.loc[s.stem_id, "path"] for r in recipes for s in r.stems if s.stem_id is not None}


def test_filters_change_which_stems_a_remix_draws(catalog: Path) -> None:
    df = Catalog.open(catalog).stems(include_duplicates=True).set_index("path")
    assert df.loc[NEAR, "duplicate_of"] == "lib:vocals/csd_en001b.wav"
    assert bool(df.loc[LOSSY, "lossy"]) and df.loc[LOSSY, "bandwidth_hz"] < 13000
    plain = RemixConfig()
    base = _pool_paths(catalog, plain)
    assert LOSSY in base and NEAR not in base and len(base) == 16
    assert LOSSY in _drawn(catalog, plain)

    no_lossy = RemixConfig(filters={"lossy": "exclude"})
    assert _pool_paths(catalog, no_lossy) == base - {LOSSY}
    assert LOSSY not in _drawn(catalog, no_lossy)

    wide = RemixConfig(filters={"min_bandwidth_hz": 15000})
    narrow = {p for p in base if df.loc[p, "bandwidth_hz"] < 15000}
    assert LOSSY in narrow and len(narrow) >= 3  # the 64 kbps bass and the band-limited fixture stems
    assert _pool_paths(catalog, wide) == base - narrow
    assert not _drawn(catalog, wide) & narrow

    vocals = sorted(p for p in base if p.startswith("vocals/"))
    limit = float(np.median([df.loc[p, "bleed"] for p in vocals]))
    clean = RemixConfig(filters={"max_bleed": {"vocals": limit}})
    bleedy = {p for p in vocals if df.loc[p, "bleed"] > limit}
    assert len(bleedy) == 2 and _pool_paths(catalog, clean) == base - bleedy

    keep_dups = RemixConfig(filters={"dedupe": False})
    assert _pool_paths(catalog, keep_dups) == base | {NEAR}
    assert NEAR in _drawn(catalog, keep_dups)


def test_filters_are_validated_naming_the_key() -> None:
    for bad, word in (({"lossy": "maybe"}, "remix.filters.lossy='maybe' is not allowed"),
                      ({"min_bandwidth_hz": -1}, "remix.filters.min_bandwidth_hz=-1"),
                      ({"max_bleed": "high"}, "remix.filters.max_bleed"),
                      ({"dedup": True}, "remix.filters.dedup: unknown key")):
        with pytest.raises(ConfigError, match=word.replace("(", r"\(").replace(".", r"\.")):
            remix_section({"filters": bad})


def test_default_filters_leave_the_config_fingerprint_unchanged() -> None:
    assert "filters" not in RemixConfig().model_dump(mode="json")
    assert fingerprint_of(RemixConfig(filters={"dedupe": True})) == fingerprint_of(RemixConfig())
    on = RemixConfig(filters={"lossy": "exclude"})
    assert on.model_dump(mode="json")["filters"]["lossy"] == "exclude"
    assert fingerprint_of(on) != fingerprint_of(RemixConfig())
    assert remix_section(on.model_dump(mode="json")) == on  # the dump loads back


def test_a_quality_filter_on_an_unmeasured_catalogue_says_to_ingest_again(catalog: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    old = tmp_path / "old"
    shutil.copytree(catalog, old)
    for part in (old / "stems").glob("part-*.parquet"):
        t = pq.read_table(part)
        i = t.schema.get_field_index("schema_version")
        pq.write_table(t.set_column(i, "schema_version", pa.array([2] * t.num_rows, pa.int16())), part)
    assert len(_pool_paths(old, RemixConfig(filters={"lossy": "exclude"}))) == 15  # facts every version has
    with pytest.raises(ConfigError, match="rerun `stemdb ingest`"):
        build_pool(old, RemixConfig(filters={"min_bandwidth_hz": 1000}))


def test_a_set_with_near_duplicates_kept_renders(catalog: Path, tmp_path: Path) -> None:
    """`filters.dedupe: false` put near-duplicates in the pool while the renderer's stem table left them out, so
    every recipe that drew one failed with "stem_id ... is not in the catalogue" (found by bench/stream.py)."""
    from augment.build import build_remix
    from augment.render import StemTable

    keep_dups = RemixConfig(filters={"dedupe": False})
    near = Catalog.open(catalog).stems(include_duplicates=True).set_index("path").loc[NEAR, "stem_id"]
    assert near in StemTable.from_catalog(catalog).sources
    recipes = plan_recipes(catalog, n=80, seed=3, cfg=keep_dups, seconds=1.0)
    assert any(s.stem_id == near for r in recipes for s in r.stems)
    summary = build_remix(catalog, tmp_path / "out", n=80, seed=3, cfg=keep_dups, seconds=1.0)
    assert summary.rendered == 80


def test_the_stem_cache_covers_near_duplicates(tmp_path: Path) -> None:
    """`stem_cache.fill` cached canonical rows only, so a set with `filters.dedupe: false` read every near-duplicate
    from its file (bench/stream.py: 0.8-0.9 ms of system time per mixture more than the cached stems)."""
    from stemdb import audio, stem_cache

    src = STEMS / "vocals" / "csd_en001b.wav"
    a, sr = audio.read(src)
    root = tmp_path / "lib" / "vocals"
    root.mkdir(parents=True)
    audio.write(root / "take.wav", a, sr)
    audio.write(root / "take-quieter.wav", a * np.float32(0.5), sr)
    cat = tmp_path / "cat"
    ingest_sources([SourceConfig(name="lib", root=tmp_path / "lib", layout=StemsLayout())], cat,
                   cfg=IngestConfig(tempo=False, workers=1))
    df = Catalog.open(cat).stems(include_duplicates=True).set_index("path")
    assert sorted(df["duplicate_of"].dropna()) in (["lib:vocals/take.wav"], ["lib:vocals/take-quieter.wav"])
    assert stem_cache.fill(cat) == 2
    assert set(df["stem_id"]) == stem_cache.cached_ids(cat)
