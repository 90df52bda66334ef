"""The GPU kit (bench/gpu): the packed training pool rebuilds bit-exact, the wheel closure check finds what is
missing, and the suite records every part, failed or timed out, and writes gpu.json / gpu.md."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "gpu"))

import kit  # noqa: E402
import suite  # noqa: E402

SR = 44100


def write_song(folder: Path, rng: np.random.Generator, *, dual_mono: bool, residual: int) -> dict[str, np.ndarray]:
    """Four int16 stems and a mixture = their sum plus a small offset on a few samples."""
    folder.mkdir(parents=True)
    n = SR // 2
    stems = {}
    for name in kit.STEMS:
        x = rng.integers(-4000, 4000, size=(n, 1 if dual_mono else 2), dtype=np.int16)
        stems[name] = np.repeat(x, 2, axis=1) if dual_mono else x
    mix = sum(s.astype(np.int32) for s in stems.values())
    mix[::97] += residual
    stems["mixture"] = mix.astype(np.int16)
    for name, x in stems.items():
        sf.write(folder / f"{name}.flac", x, SR, subtype="PCM_16")
    return stems


@pytest.mark.parametrize("exact", [True, False], ids=["exact-mixtures", "mixture-as-stem-sum"])
def test_pool_pack_unpack_is_bit_exact_and_a_corrupt_pack_is_named(tmp_path: Path, exact: bool) -> None:
    rng = np.random.default_rng(0)
    pool = tmp_path / "pool"
    a = write_song(pool / "musdb" / "train" / "Song A", rng, dual_mono=True, residual=2)
    b = write_song(pool / "musdb" / "train" / "Song B", rng, dual_mono=False, residual=0)
    packed = tmp_path / "packed"
    index = kit.pack_pool(pool, packed, exact_mixtures=exact)
    assert set(index["songs"]) == {"train/Song A", "train/Song B"}
    assert [index["songs"][f"train/Song {s}"]["residual_max_lsb"] for s in "AB"] == [2, 0]
    assert (packed / "train" / "Song A" / "mixture-residual.flac").is_file() == exact
    assert sf.info(packed / "train" / "Song A" / "vocals.flac").channels == 1  # dual mono stored once
    assert sf.info(packed / "train" / "Song B" / "vocals.flac").channels == 2
    out = tmp_path / "out"
    kit.unpack_pool(packed, out)
    for song, arrays in (("Song A", a), ("Song B", b)):
        for name, x in arrays.items():
            y, sr = sf.read(out / "musdb" / "train" / song / f"{name}.wav", dtype="int16", always_2d=True)
            if name == "mixture" and not exact:  # the stem sum: off by the residual on every 97th frame of A
                x = sum(arrays[s].astype(np.int32) for s in kit.STEMS).clip(-32768, 32767).astype(np.int16)
            assert sr == SR and np.array_equal(x, y), (song, name)
        if not exact and song == "Song A":
            assert not np.array_equal(arrays["mixture"], x)
    # a packed file that no longer decodes to the recorded samples is refused, naming it
    x, _ = sf.read(packed / "train" / "Song A" / "drums.flac", dtype="int16", always_2d=True)
    sf.write(packed / "train" / "Song A" / "drums.flac", x // 2, SR, subtype="PCM_16")
    with pytest.raises(SystemExit, match="Song A: drums"):
        kit.unpack_pool(packed, tmp_path / "out2")


def fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
        name, version, "".join(f"Requires-Dist: {r}\n" for r in requires))
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)


def test_closure_check_names_what_is_missing_and_honours_markers(tmp_path: Path) -> None:
    wheels = tmp_path / "whl"
    wheels.mkdir()
    req, machine = tmp_path / "req.txt", tmp_path / "machine.txt"
    req.write_text("alpha==1.0\nbeta_pkg==2.0  # comment\n")
    machine.write_text("# the machine\nnumpy Torch\n")
    fake_wheel(wheels, "alpha", "1.0", ["beta-pkg>=2", "numpy", 'tomli; python_version < "3.11"',
                                         'colorama; sys_platform == "win32"'])
    fake_wheel(wheels, "beta_pkg", "2.0", ["torch>=2"])
    assert kit.check_closure(wheels, requirements=req, machine=machine) == {"numpy", "torch"}
    fake_wheel(wheels, "beta_pkg", "2.0", ["torch>=2", "missing-thing"])
    with pytest.raises(SystemExit, match="beta-pkg needs 'missing-thing': neither in the kit nor on the machine"):
        kit.check_closure(wheels, requirements=req, machine=machine)
    fake_wheel(wheels, "beta_pkg", "2.0", [])
    fake_wheel(wheels, "alpha", "1.0", ["beta-pkg>=3"])
    with pytest.raises(SystemExit, match="the kit has beta-pkg 2.0"):
        kit.check_closure(wheels, requirements=req, machine=machine)


def test_the_repository_kit_pins_are_well_formed() -> None:
    pins = kit.pins()
    assert {"soundfile", "soxr", "pydantic", "pydantic-core", "librosa", "museval"} <= set(pins)
    assert not set(pins) & (kit.machine_packages() - {"typing-extensions"})  # carried only to shadow a version


def part(name: str, code: str) -> suite.Part:
    return suite.Part(name, name, lambda w, a: [[sys.executable, "-c", code]], 30)


def test_run_part_records_failures_and_time_boxes(tmp_path: Path) -> None:
    args = argparse.Namespace(dry_run=True)
    log = tmp_path / "log"
    log.write_text("")
    ok = suite.run_part(part("scaling", "print('fine')"), tmp_path, args, 30, log)
    bad = suite.run_part(part("scaling", "import sys; print('boom'); sys.exit(3)"), tmp_path, args, 30, log)
    slow = suite.run_part(part("scaling", "import time; time.sleep(30)"), tmp_path, args, 1.5, log)
    assert (ok["status"], ok["rc"]) == ("ok", 0)
    assert (bad["status"], bad["rc"]) == ("failed", 3) and "boom" in bad["log_tail"]
    assert slow["status"] == "timeout" and slow["seconds"] < 10
    assert "stopped by its time box" in log.read_text()


def test_suite_dry_run_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu" / "suite.py"), str(out), "--dry-run",
                           "--only", "scaling"], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "gpu.json").read_text())
    assert list(result["parts"]) == ["scaling"] and result["parts"]["scaling"]["status"] == "ok"
    figures = result["parts"]["scaling"]["figures"]
    assert "1" in figures["by_workers"] and figures["speedup_max"] > 0
    md = (out / "gpu.md").read_text()
    assert "`build_remix` scaling" in md and "| 1 | 8 |" in md


def test_proof_plan_fits_the_time_box_or_skips() -> None:
    auto = argparse.Namespace(proof_minutes="auto")
    for box in (174.0, 330.0, 600.0, 3600.0):
        plan = suite.proof_plan(auto, box)
        if plan is None:
            continue
        minutes, variants = plan
        assert minutes >= suite.PROOF_MIN_MINUTES and len(variants) >= 2 and variants[0] == "real"
        needed = suite.PROOF_SETUP_S + len(variants) * (suite.PROOF_OVERHEAD_S + 60 * minutes)
        assert needed <= box, (box, plan)
    # the 174 s box that an H200 run overran (it floored at 0.25 min and timed out in the 2nd variant): skipped
    assert suite.proof_plan(auto, 174.0) is None
    assert suite.proof_plan(auto, 330.0)[1] == ("real", "naive")  # fewer variants, not fewer minutes
    assert suite.proof_plan(auto, 600.0)[1] == suite.PROOF_VARIANTS
    assert suite.proof_plan(argparse.Namespace(proof_minutes="1.5"), 10.0) == (1.5, suite.PROOF_VARIANTS)


def test_the_tracked_tree_leaves_room_for_the_kit() -> None:
    """What git sends to the GPU machine plus the kit must stay under the device's 64 MiB: the wheels take 5.1 MiB
    and the packed pool 24.2 MiB (``make gpu-kit``), so the tree (fixtures included) may take at most 34 MiB. A
    fixture that grows it past that fails here, not in CI's ``make gpu-kit``."""
    tree = kit.travel_bytes(carry=())[1]["working tree"]
    assert tree <= 34 * 2**20, f"tracked tree {tree / 2**20:.1f} MiB: the GPU kit would not fit in {kit.LIMIT} bytes"
