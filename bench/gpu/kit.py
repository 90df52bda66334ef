"""The GPU kit: the wheels and the data the GPU checks need on a bare GPU machine, packed to travel.

    python bench/gpu/kit.py build [--pool ../shared/data/train-pool]   # what `make gpu-kit` runs
    python bench/gpu/kit.py check                                       # dependency closure of .whl/ only
    python bench/gpu/kit.py unpack --out DIR                            # .pool/ -> MUSDB18-HQ layout (on the machine)
    python bench/gpu/kit.py size                                        # bytes that travel to the machine

``build``:

1. downloads ``bench/gpu/requirements.txt`` as manylinux x86-64 wheels for CPython 3.12 (the machine's Python) into
   ``.whl/`` (kept between runs, stale versions removed), and the same pins for this machine's Python into
   ``work/gpu-kit/host-wheels/`` (the suite's dry run installs those);
2. checks the closure: every ``Requires-Dist`` of every wheel, with its markers evaluated for the machine (CPython
   3.12.3, Linux x86-64), must name a wheel of the kit or a package of ``bench/gpu/machine.txt``, except the
   requirements :data:`WAIVED` names with the reason; the machine packages relied on go to
   ``work/gpu-kit/machine-deps.txt`` (the dry run's base environment);
3. packs the training pool into ``.pool/``: each stem of a dual-mono song as one mono 16-bit FLAC (the other channel
   is the same), with the md5 of every original file's decoded samples; ``unpack`` rebuilds each file and checks that
   md5, so the stems the proof trains and is scored on are bit-exact the pool's. The mixture is rebuilt as the sum
   of the stems (MUSDB18's definition of it): the pool's mixture files differ from that sum by rounding alone (at
   most 2 LSB, about -84 dBFS, on the 8 songs of ``../shared/data/train-pool``; the largest difference per song is
   recorded in ``pack.json``), and storing that residual costs 2.5 MiB of the 64 MiB that may travel. With
   ``--exact-mixtures`` the residual is packed too and the mixtures rebuild bit-exact;
4. prints the size that will travel (the working tree git sends plus ``.whl/`` and ``.pool/``) against the 64 MiB
   limit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from email.parser import Parser
from pathlib import Path
from zipfile import ZipFile

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "bench" / "gpu" / "requirements.txt"
MACHINE = ROOT / "bench" / "gpu" / "machine.txt"
WHEELS = ROOT / ".whl"
POOL_PACK = ROOT / ".pool"
HOST_WHEELS = ROOT / "work" / "gpu-kit" / "host-wheels"
MACHINE_DEPS = ROOT / "work" / "gpu-kit" / "machine-deps.txt"
DEFAULT_POOL = ROOT.parent / "shared" / "data" / "train-pool"
LIMIT = 64 * 2**20
#: The machine's interpreter and platform, for wheel tags and dependency markers.
TARGET_PY = "3.12"
TARGET_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
#: (package, requirement) -> why the requirement is not carried.
WAIVED = {
    ("museval", "musdb"): "stemdb imports museval.metrics alone (numpy, scipy), never museval's dataset glue",
    ("museval", "jsonschema"): "only museval's JSON score writer uses it; stemdb writes its own scores",
}
STEMS = ("vocals", "drums", "bass", "other")


def norm(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path = REQUIREMENTS) -> dict[str, str]:
    """``{normalised name: version}`` of a requirements file of ``name==version`` lines."""
    out: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        if not m:
            raise SystemExit(f"{path}:{n}: expected name==version, got {line!r}")
        out[norm(m[1])] = m[2]
    return out


def machine_packages(path: Path = MACHINE) -> set[str]:
    words = " ".join(line for line in path.read_text().splitlines() if not line.startswith("#")).split()
    return {norm(w) for w in words}


def wheel_name_version(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return norm(name), version


# --------------------------------------------------------------------------------------------------------------
# wheels


def download(dest: Path, *, target: bool) -> None:
    """``pip download`` the pins into ``dest`` (for the machine when ``target``, else for this Python)."""
    dest.mkdir(parents=True, exist_ok=True)
    want = pins()
    for w in dest.glob("*.whl"):  # one version of each: two would stop the install
        name, version = wheel_name_version(w)
        if want.get(name) != version:
            w.unlink()
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(dest),
           "-r", str(REQUIREMENTS)]
    if target:
        cmd += ["--python-version", TARGET_PY, "--implementation", "cp"]
        for p in PLATFORMS:
            cmd += ["--platform", p]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    have = {wheel_name_version(w)[0] for w in dest.glob("*.whl")}
    missing = sorted(set(want) - have)
    if missing:
        raise SystemExit(f"pip download left out {missing} in {dest}")


def requires(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's METADATA."""
    with ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta).decode())
    return msg.get_all("Requires-Dist") or []


def check_closure(wheels: Path = WHEELS, *, requirements: Path = REQUIREMENTS, machine: Path = MACHINE) -> set[str]:
    """Every dependency of every wheel in ``wheels`` is a kit wheel, a machine package or waived.

    Returns the machine packages the kit relies on. Raises ``SystemExit`` naming each missing requirement.
    """
    from packaging.requirements import Requirement

    kit = {}
    for w in sorted(wheels.glob("*.whl")):
        name, version = wheel_name_version(w)
        kit[name] = version
    want = pins(requirements)
    if set(kit) != set(want):
        raise SystemExit(f"{wheels}: wheels {sorted(kit)} differ from the pins {sorted(want)}: run make gpu-kit")
    on_machine = machine_packages(machine)
    used, problems = set(), []
    for w in sorted(wheels.glob("*.whl")):
        owner = wheel_name_version(w)[0]
        for line in requires(w):
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(TARGET_ENV):
                continue
            dep = norm(req.name)
            if dep in kit:
                if not req.specifier.contains(kit[dep], prereleases=True):
                    problems.append(f"{owner} needs {line!r}, the kit has {dep} {kit[dep]}")
            elif dep in on_machine:
                used.add(dep)
            elif (owner, dep) not in WAIVED:
                problems.append(f"{owner} needs {line!r}: neither in the kit nor on the machine")
    if problems:
        raise SystemExit("kit closure incomplete:\n  " + "\n  ".join(problems))
    return used


# --------------------------------------------------------------------------------------------------------------
# the training pool


def md5_of(samples: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(samples).tobytes()).hexdigest()


def pack_pool(pool: Path, dest: Path = POOL_PACK, *, exact_mixtures: bool = False) -> dict:
    """Pack ``pool/musdb/<split>/<song>/*.flac`` into ``dest`` (see the module doc). Returns the index.

    ``exact_mixtures``: also pack ``mixture - sum(stems)`` so that ``unpack`` rebuilds each mixture bit-exact;
    without it the mixture is rebuilt as the stem sum, its md5 is that sum's, and ``residual_max_lsb`` says by how
    much the pool's mixture differs.
    """
    import soundfile as sf

    songs = sorted(p for p in (pool / "musdb").glob("*/*") if p.is_dir())
    if not songs:
        raise SystemExit(f"--pool {pool}: no musdb/<split>/<song> folders")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    index: dict = {"format": 1, "songs": {}}
    for song in songs:
        entry: dict = {"split": song.parent.name, "files": {}}
        stems = {}
        for name in (*STEMS, "mixture"):
            src = next((song / f"{name}{ext}" for ext in (".flac", ".wav") if (song / f"{name}{ext}").is_file()), None)
            if src is None:
                raise SystemExit(f"{song}: no {name}.flac or {name}.wav")
            x, sr = sf.read(src, dtype="int16", always_2d=True)
            entry.update(rate=sr, frames=x.shape[0], channels=x.shape[1])
            stems[name] = x
            entry["files"][name] = {"md5": md5_of(x)}
        out = tmp / song.parent.name / song.name
        out.mkdir(parents=True)
        total = sum(stems[s].astype(np.int32) for s in STEMS)
        residual = stems["mixture"].astype(np.int32) - total
        if np.abs(residual).max() > 32767:
            raise SystemExit(f"{song}: mixture differs from the sum of its stems by more than 16 bits")
        entry["residual_max_lsb"] = int(np.abs(residual).max())
        stored = {s: stems[s] for s in STEMS}
        if exact_mixtures:
            stored["mixture-residual"] = residual.astype(np.int16)
        else:
            entry["files"]["mixture"]["md5"] = md5_of(total.clip(-32768, 32767).astype(np.int16))
        for name, x in stored.items():
            mono = x.shape[1] == 2 and np.array_equal(x[:, 0], x[:, 1])
            sf.write(out / f"{name}.flac", x[:, :1] if mono else x, entry["rate"], subtype="PCM_16",
                     format="FLAC", compression_level=1.0)
            entry["files"].setdefault(name.replace("-residual", ""), {})["mono"] = bool(mono)
        index["songs"][f"{song.parent.name}/{song.name}"] = entry
    manifest = pool / "MANIFEST.md"
    if manifest.is_file():
        shutil.copy2(manifest, tmp / "MANIFEST.md")
    (tmp / "pack.json").write_text(json.dumps(index, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return index


def unpack_pool(src: Path, out: Path) -> list[Path]:
    """Rebuild the packed pool as ``out/musdb/<split>/<song>/<stem>.wav`` (the pool's layout); check every md5."""
    import soundfile as sf

    index = json.loads((src / "pack.json").read_text())
    folders = []
    for key, entry in index["songs"].items():
        song_in, song_out = src / key, out / "musdb" / key
        song_out.mkdir(parents=True, exist_ok=True)
        arrays = {}
        names = (*STEMS, "mixture-residual") if (song_in / "mixture-residual.flac").is_file() else STEMS
        for name in names:
            x, _ = sf.read(song_in / f"{name}.flac", dtype="int16", always_2d=True)
            arrays[name] = np.repeat(x, entry["channels"], axis=1) if x.shape[1] == 1 else x
        mix = sum(arrays[s].astype(np.int32) for s in STEMS) + arrays.get("mixture-residual", 0)
        arrays["mixture"] = mix.clip(-32768, 32767).astype(np.int16)
        for name in (*STEMS, "mixture"):
            if md5_of(arrays[name]) != entry["files"][name]["md5"]:
                raise SystemExit(f"{song_in}: {name} does not rebuild to the packed md5")
            sf.write(song_out / f"{name}.wav", arrays[name], entry["rate"], subtype="PCM_16")
        folders.append(song_out)
    return folders


# --------------------------------------------------------------------------------------------------------------
# travel size


def travel_bytes(carry: tuple[Path, ...] = (WHEELS, POOL_PACK)) -> tuple[int, dict[str, int]]:
    """Bytes the device tool sends: git's tracked and untracked-not-ignored files, plus the carried folders."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    tree = sum((ROOT / p).stat().st_size for p in listed if p and (ROOT / p).is_file())
    parts = {"working tree": tree}
    for c in carry:
        parts[c.name] = sum(p.stat().st_size for p in c.rglob("*") if p.is_file()) if c.exists() else 0
    return sum(parts.values()), parts


def print_size() -> int:
    total, parts = travel_bytes()
    detail = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in parts.items())
    ok = total < LIMIT
    print(f"travel size {total / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} MiB ({detail}): {'fits' if ok else 'TOO BIG'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="wheels, closure check, pool pack, travel size")
    b.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    b.add_argument("--no-download", action="store_true", help="use the wheels already in .whl/")
    b.add_argument("--require-pool", action="store_true", help="fail when --pool has no musdb/ folder")
    b.add_argument("--exact-mixtures", action="store_true",
                   help="pack each mixture's rounding residual too (bit-exact mixtures, 2.5 MiB more)")
    sub.add_parser("check", help="dependency closure of .whl/")
    u = sub.add_parser("unpack", help="rebuild the packed pool as WAV files")
    u.add_argument("--src", type=Path, default=POOL_PACK)
    u.add_argument("--out", type=Path, required=True)
    sub.add_parser("size", help="bytes that travel")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        if not args.no_download:
            download(WHEELS, target=True)
            download(HOST_WHEELS, target=False)
        used = check_closure()
        MACHINE_DEPS.parent.mkdir(parents=True, exist_ok=True)
        MACHINE_DEPS.write_text("\n".join(sorted(used)) + "\n")
        print(f"closure complete: {len(pins())} wheels; machine packages relied on: {', '.join(sorted(used))}")
        if (args.pool / "musdb").is_dir():
            index = pack_pool(args.pool, exact_mixtures=args.exact_mixtures)
            print(f"packed {len(index['songs'])} songs of {args.pool} into {POOL_PACK}")
        elif args.require_pool:
            raise SystemExit(f"--pool {args.pool}: no musdb/ folder (the training pool is in ../shared/data)")
        else:
            print(f"note: no training pool at {args.pool}: {POOL_PACK} not made; the suite's proof part needs it")
        return print_size()
    if args.cmd == "check":
        used = check_closure()
        print(f"closure complete; machine packages relied on: {', '.join(sorted(used))}")
        return 0
    if args.cmd == "unpack":
        folders = unpack_pool(args.src, args.out)
        print(f"unpacked {len(folders)} songs into {args.out} (md5 checked)")
        return 0
    return print_size()


if __name__ == "__main__":
    raise SystemExit(main())
