"""The command line on the fixtures: the interfaces that outside checks rely on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from pipelines.cli import app
from stemdb.catalog import Catalog

from .conftest import MUSDB, STEMS

runner = CliRunner()


def test_ingest_one_folder_each_layout_then_summary_and_show(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    r = runner.invoke(app, ["ingest", str(STEMS), "--layout", "stems", "--catalog", str(cat), "--no-tempo",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "16 measured" in r.output
    r = runner.invoke(app, ["ingest", str(MUSDB), "--layout", "musdb", "--catalog", str(cat), "--no-tempo",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    df = Catalog.open(cat).stems()
    assert len(df) == 16 + 25 and set(df[df["kind"] == "mixture"]["split"]) == {"train", "test"}
    r = runner.invoke(app, ["catalog", "summary", "--catalog", str(cat), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["files"] == 41 and summary["by_kind"]["vocals"]["files"] == 4 + 5
    sid = df.iloc[0]["stem_id"]
    r = runner.invoke(app, ["catalog", "show", sid[:10], "--catalog", str(cat)])
    assert r.exit_code == 0 and sid in r.output


def test_bad_layout_and_missing_catalog_are_clear_errors(tmp_path: Path) -> None:
    r = runner.invoke(app, ["ingest", str(STEMS), "--layout", "songs", "--catalog", str(tmp_path / "c")])
    assert r.exit_code == 2 and "layout" in r.output and "stems" in r.output
    r = runner.invoke(app, ["catalog", "summary", "--catalog", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no stemdb catalogue" in r.output


def test_strict_exits_nonzero_on_rejects(tmp_path: Path) -> None:
    d = tmp_path / "s" / "vocals"
    d.mkdir(parents=True)
    (d / "bad.wav").write_text("not audio")
    r = runner.invoke(app, ["ingest", str(tmp_path / "s"), "--layout", "stems", "--catalog", str(tmp_path / "c"),
                            "--strict", "--workers", "1"])
    assert r.exit_code == 1 and "1 rejected" in r.output


def test_remix_same_arguments_same_bytes(fixture_catalog: Path, tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        r = runner.invoke(app, ["remix", "--catalog", str(fixture_catalog), "--n", "4", "--seconds", "1.5",
                                "--seed", "3", "--out", str(out), "--workers", "1"])
        assert r.exit_code == 0, r.output
        outs.append(out)
    rec = pd.read_parquet(outs[0] / "recipes.parquet")
    assert len(rec) == 4 and {"mix_id", "vocals_stem_id", "drums_stem_id", "bass_stem_id", "other_stem_id"} <= set(rec)
    for mix_id, split in zip(rec["mix_id"], rec["split"], strict=True):
        for stem in ("mixture", "vocals", "drums", "bass", "other"):
            a = (outs[0] / split / mix_id / f"{stem}.wav").read_bytes()
            assert a == (outs[1] / split / mix_id / f"{stem}.wav").read_bytes()


def test_evaluate_writes_the_documented_json(tmp_path: Path) -> None:
    est = tmp_path / "est" / "Music Delta - Rock"
    shutil.copytree(MUSDB / "train" / "Music Delta - Rock", est)
    for stem in ("vocals", "drums", "bass", "other"):
        shutil.copy(est / "mixture.wav", est / f"{stem}.wav")
    (est / "mixture.wav").unlink()
    out = tmp_path / "scores.json"
    r = runner.invoke(app, ["evaluate", "--estimates", str(tmp_path / "est"), "--references", str(MUSDB),
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    scores = json.loads(out.read_text())
    assert set(scores) == {"median", "tracks"}
    assert set(scores["tracks"]["Music Delta - Rock"]) == {"vocals", "drums", "bass", "other"}
    for v in scores["median"].values():
        assert set(v) == {"SDR", "SI-SDR"} and v["SDR"] < 5.0  # the mixture is a poor estimate of any stem


def test_console_script_help_is_fast_and_lists_commands() -> None:
    exe = Path(sys.executable).parent / "stemdb"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for cmd in ("ingest", "catalog", "remix", "report", "evaluate"):
        assert cmd in r.stdout
