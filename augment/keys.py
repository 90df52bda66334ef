"""Key-aware mixing (``remix.key``): stems of a cross-song mixture shifted by whole semitones into a key
compatible with a reference stem's, like tempo-aware mixing stretches them to one tempo.

Keys come from the catalogue (``musical_key``, ``key_confidence``: :mod:`stemdb.quality.key`). Two keys are
compatible when they use the same seven pitch classes: the same key, or relative major and minor (C major and
A minor). Drums and stems whose key confidence is below ``min_confidence`` take no part. The reference is the
vocals stem when it has a confident key, else the first stem that has one; every other tonal stem gets the
smallest shift (ties: downwards) that makes its key, after the pitch shift its augmentation already drew,
compatible with the reference's; a stem that would need more than ``max_shift`` semitones is left as it is.
No random numbers are drawn, so the rest of the plan is the same as without key-aware mixing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from stemdb.quality import PITCH_CLASSES

#: Kinds whose key is not a property of the stem.
UNPITCHED = frozenset({"drums"})


def parse_key(name: str | None) -> tuple[int, str] | None:
    """``"A minor"`` -> ``(9, "minor")`` (pitch class 0 = C); ``None`` for no or an unknown key."""
    if not name:
        return None
    parts = str(name).split()
    if len(parts) != 2 or parts[0] not in PITCH_CLASSES or parts[1] not in ("major", "minor"):
        return None
    return PITCH_CLASSES.index(parts[0]), parts[1]


def _major_tonic(key: tuple[int, str]) -> int:
    """The tonic of the major key with the same pitch classes (A minor -> C)."""
    pc, mode = key
    return pc if mode == "major" else (pc + 3) % 12


def key_shift(key: tuple[int, str], ref: tuple[int, str], max_shift: int) -> int | None:
    """Semitones that move ``key`` to one compatible with ``ref`` (smallest size, downwards on a tie), or
    ``None`` when that is more than ``max_shift``."""
    d = (_major_tonic(ref) - _major_tonic(key)) % 12
    k = d - 12 if d >= 6 else d  # in [-6, 5]: -6 rather than +6
    return k if abs(k) <= max_shift else None


def _tonal(d: Any, min_confidence: float) -> tuple[int, str] | None:
    row = d.row
    if row is None or row.kind in UNPITCHED or (row.key_confidence or 0.0) < min_confidence:
        return None
    key = parse_key(row.musical_key)
    if key is None:
        return None
    shift = round(float(d.augment.get("pitch_semitones", 0.0) or 0.0))
    return (key[0] + shift) % 12, key[1]


def align_keys(drafts: Sequence[Any], max_shift: int, min_confidence: float) -> tuple[list[Any], float | None]:
    """Key-aware mixing of one mixture's drafts (see the module docstring).

    Args:
        drafts: the planner's drafts (``row`` with ``kind``, ``musical_key``, ``key_confidence``; ``augment``
            with ``pitch_semitones``; ``target``).
        max_shift: the largest shift allowed, semitones.
        min_confidence: stems whose key confidence is lower take no part.

    Returns:
        the drafts (shifted ones with ``pitch_semitones`` increased) and the share of the tonal stems other than
        the reference that end compatible with it (``None`` with fewer than two tonal stems).
    """
    keys = [_tonal(d, min_confidence) for d in drafts]
    tonal = [i for i, k in enumerate(keys) if k is not None]
    if len(tonal) < 2:
        return list(drafts), None
    ref_i = next((i for i in tonal if drafts[i].target == "vocals"), tonal[0])
    ref = keys[ref_i]
    out, fits = list(drafts), 0
    for i in tonal:
        if i == ref_i:
            continue
        k = key_shift(keys[i], ref, max_shift)  # type: ignore[arg-type]
        if k is None:
            continue
        fits += 1
        if k:
            d = drafts[i]
            pitch = float(d.augment.get("pitch_semitones", 0.0) or 0.0) + k
            out[i] = dataclasses.replace(d, augment={**d.augment, "pitch_semitones": pitch})
    return out, fits / (len(tonal) - 1)


def compatible(a: str | None, b: str | None) -> bool:
    """True when two key names use the same pitch classes (same key, or relative major/minor)."""
    ka, kb = parse_key(a), parse_key(b)
    return ka is not None and kb is not None and _major_tonic(ka) == _major_tonic(kb)


__all__ = ["UNPITCHED", "align_keys", "compatible", "key_shift", "parse_key"]
