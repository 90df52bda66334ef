"""Near-duplicate search over a catalogue: MinHash band buckets (LSH), then fingerprint checks (docs/quality.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stemdb.quality.fingerprint import (
    MIN_ALIGNED,
    MIN_COVERAGE,
    MIN_ENVELOPE_R,
    SKETCH_SLOTS,
    Fingerprint,
    FingerprintMatch,
    verified,
)


def candidate_pairs(
    sketches: np.ndarray, *, rows_per_band: int = 2, min_bands: int = 1, max_bucket: int = 1000
) -> np.ndarray:
    """Pairs of stems whose MinHash sketches agree on whole bands (locality-sensitive hashing).

    The 64 slots are cut into ``64 / rows_per_band`` bands; two stems become a candidate pair when all slots of
    at least ``min_bands`` bands agree. With 2 rows per band and ``min_bands=1`` a pair whose key sets have
    Jaccard similarity J is found with probability ``1 - (1 - J^2)^32`` (0.97 at J = 0.33, the lowest seen for
    an MP3 128 kbps copy). Cost is one sort of ``n * bands`` band hashes plus the pairs inside buckets
    (docs/quality.md has the figures for 100,000 stems); buckets larger than ``max_bucket`` (values common to
    very many stems, which carry no evidence) are skipped.

    Args:
        sketches: ``(n, 64)`` uint32, one :attr:`Fingerprint.minhash` per row.
        rows_per_band: slots per band; must divide 64.
        min_bands: bands that must agree.
        max_bucket: skip buckets with more stems than this.

    Returns:
        ``(m, 2)`` int64 row indices ``i < j``, unique, sorted.

    Raises:
        ValueError: wrong shape, ``rows_per_band`` not a divisor of 64, or ``min_bands`` out of range.
    """
    s = np.asarray(sketches)
    if s.ndim != 2 or s.shape[1] != SKETCH_SLOTS:
        raise ValueError(f"sketches must be (n, {SKETCH_SLOTS}), got shape {s.shape}")
    if rows_per_band < 1 or SKETCH_SLOTS % rows_per_band:
        raise ValueError(f"rows_per_band={rows_per_band} must divide {SKETCH_SLOTS}")
    bands = SKETCH_SLOTS // rows_per_band
    if not 1 <= min_bands <= bands:
        raise ValueError(f"min_bands={min_bands} must be in [1, {bands}]")
    n = s.shape[0]
    if n < 2:
        return np.zeros((0, 2), np.int64)
    code = _bucket_pairs(_band_hashes(s, rows_per_band), max_bucket)
    code, count = np.unique(code, return_counts=True)
    code = code[count >= min_bands]
    return np.stack([code // n, code % n], axis=1).astype(np.int64)


def _band_hashes(s: np.ndarray, rows_per_band: int) -> np.ndarray:
    """``(n, bands)`` uint64: one hash per band of each sketch, the band index mixed in to keep bands apart."""
    n, bands = s.shape[0], SKETCH_SLOTS // rows_per_band
    v = s.astype(np.uint64).reshape(n, bands, rows_per_band)
    h = np.full((n, bands), np.uint64(0x9E3779B97F4A7C15))
    for r in range(rows_per_band):
        h = (h ^ v[:, :, r]) * np.uint64(0x100000001B3)  # FNV-style mixing of the band's values
    return h ^ (np.arange(bands, dtype=np.uint64) << np.uint64(56))


def _bucket_pairs(h: np.ndarray, max_bucket: int) -> np.ndarray:
    """Every pair of rows sharing a band hash, as ``i * n + j`` (``i < j``), once per shared band."""
    n, bands = h.shape
    flat = h.ravel()
    order = np.argsort(flat, kind="stable")
    flat = flat[order]
    item = order // bands  # row of each sorted band hash
    starts = np.r_[0, np.nonzero(np.diff(flat))[0] + 1]
    sizes = np.diff(np.r_[starts, flat.size])
    keep = (sizes > 1) & (sizes <= max_bucket)
    starts, sizes = starts[keep], sizes[keep]
    # every position of a kept bucket pairs with the positions after it in the same bucket
    pos = np.repeat(starts, sizes) + (np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    after = np.repeat(starts + sizes, sizes) - pos - 1
    left = np.repeat(pos, after)
    right = left + 1 + (np.arange(after.sum()) - np.repeat(np.cumsum(after) - after, after))
    a, b = item[left], item[right]
    code = np.minimum(a, b) * n + np.maximum(a, b)
    return code[a != b]


def find_near_duplicates(
    fingerprints: Sequence[Fingerprint | None], **thresholds: Any
) -> list[tuple[int, int, FingerprintMatch]]:
    """All near-duplicate pairs in a list of fingerprints: LSH candidates, then :func:`is_near_duplicate`.

    Args:
        fingerprints: one per stem; ``None`` (no landmarks) never matches.
        thresholds: ``min_aligned``, ``min_coverage``, ``min_envelope_r`` for :func:`is_near_duplicate`, and
            ``min_bands`` for :func:`candidate_pairs` (2 trades a little recall for far fewer candidates;
            docs/quality.md has both figures).

    Returns:
        ``(i, j, match)`` for every verified pair, ``i < j``, in index order.
    """
    unknown = set(thresholds) - {"min_aligned", "min_coverage", "min_envelope_r", "min_bands"}
    if unknown:
        raise ValueError(f"unknown thresholds {sorted(unknown)}; allowed: min_aligned, min_coverage, "
                         "min_envelope_r, min_bands")
    idx = [i for i, f in enumerate(fingerprints) if f is not None]
    if len(idx) < 2:
        return []
    sk = np.stack([fingerprints[i].minhash for i in idx])  # type: ignore[union-attr]
    limits = (thresholds.get("min_aligned", MIN_ALIGNED), thresholds.get("min_coverage", MIN_COVERAGE),
              thresholds.get("min_envelope_r", MIN_ENVELOPE_R))
    out = []
    for p, q in candidate_pairs(sk, min_bands=thresholds.get("min_bands", 1)):
        i, j = idx[int(p)], idx[int(q)]
        m = verified(fingerprints[i], fingerprints[j], *limits)  # type: ignore[arg-type]
        if m is not None:
            out.append((i, j, m))
    return out
