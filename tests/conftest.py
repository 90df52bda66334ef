"""Shared fixtures: the bundled real recordings and a catalogue built from them once per session.

stemdb needs no ffmpeg program. A few tests compare against packages that do (``stempeg``, and ``museval`` /
``musdb``, which import stempeg): they are marked ``ffmpeg`` and skip, naming the program, where it is missing;
they import those packages only inside the test (:func:`import_or_skip`), so collection never needs them.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from stemdb.config import IngestConfig, MusdbLayout, SourceConfig, StemsLayout

DATA = Path(__file__).parent / "data"
MUSDB = DATA / "musdb"
STEMS = DATA / "stems"
STEM_MP4 = DATA / "musdb-stems"
ENCODED = DATA / "encoded"

FFMPEG_HINT = "`apt-get install -y ffmpeg` (stemdb itself does not need it)"


def ffmpeg_on_path() -> bool:
    """True when the ffmpeg and ffprobe programs are on PATH (what stempeg checks when it is imported)."""
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def import_or_skip(name: str) -> ModuleType:
    """Import ``name`` (museval, musdb, stempeg) or skip the test with the reason; these raise RuntimeError, not
    ImportError, at import when ffmpeg is missing, so ``pytest.importorskip`` would not catch it."""
    if not ffmpeg_on_path():
        pytest.skip(f"{name} needs the ffmpeg and ffprobe programs on PATH: {FFMPEG_HINT}")
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a reason to skip a comparison test
        pytest.skip(f"{name} is not importable: {type(exc).__name__}: {exc}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``ffmpeg`` skip, naming the program, when it is not on PATH."""
    if ffmpeg_on_path():
        return
    skip = pytest.mark.skip(reason=f"needs the ffmpeg and ffprobe programs on PATH: {FFMPEG_HINT}")
    for item in items:
        if "ffmpeg" in item.keywords:
            item.add_marker(skip)


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
    if with_mp4:
        srcs.append(SourceConfig(name="musdb-mp4", root=STEM_MP4, layout=MusdbLayout(), origin="musdb18"))
    return srcs


@pytest.fixture(autouse=True)
def _ieee_subnormals() -> object:
    """A CPU ``Trainer`` turns torch's flush-denormal mode on for its process (``train.flush_denormal``); tests that
    train in-process would leave it on for every later test (hypothesis float strategies need subnormals): after each
    test, where torch is loaded, IEEE subnormals come back."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def one_torch_thread() -> object:
    """One torch thread for a module's model tests (steady timings beside other work), the count restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
