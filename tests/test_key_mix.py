"""Key-aware mixing (``remix.key``): compatible keys, whole-semitone shifts within the limit, nothing else changed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from augment.config import KeyConfig, RemixConfig, remix_section
from augment.keys import align_keys, compatible, key_shift, parse_key
from augment.pool import build_pool
from augment.remix import plan_recipes
from augment.render import StemTable, render_stem
from stemdb.catalog import Catalog
from stemdb.config import fingerprint_of
from stemdb.errors import ConfigError
from stemdb.quality import PITCH_CLASSES


def _name(pc: int, mode: str) -> str:
    return f"{PITCH_CLASSES[pc % 12]} {mode}"


def test_key_arithmetic() -> None:
    assert parse_key("A minor") == (9, "minor") and parse_key("H major") is None and parse_key(None) is None
    assert compatible("A minor", "C major") and compatible("C major", "C major") and not compatible("C major",
                                                                                                   "G major")
    c = parse_key("C major")
    assert key_shift(parse_key("D major"), c, 2) == -2
    assert key_shift(parse_key("A minor"), c, 0) == 0
    assert key_shift(parse_key("F# minor"), c, 6) == 3  # F# minor ~ A major, A -> C is +3
    assert key_shift(parse_key("F# major"), c, 6) == -6  # a tritone: downwards
    assert key_shift(parse_key("E major"), c, 2) is None
    for pc in range(12):  # every shift lands on a compatible key, and none is larger than a tritone
        for mode in ("major", "minor"):
            k = key_shift((pc, mode), c, 6)
            assert k is not None and -6 <= k <= 5 and compatible(_name(pc + k, mode), "C major")


def _effective(df, plan) -> str:  # noqa: ANN001
    key = parse_key(df.loc[plan.stem_id, "musical_key"])
    return _name(key[0] + round(plan.augment["pitch_semitones"]), key[1])


def test_key_aware_plans_shift_tonal_stems_to_the_reference(fixture_catalog: Path) -> None:
    base = RemixConfig(seconds=2.0)
    keyed = base.model_copy(update={"key": KeyConfig(enabled=True, max_shift=6, min_confidence=0.0)})
    df = Catalog.open(fixture_catalog).stems().drop_duplicates("stem_id").set_index("stem_id")
    plain = plan_recipes(fixture_catalog, n=40, seed=1, cfg=base)
    shifted = plan_recipes(fixture_catalog, n=40, seed=1, cfg=keyed)
    moved = 0
    for a, b in zip(plain, shifted, strict=True):
        for pa, pb in zip(a.stems, b.stems, strict=True):  # the same plan, but for the pitch of tonal stems
            assert dataclasses.replace(pb, augment={**pb.augment, "pitch_semitones": 0.0}) == \
                dataclasses.replace(pa, augment={**pa.augment, "pitch_semitones": 0.0})
            moved += pa.augment["pitch_semitones"] != pb.augment["pitch_semitones"]
        tonal = [p for p in b.stems if p.stem_id is not None and p.kind != "drums"
                 and isinstance(df.loc[p.stem_id, "musical_key"], str)]
        ref = next((p for p in tonal if p.target == "vocals"), tonal[0] if tonal else None)
        for p in tonal:
            assert compatible(_effective(df, p), _effective(df, ref)), (b.index, p.target)
            assert abs(p.augment["pitch_semitones"]) <= 6
    assert moved >= 20  # most mixtures needed a shift: the fixtures' keys differ


def test_max_shift_zero_changes_nothing_and_the_default_is_off(fixture_catalog: Path) -> None:
    base = RemixConfig(seconds=2.0)
    none = base.model_copy(update={"key": KeyConfig(enabled=True, max_shift=0)})
    plain = plan_recipes(fixture_catalog, n=20, seed=2, cfg=base)
    assert [r.stems for r in plan_recipes(fixture_catalog, n=20, seed=2, cfg=none)] == [r.stems for r in plain]
    assert "key" not in base.model_dump(mode="json")
    assert fingerprint_of(none) != fingerprint_of(base)
    with pytest.raises(ConfigError, match=r"remix\.key\.max_shift=9"):
        remix_section({"key": {"enabled": True, "max_shift": 9}})


def test_low_confidence_and_drums_take_no_part(fixture_catalog: Path) -> None:
    pool = build_pool(fixture_catalog, RemixConfig())
    rows = {t: pool.pools[t].rows[0] for t in ("vocals", "drums", "bass")}

    @dataclasses.dataclass(frozen=True)
    class D:
        target: str
        row: object
        augment: dict

    drafts = [D(t, dataclasses.replace(r, musical_key=k, key_confidence=c), {"pitch_semitones": 0.0})
              for (t, r), (k, c) in zip(rows.items(), (("C major", 0.5), ("D major", 0.9), ("D major", 0.01)),
                                        strict=True)]
    out, score = align_keys(drafts, 6, 0.05)
    assert out == drafts and score is None  # drums never, the bass below min_confidence: one tonal stem
    drafts[2] = dataclasses.replace(drafts[2], row=dataclasses.replace(drafts[2].row, key_confidence=0.3))
    out, score = align_keys(drafts, 6, 0.05)
    assert out[2].augment["pitch_semitones"] == -2.0 and score == 1.0 and out[:2] == drafts[:2]


def test_a_key_shift_renders_without_a_pitch_transform(fixture_catalog: Path) -> None:
    cfg = RemixConfig(seconds=2.0, augment={}, key=KeyConfig(enabled=True, max_shift=6, min_confidence=0.0))
    assert cfg.augment == {}  # no target has a pitch transform: the renderer applies the planned shift itself
    recipes = plan_recipes(fixture_catalog, n=20, seed=1, cfg=cfg)
    r, p = next((r, p) for r in recipes for p in r.stems if p.augment["pitch_semitones"] != 0.0)
    table = StemTable.from_catalog(fixture_catalog)
    flat = dataclasses.replace(p, augment={**p.augment, "pitch_semitones": 0.0})
    a, b = render_stem(p, r, table, cfg), render_stem(flat, r, table, cfg)
    assert a.shape == b.shape == (r.channels, r.frames)
    assert np.isfinite(a).all() and not np.allclose(a, b, atol=1e-3)
    # same loudness within 1.5 dB: a pitch shift, not a level change
    assert 20 * np.log10(np.sqrt(np.mean(a**2)) / np.sqrt(np.mean(b**2))) == pytest.approx(0.0, abs=1.5)
