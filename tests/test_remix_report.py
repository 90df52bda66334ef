"""The remix report's set facts, levels measured on the rendered files, boosted-stem flags, the silent-targets
chart and the collapsed constant parameters, on sets built by the remix engine from the fixtures; the pages open in
headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from augment.build import build_remix
from augment.config import RemixConfig
from augment.report import markdown_summary, remix_report
from augment.report.rendered import sample_rows, stem_gain_db
from stemdb.catalog import Catalog
from stemdb.measure import integrated_loudness
from tests.browser import Chromium, chromium_binary
from tests.test_report import check_page, load_json_strict

TARGETS = ["vocals", "drums", "bass", "other"]


@pytest.fixture(scope="module")
def sets(fixture_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict, Path]]:
    """Two rendered sets and their reports: ``silent`` (vocals silent half the time, 6 x 2 s, mono 32 kHz FLOAT),
    ``plain`` (the built-in defaults: no silent targets, 5 x 2 s)."""
    root = tmp_path_factory.mktemp("remix_report")
    cfgs = {"silent": RemixConfig(seconds=2.0, silent_prob={"vocals": 0.5}, sample_rate=32000, channels=1,
                                  subtype="FLOAT"),
            "plain": RemixConfig(seconds=2.0)}
    out = {}
    for name, cfg in cfgs.items():
        folder = root / name
        build_remix(fixture_catalog, folder, n=6 if name == "silent" else 5, seed=11, cfg=cfg)
        stats = remix_report(folder, root / f"{name}.html", catalog=fixture_catalog)
        out[name] = (folder, stats, root / f"{name}.html")
    return out


def test_set_facts_match_the_recipes_and_the_catalogue(sets: dict, fixture_catalog: Path) -> None:
    folder, stats, page = sets["silent"]
    assert load_json_strict(page.with_suffix(".json")) == stats
    df = pd.read_parquet(folder / "recipes.parquet")
    f = stats["set"]
    assert f["seeds"] == [11] and f["sample_rates"] == [32000] and f["channels"] == [1] and f["subtypes"] == ["FLOAT"]
    assert f["config_fingerprints"] == sorted(set(df["config_fingerprint"])) and len(f["config_fingerprints"]) == 1
    live = Catalog.open(fixture_catalog).stems().drop_duplicates("stem_id").set_index("stem_id")
    used = pd.concat([df[f"{t}_stem_id"].dropna() for t in TARGETS])
    rates, chans = live.loc[used, "sample_rate"].to_numpy(), live.loc[used, "channels"].to_numpy()
    assert f["reshaped"]["resampled"]["uses"] == int((rates != 32000).sum()) > 0  # no fixture is at 32 kHz
    assert f["reshaped"]["downmixed"]["uses"] == int((chans > 1).sum()) > 0
    assert f["reshaped"]["upmixed"]["uses"] == 0  # mono output: nothing has fewer channels
    text = page.read_text()
    assert f"Seed 11 · config {f['config_fingerprints'][0]} · 32000 Hz, 1 ch, FLOAT." in markdown_summary(stats)
    for word in ("The set", f["config_fingerprints"][0], "32000", "FLOAT",
                 f"{f['reshaped']['resampled']['uses']:,} uses of"):
        assert word in text, word


def test_levels_are_measured_on_the_written_files(sets: dict) -> None:
    """The report's measured levels equal an independent read (soundfile) and loudness of the same files."""
    folder, stats, _ = sets["plain"]
    df = pd.read_parquet(folder / "recipes.parquet")
    r = stats["rendered_levels"]
    assert r["mixtures"] == len(df) == 5 and r["missing"] == 0 and sample_rows(5) == [0, 1, 2, 3, 4]
    for t in TARGETS:
        mine = []
        for _, row in df.iterrows():
            d = folder / row["split"] / row["mix_id"]
            (mix, sr), (stem, _) = sf.read(d / "mixture.wav", always_2d=True), sf.read(d / f"{t}.wav", always_2d=True)
            mine.append(integrated_loudness(stem.T.astype(np.float32), sr)
                        - integrated_loudness(mix.T.astype(np.float32), sr))
        got = r["by_target"][t]
        assert got["measured"]["median"] == pytest.approx(float(np.median(mine)), abs=1e-6)
        assert got["planned"]["median"] == pytest.approx(float(df[f"{t}_rel_lufs"].median()), abs=1e-9)
        # the renderer does what the planner drew, to within a couple of LU (window loudness vs whole stem)
        assert abs(got["diff_median_lu"]) < 2.0


def test_stems_boosted_over_12_db_are_flagged(sets: dict, fixture_catalog: Path, tmp_path: Path) -> None:
    folder, stats, _ = sets["plain"]
    df = pd.read_parquet(folder / "recipes.parquet")
    expect = sum(int((stem_gain_db(df, t)[df[f"{t}_stem_id"].notna()] > 12.0).sum()) for t in TARGETS)
    assert stats["boosts"]["count"] == expect
    # a copy of the set with one stem's calibrated level raised to +20 dB: flagged, named, and noticed
    shutil.copytree(folder, tmp_path / "set")
    df.loc[2, "bass_level_db"] = 20.0
    df.loc[2, "bass_gain_db"] = 1.5
    df.to_parquet(tmp_path / "set" / "recipes.parquet", index=False)
    s = remix_report(tmp_path / "set", tmp_path / "b.html", catalog=fixture_catalog)
    assert s["boosts"]["count"] == expect + 1 and s["boosts"]["by_target"]["bass"] >= 1
    case = next(c for c in s["boosts"]["cases"] if c["mix_id"] == df.loc[2, "mix_id"] and c["target"] == "bass")
    assert case["gain_db"] == pytest.approx(21.5 + float(df.loc[2].get("bass_loudness_gain_db") or 0.0))
    live = Catalog.open(fixture_catalog).stems()
    assert case["stem"] == live.set_index("stem_id").loc[df.loc[2, "bass_stem_id"], "key"]
    text = (tmp_path / "b.html").read_text()
    assert "boosted by more than +12 dB" in text and "+21.5" in text
    assert f"**{expect + 1} stem uses boosted by more than +12 dB.**" in markdown_summary(s)


def test_silent_chart_only_when_a_target_is_silent(sets: dict) -> None:
    _, stats, page = sets["plain"]
    assert all(v == 0 for v in stats["silent_share_by_target"].values())
    text = page.read_text()
    assert "No target is silent in any mixture" in text and "bar chart of the share of silent targets" not in text
    _, stats, page = sets["silent"]
    assert stats["silent_share_by_target"]["vocals"] > 0
    assert "bar chart of the share of silent targets" in page.read_text()


def test_constant_parameters_are_one_line(sets: dict) -> None:
    _, stats, page = sets["plain"]
    text = page.read_text()
    constant = [p for p, d in stats["parameters"]["drums"].items() if all(
        stats["parameters"][t][p]["constant"] for t in TARGETS)]
    assert {"pitch_semitones", "stretch_rate", "gain_db"} <= set(constant)
    table = text[text.index("<caption>Parameters"):]
    table = table[:table.index("</table>")]
    assert "pitch_semitones" not in table and "stretch_rate" not in table and "channel_swap" in table
    assert "pitch_semitones = 0.00 (all targets)" in text and "stretch_rate = 1.00 (all targets)" in text


@pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.browser
@pytest.mark.parametrize(("name", "min_images"), [("silent", 7), ("plain", 6)])
def test_report_pages_open_in_chromium(sets: dict, name: str, min_images: int, tmp_path: Path) -> None:
    page = sets[name][2]
    with Chromium(tmp_path / "profile") as browser:
        check_page(browser, page, tmp_path / f"{name}.png", min_images=min_images)
        text = browser.load(page).text
    assert "Levels on the rendered audio" in text and "The set" in text


def test_no_axis_label_or_title_is_cut_off(sets: dict, fixture_catalog: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Every title and axis label of every figure of both reports lies inside its figure (a label longer than
    its axis used to run off the image)."""
    import importlib

    from stemdb.report import catalog_report
    from stemdb.report.html import to_plot

    outside: list[str] = []
    checked = [0]

    def checking_to_plot(fig, alt: str, caption: str = ""):  # noqa: ANN001, ANN202
        fig.canvas.draw()
        renderer, box = fig.canvas.get_renderer(), fig.bbox
        for ax in fig.axes:
            for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
                if ax.get_visible() and text.get_text():
                    e = text.get_window_extent(renderer)
                    checked[0] += 1
                    if e.x0 < -0.5 or e.y0 < -0.5 or e.x1 > box.x1 + 0.5 or e.y1 > box.y1 + 0.5:
                        outside.append(f"{alt}: {text.get_text()!r}")
        return to_plot(fig, alt, caption)

    for name in ("augment.report.page", "augment.report.sections", "stemdb.report.catalog_report"):
        monkeypatch.setattr(importlib.import_module(name), "to_plot", checking_to_plot)
    catalog_report(fixture_catalog, tmp_path / "catalog.html")
    for name in ("silent", "plain"):
        remix_report(sets[name][0], tmp_path / f"{name}.html", catalog=fixture_catalog)
    assert checked[0] > 40 and outside == [], outside
