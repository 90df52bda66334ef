"""Shared fixtures: the bundled real recordings and a catalogue built from them once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stemdb.audio import ffmpeg_available
from stemdb.config import IngestConfig, MusdbLayout, SourceConfig, StemsLayout

DATA = Path(__file__).parent / "data"
MUSDB = DATA / "musdb"
STEMS = DATA / "stems"
STEM_MP4 = DATA / "musdb-stems"

requires_ffmpeg = pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg/ffprobe not on PATH (apt-get install ffmpeg)")


def fixture_sources(*, with_mp4: bool = True) -> list[SourceConfig]:
    """The bundled fixtures as three sources, as data.yaml describes them."""
    srcs = [
        SourceConfig(name="musdb", root=MUSDB, layout=MusdbLayout(), origin="musdb18hq", licence="CC BY-NC-SA"),
        SourceConfig(
            name="stems",
            root=STEMS,
            layout=StemsLayout(kinds={"vocals": "vocals", "drums": "drums", "bass": "bass", "keys": "keys",
                                      "other": "other"}),
            origin="single-stems",
            licence="mixed",
        ),
    ]
    if with_mp4 and ffmpeg_available():
        srcs.append(SourceConfig(name="musdb-mp4", root=STEM_MP4, layout=MusdbLayout(), origin="musdb18"))
    return srcs


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def fixture_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue of every bundled fixture (tempo off for speed), built once per test session. Read-only."""
    from stemdb.ingest import ingest_sources

    root = tmp_path_factory.mktemp("catalog")
    ingest_sources(fixture_sources(), root, cfg=IngestConfig(tempo=False, workers=1))
    return root


@pytest.fixture()
def stems_copy(tmp_path: Path) -> Path:
    """A writable copy of the loose-stem fixtures."""
    dst = tmp_path / "stems"
    shutil.copytree(STEMS, dst)
    return dst


@pytest.fixture(scope="session")
def prefect_harness():  # noqa: ANN201 - a generator fixture
    """One temporary Prefect server for the whole session: telemetry off, heartbeats off, generous startup timeout."""
    import os

    saved = {k: os.environ.get(k) for k in ("DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    os.environ.update({"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    import prefect.settings as ps
    from prefect.testing.utilities import prefect_test_harness

    try:
        with ps.temporary_settings(updates={ps.PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), \
                prefect_test_harness(server_startup_timeout=300):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
