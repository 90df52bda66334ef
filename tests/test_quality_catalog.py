"""The quality measures as catalogue columns: filled at ingest, near-duplicates marked, older rows re-measured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from stemdb.catalog import SCHEMA_VERSION, Catalog
from stemdb.config import IngestConfig, SourceConfig, StemsLayout
from stemdb.ingest import ingest_sources
from stemdb.quality import Fingerprint
from stemdb.quality.columns import NEAR_DUPLICATE_FLAG, QUALITY_COLUMNS

from .conftest import STEMS

FAST = IngestConfig(tempo=False, workers=1)
ORIGINAL = "vocals/csd_en001b.wav"


def _mp3_copy(src: Path, dst: Path, *, trim_s: float, gain_db: float) -> None:
    """A re-encoded download of ``src``: trimmed at the start, gain-changed, MP3 128 kbps (libsndfile/LAME)."""
    x, sr = sf.read(src, dtype="float32", always_2d=True)
    x = x[int(trim_s * sr):] * np.float32(10 ** (gain_db / 20))
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, x, sr, format="MP3", subtype="MPEG_LAYER_III", bitrate_mode="CONSTANT",
             compression_level=(320 - 128) / 288)


def _library(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    for kind in ("vocals", "bass", "drums"):
        shutil.copytree(STEMS / kind, root / kind)
    _mp3_copy(STEMS / ORIGINAL, root / "vocals" / "csd_en001b (site 2).mp3", trim_s=1.5, gain_db=-4.0)
    return root


def test_ingest_fills_the_quality_columns_and_marks_near_duplicates(tmp_path: Path) -> None:
    root = _library(tmp_path)
    src = [SourceConfig(name="lib", root=root, layout=StemsLayout())]
    cat = tmp_path / "cat"
    report = ingest_sources(src, cat, cfg=FAST)
    assert (report.measured, report.duplicates) == (11, 1)
    df = Catalog.open(cat).stems(include_duplicates=True).set_index("path")
    assert df[list(QUALITY_COLUMNS)].drop(columns=["stereo_difference_db"]).notna().all().all()
    assert (df["bandwidth_hz"] > 3000).all() and df["key_confidence"].between(0, 1).all()
    assert df["musical_key"].str.fullmatch(r"[A-G]#? (major|minor)").all()
    assert all(Fingerprint.from_bytes(b).duration_s > 0 for b in df["fingerprint"])
    copy = df.loc["vocals/csd_en001b (site 2).mp3"]
    # the lossless original is kept, the lossy copy points at it
    assert copy["duplicate_of"] == f"lib:{ORIGINAL}" and NEAR_DUPLICATE_FLAG in copy["flags"]
    assert (copy["codec"], bool(copy["lossy"])) == ("mp3", True)
    assert copy["bandwidth_hz"] < df.loc[ORIGINAL, "bandwidth_hz"]
    others = df.drop(index="vocals/csd_en001b (site 2).mp3")
    assert others["duplicate_of"].isna().all()
    assert not any(NEAR_DUPLICATE_FLAG in f for f in others["flags"])
    assert "vocals/csd_en001b (site 2).mp3" not in set(Catalog.open(cat).stems()["path"])  # out of remixing
    again = ingest_sources(src, cat, cfg=FAST)
    assert (again.measured, again.skipped, again.duplicates) == (0, 11, 1)
    # the original gone: the copy is a stem of its own again
    (root / ORIGINAL).unlink()
    ingest_sources(src, cat, cfg=FAST)
    row = Catalog.open(cat).stems().set_index("path").loc["vocals/csd_en001b (site 2).mp3"]
    assert pd.isna(row["duplicate_of"]) and NEAR_DUPLICATE_FLAG not in row["flags"]


def test_rows_of_an_older_schema_are_measured_again(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    shutil.copytree(STEMS / "bass", root / "bass")
    src = [SourceConfig(name="lib", root=root, layout=StemsLayout())]
    cat = tmp_path / "cat"
    ingest_sources(src, cat, cfg=FAST)
    before = Catalog.open(cat).stems()
    for part in (cat / "stems").glob("part-*.parquet"):  # as version 2 wrote it: no quality columns
        t = pq.read_table(part).drop_columns([*QUALITY_COLUMNS, "provenance"])
        t = t.set_column(t.schema.get_field_index("schema_version"), "schema_version",
                         pa.array([2] * t.num_rows, pa.int16()))
        pq.write_table(t, part)
    meta = json.loads((cat / "_catalog.json").read_text())
    (cat / "_catalog.json").write_text(json.dumps({**meta, "schema_version": 2}))
    old = Catalog.open(cat).stems()
    assert old["bandwidth_hz"].isna().all() and (old["schema_version"] == 2).all()
    again = ingest_sources(src, cat, cfg=FAST)
    assert (again.measured, again.skipped) == (3, 0)
    now = Catalog.open(cat).stems()
    assert (now["schema_version"] == SCHEMA_VERSION).all() and now["bandwidth_hz"].notna().all()
    np.testing.assert_allclose(now["bandwidth_hz"], before["bandwidth_hz"])
    assert ingest_sources(src, cat, cfg=FAST).skipped == 3


def test_catalogue_report_shows_the_quality_measures(tmp_path: Path) -> None:
    from stemdb.report import catalog_report

    root = tmp_path / "lib"
    shutil.copytree(STEMS / "vocals", root / "vocals")
    _mp3_copy(STEMS / ORIGINAL, root / "vocals" / "csd_en001b (site 2).mp3", trim_s=1.0, gain_db=0.0)
    (root / "bass").mkdir()
    x, sr = sf.read(STEMS / "bass" / "musicdelta_britpop_electric_bass.wav", dtype="float32")
    sf.write(root / "bass" / "britpop_bass_64k.mp3", x, sr, format="MP3", subtype="MPEG_LAYER_III",
             bitrate_mode="CONSTANT", compression_level=(320 - 64) / 288)
    cat = tmp_path / "cat"
    ingest_sources([SourceConfig(name="lib", root=root, layout=StemsLayout())], cat, cfg=FAST)
    stats = catalog_report(cat, tmp_path / "report.html")
    q = stats["quality"]
    live = Catalog.open(cat).stems()
    assert len(live) == 5 and (q["measured"], q["unmeasured"]) == (5, 0)
    assert q["lossy_by_kind"] == {"vocals": 0, "bass": 1}
    assert q["worst_bleed"][0]["key"] == live.loc[live["bleed"].idxmax(), "key"]
    assert q["narrowest"][0]["key"] == live.loc[live["bandwidth_hz"].idxmin(), "key"]
    assert [r["bandwidth_hz"] for r in q["narrowest"]] == sorted(live["bandwidth_hz"])
    mp3 = next(r for r in q["narrowest"] if r["key"] == "lib:bass/britpop_bass_64k.mp3")
    assert mp3["codec"] == "mp3" and mp3["bitrate_kbps"] == pytest.approx(64, rel=0.05)
    assert sum(q["keys"].values()) == 5 and q["fake_stereo"] == []
    assert stats["duplicates"]["groups"] == [{"stem_id": stats["duplicates"]["groups"][0]["stem_id"],
                                              "canonical": f"lib:{ORIGINAL}",
                                              "copies": ["lib:vocals/csd_en001b (site 2).mp3"]}]
    page = (tmp_path / "report.html").read_text()
    assert "Stem quality" in page and "Narrowest bandwidth" in page and "britpop_bass_64k.mp3" in page
