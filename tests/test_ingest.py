"""Ingest of the real fixtures: kinds, songs, splits, measurements, incremental reruns, duplicates, rejects, kills."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from stemdb import audio
from stemdb.catalog import READABLE_VERSIONS, SCHEMA_VERSION, Catalog
from stemdb.config import IngestConfig, SourceConfig, StemsLayout
from stemdb.ingest import ingest_folder, ingest_sources
from stemdb.scan import hash_split

from .conftest import ENCODED, MUSDB, STEMS

FAST = IngestConfig(tempo=False, workers=1)


def test_fixture_kinds_songs_splits(fixture_catalog: Path) -> None:
    df = Catalog.open(fixture_catalog).stems()
    musdb = df[df["source"] == "musdb"]
    assert set(musdb["kind"]) == {"mixture", "vocals", "drums", "bass", "other"}
    assert sorted(musdb["song"].unique()) == [
        "Music Delta - Hendrix", "Music Delta - Reggae", "Music Delta - Rock", "Music Delta - Zeppelin",
        "The Easton Ellises - Falcon 69",
    ]
    assert set(musdb.loc[musdb["song"].str.startswith("Music Delta"), "split"]) == {"train"}
    assert set(musdb.loc[musdb["song"] == "The Easton Ellises - Falcon 69", "split"]) == {"test"}
    loose = df[df["source"] == "stems"]
    assert len(loose) == 16
    assert sorted(loose["kind"].unique()) == ["bass", "drums", "keys", "other", "vocals"]
    # a loose stem is its own song: its song is its own content id
    assert (loose["song"] == loose["stem_id"]).all()


def test_frames_and_rates_exact(fixture_catalog: Path) -> None:
    df = Catalog.open(fixture_catalog).stems()
    plain = df[df["stream"] == -1]
    for row in plain.itertuples():
        i = sf.info(str(Path(row.root) / row.path))
        assert (row.frames, row.sample_rate, row.channels) == (i.frames, i.samplerate, i.channels), row.path
        assert row.duration_s == pytest.approx(i.frames / i.samplerate)
    k48 = plain[plain["path"].str.endswith("maestro_chamber3_excerpt_2s_48k.wav")].iloc[0]
    assert k48.sample_rate == 48000 and k48.frames == 96000


def test_lufs_matches_pyloudnorm(fixture_catalog: Path) -> None:
    df = Catalog.open(fixture_catalog).stems()
    checked = 0
    for row in df[df["stream"] == -1].itertuples():
        a, sr = audio.read(Path(row.root) / row.path)
        ref = pyloudnorm.Meter(sr).integrated_loudness(a.T.astype(np.float64))
        if np.isfinite(ref):
            assert row.lufs == pytest.approx(ref, abs=0.1), row.path
            checked += 1
        else:
            assert row.lufs is None or np.isnan(row.lufs), row.path
    assert checked >= 35


def test_silent_stem(fixture_catalog: Path) -> None:
    df = Catalog.open(fixture_catalog).stems(song="Music Delta - Zeppelin", kind="vocals")
    row = df.iloc[0]
    assert row.silence_ratio == 1.0
    assert len(row.active) == 0
    assert np.isnan(row.lufs) and "silent" in list(row["flags"])
    other = Catalog.open(fixture_catalog).stems(song="Music Delta - Zeppelin", kind="drums").iloc[0]
    assert other.silence_ratio < 0.5 and len(other.active) >= 1
    for start, end in other.active:
        assert 0.0 <= start < end <= other.duration_s + 1e-9


def test_stem_mp4_streams(fixture_catalog: Path) -> None:
    df = Catalog.open(fixture_catalog).stems(source="musdb-mp4", include_duplicates=True).sort_values("stream")
    assert len(df) == 5
    # the AAC streams are the HQ fixture's WAVs re-encoded: each a near-duplicate of the WAV of its kind
    hq = "musdb:test/The Easton Ellises - Falcon 69"
    assert list(df["duplicate_of"]) == [f"{hq}/{k}.wav" for k in audio.STEM_MP4_STREAMS]
    assert all("near_duplicate" in list(f) for f in df["flags"])
    assert list(df["kind"]) == list(audio.STEM_MP4_STREAMS)
    assert set(df["split"]) == {"test"} and set(df["song"]) == {"The Easton Ellises - Falcon 69"}
    assert (df["sample_rate"] == 44100).all() and (df["channels"] == 2).all()
    assert (df["frames"] == 268288).all()  # 262 AAC frames of 1024, as the container states
    assert all("lossy" in list(f) for f in df["flags"])
    assert set(df["codec"]) == {"aac"} and df["lossy"].all() and set(df["format"]) == {"MP4"}
    # each stream's own bit rate as the container states it (ffprobe: 238086, 236967, 239947, 255028, 247482 bit/s)
    assert list(df["bitrate_kbps"]) == pytest.approx([238.086, 236.967, 239.947, 255.028, 247.482])


def test_incremental_rerun_and_touch(tmp_path: Path, stems_copy: Path) -> None:
    src = [SourceConfig(name="s", root=stems_copy, layout=StemsLayout())]
    cat = tmp_path / "cat"
    first = ingest_sources(src, cat, cfg=FAST)
    assert first.measured == 16 and first.skipped == 0
    before = Catalog.open(cat).stems()
    second = ingest_sources(src, cat, cfg=FAST)
    assert second.measured == 0 and second.skipped == 16 and second.rejected == 0
    target = stems_copy / "vocals" / "vocadito_1.wav"
    st = target.stat()
    os.utime(target, (st.st_atime, st.st_mtime + 10))
    third = ingest_sources(src, cat, cfg=FAST)
    assert third.measured == 1 and third.skipped == 15
    after = Catalog.open(cat).stems()
    assert len(after) == len(before) == 16 and after["key"].is_unique
    changed = after.set_index("key")["mtime"] != before.set_index("key")["mtime"]
    assert list(changed[changed].index) == ["s:vocals/vocadito_1.wav"]


def test_deleted_file_is_marked(tmp_path: Path, stems_copy: Path) -> None:
    src = [SourceConfig(name="s", root=stems_copy, layout=StemsLayout())]
    cat = tmp_path / "cat"
    ingest_sources(src, cat, cfg=FAST)
    (stems_copy / "bass" / "tinysol_contrabass_A2_mf.wav").unlink()
    rep = ingest_sources(src, cat, cfg=FAST)
    assert rep.deleted == 1 and rep.measured == 0
    c = Catalog.open(cat)
    assert len(c.stems()) == 15
    gone = c.stems(include_deleted=True)
    assert gone.loc[gone["path"] == "bass/tinysol_contrabass_A2_mf.wav", "deleted"].item()


def test_copied_renamed_and_reencoded_are_duplicates(tmp_path: Path, stems_copy: Path) -> None:
    orig = stems_copy / "vocals" / "vocadito_1.wav"
    shutil.copy(orig, stems_copy / "vocals" / "zz_renamed_copy.wav")
    a, sr = audio.read(orig)
    audio.write(stems_copy / "vocals" / "vocadito_1.flac", a, sr)
    cat = tmp_path / "cat"
    rep = ingest_sources([SourceConfig(name="s", root=stems_copy, layout=StemsLayout())], cat, cfg=FAST)
    assert rep.duplicates == 2
    c = Catalog.open(cat)
    allrows = c.stems(include_duplicates=True).set_index("path")
    assert allrows.loc["vocals/zz_renamed_copy.wav", "duplicate_of"] == "s:vocals/vocadito_1.flac"
    assert allrows.loc["vocals/vocadito_1.wav", "duplicate_of"] == "s:vocals/vocadito_1.flac"
    assert allrows.loc["vocals/zz_renamed_copy.wav", "stem_id"] == allrows.loc["vocals/vocadito_1.wav", "stem_id"]
    assert len(c.stems()) == 16  # canonical rows only


def _broken_corpus(root: Path) -> dict[str, str]:
    """Files that must land in rejects, with a word their reason must contain."""
    d = root / "vocals"
    d.mkdir(parents=True)
    (d / "zero.wav").write_bytes(b"")
    good, sr = audio.read(STEMS / "vocals" / "vocadito_1.wav")
    audio.write(d / "full.wav", good, sr)
    data = (d / "full.wav").read_bytes()
    (d / "truncated.wav").write_bytes(data[: len(data) // 3])
    (d / "text.wav").write_text("this is not audio\n" * 100)
    nan = good.copy()
    nan[0, 100:200] = np.nan
    sf.write(str(d / "nan.wav"), nan.T, sr, subtype="FLOAT")
    sf.write(str(d / "noframes.wav"), np.zeros((0, 1), dtype=np.float32), sr, subtype="PCM_16")
    sf.write(str(d / "eight.wav"), np.zeros((1000, 8), dtype=np.float32) + 0.1, sr, subtype="PCM_16")
    (d / "dangling.wav").symlink_to(root / "nowhere.wav")
    (d / "full.wav").unlink()
    return {"zero.wav": "empty", "truncated.wav": "truncated", "text.wav": "", "nan.wav": "non-finite",
            "noframes.wav": "0 frames", "eight.wav": "channels", "dangling.wav": "unreadable"}


def test_broken_files_go_to_rejects(tmp_path: Path) -> None:
    expected = _broken_corpus(tmp_path / "broken")
    src = [SourceConfig(name="b", root=tmp_path / "broken", layout=StemsLayout(), max_channels=2)]
    rep = ingest_sources(src, tmp_path / "cat", cfg=FAST)
    assert rep.rejected == len(expected) and rep.measured == 0
    rej = Catalog.open(tmp_path / "cat").rejects().set_index("path")
    for name, word in expected.items():
        reason = rej.loc[f"vocals/{name}", "reason"]
        assert word in reason, (name, reason)
        assert reason
    # unchanged rejects are not decoded again
    again = ingest_sources(src, tmp_path / "cat", cfg=FAST)
    assert again.measured == 0 and again.rejected == 0 and again.skipped == len(expected)


def test_fixed_reject_leaves_rejects(tmp_path: Path) -> None:
    root = tmp_path / "s" / "vocals"
    root.mkdir(parents=True)
    (root / "later.wav").write_bytes(b"")
    src = [SourceConfig(name="s", root=tmp_path / "s", layout=StemsLayout())]
    ingest_sources(src, tmp_path / "cat", cfg=FAST)
    assert len(Catalog.open(tmp_path / "cat").rejects()) == 1
    shutil.copy(STEMS / "vocals" / "vocadito_1.wav", root / "later.wav")
    rep = ingest_sources(src, tmp_path / "cat", cfg=FAST)
    assert rep.measured == 1
    assert len(Catalog.open(tmp_path / "cat").rejects()) == 0


def test_hash_split_is_deterministic_and_proportional() -> None:
    songs = [f"song{i}" for i in range(4000)]
    splits = [hash_split(s, 0.1, 0.2) for s in songs]
    assert splits == [hash_split(s, 0.1, 0.2) for s in songs]
    assert 0.17 < splits.count("test") / 4000 < 0.23 and 0.07 < splits.count("valid") / 4000 < 0.13


def test_leakage_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "m"
    for split in ("train", "test"):
        shutil.copytree(MUSDB / "train" / "Music Delta - Rock", root / split / "Music Delta - Rock")
    rep = ingest_folder(root, layout="musdb", catalog=tmp_path / "cat", cfg=FAST)
    assert rep.leakage == ["Music Delta - Rock"]


def test_length_mismatch_is_flagged(tmp_path: Path) -> None:
    track = tmp_path / "m" / "train" / "T"
    track.mkdir(parents=True)
    for i, kind in enumerate(["mixture", "vocals", "drums", "bass", "other"]):
        a, sr = audio.read(MUSDB / "train" / "Music Delta - Rock" / f"{kind}.wav")
        audio.write(track / f"{kind}.wav", a[:, : a.shape[1] - 100 * i], sr)
    ingest_folder(tmp_path / "m", layout="musdb", catalog=tmp_path / "cat", cfg=FAST)
    df = Catalog.open(tmp_path / "cat").stems()
    assert all("length_mismatch" in list(f) for f in df["flags"])


KILL_SCRIPT = """
import sys
from stemdb.config import IngestConfig, SourceConfig, StemsLayout
from stemdb.ingest import ingest_sources
src = [SourceConfig(name="s", root=sys.argv[1], layout=StemsLayout())]
ingest_sources(src, sys.argv[2], cfg=IngestConfig(tempo=False, workers=1, batch_size=1))
"""


def test_kill_mid_ingest_then_rerun(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    for i in range(5):
        shutil.copytree(STEMS, corpus / f"set{i}", dirs_exist_ok=True)
        # distinct content per copy so nothing is a duplicate
        for f in (corpus / f"set{i}").rglob("*.wav"):
            a, sr = audio.read(f)
            audio.write(f, a * (0.9 - 0.1 * i), sr)
    cat = tmp_path / "cat"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(corpus), str(cat)])
    parts = cat / "stems"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = Catalog.open(cat).stems()
    assert 0 < len(partial) < 80 and partial["key"].is_unique
    rep = ingest_sources([SourceConfig(name="s", root=corpus, layout=StemsLayout())], cat, cfg=FAST)
    assert rep.skipped == len(partial) and rep.measured == 80 - len(partial)
    full = Catalog.open(cat).stems(include_duplicates=True)
    assert len(full) == 80 and full["key"].is_unique
    assert len(list(parts.glob("part-*.parquet"))) == 1


def test_tempo_workers_on_a_cold_numba_cache(tmp_path: Path) -> None:
    """Regression: workers that each compiled librosa's beat tracker wrote its on-disk numba cache at once, and one
    died of a segmentation fault (BrokenProcessPool). The parent now compiles it before forking."""
    src = tmp_path / "stems"
    for kind in ("vocals", "drums"):
        for p in sorted((STEMS / kind).glob("*.wav"))[:2]:
            (src / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, src / kind / p.name)
    code = (
        "import sys\n"
        "from stemdb.config import IngestConfig, SourceConfig, StemsLayout\n"
        "from stemdb.ingest import ingest_sources\n"
        "r = ingest_sources([SourceConfig(name='s', root=sys.argv[1], layout=StemsLayout())], sys.argv[2],\n"
        "                   cfg=IngestConfig(tempo=True, workers=2))\n"
        "print(r.measured, r.rejected)\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "cat")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["4", "0"]
    tempos = Catalog.open(tmp_path / "cat").stems()["tempo_bpm"]
    assert tempos.notna().any()


# -- formats soundfile cannot read, and the codec columns (catalogue schema 2) ------------------------------------
def test_ingest_reads_every_download_format(tmp_path: Path) -> None:
    """M4A (AAC and ALAC), Opus, WebM and WMA encodes of a 4.0 s fixture stem ingest with the right durations and
    codec facts, decoded in-process (no ffmpeg program is involved; test_audio checks that in a bare PATH)."""
    rep = ingest_folder(ENCODED, layout="stems", catalog=tmp_path / "cat", cfg=FAST)
    assert (rep.measured, rep.rejected) == (5, 0)
    df = Catalog.open(tmp_path / "cat").stems(include_duplicates=True).set_index("path")
    expected = {  # path -> (codec, rate, lossy, format)
        "vocals/hendrix_vocals_aac.m4a": ("aac", 44100, True, "M4A"),
        "vocals/hendrix_vocals_alac.m4a": ("alac", 44100, False, "M4A"),
        "vocals/hendrix_vocals.opus": ("opus", 48000, True, "OGG"),
        "vocals/hendrix_vocals.webm": ("opus", 48000, True, "WEBM"),
        "vocals/hendrix_vocals.wma": ("wmav2", 44100, True, "ASF"),
    }
    assert sorted(df.index) == sorted(expected)
    for path, (codec, rate, lossy, fmt) in expected.items():
        row = df.loc[path]
        assert (row["codec"], row["sample_rate"], row["lossy"], row["format"]) == (codec, rate, lossy, fmt), path
        assert row["kind"] == "vocals" and row["channels"] == 2
        assert abs(row["duration_s"] - 4.0) <= 2048 / rate, (path, row["duration_s"])  # within one codec frame
        assert ("lossy" in list(row["flags"])) == lossy
        assert (row["bitrate_kbps"] < 140) if lossy else (row["bitrate_kbps"] > 400), path
        assert row["lufs"] == pytest.approx(df.loc["vocals/hendrix_vocals_alac.m4a", "lufs"], abs=0.5)
    # the ALAC copy is bit-exact: the same content hash as the WAV it was made from
    wav = ingest_folder(MUSDB / "train" / "Music Delta - Hendrix", layout="stems", catalog=tmp_path / "wav", cfg=FAST)
    assert wav.measured == 5
    hq = Catalog.open(tmp_path / "wav").stems(include_duplicates=True).set_index("path")
    assert df.loc["vocals/hendrix_vocals_alac.m4a", "stem_id"] == hq.loc["vocals.wav", "stem_id"]
    assert (hq.loc["vocals.wav", "codec"], hq.loc["vocals.wav", "lossy"]) == ("pcm_s16le", False)


def test_default_globs_cover_the_readable_endings() -> None:
    endings = {g.rsplit("*", 1)[1] for g in StemsLayout().globs}
    assert endings == (audio.SOUNDFILE_SUFFIXES | audio.PYAV_SUFFIXES) - {".mp4", ".m4b"}


def _as_version_1(cat: Path) -> None:
    """Rewrite a catalogue as schema version 1 wrote it: the same tables without the three codec columns."""
    import json

    import pyarrow.parquet as pq

    for part in (cat / "stems").glob("part-*.parquet"):
        t = pq.read_table(part)
        pq.write_table(t.drop_columns(["codec", "bitrate_kbps", "lossy"]), part)
    meta = json.loads((cat / "_catalog.json").read_text())
    (cat / "_catalog.json").write_text(json.dumps({**meta, "schema_version": 1}))


def test_version_1_catalogue_opens_and_the_next_ingest_fills_the_codec_columns(tmp_path: Path,
                                                                                   stems_copy: Path) -> None:
    import json

    from stemdb.errors import CatalogError

    src = [SourceConfig(name="s", root=stems_copy, layout=StemsLayout())]
    cat = tmp_path / "cat"
    ingest_sources(src, cat, cfg=FAST)
    before = Catalog.open(cat).stems()
    _as_version_1(cat)
    old = Catalog.open(cat).stems()  # opens; the new columns read as null
    assert len(old) == 16 and old["codec"].isna().all() and old["lossy"].isna().all()
    assert list(old["stem_id"]) == list(before["stem_id"])
    again = ingest_sources(src, cat, cfg=FAST)
    assert (again.measured, again.skipped) == (16, 0)  # rows without a codec count as changed
    now = Catalog.open(cat).stems()
    assert set(now["codec"]) == {"pcm_s16le"} and not now["lossy"].any()
    assert list(now["stem_id"]) == list(before["stem_id"])
    assert json.loads((cat / "_catalog.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert ingest_sources(src, cat, cfg=FAST).skipped == 16
    meta = json.loads((cat / "_catalog.json").read_text())
    (cat / "_catalog.json").write_text(json.dumps({**meta, "schema_version": SCHEMA_VERSION + 1}))
    readable = ", ".join(map(str, READABLE_VERSIONS))
    with pytest.raises(CatalogError, match=rf"cat: catalogue schema_version {SCHEMA_VERSION + 1}; this stemdb reads "
                                           rf"versions {readable}; upgrade stemdb"):
        Catalog.open(cat)
