"""Same arguments, same bytes, across code changes: a 40-mixture build of the fixture catalogue against recorded
digests.

The catalogue is the bundled fixtures ingested as ``data.yaml`` describes them (tempo off: the remix does not read
it), and the set is ``stemdb remix --n 40 --seconds 4 --seed 7`` with ``data.yaml``'s remix section. Every file of
the set (the 40 mixture folders, ``recipes.parquet`` and the ``.parts`` records: 203 files) must have the MD5
recorded in ``tests/golden/remix-n40-s4-seed7.md5``: taken on main (7cb3ade) before the architecture change of issue
10, which left every byte as it was (also checked against 2a2b745, before PyAV decoded the ``.stem.mp4`` fixture and
so changed its stem ids, and with them every mixture's name).

When a change of the bytes is intended (a renderer or recipe change, a new recipe column), regenerate the digests
with the same commands and say why in the commit::

    stemdb ingest -c data.yaml --catalog /tmp/cat --no-tempo --workers 1
    stemdb remix -c data.yaml --catalog /tmp/cat --out /tmp/remix --n 40 --seconds 4 --seed 7
    (cd /tmp/remix && find . -type f | sort | xargs md5sum) > tests/golden/remix-n40-s4-seed7.md5
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from typer.testing import CliRunner

from pipelines.cli import app

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "remix-n40-s4-seed7.md5"


def digests(folder: Path) -> dict[str, str]:
    """``{relative path: md5}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def recorded() -> dict[str, str]:
    out = {}
    for line in GOLDEN.read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        out[path.removeprefix("./")] = digest
    return out


def test_fixture_build_matches_the_recorded_digests(tmp_path: Path) -> None:
    runner = CliRunner()
    cat, out = tmp_path / "cat", tmp_path / "remix"
    r = runner.invoke(app, ["ingest", "-c", str(ROOT / "data.yaml"), "--catalog", str(cat), "--no-tempo",
                            "--workers", "1"])
    assert r.exit_code == 0 and "0 rejected" in r.output, r.output
    r = runner.invoke(app, ["remix", "-c", str(ROOT / "data.yaml"), "--catalog", str(cat), "--out", str(out),
                            "--n", "40", "--seconds", "4", "--seed", "7"])
    assert r.exit_code == 0, r.output
    want, got = recorded(), digests(out)
    assert len(want) == 203
    assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))[:10]
    changed = sorted(p for p in want if got[p] != want[p])
    assert not changed, f"{len(changed)} of {len(want)} files differ from the recorded bytes, e.g. {changed[:5]}"
