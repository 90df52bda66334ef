"""Dataset statistics reports (issue 5): every JSON number against a direct pandas computation, findings that name
their files, empty inputs, and the pages opened in headless Chromium.

Catalogues: the session ``fixture_catalog`` (all bundled fixtures), a "messy" one ingested here from copies of the
fixtures (one multitrack in both train and test, a renamed copy, two unreadable files), and empty ones. Remix sets:
a recipes table built with pandas exactly as docs/recipes.md specifies, and a tiny real set from
``augment.build.build_remix`` (4 mixtures x 2 s).
"""

from __future__ import annotations

import gc
import html
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from augment.config import RemixConfig
from augment.report import markdown_summary, remix_report
from stemdb.catalog import Catalog
from stemdb.config import IngestConfig, MusdbLayout, SourceConfig, StemsLayout
from stemdb.errors import CatalogError, StemdbError
from stemdb.report import catalog_report
from stemdb.report.catalog_report import reason_category
from stemdb.report.html import json_safe, summarize
from tests.browser import Chromium, chromium_binary
from tests.conftest import MUSDB, STEMS

TARGETS = ["vocals", "drums", "bass", "other"]
KIND_MAP = {"keys": "other"}
ROCK = "Music Delta - Rock"


# -- helpers -----------------------------------------------------------------------------------------------------
def assert_summary(summary: dict, values: pd.Series | np.ndarray) -> None:
    """A ``summarize`` dict equals pandas' own statistics of the finite values."""
    s = pd.Series(values, dtype="float64")
    s = s[np.isfinite(s)]
    assert summary["count"] == len(s)
    if len(s) == 0:
        assert all(summary[k] is None for k in ("min", "median", "mean", "max"))
        return
    expect = {"min": s.min(), "p10": s.quantile(0.1), "median": s.median(), "mean": s.mean(),
              "std": s.std(ddof=0), "p90": s.quantile(0.9), "max": s.max()}
    for k, v in expect.items():
        assert summary[k] == pytest.approx(float(v), rel=1e-9, abs=1e-12), k


def assert_histogram(hist: dict, values: pd.Series) -> None:
    """The histogram's counts are numpy's counts of the finite values on its own edges, and cover them all."""
    v = pd.Series(values, dtype="float64").dropna().to_numpy()
    v = v[np.isfinite(v)]
    if v.size == 0:
        assert hist == {"edges": [], "counts": []}
        return
    counts, _ = np.histogram(v, bins=np.asarray(hist["edges"]))
    assert hist["counts"] == counts.tolist()
    assert sum(hist["counts"]) == v.size


def load_json_strict(path: Path) -> dict:
    """Parse a report's JSON refusing NaN/Infinity."""
    def no_constants(c: str) -> None:
        raise AssertionError(f"{path}: non-finite constant {c} in JSON")

    return json.loads(path.read_text(), parse_constant=no_constants)


def by_dim(df: pd.DataFrame, col: str) -> tuple[dict, dict]:
    keys = df[col].fillna("(none)").astype(str)
    g = df.groupby(keys)["duration_s"]
    return g.size().to_dict(), (g.sum() / 3600.0).to_dict()


def real_rel_levels(live: pd.DataFrame) -> dict[str, pd.Series]:
    """Stem LUFS minus the mixture LUFS of the same (source, song), per kind, by a pandas merge."""
    mix = live[(live["kind"] == "mixture") & live["lufs"].notna()][["source", "song", "lufs"]]
    stems = live[(live["kind"] != "mixture") & live["lufs"].notna()]
    m = stems.merge(mix, on=["source", "song"], suffixes=("", "_mix"))
    return {k: g["lufs"] - g["lufs_mix"] for k, g in m.groupby("kind")}


# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="module")
def fixture_report(fixture_catalog: Path, outdir: Path) -> tuple[dict, Path, float]:
    t0 = time.perf_counter()
    stats = catalog_report(fixture_catalog, outdir / "catalog.html")
    return stats, outdir / "catalog.html", time.perf_counter() - t0


@pytest.fixture(scope="module")
def messy_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One multitrack copied into train *and* test (song and content leakage, duplicates), a loose vocal and a
    renamed copy of it (a duplicate), and two files that are not audio (rejects)."""
    from stemdb.ingest import ingest_sources

    root = tmp_path_factory.mktemp("messy")
    for split in ("train", "test"):
        d = root / "musdb" / split / ROCK
        d.mkdir(parents=True)
        for stem in ("mixture", "vocals", "bass"):
            shutil.copy(MUSDB / "train" / ROCK / f"{stem}.wav", d / f"{stem}.wav")
    (root / "stems" / "vocals").mkdir(parents=True)
    (root / "stems" / "bass").mkdir(parents=True)
    shutil.copy(STEMS / "vocals" / "csd_en001b.wav", root / "stems" / "vocals" / "take.wav")
    shutil.copy(STEMS / "vocals" / "csd_en001b.wav", root / "stems" / "vocals" / "take_copy.wav")
    (root / "stems" / "bass" / "noise.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    (root / "stems" / "bass" / "header_only.wav").write_bytes(b"RIFF")
    ingest_sources([SourceConfig(name="m", root=root / "musdb", layout=MusdbLayout()),
                    SourceConfig(name="s", root=root / "stems", layout=StemsLayout(), licence="CC BY 4.0")],
                   root / "catalog", cfg=IngestConfig(tempo=False, workers=1))
    return root / "catalog"


def live_figures() -> int:
    """Matplotlib Figure objects alive in this process (after a full garbage collection)."""
    from matplotlib.figure import Figure

    def is_figure(o: object) -> bool:
        try:
            return isinstance(o, Figure)
        except ReferenceError:  # a dead weakref.proxy left by other tests in the session
            return False

    gc.collect()
    return sum(is_figure(o) for o in gc.get_objects())


@pytest.fixture(scope="module")
def messy_report(messy_catalog: Path, outdir: Path) -> tuple[dict, Path, int, int]:
    """The messy catalogue's report, with the number of live matplotlib figures before and after it."""
    before = live_figures()
    stats = catalog_report(messy_catalog, outdir / "messy.html")
    return stats, outdir / "messy.html", before, live_figures()


def docs_recipes(catalog: Path, *, n: int = 30, seed: int = 7) -> pd.DataFrame:
    """A recipes table with exactly the columns and types of docs/recipes.md, drawn from the catalogue's stems.

    Vocals are silent in about a fifth of the mixtures (at least one), one mixture has no measured loudness,
    half the mixtures carry a beat score; stems are reused (the pool is small)."""
    rng = np.random.default_rng(seed)
    live = Catalog.open(catalog).stems()
    pool = live[(live["kind"] != "mixture") & (live["split"] == "train") & (live["silence_ratio"] < 1.0)].copy()
    pool["target"] = pool["kind"].map(lambda k: KIND_MAP.get(k, k))
    rows = []
    for i in range(n):
        mix_target = float(rng.uniform(-20.0, -12.0))
        mix_lufs = None if i == 3 else mix_target + float(rng.normal(0.0, 0.5))
        rec = {"mix_id": f"mix-{i:07d}-{i:08x}", "index": i, "seed": seed, "split": "valid" if i % 5 == 4 else "train",
               "mode": "coherent" if i % 7 == 0 else "cross_song", "duration_s": float(rng.choice([4.0, 6.0])),
               "sample_rate": 44100, "channels": 2, "targets": list(TARGETS), "mix_lufs": mix_lufs,
               "mix_peak_dbfs": float(rng.uniform(-6.0, -0.1)),
               "clip_scale_db": float(-rng.uniform(0, 3)) if i % 6 == 0 else 0.0, "mix_target_lufs": mix_target,
               "beat_score": float(rng.uniform()) if i % 2 else None, "catalog_fingerprint": "f" * 16,
               "config_fingerprint": "c" * 16}
        for t in TARGETS:
            silent = t == "vocals" and (i == 0 or rng.random() < 0.2)
            cand = pool[pool["target"] == t]
            row = None if silent else cand.iloc[int(rng.integers(len(cand)))]
            rel = float(rng.normal(-6.0, 2.0))
            rec.update({
                f"{t}_stem_id": None if silent else row["stem_id"], f"{t}_kind": None if silent else row["kind"],
                f"{t}_song": None if silent else row["song"],
                f"{t}_offset_s": 0.0 if silent else float(rng.uniform(0, 2)),
                f"{t}_loop": False if silent else bool(rng.random() < 0.3), f"{t}_rel_lufs": None if silent else rel,
                f"{t}_gain_db": 0.0 if silent else float(rng.uniform(-6, 6)),
                f"{t}_lufs": None if silent or mix_lufs is None else mix_lufs + rel + float(rng.normal(0, 0.3)),
                f"{t}_pitch_semitones": 0.0 if silent or t == "drums" else float(rng.uniform(-2, 2)),
                f"{t}_stretch_rate": 1.0 if silent else float(rng.uniform(0.9, 1.1)),
                f"{t}_channel_swap": False if silent else bool(rng.random() < 0.5),
                f"{t}_polarity": 1 if silent else int(rng.choice([-1, 1])),
                f"{t}_filter_freq_hz": float(rng.uniform(200, 8000)), f"{t}_filter_gain_db": float(rng.normal(0, 3)),
                f"{t}_filter_q": float(rng.uniform(0.5, 2)),
            })
        rows.append(rec)
    df = pd.DataFrame(rows)
    df = df.astype({"sample_rate": "int32", "channels": "int16", "index": "int64", "seed": "int64"})
    for t in TARGETS:
        df[f"{t}_polarity"] = df[f"{t}_polarity"].astype("int8")
    return df


@pytest.fixture(scope="module")
def docs_remix(fixture_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("docs_remix")
    df = docs_recipes(fixture_catalog)
    df.to_parquet(out / "recipes.parquet", index=False)
    return out, pd.read_parquet(out / "recipes.parquet")


@pytest.fixture(scope="module")
def docs_report(docs_remix: tuple[Path, pd.DataFrame], fixture_catalog: Path, outdir: Path) -> tuple[dict, Path]:
    stats = remix_report(docs_remix[0], outdir / "remix.html", catalog=fixture_catalog)
    return stats, outdir / "remix.html"


@pytest.fixture(scope="module")
def real_remix(fixture_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real remix set: 4 mixtures x 2 s planned and rendered by the remix engine (vocals silent half the time)."""
    from augment.build import build_remix

    out = tmp_path_factory.mktemp("real_remix")
    build_remix(fixture_catalog, out, n=4, seed=3, cfg=RemixConfig(seconds=2.0, silent_prob={"vocals": 0.5}))
    return out


@pytest.fixture(scope="module")
def real_report(real_remix: Path, fixture_catalog: Path, outdir: Path) -> tuple[dict, Path]:
    stats = remix_report(real_remix, outdir / "real.html", catalog=fixture_catalog)
    return stats, outdir / "real.html"


# -- catalogue report --------------------------------------------------------------------------------------------
def test_catalog_json_matches_pandas(fixture_report: tuple[dict, Path, float], fixture_catalog: Path) -> None:
    stats, page, _ = fixture_report
    assert load_json_strict(page.with_suffix(".json")) == stats
    live = Catalog.open(fixture_catalog).stems()
    assert len(live) > 30 and set(live["kind"]) >= {"vocals", "drums", "bass", "other", "keys", "mixture"}

    t = stats["totals"]
    assert t["files"] == len(live)
    assert t["hours"] == pytest.approx(live["duration_s"].sum() / 3600.0)
    assert t["songs"] == live["song"].nunique()
    assert t["bytes"] == live["bytes"].sum()
    # the five AAC streams of the .stem.mp4 fixture are near-duplicates of the HQ WAVs of their kinds
    every = Catalog.open(fixture_catalog).stems(include_duplicates=True)
    near = every[every["flags"].map(lambda f: "near_duplicate" in list(f))]
    assert t["rejects"] == 0 and t["duplicates"] == len(near) == 5 and set(near["source"]) == {"musdb-mp4"}
    for dim in ("kind", "source", "origin", "split", "licence"):
        files, hours = by_dim(live, dim)
        assert stats[f"files_by_{dim}"] == files, dim
        assert stats[f"hours_by_{dim}"] == pytest.approx(hours), dim

    stem_hours = live[live["kind"] != "mixture"].groupby("kind")["duration_s"].sum()
    assert stats["kind_share"] == pytest.approx((stem_hours / stem_hours.sum()).to_dict())
    assert stats["kind_ratio"] == pytest.approx((stem_hours / stem_hours.min()).to_dict())
    assert min(stats["kind_ratio"].values()) == pytest.approx(1.0)

    assert_summary(stats["duration_s"]["summary"], live["duration_s"])
    assert_histogram(stats["duration_s"]["histogram"], live["duration_s"])
    for kind, g in live.groupby("kind"):
        for col in ("lufs", "peak_dbfs", "rms_dbfs"):
            assert_summary(stats["levels_by_kind"][kind][col], g[col])
        assert_summary(stats["silence_ratio_by_kind"][kind], g["silence_ratio"])
        assert_summary(stats["clipping_ratio_by_kind"][kind], g["clipping_ratio"])
        assert stats["silent_files_by_kind"][kind] == int((g["silence_ratio"] >= 1).sum())
        assert stats["clipping_files_by_kind"][kind] == int((g["clipping_ratio"] > 0).sum())
        assert stats["unmeasured_loudness_by_kind"][kind] == int(g["lufs"].isna().sum())
    # Zeppelin's vocals are digital silence: no loudness, counted as silent, never NaN in the JSON
    assert stats["unmeasured_loudness_by_kind"]["vocals"] == 1
    assert stats["silent_files_by_kind"]["vocals"] == 1

    for col, key in (("sample_rate", "sample_rates"), ("channels", "channels")):
        g = live.groupby(col)["duration_s"]
        assert stats[key] == {str(k): {"files": int(g.size()[k]), "hours": pytest.approx(g.sum()[k] / 3600.0)}
                              for k in g.size().index}
    assert stats["sample_rates"]["48000"]["files"] == 1  # the 48 kHz keys excerpt
    assert stats["formats"] == (live["format"] + "/" + live["subtype"]).value_counts().to_dict()

    assert_summary(stats["tempo_bpm"]["summary"], live["tempo_bpm"])
    assert_histogram(stats["tempo_bpm"]["histogram"], live["tempo_bpm"])
    assert stats["tempo_bpm"]["missing"] == int(live["tempo_bpm"].isna().sum())
    assert all(e % 10 == 0 for e in stats["tempo_bpm"]["histogram"]["edges"])

    flags = live[["key", "flags"]].explode("flags").dropna()
    assert stats["flags"] == flags["flags"].value_counts().to_dict()
    assert stats["flagged_files"] == {f: sorted(g["key"]) for f, g in flags.groupby("flags")}
    assert "musdb:train/Music Delta - Zeppelin/vocals.wav" in stats["flagged_files"]["silent"]

    real = real_rel_levels(live)
    assert set(stats["multitrack_rel_lufs"]) == set(real) == {"vocals", "drums", "bass", "other"}
    for kind, v in real.items():
        assert_summary(stats["multitrack_rel_lufs"][kind], v)
    assert stats["multitrack_songs"] == live[live["kind"] == "mixture"][["source", "song"]].drop_duplicates().shape[0]
    assert stats["leakage"] == {"songs": [], "content": []}


def test_catalog_report_is_fast_and_self_contained(fixture_report: tuple[dict, Path, float]) -> None:
    stats, page, seconds = fixture_report
    assert seconds < 10.0, f"catalogue report took {seconds:.1f} s"
    text = page.read_text()
    assert text.count('<img src="data:image/png;base64,') >= 7
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    for kind in stats["files_by_kind"]:
        assert f"<td>{kind}</td>" in text


def test_catalog_findings_name_the_files(messy_catalog: Path, messy_report: tuple[dict, Path, int, int]) -> None:
    stats, page_path, _, _ = messy_report
    page = page_path.read_text()
    cat = Catalog.open(messy_catalog)
    every = cat.stems(include_duplicates=True, include_deleted=True)
    dups = every[every["duplicate_of"].notna() & ~every["deleted"]]
    assert stats["totals"]["duplicates"] == len(dups) == 4  # 3 musdb copies + 1 renamed vocal
    assert stats["totals"]["files"] == len(cat.stems())
    assert sorted(k for g in stats["duplicates"]["groups"] for k in g["copies"]) == sorted(dups["key"])
    assert {g["canonical"] for g in stats["duplicates"]["groups"]} == set(dups["duplicate_of"])
    assert any(g["copies"] == ["s:vocals/take_copy.wav"] and g["canonical"] == "s:vocals/take.wav"
               for g in stats["duplicates"]["groups"])

    (song,) = stats["leakage"]["songs"]
    assert song["song"] == ROCK and song["splits"] == ["test", "train"]
    assert song["files"] == sorted(every.loc[every["song"] == ROCK, "key"])
    content = stats["leakage"]["content"]
    assert len(content) == 3
    for f in content:
        assert f["splits"] == ["test", "train"]
        assert [k.split("/", 1)[0] for k in f["files"]] == ["m:test", "m:train"]

    rej = cat.rejects()
    assert stats["rejects"]["total"] == len(rej) == 2
    assert stats["rejects"]["by_reason"] == rej["reason"].map(reason_category).value_counts().to_dict()
    assert sorted(f["key"] for f in stats["rejects"]["files"]) == ["s:bass/header_only.wav", "s:bass/noise.wav"]
    assert stats["files_by_licence"] == by_dim(cat.stems(), "licence")[0]

    for key in [*dups["key"], *rej["key"], *every.loc[every["song"] == ROCK, "key"]]:
        assert html.escape(key) in page, key
    assert "Train/test leakage: 4 finding(s)" in page


def test_reason_category_groups_reasons_that_embed_paths_and_numbers() -> None:
    assert reason_category("not readable as audio (Error opening '/a/b.wav': Format not recognised.)") == \
        "not readable as audio"
    assert reason_category("truncated: header says 100 frames, decoded 50") == "truncated"
    assert reason_category("unreadable: ValueError: boom") == "unreadable"
    assert reason_category("bad sample rate 0") == "bad sample rate"
    assert reason_category("too many channels: 6 > max_channels 2") == "too many channels"
    assert reason_category("") == "unknown"


def test_empty_catalogue_says_so(tmp_path: Path) -> None:
    Catalog.create(tmp_path / "empty")
    stats = catalog_report(tmp_path / "empty", tmp_path / "empty.html")
    assert stats["empty"] is True
    assert stats["files_by_kind"] == {} and stats["hours_by_kind"] == {}
    assert stats["totals"]["files"] == 0 and stats["totals"]["hours"] == 0.0
    assert load_json_strict(tmp_path / "empty.json") == stats
    assert "The catalogue is empty" in (tmp_path / "empty.html").read_text()
    assert "The catalogue is empty" in markdown_summary(stats)


def test_catalogue_of_rejects_only_lists_them(tmp_path: Path) -> None:
    from stemdb.ingest import ingest_folder

    (tmp_path / "src" / "bass").mkdir(parents=True)
    (tmp_path / "src" / "bass" / "junk.wav").write_bytes(b"RIFF0000WAVEjunk")
    ingest_folder(tmp_path / "src", layout="stems", catalog=tmp_path / "cat", cfg=IngestConfig(tempo=False, workers=1))
    stats = catalog_report(tmp_path / "cat", tmp_path / "r.html")
    assert stats["empty"] is True and stats["rejects"]["total"] == 1
    text = (tmp_path / "r.html").read_text()
    assert "The catalogue is empty" in text and "bass/junk.wav" in text


def test_not_a_catalogue_raises(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no stemdb catalogue"):
        catalog_report(tmp_path, tmp_path / "x.html")
    with pytest.raises(StemdbError, match="recipes.parquet"):
        remix_report(tmp_path, tmp_path / "x.html")


# -- remix report ------------------------------------------------------------------------------------------------
def test_remix_json_matches_pandas(docs_remix: tuple[Path, pd.DataFrame], docs_report: tuple[dict, Path],
                                   fixture_catalog: Path) -> None:
    _, df = docs_remix
    stats, page = docs_report
    assert load_json_strict(page.with_suffix(".json")) == stats
    live = Catalog.open(fixture_catalog).stems()

    assert stats["targets"] == TARGETS
    assert stats["totals"] == {"mixtures": len(df), "hours": pytest.approx(df["duration_s"].sum() / 3600.0)}
    assert stats["mixtures_by_split"] == df["split"].value_counts().to_dict()
    assert stats["hours_by_split"] == pytest.approx((df.groupby("split")["duration_s"].sum() / 3600.0).to_dict())
    assert stats["mixtures_by_mode"] == df["mode"].value_counts().to_dict()
    for t in TARGETS:
        used = df[df[f"{t}_stem_id"].notna()]
        assert stats["files_by_kind"][t] == len(used)
        assert stats["hours_by_kind"][t] == pytest.approx(used["duration_s"].sum() / 3600.0)
        assert stats["silent_share_by_target"][t] == pytest.approx(df[f"{t}_stem_id"].isna().mean())
        assert stats["kinds_by_target"][t] == used[f"{t}_kind"].value_counts().to_dict()
    assert 0 < stats["silent_share_by_target"]["vocals"] < 1 and stats["silent_share_by_target"]["drums"] == 0
    assert "keys" in stats["kinds_by_target"]["other"]

    assert_summary(stats["mix_lufs"]["summary"], df["mix_lufs"])
    assert_histogram(stats["mix_lufs"]["histogram"], df["mix_lufs"])
    assert stats["mix_lufs"]["unmeasured"] == 1
    assert_summary(stats["mix_peak_dbfs"], df["mix_peak_dbfs"])
    assert stats["clip_scale_db"]["scaled_mixtures"] == int((df["clip_scale_db"] != 0).sum())
    assert_summary(stats["mixture_parameters"]["mix_target_lufs"]["summary"], df["mix_target_lufs"])

    assert stats["rel_level_basis"] == "measured"
    real = real_rel_levels(live)
    for t in TARGETS:
        lv = stats["rel_level_by_target"][t]
        assert_summary(lv["remix"], (df[f"{t}_lufs"] - df["mix_lufs"]).dropna())
        assert_summary(lv["real"], real[t])
        assert lv["diff_median_lu"] == pytest.approx((df[f"{t}_lufs"] - df["mix_lufs"]).median() - real[t].median())
    real_mix = live.loc[live["kind"] == "mixture", "lufs"]
    assert_summary(stats["real_mix_lufs"], real_mix)
    assert stats["mix_lufs_vs_real"]["diff_lu"] == pytest.approx(df["mix_lufs"].median() - real_mix.median())

    numeric = ["offset_s", "rel_lufs", "gain_db", "pitch_semitones", "stretch_rate", "filter_freq_hz",
               "filter_gain_db", "filter_q"]
    for t in TARGETS:
        used = df[df[f"{t}_stem_id"].notna()]
        params = stats["parameters"][t]
        assert set(params) == {*numeric, "loop", "channel_swap", "polarity"}
        for p in numeric:
            assert_summary(params[p]["summary"], used[f"{t}_{p}"])
            assert_histogram(params[p]["histogram"], used[f"{t}_{p}"])
        assert params["channel_swap"]["counts"] == {str(k).lower(): v for k, v in
                                                    used[f"{t}_channel_swap"].value_counts().items()}
        assert params["polarity"]["counts"] == {str(k): v for k, v in used[f"{t}_polarity"].value_counts().items()}
        assert params["loop"]["counts"] == {str(k).lower(): v for k, v in used[f"{t}_loop"].value_counts().items()}
    assert stats["parameters"]["drums"]["pitch_semitones"]["constant"] is True
    assert stats["parameters"]["vocals"]["pitch_semitones"]["constant"] is False

    allu = pd.concat([df[f"{t}_stem_id"].dropna() for t in TARGETS])
    assert stats["stem_usage"]["overall"]["max_reuse"] == allu.value_counts().max()
    assert stats["stem_usage"]["overall"]["distinct_stems"] == allu.nunique()
    assert stats["stem_usage"]["most_used"][0]["uses"] == allu.value_counts().max()
    assert stats["stem_usage"]["most_used"][0]["key"] in set(live["key"])
    for t in TARGETS:
        vc = df[f"{t}_stem_id"].value_counts()
        u = stats["stem_usage"]["by_target"][t]
        assert (u["uses"], u["distinct_stems"], u["max_reuse"]) == (vc.sum(), len(vc), vc.max())
        kinds = set(df[f"{t}_kind"].dropna())
        cand = live[live["kind"].isin(kinds) & (live["split"] == "train") & (live["silence_ratio"] < 1)]
        assert u["candidates"] == cand["stem_id"].nunique()
        assert u["coverage"] == pytest.approx(len(vc) / cand["stem_id"].nunique())
    assert_summary(stats["beat_score"]["summary"], df["beat_score"])
    assert_histogram(stats["beat_score"]["histogram"], df["beat_score"])
    assert stats["catalog_matches"] is False  # the docs table carries a made-up fingerprint
    assert "may be stale" in page.read_text()


def test_remix_report_without_catalogue(docs_remix: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out, df = docs_remix
    stats = remix_report(out, tmp_path / "r.html")
    assert stats["files_by_kind"] == {t: int(df[f"{t}_stem_id"].notna().sum()) for t in TARGETS}
    assert all(v["real"] is None for v in stats["rel_level_by_target"].values())
    assert stats["real_mix_lufs"] is None and stats["mix_lufs_vs_real"]["diff_lu"] is None
    assert all(u["coverage"] is None for u in stats["stem_usage"]["by_target"].values())
    assert "No catalogue given" in (tmp_path / "r.html").read_text()


def test_empty_remix_set_says_so(docs_remix: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    _, df = docs_remix
    (tmp_path / "set").mkdir()
    df.iloc[:0].to_parquet(tmp_path / "set" / "recipes.parquet", index=False)
    stats = remix_report(tmp_path / "set", tmp_path / "e.html")
    assert stats["empty"] is True and stats["totals"]["mixtures"] == 0
    assert stats["files_by_kind"] == {} and stats["hours_by_kind"] == {}
    assert load_json_strict(tmp_path / "e.json") == stats
    assert "The remix set is empty" in (tmp_path / "e.html").read_text()
    assert "The remix set is empty" in markdown_summary(stats)


def test_report_of_a_real_remix_set(real_remix: Path, real_report: tuple[dict, Path]) -> None:
    df = pd.read_parquet(real_remix / "recipes.parquet")
    stats, page = real_report
    assert load_json_strict(page.with_suffix(".json")) == stats
    targets = list(df["targets"].iloc[0])
    assert stats["targets"] == targets and stats["totals"]["mixtures"] == len(df) == 4
    for t in targets:
        used = df[df[f"{t}_stem_id"].notna()]
        assert stats["files_by_kind"][t] == len(used)
        assert stats["hours_by_kind"][t] == pytest.approx(used["duration_s"].sum() / 3600.0)
    assert stats["catalog_matches"] is True
    # the engine writes planned levels (no per-stem measured loudness): the report says which it used
    basis = "measured" if any(f"{t}_lufs" in df.columns for t in targets) else "planned"
    assert stats["rel_level_basis"] == basis
    if basis == "planned":
        for t in targets:
            assert_summary(stats["rel_level_by_target"][t]["remix"], df.loc[df[f"{t}_stem_id"].notna(), f"{t}_rel_lufs"])
    assert_summary(stats["mix_lufs"]["summary"], df["mix_lufs"])
    assert stats["beat_score"] is None  # tempo-aware mixing is off by default
    md = markdown_summary(stats)
    assert "4 mixtures" in md and all(f"| {t} |" in md for t in targets)


# -- rendering helpers -------------------------------------------------------------------------------------------
def test_json_safe_turns_non_finite_into_null() -> None:
    out = json_safe({"a": np.float32("nan"), "b": [np.inf, -np.inf, np.int64(3)], 4: np.array([1.5, np.nan]),
                     "c": (True, np.bool_(False)), "d": pd.NA})
    assert out == {"a": None, "b": [None, None, 3], "4": [1.5, None], "c": [True, False], "d": None}
    json.dumps(out, allow_nan=False)
    assert summarize([np.nan, None, np.inf])["count"] == 0


def test_markdown_summary(fixture_report: tuple[dict, Path, float]) -> None:
    stats, _, _ = fixture_report
    md = markdown_summary(stats)
    assert md.startswith("# Catalogue report")
    assert f"**{stats['totals']['files']} stems" in md
    for kind, n in stats["files_by_kind"].items():
        assert f"| {kind} | {n} |" in md
    assert "flagged `silent`" in md
    with pytest.raises(ValueError, match="report"):
        markdown_summary({"report": "nope"})


def test_figures_are_released(messy_report: tuple[dict, Path, int, int]) -> None:
    """No matplotlib Figure survives a report (figures are built without pyplot and cleared after rendering)."""
    _, page, before, after = messy_report
    assert page.read_text().count("data:image/png;base64,") >= 7  # figures were made...
    assert after == before  # ...and none is left
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []


# -- headless Chromium -------------------------------------------------------------------------------------------
needs_chromium = pytest.mark.skipif(chromium_binary() is None,
                                    reason="chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    with Chromium(tmp_path_factory.mktemp("chromium") / "profile") as b:
        yield b


def check_page(browser: Chromium, page: Path, shot: Path, *, min_images: int) -> None:
    """The page loads with no console error, exception or failed load; every <img> decoded (naturalWidth > 0);
    it fetched nothing but itself and data: URIs; a non-empty PNG screenshot was written."""
    r = browser.load(page, screenshot=shot)
    assert r.errors == [], r.errors
    assert len(r.images) >= min_images
    bad = [i for i in r.images if not i["complete"] or i["naturalWidth"] <= 0 or i["naturalHeight"] <= 0]
    assert bad == [], bad
    assert all(u.startswith(("file:", "data:")) for u in r.requests), r.requests
    assert r.requests[0] == page.resolve().as_uri()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert r.title.startswith("stemdb")


@needs_chromium
@pytest.mark.browser
def test_browser_check_catches_broken_pages(browser: Chromium, tmp_path: Path) -> None:
    """The browser check is not vacuous: a console error, an exception, a missing image and an external fetch
    are all reported."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><head><title>bad</title></head><body><img src="missing.png" alt="x">'
                   '<img src="http://192.0.2.1/x.png" alt="y"><script>console.error("boom"); nope();</script>'
                   "</body></html>")
    r = browser.load(bad, screenshot=tmp_path / "bad.png")
    assert any("console.error: boom" in e for e in r.errors)
    assert any("nope is not defined" in e for e in r.errors)
    assert any("missing.png" in e for e in r.errors)
    assert [i["naturalWidth"] for i in r.images] == [0, 0]
    assert any(u.startswith("http://") for u in r.requests)


@needs_chromium
@pytest.mark.browser
@pytest.mark.parametrize(("report", "min_images"), [("fixture_report", 7), ("messy_report", 7), ("docs_report", 7),
                                                     ("real_report", 6)])
def test_pages_open_in_chromium(browser: Chromium, report: str, min_images: int, request: pytest.FixtureRequest,
                                tmp_path: Path) -> None:
    page = request.getfixturevalue(report)[1]
    check_page(browser, page, tmp_path / f"{page.stem}.png", min_images=min_images)


@needs_chromium
@pytest.mark.browser
def test_empty_page_opens_in_chromium(browser: Chromium, tmp_path: Path) -> None:
    Catalog.create(tmp_path / "cat")
    catalog_report(tmp_path / "cat", tmp_path / "empty.html")
    r = browser.load(tmp_path / "empty.html", screenshot=tmp_path / "empty.png")
    assert r.errors == [] and r.images == []
    assert "The catalogue is empty" in r.text
