"""data.yaml validation: errors name the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from augment.config import ProjectConfig, RemixConfig
from stemdb.config import HashSplit, StemdbConfig, load_config
from stemdb.errors import ConfigError

ROOT = Path(__file__).parent.parent


def test_project_data_yaml_loads_and_resolves_paths() -> None:
    cfg = load_config(ROOT / "data.yaml", schema=ProjectConfig)
    assert [s.name for s in cfg.sources] == ["fixture-musdb", "fixture-musdb-stems", "fixture-stems"]
    for s in cfg.sources:
        assert s.root.is_absolute() and s.root.is_dir(), s.root
    assert cfg.catalog.is_absolute()
    assert cfg.remix.targets == ("vocals", "drums", "bass", "other")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "data.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("sources:\n  - {name: a, root: ., layout: {type: stemz}}\n", ["sources[0].layout", "stemz", "stems", "musdb"]),
        ("ingest:\n  silence_db: 5\n", ["ingest.silence_db", "5"]),
        ("remix:\n  mode: shuffle\n", ["remix.mode", "shuffle", "cross_song"]),
        ("remix:\n  sedonds: 3\n", ["remix.sedonds", "unknown key"]),
        ("bogus: 1\n", ["bogus", "unknown key"]),
        ("sources:\n  - {name: a, root: ., layout: {type: stems, song: album}}\n", ["song", "album", "parent"]),
        ("sources:\n  - {name: a, root: ., layout: {type: stems, split: {valid: 0.6, test: 0.5}}}\n", ["valid + test"]),
        ("sources:\n  - {name: a, root: ., layout: {type: musdb}}\n  - {name: a, root: ., layout: {type: musdb}}\n",
         ["unique", "'a'"]),
        ("remix:\n  silent_prob: {vocals: 1.5}\n", ["silent_prob.vocals", "1.5"]),
        ("- just\n- a list\n", ["mapping"]),
        ("remix: {seconds: [1\n", ["YAML"]),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text), schema=ProjectConfig)
    msg = str(err.value)
    for w in words:
        assert w in msg, (w, msg)
    assert str(tmp_path / "data.yaml") in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_hash_split_model() -> None:
    cfg = load_config(None, overrides={"sources": [
        {"name": "x", "root": "/tmp", "layout": {"type": "stems", "split": {"valid": 0.1, "test": 0.1}}}]})
    assert isinstance(cfg.sources[0].layout.split, HashSplit)
    assert cfg.sources[0].layout.split.valid == 0.1


def test_fingerprint_tracks_section_content() -> None:
    a = load_config(None)
    b = load_config(None, overrides={"remix": {"seconds": 3.0}})
    assert a.fingerprint("remix") != b.fingerprint("remix")
    assert a.fingerprint("ingest") == b.fingerprint("ingest")


def test_each_layer_validates_its_own_sections(tmp_path: Path) -> None:
    """The catalogue layer keeps ``remix`` as a mapping; the remix layer's schema types and validates it."""
    path = _write(tmp_path, "remix:\n  seconds: 3\n  mode: shuffle\n")
    low = load_config(path)
    assert type(low) is StemdbConfig and low.remix == {"seconds": 3, "mode": "shuffle"}
    with pytest.raises(ConfigError, match=r"remix\.mode='shuffle' is not allowed; allowed: 'cross_song'"):
        load_config(path, schema=ProjectConfig)
    ok = load_config(_write(tmp_path, "remix:\n  seconds: 3\n"), schema=ProjectConfig)
    assert isinstance(ok.remix, RemixConfig) and ok.remix.seconds == 3.0


def _differences(a: object, b: object, path: str = "") -> list[str]:
    """Every key path where two JSON-like values differ (``a`` shipped, ``b`` built in)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}".lstrip("."))]
    return [] if a == b else [f"{path}: data.yaml {a!r} != built-in {b!r}"]


def test_builtin_defaults_are_the_shipped_data_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a data.yaml, every setting is the shipped data.yaml's (only its fixture `sources` are not built in),
    so the same seed gives the same bytes whichever folder a command runs in."""
    from augment.config import load_project
    from pipelines.params import pipelines_config
    from train.config import train_config

    shipped = load_project(ROOT / "data.yaml")
    monkeypatch.chdir(tmp_path)
    builtin = load_project()
    checked = {"catalog", "sources", "ingest", "remix", "train", "pipelines", "stream", "report"}
    assert set(ProjectConfig.model_fields) == checked, "a new data.yaml section: compare it here too"
    assert builtin.sources == () and len(shipped.sources) == 3
    assert builtin.catalog.relative_to(tmp_path) == shipped.catalog.relative_to(ROOT)
    diffs = []
    for name in ("ingest", "remix"):
        diffs += _differences(getattr(shipped, name).model_dump(mode="json"),
                              getattr(builtin, name).model_dump(mode="json"), name)
    diffs += _differences(train_config(shipped.train).model_dump(mode="json"),
                          train_config(builtin.train).model_dump(mode="json"), "train")
    diffs += _differences(pipelines_config(shipped.pipelines).model_dump(mode="json"),
                          pipelines_config(builtin.pipelines).model_dump(mode="json"), "pipelines")
    diffs += _differences(shipped.stream, builtin.stream, "stream") + _differences(shipped.report, builtin.report,
                                                                                    "report")
    assert not diffs, "\n".join(diffs)
    # the comparison is not vacuous: the remix section has non-neutral settings to compare
    assert builtin.remix.augment["drums"]["channel_swap"] == {"p": 0.5}


def test_config_source_says_which_config(tmp_path: Path) -> None:
    from augment.config import config_source

    assert config_source(None, folder=tmp_path) == f"built-in defaults (no data.yaml in {tmp_path.resolve()})"
    (tmp_path / "data.yaml").write_text("remix: {seconds: 3}\n")
    assert config_source(None, folder=tmp_path) == str(tmp_path.resolve() / "data.yaml")
    assert config_source(tmp_path / "x.yaml") == str(tmp_path / "x.yaml")
