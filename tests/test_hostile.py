"""The adversarial suite: what a hostile or unlucky user does to stemdb, and what stemdb must do in return.

Every input is generated under ``tmp_path`` (no big files in the repository). The list it keeps: files that go bad
after ingest, errors raised in worker processes, a full disk (an injected ENOSPC), hostile config values, broken
audio of every kind and hostile file names, concurrent runs on one catalogue and one output folder, bad CLI
options, read-only targets, evaluation of estimates that are short or not finite. Kills at random points of ingest
and remix are in tests/test_ingest.py and tests/test_remix.py.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from augment.build import build_remix
from augment.config import RemixConfig
from stemdb import audio
from stemdb.catalog import Catalog
from stemdb.config import IngestConfig, SourceConfig, StemsLayout
from stemdb.errors import AudioReadError, AudioWriteError, ConfigError
from stemdb.ingest import ingest_sources

from .conftest import MUSDB, STEMS

FAST = IngestConfig(tempo=False, workers=1)
NO_AUG = RemixConfig(seconds=1.0, levels={"mode": "uniform"})


def _stems_catalog(root: Path, cat: Path) -> list[SourceConfig]:
    shutil.copytree(STEMS, root)
    src = [SourceConfig(name="s", root=root, layout=StemsLayout())]
    ingest_sources(src, cat, cfg=FAST)
    return src


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


# --------------------------------------------------------------------------------------------------------------
# 1. a file that goes bad after ingest


def test_file_gone_bad_loses_its_row_and_lands_in_rejects(tmp_path: Path) -> None:
    """Regression (issue 18.1): the old stem rows stayed and the rejects table stayed empty."""
    src = _stems_catalog(tmp_path / "stems", tmp_path / "cat")
    vocals = sorted((tmp_path / "stems" / "vocals").glob("*.wav"))
    originals = {f: f.read_bytes() for f in vocals}
    rng = np.random.default_rng(0)
    for f in vocals:
        f.write_bytes(rng.bytes(4000))
    for run in range(2):  # the rerun keeps the state
        rep = ingest_sources(src, tmp_path / "cat", cfg=FAST)
        assert rep.rejected == (len(vocals) if run == 0 else 0)
        cat = Catalog.open(tmp_path / "cat")
        assert sorted(cat.rejects()["path"]) == [f"vocals/{f.name}" for f in vocals]
        assert not (cat.stems(include_deleted=True, include_duplicates=True)["kind"] == "vocals").any()
    vocals[0].write_bytes(originals[vocals[0]])
    os.utime(vocals[0], (1, 1))
    rep = ingest_sources(src, tmp_path / "cat", cfg=FAST)
    cat = Catalog.open(tmp_path / "cat")
    assert rep.measured == 1 and len(cat.rejects()) == len(vocals) - 1
    assert (cat.stems()["path"] == f"vocals/{vocals[0].name}").sum() == 1


# --------------------------------------------------------------------------------------------------------------
# 2. errors from worker processes, a full disk


@pytest.mark.parametrize("exc", [
    AudioReadError("/x/vocals.wav", "truncated: header says 10 frames"),
    AudioWriteError("/out/mixture.wav", "write failed: No space left on device (errno 28)"),
    ConfigError("remix.seconds=0 is not allowed", key="remix.seconds", source="data.yaml"),
])
def test_errors_survive_pickling(exc: Exception) -> None:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and str(back) == str(exc)
    assert vars(back) == vars(exc)


def test_worker_errors_are_pickled_subclasses_too() -> None:
    from augment.params import InvalidParameterError
    from train.evaluate import MissingEstimateError

    for exc in (InvalidParameterError("gain.p=2", key="gain.p"), MissingEstimateError("/e/t/vocals.wav", "gone")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)


def test_two_worker_remix_names_the_bad_file(tmp_path: Path) -> None:
    """Regression (issue 18.2): a BrokenProcessPool traceback instead of the cause."""
    _stems_catalog(tmp_path / "stems", tmp_path / "cat")
    for f in (tmp_path / "stems" / "vocals").glob("*.wav"):  # bad after ingest: the catalogue still lists them
        f.write_bytes(b"RIFF" + bytes(200))
    with pytest.raises(AudioReadError, match=r"vocals/.*\.wav"):
        build_remix(tmp_path / "cat", tmp_path / "out", n=4, seed=0, cfg=NO_AUG, workers=2, chunk_size=2)


class _FullDisk:
    """A file object whose writes fail with ENOSPC, as on a full disk."""

    def __init__(self, fh) -> None:  # noqa: ANN001
        self._fh = fh

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._fh, name)


def _fill_disk_for_wav(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fdopen

    def fdopen(fd: int, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        fh = real(fd, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}")
        return _FullDisk(fh) if ".wav." in name and name.endswith(".tmp") else fh

    monkeypatch.setattr(os, "fdopen", fdopen)


@pytest.mark.parametrize("workers", [1, 2])
def test_full_disk_names_the_cause_cleans_up_and_a_rerun_completes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture, workers: int) -> None:
    """Regression (issue 18.2): an empty reason and a cffi "Exception ignored" traceback (one worker), a
    BrokenProcessPool (two)."""
    _stems_catalog(tmp_path / "stems", tmp_path / "cat")
    out = tmp_path / "out"
    kw = {"n": 4, "seed": 0, "cfg": NO_AUG, "workers": workers, "chunk_size": 2}
    with monkeypatch.context() as m:
        _fill_disk_for_wav(m)
        with pytest.raises(AudioWriteError, match="No space left on device"):
            build_remix(tmp_path / "cat", out, **kw)
    assert "Exception ignored" not in capfd.readouterr().err
    assert not [p for p in _files(out) if ".tmp" in p]
    summary = build_remix(tmp_path / "cat", out, **kw)
    assert summary.rendered == 4 and len(list(out.glob("*/mix-*"))) == 4


# --------------------------------------------------------------------------------------------------------------
# 3. hostile config values


@pytest.mark.parametrize("section", [
    {"targets": ["vocals", "../../../ESCAPED"], "kind_map": {"keys": "../../../ESCAPED"}},
    {"targets": ["vocals", "/abs"]},
    {"targets": ["vocals", ".hidden"]},
    {"targets": ["vocals", "-rf"]},
    {"targets": ["vocals", "mixture"]},
    {"targets": ["vocals", "vocals"]},
    {"targets": ["vocals", "a\nb"]},
    {"kind_map": {"keys": "x/y"}},
    {"silent_prob": {"../v": 0.5}},
])
def test_targets_and_kinds_must_be_safe_names(tmp_path: Path, section: dict) -> None:
    """Regression (issue 18.3): a target ``../../../ESCAPED`` wrote ESCAPED.wav three folders above --out."""
    import yaml

    from augment.config import load_project

    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"remix": section}))
    with pytest.raises(ConfigError, match=r"remix\.(targets|kind_map|silent_prob).*(safe name|distinct)"):
        load_project(tmp_path / "data.yaml")


def test_source_kinds_and_musdb_stems_must_be_safe_names() -> None:
    from stemdb.config import MusdbLayout, validate_config

    with pytest.raises(ConfigError, match="safe name"):
        validate_config(StemsLayout, {"kinds": {"vox": "../vocals"}})
    with pytest.raises(ConfigError, match="safe name"):
        validate_config(MusdbLayout, {"stems": ["mixture", "../../etc/passwd"]})


# --------------------------------------------------------------------------------------------------------------
# 4 and the broken-audio list: every kind of bad file is a reject with a reason, good files with odd names or
# formats are ingested, nothing blocks the run or a rerun


def _hostile_corpus(root: Path) -> tuple[set[str], dict[str, str]]:
    """A folder of odd but good files and of bad ones. Returns (good paths, {bad path: word of its reason})."""
    d = root / "vocals"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    tone = (0.3 * np.sin(np.arange(44100) * 2 * np.pi * 220 / 44100)).astype(np.float32)
    good = {}
    for name, sr, subtype, ch in (("8k.wav", 8000, "PCM_16", 1), ("192k.wav", 192000, "PCM_16", 2),
                                  ("24bit.wav", 44100, "PCM_24", 2), ("float.wav", 44100, "FLOAT", 1),
                                  ("with space.wav", 44100, "PCM_16", 1), ("ünïcødé ♪.wav", 44100, "PCM_16", 1),
                                  ("new\nline.wav", 44100, "PCM_16", 1), ("-rf --help.wav", 44100, "PCM_16", 1),
                                  ("good.flac", 44100, "PCM_16", 1)):
        sig = np.tile(tone[: sr // 2] * (0.5 + len(good) / 20), (ch, 1))
        audio.write(d / name, sig, sr, subtype=subtype)
        good[name] = sig
    bad = {"zero.wav": "empty", "32ch.wav": "channels", "noframes.wav": "0 frames", "nan.wav": "non-finite",
           "inf.wav": "non-finite"}
    (d / "zero.wav").write_bytes(b"")
    sf.write(str(d / "32ch.wav"), np.full((1000, 32), 0.1, dtype=np.float32), 44100, subtype="PCM_16")
    sf.write(str(d / "noframes.wav"), np.zeros((0, 1), dtype=np.float32), 44100, subtype="PCM_16")
    for name, val in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        x = np.tile(tone[:4410], (1, 1)).T.copy()
        x[100:120] = val
        sf.write(str(d / name), x, 44100, subtype="FLOAT")
    data = (d / "float.wav").read_bytes()
    (d / "truncated.wav").write_bytes(data[: len(data) // 3])
    bad["truncated.wav"] = "truncated"
    for suffix in ("wav", "flac", "mp3", "ogg", "oga", "opus", "aif", "aiff", "m4a", "aac", "webm", "weba", "mka",
                   "wma"):
        (d / f"random.{suffix}").write_bytes(rng.bytes(3000))
        bad[f"random.{suffix}"] = ""
    (d / "loop.wav").symlink_to(d / "loop.wav")
    bad["loop.wav"] = "unreadable"
    (d / "dir.wav").mkdir()  # a folder named like audio: not a file, not a row
    (d / "dir.wav" / "inner.txt").write_text("x")
    (d / "sub").mkdir()
    (d / "sub" / "up").symlink_to(d)  # a folder symlink loop: scanning ends
    bad_name = os.fsencode(d) + b"/caf\xe9.wav"
    shutil.copy(d / "float.wav", bad_name.decode("utf-8", "surrogateescape"))
    bad["caf\\xe9.wav"] = "UTF-8"
    return {f"vocals/{n}" for n in good}, {f"vocals/{n}": w for n, w in bad.items()}


def test_broken_and_odd_files(tmp_path: Path) -> None:
    """Regression (issue 18.4 and 8): a non-UTF-8 name blocked every ingest for good (UnicodeEncodeError);
    random bytes named .mp3 were 'File does not exist'; an .m4a was neither ingested nor rejected."""
    good, bad = _hostile_corpus(tmp_path / "h")
    src = [SourceConfig(name="h", root=tmp_path / "h", layout=StemsLayout())]
    rep = ingest_sources(src, tmp_path / "cat", cfg=FAST)
    cat = Catalog.open(tmp_path / "cat")
    stems = cat.stems(include_duplicates=True)
    rej = cat.rejects().set_index("path")["reason"]
    assert set(stems["path"]) == good
    assert set(rej.index) == set(bad)
    for path, word in bad.items():
        assert word in rej[path], (path, rej[path])
        assert "does not exist" not in rej[path] and "pipe" not in rej[path], (path, rej[path])
    assert rep.measured == len(good) and rep.rejected == len(bad)
    again = ingest_sources(src, tmp_path / "cat", cfg=FAST)
    assert again.measured == again.rejected == 0 and again.skipped == len(good) + len(bad)


# --------------------------------------------------------------------------------------------------------------
# 5. every CLI option with out-of-range, wrong-type and non-finite values: one line naming option and value, exit
# 2, no traceback without --verbose, nothing written


def _cli(args: list[str]):  # noqa: ANN202 - a click Result
    from typer.testing import CliRunner

    from pipelines.cli import app

    return CliRunner().invoke(app, args)


def _one_line_error(result, *words: str) -> None:  # noqa: ANN001
    """Exit 2, no traceback, and the error on one line, the last (notes such as "using built-in defaults" may
    come first)."""
    lines = result.output.strip().splitlines()
    out = lines[-1] if lines else ""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert out.startswith("error: ") and "Traceback" not in result.output, result.output
    assert sum(ln.startswith("error") for ln in lines) == 1, result.output
    for w in words:
        assert w in out, (w, out)


BAD_OPTIONS = [
    (["remix", "--out", "O", "--seconds", v], ["--seconds", v.replace("1e9", "1000000000")])
    for v in ("0", "-3", "nan", "inf", "1e9", "100000")
] + [
    (["remix", "--out", "O", "--seconds", "abc"], ["--seconds", "abc"]),
    (["remix", "--out", "O", "--seed", "-5"], ["--seed", "-5", ">= 0"]),
    (["remix", "--out", "O", "--seed", "1.5"], ["--seed", "1.5"]),
    (["remix", "--out", "O", "--workers", "-3"], ["--workers", "-3", ">= 1"]),
    (["remix", "--out", "O", "--workers", "100000"], ["--workers", "100000", "<= 1024"]),
    (["remix", "--out", "O", "--n", "0"], ["--n", "0", ">= 1"]),
    (["remix", "--out", "O", "--n", "many"], ["--n", "many"]),
    (["remix", "--out", "FILE"], ["--out", "FILE", "is a file"]),
    (["ingest", "MISSING", "--layout", "stems", "--catalog", "C"], ["MISSING", "does not exist"]),
    (["ingest", ".", "--layout", "tracks", "--catalog", "C"], ["--layout", "tracks", "'stems', 'musdb'"]),
    (["ingest", ".", "--layout", "stems", "--catalog", "FILE"], ["--catalog", "FILE", "is a file"]),
    (["ingest", ".", "--layout", "stems", "--catalog", "C", "--workers", "-3"], ["--workers", "-3", ">= 0"]),
    (["evaluate", "--estimates", "MISSING", "--references", "."], ["--estimates", "MISSING"]),
    (["evaluate", "--estimates", ".", "--references", ".", "--out", "."], ["--out", "is a folder"]),
    (["evaluate", "--estimates", ".", "--references", ".", "--workers", "0"], ["--workers", "0"]),
    (["report", "catalog", "--out", "."], ["--out", "is a folder"]),
    (["report", "remix", "MISSING"], ["MISSING", "does not exist"]),
    (["catalog", "summary", "--catalog", "FILE"], ["--catalog", "FILE"]),
    (["separate", "MISSING.wav", "--model", ".", "--out", "O"], ["MISSING.wav", "does not exist"]),
    (["separate", "FILE", "--model", ".", "--out", "O", "--overlap", "1"], ["--overlap", "1", "< 1"]),
    (["separate", "FILE", "--model", ".", "--out", "O", "--chunk-seconds", "nan"], ["--chunk-seconds", "nan"]),
    (["train", "--out", "FILE"], ["--out", "FILE"]),
    (["train", "--out", "O", "--nproc", "0"], ["--nproc", "0"]),
    (["evaluate-run", ".", "--musdb-root", "MISSING"], ["--musdb-root", "MISSING"]),
    (["remix", "--out", "O", "--nope", "1"], ["--nope"]),
    (["train", "--out", "O", "--init", "MISSING"], ["--init", "MISSING", "does not exist"]),
    (["bundle", "MISSING", "--out", "B"], ["MISSING", "does not exist"]),
    (["bundle", ".", "--out", "FILE"], ["--out", "FILE", "is a file"]),
    (["compare", "--config", "MISSING.yaml", "--out", "C"], ["--config", "MISSING.yaml", "does not exist"]),
    (["compare", "--config", ".", "--out", "C"], ["--config", "is a folder"]),
    (["compare", "--config", "FILE", "--out", "FILE"], ["--out", "FILE", "is a file"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          args: list[str], words: list[str]) -> None:
    """Regression (issue 18.5): tracebacks with exit 1, huge allocations, --workers -3 accepted, an empty
    catalogue left behind by `ingest /nonexistent`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("x")
    before = _files(tmp_path)
    _one_line_error(_cli(args), *words)
    assert _files(tmp_path) == before


def test_runtime_errors_are_one_line_and_verbose_shows_the_traceback(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nocat").mkdir()
    args = ["remix", "--out", "O", "--catalog", "nocat"]
    _one_line_error(_cli(args), "nocat", "no stemdb catalogue")
    verbose = _cli(["--verbose", *args])
    assert verbose.exit_code == 2 and "Traceback" in verbose.output
    assert not (tmp_path / "O").exists()


def test_ingest_of_a_missing_source_root_writes_no_catalogue(tmp_path: Path) -> None:
    src = [SourceConfig(name="s", root=tmp_path / "missing", layout=StemsLayout())]
    with pytest.raises(AudioReadError, match="root folder does not exist"):
        ingest_sources(src, tmp_path / "cat", cfg=FAST)
    assert not (tmp_path / "cat").exists()


def test_read_only_targets_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only --out or --catalog (as on a read-only mount, where even root cannot write): the option check
    says so before anything runs; a folder that turns read-only mid-run is an OS error on one line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ro").mkdir()
    real = os.access
    with monkeypatch.context() as m:
        m.setattr(os, "access", lambda p, mode, **kw: False if "ro" in Path(p).parts else real(p, mode, **kw))
        _one_line_error(_cli(["remix", "--out", "ro/out"]), "--out", "ro/out", "not writable")
        _one_line_error(_cli(["ingest", ".", "--layout", "stems", "--catalog", "ro/cat"]), "--catalog",
                        "not writable")

    def denied(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "cat" / "_catalog.json"))

    (tmp_path / "in" / "vocals").mkdir(parents=True)
    monkeypatch.setattr("stemdb.atomic.tempfile.mkstemp", denied)
    _one_line_error(_cli(["ingest", "in", "--layout", "stems", "--catalog", "cat"]), "Permission denied",
                    "_catalog.json")


# --------------------------------------------------------------------------------------------------------------
# 6. concurrent runs: one output folder (a lock, a clear "busy"), one catalogue (safe sharing); another seed


HOLD_LOCK = """
import sys, time
from stemdb.atomic import folder_lock
with folder_lock(sys.argv[1], "test holder"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_remix_into_one_out_is_busy_and_the_lock_dies_with_its_holder(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (issue 18.6): the second of two remixes into one --out crashed (FileNotFoundError on a .parts
    chunk) and left more mixture folders than recipes."""
    import signal
    import subprocess
    import sys

    from stemdb.errors import BusyError

    _stems_catalog(tmp_path / "stems", tmp_path / "cat")
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match=rf"{out}: busy: test holder \(pid {holder.pid}\)"):
            build_remix(tmp_path / "cat", out, n=2, seed=0, cfg=NO_AUG)
        monkeypatch.chdir(tmp_path)
        _one_line_error(_cli(["remix", "--out", "out", "--catalog", "cat", "--n", "2"]), "busy", str(holder.pid))
        assert not list(out.glob("*/mix-*"))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    summary = build_remix(tmp_path / "cat", out, n=2, seed=0, cfg=NO_AUG)  # the kernel released the lock
    assert summary.rendered == 2


def test_another_seed_into_a_used_out_is_refused_and_deletes_nothing(tmp_path: Path) -> None:
    """Regression (issue 18.6): re-using an --out with another seed silently deleted the earlier mixtures."""
    _stems_catalog(tmp_path / "stems", tmp_path / "cat")
    out = tmp_path / "out"
    build_remix(tmp_path / "cat", out, n=3, seed=0, cfg=NO_AUG)
    before = _files(out)
    with pytest.raises(ConfigError, match="holds a remix of seed 0"):
        build_remix(tmp_path / "cat", out, n=3, seed=1, cfg=NO_AUG)
    with pytest.raises(ConfigError, match="other settings"):
        build_remix(tmp_path / "cat", out, n=3, seed=0, cfg=NO_AUG, seconds=2.0)
    assert _files(out) == before
    more = build_remix(tmp_path / "cat", out, n=5, seed=0, cfg=NO_AUG)  # the same build, extended
    assert more.mixtures == 5 and len(list(out.glob("*/mix-*"))) == 5
    assert {p for p in before if "mix-" in p} <= set(_files(out))


def test_second_ingest_into_one_catalogue_is_busy(tmp_path: Path) -> None:
    """Two ingests of one catalogue: the second stops at once with "busy" (sharing it raced: a compaction removed
    the part files the other was reading, FileNotFoundError); the lock dies with its holder."""
    import signal
    import subprocess
    import sys

    from stemdb.errors import BusyError

    shutil.copytree(STEMS, tmp_path / "stems")
    src = [SourceConfig(name="s", root=tmp_path / "stems", layout=StemsLayout())]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "cat")], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match=rf"cat: busy: test holder \(pid {holder.pid}\)"):
            ingest_sources(src, tmp_path / "cat", cfg=FAST)
        assert not (tmp_path / "cat" / "stems").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert ingest_sources(src, tmp_path / "cat", cfg=FAST).measured == 16


def test_a_reader_beside_a_compaction_reads_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that listed the part files just before a compaction removed them lists again."""
    import stemdb.catalog as catalog_mod

    _stems_catalog(tmp_path / "stems", tmp_path / "cat")
    cat = Catalog.open(tmp_path / "cat")
    (tmp_path / "cat" / "stems" / "part-00000000000000000000-gone0000.parquet").write_bytes(b"")  # listed, removed
    real = catalog_mod.ds.dataset

    def dataset(paths, **kw):  # noqa: ANN001, ANN003, ANN202
        gone = [p for p in paths if "gone0000" in p]
        for p in gone:
            Path(p).unlink(missing_ok=True)
        return real([p for p in paths if p not in gone] if not gone else paths, **kw)

    monkeypatch.setattr(catalog_mod.ds, "dataset", dataset)
    assert len(cat.stems()) == 16


# --------------------------------------------------------------------------------------------------------------
# 7. evaluation of estimates that are short, not finite or not audio


def _estimates(root: Path, tracks: list[str]) -> Path:
    for t in tracks:
        shutil.copytree(MUSDB / "train" / t, root / t, ignore=shutil.ignore_patterns("mixture.wav"))
    return root


def test_short_estimate_is_an_error_not_a_better_score(tmp_path: Path) -> None:
    """Regression (issue 18.7): a half-length estimate scored SDR 21.4 against 20.5 for the whole one, with only a
    debug log."""
    from train.evaluate import EvaluationError, score_folders

    est = _estimates(tmp_path / "est", ["Music Delta - Rock"])
    a, sr = audio.read(est / "Music Delta - Rock" / "vocals.wav")
    audio.write(est / "Music Delta - Rock" / "vocals.wav", a[:, : a.shape[1] // 2], sr)
    with pytest.raises(EvaluationError, match=r"vocals\.wav: 88200 frames, the reference has 176400"):
        score_folders(est, MUSDB, stems=["vocals"])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_estimate_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 value: float) -> None:
    """Regression (issue 18.7): NaN or inf samples gave `null` scores with exit 0 and a numpy warning."""
    est = _estimates(tmp_path / "est", ["Music Delta - Rock"])
    a, sr = audio.read(est / "Music Delta - Rock" / "bass.wav")
    a[:, 1000:1010] = value
    audio.write(est / "Music Delta - Rock" / "bass.wav", a, sr, subtype="FLOAT")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning would fail the test
        r = _cli(["evaluate", "--estimates", "est", "--references", str(MUSDB), "--stem", "bass"])
    _one_line_error(r, "bass.wav", "20 non-finite samples")
    assert not (tmp_path / "scores.json").exists()


def test_two_worker_evaluation_names_the_corrupt_estimate(tmp_path: Path) -> None:
    """Regression (issue 18.2): `stemdb evaluate --workers 2` with a corrupt estimate ended in BrokenProcessPool."""
    from train.evaluate import score_folders

    est = _estimates(tmp_path / "est", ["Music Delta - Rock", "Music Delta - Hendrix"])
    (est / "Music Delta - Hendrix" / "drums.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(AudioReadError, match=r"Hendrix/drums\.wav: decoding failed \(Format not recognised"):
        score_folders(est, MUSDB, stems=["drums"], workers=2)


# --------------------------------------------------------------------------------------------------------------
# 8. smaller: killed parents, stale temp files, incomplete MUSDB tracks, the leakage warning


KILLABLE_INGEST = """
import sys
from stemdb.config import IngestConfig, SourceConfig, StemsLayout
from stemdb.ingest import ingest_sources
src = [SourceConfig(name="s", root=sys.argv[1], layout=StemsLayout())]
ingest_sources(src, sys.argv[2], cfg=IngestConfig(tempo=False, workers=2, batch_size=1))
"""


def _children(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree from /proc (Linux)")
def test_killing_the_ingest_parent_ends_its_workers(tmp_path: Path) -> None:
    """Regression (issue 18.8): the pool workers of a killed ingest stayed for 50 s and more."""
    import signal
    import subprocess
    import sys
    import time

    for i in range(4):
        shutil.copytree(STEMS, tmp_path / "corpus" / f"set{i}")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE_INGEST, str(tmp_path / "corpus"), str(tmp_path / "cat")],
                            env=env)
    deadline, workers = time.time() + 120, set()
    while time.time() < deadline and len(workers) < 2:
        workers = _children(proc.pid)
        time.sleep(0.05)
    assert len(workers) >= 2, "the ingest never started its pool"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t0 = time.time()
    while time.time() - t0 < 10 and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), f"workers still alive {time.time() - t0:.1f} s after the kill"


def test_stale_temp_files_of_killed_writers_are_removed(tmp_path: Path) -> None:
    """Regression (issue 18.8): a 0-byte temp part file of a killed ingest was never cleaned."""
    src = _stems_catalog(tmp_path / "stems", tmp_path / "cat")
    stale = tmp_path / "cat" / "stems" / ".part-00000000000000000001-deadbeef.parquet.k2j3h4.tmp"
    fresh = tmp_path / "cat" / "stems" / ".part-00000000000000000002-cafecafe.parquet.a1b2c3.tmp"
    stale.write_bytes(b"")
    fresh.write_bytes(b"")  # a concurrent writer's, seconds old: kept
    os.utime(stale, (1, 1))
    ingest_sources(src, tmp_path / "cat", cfg=FAST)
    assert not stale.exists() and fresh.exists()
    out = tmp_path / "out"
    build_remix(tmp_path / "cat", out, n=2, seed=0, cfg=NO_AUG)
    (out / ".recipes.parquet.x1y2z3.tmp").write_bytes(b"")
    (out / ".parts" / ".chunk-0000000-abc.parquet.q9w8e7.tmp").write_bytes(b"")
    build_remix(tmp_path / "cat", out, n=2, seed=0, cfg=NO_AUG)  # holds the lock: every temp file is stale
    assert not [p for p in _files(out) if p.endswith(".tmp")]


def test_incomplete_musdb_track_and_extra_stems_are_rejects(tmp_path: Path) -> None:
    """Regression (issue 18.8): a track without bass.wav was not flagged; guitar.wav was ignored silently."""
    track = tmp_path / "m" / "train" / "Music Delta - Rock"
    shutil.copytree(MUSDB / "train" / "Music Delta - Rock", track)
    (track / "bass.wav").unlink()
    shutil.copy(track / "other.wav", track / "guitar.wav")
    (track / "notes.txt").write_text("not audio, not a stem: not listed")
    from stemdb.ingest import ingest_folder

    rep = ingest_folder(tmp_path / "m", layout="musdb", catalog=tmp_path / "cat", cfg=FAST)
    rej = Catalog.open(tmp_path / "cat").rejects().set_index("path")["reason"]
    assert rep.measured == 4 and rep.rejected == 2
    assert "missing" in rej["train/Music Delta - Rock/bass.wav"]
    assert "not a stem of the musdb layout" in rej["train/Music Delta - Rock/guitar.wav"]
    shutil.copy(MUSDB / "train" / "Music Delta - Rock" / "bass.wav", track / "bass.wav")  # completed later
    rep = ingest_folder(tmp_path / "m", layout="musdb", catalog=tmp_path / "cat", cfg=FAST)
    cat = Catalog.open(tmp_path / "cat")
    assert rep.measured == 1 and list(cat.rejects()["path"]) == ["train/Music Delta - Rock/guitar.wav"]
    assert "bass" in set(cat.stems()["kind"])


def test_leakage_names_real_leaks_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Regression (issue 18.8): the leakage warning fired for a song found in a single split (two instrumental
    tracks share their silent vocals' content)."""
    import logging

    root = tmp_path / "m"
    shutil.copytree(MUSDB / "train" / "Music Delta - Zeppelin", root / "train" / "Music Delta - Zeppelin")
    track = root / "test" / "Other Instrumental"
    shutil.copytree(MUSDB / "train" / "Music Delta - Rock", track)
    silent, sr = audio.read(MUSDB / "train" / "Music Delta - Zeppelin" / "vocals.wav")
    audio.write(track / "vocals.wav", silent, sr)  # the same digital silence in the test split
    from stemdb.ingest import ingest_folder

    with caplog.at_level(logging.WARNING, logger="stemdb.ingest"):
        rep = ingest_folder(root, layout="musdb", catalog=tmp_path / "cat", cfg=FAST)
    assert rep.leakage == [] and "leakage" not in caplog.text
    shutil.copy(MUSDB / "train" / "Music Delta - Zeppelin" / "drums.wav", track / "drums.wav")  # a real leak
    with caplog.at_level(logging.WARNING, logger="stemdb.ingest"):
        rep = ingest_folder(root, layout="musdb", catalog=tmp_path / "cat", cfg=FAST)
    assert rep.leakage == ["Music Delta - Zeppelin", "Other Instrumental"]
    assert "shares a stem's content with Other Instrumental (test)" in caplog.text


@pytest.mark.parametrize(("section", "key"), [
    ({"remix": {"seconds": float("nan")}}, "remix.seconds"),
    ({"remix": {"levels": {"mix_lufs": [float("-inf"), -10.0]}}}, "remix.levels.mix_lufs"),
    ({"remix": {"levels": {"uniform_gain_db": [float("nan"), 3.0]}}}, "remix.levels.uniform_gain_db"),
    ({"remix": {"levels": {"fallback_rel_lufs": {"vocals": float("inf")}}}}, "remix.levels.fallback_rel_lufs"),
    ({"remix": {"silent_prob": {"vocals": float("nan")}}}, "remix.silent_prob"),
    ({"ingest": {"silence_db": float("-inf")}}, "ingest.silence_db"),
    ({"remix": {"augment": {"vocals": {"gain": {"p": float("nan")}}}}}, "gain"),
])
def test_non_finite_config_values_are_refused(tmp_path: Path, section: dict, key: str) -> None:
    """Hostile config values: NaN and inf are no setting of any key (pydantic accepted them where a key had no
    bounds, e.g. the mixture loudness range)."""
    import yaml

    from augment.config import load_project
    from augment.remix import chain_for

    (tmp_path / "data.yaml").write_text(yaml.safe_dump(section))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg = load_project(tmp_path / "data.yaml")
        for target in cfg.remix.targets:
            chain_for(cfg.remix, target)


def test_a_huge_n_starts_rendering_at_once_with_memory_that_does_not_grow_with_n(tmp_path: Path) -> None:
    """Regression (issue 18.8): `--n 100000000` held a list of every chunk (and a future per chunk with workers):
    770 MB before the first mixture; with n = 10**7 in chunks of 5, 2 M ranges. Now chunks are generated."""
    import tracemalloc

    _stems_catalog(tmp_path / "stems", tmp_path / "cat")

    class Stop(Exception):
        pass

    def stop_after_first_chunk(done: int, total: int) -> None:
        assert total == 10**7
        raise Stop(done)

    tracemalloc.start()
    try:
        with pytest.raises(Stop):
            build_remix(tmp_path / "cat", tmp_path / "out", n=10**7, seed=0, cfg=NO_AUG, chunk_size=5,
                        progress=stop_after_first_chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(list((tmp_path / "out").glob("*/mix-*"))) == 5
    assert peak < 40 * 2**20, f"{peak / 2**20:.0f} MiB traced for one chunk of a 10**7-mixture build"


def test_bounded_map_keeps_order_and_submits_a_window_ahead() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from stemdb.workers import bounded_map

    drawn: list[int] = []

    def items():  # noqa: ANN202
        for i in range(100):
            drawn.append(i)
            yield i

    with ThreadPoolExecutor(2) as ex:
        out = bounded_map(ex, lambda i: i * i, items(), window=4)
        assert [next(out) for _ in range(3)] == [0, 1, 4]
        assert len(drawn) <= 3 + 4  # taken results plus the window, not all 100
        assert list(out) == [i * i for i in range(3, 100)]
    with pytest.raises(ValueError, match="window must be >= 1"):
        next(bounded_map(None, abs, [1], window=0))  # type: ignore[arg-type]
