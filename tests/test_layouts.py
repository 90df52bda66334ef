"""Track layouts (multitrack sessions, MedleyDB, MoisesDB, Slakh) and the taxonomy, on the real fixture tracks.

The MedleyDB song is the bundled real fixture; the session export (the same recordings under DAW track names) and
the MoisesDB- and Slakh-shaped folders are arranged here from its RAW files, as each layout lays its files out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from stemdb import audio
from stemdb.catalog import Catalog
from stemdb.config import IngestConfig, MultitrackLayout, SourceConfig, load_config
from stemdb.errors import ConfigError
from stemdb.ingest import ingest_folder, ingest_sources
from stemdb.taxonomy import Taxonomy, normalise

from .conftest import DATA

FAST = IngestConfig(tempo=False, workers=1)
MEDLEY = DATA / "medleydb" / "MusicDelta_Britpop"
#: The studio-session export of the same song: the same 8 recordings (byte-identical, see tests/data/MANIFEST.md)
#: under the names a DAW gives its tracks. Assembled per test from the RAW files so the repository holds them once.
SESSION_NAMES = ("01_Drums", "02_BassDI", "03_DistGtr", "04_CleanGtr1", "05_AcGtr", "06_CleanGtr2", "07_LeadVox",
                 "08_BackingVox")
TRACKS = {"drums": ["01_Drums"], "bass": ["02_BassDI"], "guitar": ["03_DistGtr", "04_CleanGtr1", "05_AcGtr",
                                                                       "06_CleanGtr2"],
          "vocals": ["07_LeadVox", "08_BackingVox"]}
MUSDB_KINDS = {"drums": TRACKS["drums"], "bass": TRACKS["bass"], "other": TRACKS["guitar"],
               "vocals": TRACKS["vocals"]}


def _track(name: str) -> Path:
    """The RAW file behind session track ``name`` (``07_LeadVox`` -> ``MusicDelta_Britpop_RAW_07_01.wav``)."""
    assert name in SESSION_NAMES, name
    return MEDLEY / "MusicDelta_Britpop_RAW" / f"MusicDelta_Britpop_RAW_{name[:2]}_01.wav"


def _session(root: Path) -> Path:
    """``root/Britpop Session/`` laid out as the studio export; returns ``root`` (the folder ingest reads)."""
    song = root / "Britpop Session"
    song.mkdir(parents=True)
    for name in SESSION_NAMES:
        shutil.copy(_track(name), song / f"{name}.wav")
    return root


def _read(p: Path) -> np.ndarray:
    return sf.read(p, dtype="float64", always_2d=True)[0].T


def _check_stems(cat: Path, song: str, expected: dict[str, list[str]]) -> None:
    """One row per kind, whose file holds the sample-for-sample sum of the session tracks it should."""
    c = Catalog.open(cat)
    df = c.stems(song=song)
    stems = df[df["kind"] != "mixture"].set_index("kind")
    assert sorted(stems.index) == sorted(expected)
    for kind, names in expected.items():
        row = stems.loc[kind]
        want = sum(_read(_track(n)) for n in names)
        got = _read(c.resolve(row))
        assert got.shape == want.shape, kind
        np.testing.assert_allclose(got, want, atol=0.5 / 32768, rtol=0, err_msg=kind)  # within 16-bit rounding
        prov = json.loads(row["provenance"])
        assert len(prov["tracks"]) == len(names) and prov["kind"] == kind


def test_multitrack_session_sums_the_tracks_of_each_kind(tmp_path: Path) -> None:
    cat, sessions = tmp_path / "cat", _session(tmp_path / "sessions")
    report = ingest_folder(sessions, layout="multitrack", catalog=cat, cfg=FAST)
    assert (report.measured, report.rejected) == (4, 0)
    _check_stems(cat, "Britpop Session", MUSDB_KINDS)
    df = Catalog.open(cat).stems().set_index("kind")
    hashes = [t["content_hash"] for t in json.loads(df.loc["vocals", "provenance"])["tracks"]]
    assert len(set(hashes)) == 2 and all(len(h) == 32 for h in hashes)
    assert df.loc["drums", "path"] == "Britpop Session/01_Drums.wav"  # one track: the track itself
    cached = sorted((cat / "cache").rglob("*.*"))
    stamps = [(p, p.stat().st_mtime_ns) for p in cached]
    again = ingest_folder(sessions, layout="multitrack", catalog=cat, cfg=FAST)
    assert (again.measured, again.skipped) == (0, 4)
    assert [(p, p.stat().st_mtime_ns) for p in cached] == stamps  # sums not rewritten


def test_medleydb_builds_stems_from_raw_tracks_by_the_metadata(tmp_path: Path) -> None:
    src = SourceConfig(name="medley", root=DATA / "medleydb",
                       layout={"type": "medleydb", "kinds": ["vocals", "drums", "bass", "guitar", "other"]})
    cat = tmp_path / "cat"
    report = ingest_sources([src], cat, cfg=FAST)
    assert (report.measured, report.rejected) == (4, 0)
    _check_stems(cat, "MusicDelta_Britpop", {k: v for k, v in TRACKS.items()})
    labels = {t["label"] for t in json.loads(Catalog.open(cat).stems(kind="guitar").iloc[0]["provenance"])["tracks"]}
    assert labels == {"distorted electric guitar", "clean electric guitar"}  # the stems' labels


def test_medleydb_flags_and_stem_files(tmp_path: Path) -> None:
    root = tmp_path / "medley"
    shutil.copytree(DATA / "medleydb", root)
    song = root / "MusicDelta_Britpop"
    meta_path = song / "MusicDelta_Britpop_METADATA.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["has_bleed"] = "yes"
    meta_path.write_text(yaml.safe_dump(meta))
    (song / "MusicDelta_Britpop_STEMS").mkdir()  # a shipped stem file wins over its raw tracks
    shutil.copy(_track("02_BassDI"), song / "MusicDelta_Britpop_STEMS" / "MusicDelta_Britpop_STEM_02.wav")
    ingest_folder(root, layout="medleydb", catalog=tmp_path / "cat", cfg=FAST)
    df = Catalog.open(tmp_path / "cat").stems().set_index("kind")
    assert all("has_bleed" in list(f) for f in df["flags"])
    assert df.loc["bass", "path"] == "MusicDelta_Britpop/MusicDelta_Britpop_STEMS/MusicDelta_Britpop_STEM_02.wav"


def _moisesdb(root: Path) -> Path:
    song = root / "0a1b2c3d-britpop"
    stems = []
    for i, (stem, names) in enumerate((("vocals", TRACKS["vocals"]), ("drums", TRACKS["drums"]),
                                       ("bass", TRACKS["bass"]), ("guitar", TRACKS["guitar"]))):
        tracks = []
        for j, n in enumerate(names):
            tid = f"{i:02d}{j:02d}-track"
            (song / stem).mkdir(parents=True, exist_ok=True)
            shutil.copy(_track(n), song / stem / f"{tid}.wav")
            tracks.append({"id": tid, "trackType": n.split("_", 1)[1], "extension": "wav"})
        stems.append({"id": f"stem{i}", "stemName": stem, "tracks": tracks})
    (song / "data.json").write_text(json.dumps({"song": "Britpop", "artist": "Music Delta", "genre": "Pop",
                                                "stems": stems}))
    return song


def test_moisesdb_layout(tmp_path: Path) -> None:
    song = _moisesdb(tmp_path / "moises")
    report = ingest_folder(tmp_path / "moises", layout="moisesdb", catalog=tmp_path / "cat", cfg=FAST)
    assert (report.measured, report.rejected) == (4, 0)
    _check_stems(tmp_path / "cat", song.name, MUSDB_KINDS)


def test_slakh_layout_with_mixture_and_unrendered_stem(tmp_path: Path) -> None:
    song = tmp_path / "slakh" / "Track00001"
    (song / "stems").mkdir(parents=True)
    plan = {"S00": ("01_Drums", "Drums", True), "S01": ("02_BassDI", "Bass", False),
            "S02": ("03_DistGtr", "Guitar", False), "S03": ("05_AcGtr", "Guitar", False),
            "S04": ("07_LeadVox", "Reed", False)}
    meta = {"stems": {sid: {"inst_class": cls, "is_drum": drum, "audio_rendered": True, "program_num": 0}
                      for sid, (_n, cls, drum) in plan.items()}}
    meta["stems"]["S05"] = {"inst_class": "Piano", "is_drum": False, "audio_rendered": False}
    (song / "metadata.yaml").write_text(yaml.safe_dump(meta))
    mix = 0
    for sid, (name, _c, _d) in plan.items():
        a, info = audio.load(_track(name))
        audio.write(song / "stems" / f"{sid}.flac", a, info.sample_rate)
        mix = mix + a
    audio.write(song / "mix.flac", mix / 4, 44100)
    report = ingest_folder(tmp_path / "slakh", layout="slakh", catalog=tmp_path / "cat", cfg=FAST)
    assert (report.measured, report.rejected) == (4, 0)
    _check_stems(tmp_path / "cat", "Track00001", {"drums": ["01_Drums"], "bass": ["02_BassDI"],
                                                   "other": ["03_DistGtr", "05_AcGtr", "07_LeadVox"]})
    kinds = set(Catalog.open(tmp_path / "cat").stems()["kind"])
    assert kinds == {"drums", "bass", "other", "mixture"}


def test_unmapped_tracks_are_listed_never_called_other(tmp_path: Path) -> None:
    root = _session(tmp_path / "sessions")
    shutil.copy(_track("05_AcGtr"), root / "Britpop Session" / "Take 7 final.wav")
    src = SourceConfig(name="s", root=root, layout=MultitrackLayout(kinds=("vocals", "drums", "bass")))
    report = ingest_sources([src], tmp_path / "cat", cfg=FAST)
    assert report.unmapped == 5 and "5 unmapped" in report.line()
    rej = Catalog.open(tmp_path / "cat").rejects().set_index("path")
    assert rej.loc["Britpop Session/Take 7 final.wav", "reason"] == \
        "unmapped: no taxonomy rule for the file name 'take 7 final'"
    assert rej.loc["Britpop Session/03_DistGtr.wav", "reason"].startswith(
        "unmapped: kind 'guitar' (no taxonomy rule")
    assert sorted(Catalog.open(tmp_path / "cat").stems()["kind"]) == ["bass", "drums", "vocals"]
    # a project rule maps the odd name; the guitar takes stay unmapped
    tax = Taxonomy(patterns=(("take 7", "vocals"),))
    again = ingest_sources([src], tmp_path / "cat2", cfg=FAST.model_copy(update={"taxonomy": tax}))
    assert again.unmapped == 4


@pytest.mark.parametrize(("name", "kind"), [
    ("01_Drums.wav", "drums"), ("02_BassDI.wav", "bass"), ("03_DistGtr.wav", "guitar"),
    ("07_LeadVox.wav", "vocals"), ("08_BackingVox.wav", "vocals"), ("Kick In.wav", "drums"),
    ("SNR Top.wav", "drums"), ("OH L.wav", "drums"), ("HH.wav", "drums"), ("Tom 2.wav", "drums"),
    ("Room Mics.wav", "drums"), ("Bass DI.wav", "bass"), ("Gtr 2.wav", "guitar"), ("Ld Vox.wav", "vocals"),
    ("BVs.wav", "vocals"), ("Artist - Title (Acapella).mp3", "vocals"), ("song a cappella.flac", "vocals"),
    ("Piano L.wav", "keys"), ("Mixdown.wav", "mixture"), ("Drums Mix.wav", "drums"), ("Strings.wav", "other"),
    ("Take 7 final.wav", None), ("Click.wav", None),
])
def test_session_names(name: str, kind: str | None) -> None:
    assert Taxonomy().kind_of_name(name) == kind


def test_labels_cover_the_datasets_and_projects_override_them(tmp_path: Path) -> None:
    t = Taxonomy()
    for label, kind in (("female singer", "vocals"), ("drum set", "drums"), ("electric bass", "bass"),
                        ("clean electric guitar", "guitar"), ("piano", "keys"), ("violin", "other"),
                        ("bowed_strings", "other"), ("other_keys", "keys"), ("percussion", "drums"),
                        ("Synth Pad", "keys"), ("Strings (continued)", "other"), ("kazoo", None)):
        assert t.kind_of_label(label) == kind, label
    assert normalise("07_LeadVox") == "07 lead vox"
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"ingest": {"taxonomy": {
        "labels": {"Kazoo": "vocals", "piano": "other"}, "patterns": [["^take", "guitar"]]}}}))
    own = load_config(tmp_path / "data.yaml").ingest.taxonomy
    assert (own.kind_of_label("kazoo"), own.kind_of_label("piano"), own.kind_of_name("Take 3.wav")) == \
        ("vocals", "other", "guitar")
    assert Taxonomy(defaults=False).kind_of_label("piano") is None
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"ingest": {"taxonomy": {"patterns": [["(unclosed", "x"]]}}}))
    with pytest.raises(ConfigError, match=r"ingest\.taxonomy\.patterns=.*is not a regular expression"):
        load_config(tmp_path / "bad.yaml")


def test_cli_ingests_a_session_folder(tmp_path: Path) -> None:
    from pipelines.cli import app

    sessions = _session(tmp_path / "sessions")
    r = CliRunner().invoke(app, ["ingest", str(sessions), "--layout", "multitrack", "--catalog",
                                 str(tmp_path / "cat"), "--no-tempo", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "4 measured" in r.output and "0 unmapped" in r.output
    sid = Catalog.open(tmp_path / "cat").stems(kind="vocals").iloc[0]["stem_id"]
    r = CliRunner().invoke(app, ["catalog", "show", sid, "--catalog", str(tmp_path / "cat")])
    assert r.exit_code == 0 and "vocals.flac" in r.output and "musical_key" in r.output
    assert " bytes" in r.output.split("fingerprint:")[1].splitlines()[0]
    r = CliRunner().invoke(app, ["ingest", str(sessions), "--layout", "protools", "--catalog",
                                 str(tmp_path / "cat")])
    assert r.exit_code != 0 and "'multitrack'" in r.output


def test_loose_stems_take_their_kind_from_file_name_rules(tmp_path: Path) -> None:
    root = tmp_path / "downloads"
    root.mkdir()
    shutil.copy(_track("07_LeadVox"), root / "Music Delta - Britpop (Acapella).wav")
    shutil.copy(_track("01_Drums"), root / "Britpop drum loop 120bpm.wav")
    shutil.copy(_track("02_BassDI"), root / "britpop_take_3.wav")
    (root / "bass").mkdir()
    shutil.copy(_track("02_BassDI"), root / "bass" / "britpop_take_4.wav")
    src = SourceConfig(name="dl", root=root, layout={"type": "stems", "names": True, "kinds": {"bass": "bass"}})
    report = ingest_sources([src], tmp_path / "cat", cfg=FAST)
    df = Catalog.open(tmp_path / "cat").stems(include_duplicates=True).set_index("path")
    assert df["kind"].to_dict() == {"Music Delta - Britpop (Acapella).wav": "vocals",
                                    "Britpop drum loop 120bpm.wav": "drums", "bass/britpop_take_4.wav": "bass"}
    assert report.unmapped == 1
    assert Catalog.open(tmp_path / "cat").rejects()["path"].tolist() == ["britpop_take_3.wav"]
