"""The install and CI helpers: `.ci/system-packages` (run by `make install`) and `.ci/without-ffmpeg`.

The package script runs against stand-in programs (`id`, `apt-get`, `chromium`) in a PATH of their own, so each case
(root or not, Debian or Ubuntu, Chromium present or not, no apt-get) is exercised without touching the machine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PACKAGES = ROOT / ".ci" / "system-packages"
WITHOUT_FFMPEG = ROOT / ".ci" / "without-ffmpeg"
BASH = "/bin/bash"


def stand_ins(tmp_path: Path, *, uid: int, chromium: bool = False, apt: bool = True, os_id: str = "debian") -> dict:
    """A PATH folder with fake programs, an os-release file and the environment to run the script with."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "apt.log"

    def prog(name: str, body: str) -> None:
        (bin_ / name).write_text(f"#!{BASH}\n{body}\n")
        (bin_ / name).chmod(0o755)

    prog("id", f'[ "$1" = -u ] && echo {uid}')
    if apt:
        prog("apt-get", f'echo "$*" >> {log}')
    if chromium:
        prog("chromium", "exit 0")
    os.symlink("/bin/sh", bin_ / "sh")
    rel = tmp_path / "os-release"
    rel.write_text(f"ID={os_id}\n" + ("ID_LIKE=debian\n" if os_id == "ubuntu" else ""))
    return {"PATH": str(bin_), "OS_RELEASE": str(rel), "log": log}


def run(env: dict) -> tuple[subprocess.CompletedProcess, list[str]]:
    log: Path = env.pop("log")
    r = subprocess.run([BASH, str(SYSTEM_PACKAGES)], env=env, capture_output=True, text=True, timeout=60)
    return r, (log.read_text().splitlines() if log.exists() else [])


def test_as_root_on_debian_it_installs_chromium(tmp_path: Path) -> None:
    r, apt = run(stand_ins(tmp_path, uid=0))
    assert r.returncode == 0, r.stderr
    assert apt == ["update -q", "install -y -q --no-install-recommends chromium"]
    assert "installing chromium" in r.stdout


def test_as_root_on_ubuntu_the_package_is_chromium_browser(tmp_path: Path) -> None:
    _, apt = run(stand_ins(tmp_path, uid=0, os_id="ubuntu"))
    assert apt[-1] == "install -y -q --no-install-recommends chromium-browser"


def test_without_root_it_prints_the_one_command(tmp_path: Path) -> None:
    r, apt = run(stand_ins(tmp_path, uid=1000))
    assert r.returncode == 0 and apt == []
    lines = r.stdout.splitlines()
    assert "Chromium is not installed" in lines[0] and "skip" in lines[0]
    assert lines[1].strip() == ("sudo sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends "
                                "chromium'")


@pytest.mark.parametrize("uid", [0, 1000])
def test_nothing_to_do_when_chromium_is_there(tmp_path: Path, uid: int) -> None:
    r, apt = run(stand_ins(tmp_path, uid=uid, chromium=True))
    assert (r.returncode, r.stdout, apt) == (0, "", [])


def test_no_apt_get_says_so_and_does_not_fail(tmp_path: Path) -> None:
    r, _ = run(stand_ins(tmp_path, uid=0, apt=False))
    assert r.returncode == 0 and "package manager" in r.stdout


def test_a_failed_apt_get_does_not_fail_the_install(tmp_path: Path) -> None:
    env = stand_ins(tmp_path, uid=0)
    (Path(env["PATH"]) / "apt-get").write_text(f"#!{BASH}\nexit 100\n")
    r, _ = run(env)
    assert r.returncode == 0 and "failed" in r.stdout


def test_without_ffmpeg_hides_ffmpeg_and_ffprobe_only(tmp_path: Path) -> None:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name in ("ffmpeg", "ffprobe", "othertool"):
        (bin_ / name).write_text(f"#!{BASH}\nexit 0\n")
        (bin_ / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"}
    probe = "for p in ffmpeg ffprobe othertool bash; do command -v $p >/dev/null && echo $p; done; true"
    r = subprocess.run([BASH, str(WITHOUT_FFMPEG), BASH, "-c", probe], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["othertool", "bash"]
    r = subprocess.run([BASH, str(WITHOUT_FFMPEG), BASH, "-c", "exit 3"], env=env, timeout=120)
    assert r.returncode == 3  # the command's status comes back
