"""The command line on the fixtures: the interfaces that outside checks rely on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from pipelines.cli import app
from stemdb.catalog import Catalog

from .conftest import MUSDB, STEMS

ROOT = Path(__file__).parent.parent
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


def test_version_prints_the_package_version() -> None:
    import stemdb

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"stemdb {stemdb.__version__}"


def test_ingest_folder_takes_origin_and_licence(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    r = runner.invoke(app, ["ingest", str(STEMS), "--layout", "stems", "--catalog", str(cat), "--no-tempo",
                            "--workers", "1", "--origin", "looperman", "--licence", "CC0-1.0"])
    assert r.exit_code == 0, r.output
    df = Catalog.open(cat).stems()
    assert len(df) == 16 and set(df["origin"]) == {"looperman"} and set(df["licence"]) == {"CC0-1.0"}
    r = runner.invoke(app, ["ingest", "-c", str(ROOT / "data.yaml"), "--catalog", str(cat), "--origin", "x"])
    assert r.exit_code == 2 and "--origin" in r.output and "FOLDER" in r.output


def test_remix_without_data_yaml_says_so_and_matches_the_shipped_config(
        fixture_catalog: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """The same seed gives the same bytes with the shipped data.yaml and with the built-in defaults."""
    args = ["remix", "--catalog", str(fixture_catalog), "--n", "3", "--seconds", "1", "--seed", "5"]
    r = runner.invoke(app, [*args, "-c", str(ROOT / "data.yaml"), "--out", str(tmp_path / "shipped")])
    assert r.exit_code == 0, r.output
    assert "using" not in r.output  # a config given is not announced
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "builtin")])
    assert r.exit_code == 0, r.output
    assert f"using built-in defaults (no data.yaml in {here.resolve()})" in r.output
    a = sorted(p.relative_to(tmp_path / "shipped") for p in (tmp_path / "shipped").rglob("*.wav"))
    b = sorted(p.relative_to(tmp_path / "builtin") for p in (tmp_path / "builtin").rglob("*.wav"))
    assert a == b and len(a) == 3 * 5
    rec = pd.read_parquet(tmp_path / "builtin" / "recipes.parquet")
    assert rec.filter(like="_channel_swap").to_numpy().any()  # the shipped p = 0.5 swap is on
    for rel in a:
        assert (tmp_path / "shipped" / rel).read_bytes() == (tmp_path / "builtin" / rel).read_bytes(), rel


def test_long_command_through_a_pipe_prints_progress_and_one_summary(fixture_catalog: Path, tmp_path: Path) -> None:
    """stdout and stderr to pipes (not a terminal): timed progress lines with count, rate and ETA, the warning
    about mixtures longer than the stems, and the summary once across both streams."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STEMDB_PROGRESS_S": "0"}
    cmd = [sys.executable, "-m", "pipelines", "remix", "--catalog", str(fixture_catalog), "--n", "4",
           "--seconds", "12", "--seed", "1", "--out", str(tmp_path / "r")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    both = r.stdout + r.stderr
    assert both.count("remix: 4 mixtures") == 1 and "remix: 4 mixtures" in r.stdout
    assert "rendering: 4/4 mixtures (100%)" in r.stderr and "mixtures/s" in r.stderr
    assert "seconds=12 is longer than" in r.stderr and "of the mixtures' audio will be silence" in r.stderr
    assert "using built-in defaults" in r.stderr


def test_line_progress_is_timed_and_gives_count_rate_and_eta() -> None:
    import io

    from pipelines.progress import LineProgress

    now = [100.0]
    buf = io.StringIO()
    p = LineProgress("measuring", unit="files", every_s=5.0, stream=buf, clock=lambda: now[0])
    for done, t in ((1, 101.0), (2, 104.9), (10, 105.0), (12, 106.0), (30, 110.0)):
        now[0] = t
        p(done, 40)
    assert buf.getvalue().splitlines() == [
        "measuring: 10/40 files (25%), 2.0 files/s, ETA 0:15",   # 5 s in: 10 files, 30 left at 2/s
        "measuring: 30/40 files (75%), 3.0 files/s, ETA 0:03",
    ]
    assert p.line(5, None, 2.0) == "measuring: 5 files, 2.5 files/s"


def test_track_lines_give_count_rate_and_eta() -> None:
    import io

    from pipelines.progress import track_lines

    now = [0.0]
    buf = io.StringIO()
    on_track = track_lines("scored", stream=buf, clock=lambda: now[0])
    now[0] = 4.0
    on_track("Music Delta - Rock", 1, 3)
    now[0] = 8.0
    on_track("Music Delta - Punk", 2, 3)
    assert buf.getvalue().splitlines() == [
        "scored Music Delta - Rock (1/3 tracks (33%), 0.250 tracks/s, ETA 0:08)",
        "scored Music Delta - Punk (2/3 tracks (67%), 0.250 tracks/s, ETA 0:04)",
    ]


def test_training_log_pace_gives_rate_and_eta() -> None:
    from train.runlog import pace

    assert pace(50, 25.0, 150) == ", 2 steps/s, ETA 1:15"
    assert pace(0, 0.0, 100) == ""
