"""The quality measures as catalogue columns: what ingest stores per stem, and near-duplicate marking at finalize.

:func:`quality_columns` runs :func:`stemdb.quality.assess` on the array ingest already decoded and returns the
values of the catalogue's quality columns. :func:`mark_near_duplicates` runs at the end of an ingest over the live
rows (after exact duplicates by content hash are marked): it finds near-duplicate pairs from the stored
fingerprints (:func:`stemdb.quality.find_near_duplicates`), groups them, keeps the best copy of each group and
points the others' ``duplicate_of`` at it, with the flag ``near_duplicate``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from stemdb.catalog import Catalog
from stemdb.quality import Fingerprint, assess, find_near_duplicates

#: The catalogue columns :func:`quality_columns` fills (see :data:`stemdb.catalog.STEMS_SCHEMA`).
QUALITY_COLUMNS: tuple[str, ...] = ("bandwidth_hz", "bleed", "musical_key", "key_confidence", "fake_stereo",
                                    "stereo_difference_db", "fingerprint")
#: Flag of a row whose ``duplicate_of`` comes from the near-duplicate search rather than an equal content hash.
NEAR_DUPLICATE_FLAG = "near_duplicate"


def quality_columns(audio: np.ndarray, sample_rate: int, kind: str) -> dict[str, Any]:
    """The quality columns of one decoded stem.

    Args:
        audio: ``(channels, samples)`` float32, full scale ±1.0, finite (ingest's :func:`stemdb.measure.measure`
            has checked that).
        sample_rate: Hz.
        kind: the row's kind; a ``mixture`` gets no bleed score (bleed is a property of an isolated stem).

    Returns:
        ``{column: value}`` for :data:`QUALITY_COLUMNS` (the key estimate as ``musical_key``: ``key`` is the
        catalogue's row key); NaN becomes ``None``, the fingerprint its bytes.
    """
    rec = assess(audio, sample_rate, kind=None if kind == "mixture" else kind).as_record()
    rec["musical_key"] = rec.pop("key")
    if kind == "mixture":
        rec["bleed"] = None
    return {c: rec[c] for c in QUALITY_COLUMNS}


def near_duplicate_groups(rows: pd.DataFrame) -> dict[str, str]:
    """Near-duplicates among catalogue rows: ``{key: kept key}`` for every row that is a copy of a kept one.

    Pairs come from the stored fingerprints (LSH candidates, then alignment and envelope checks). Two rows of the
    same (source, song) are never paired (the stems of one multitrack are different sources by construction, even
    when one carries much of another), and a ``mixture`` pairs only with a mixture (a mixture can sound much like
    its loudest stem). Pairs are joined into groups (connected components); the kept row of a group is the lossless one, then the
    widest bandwidth, then the longest, then the first key.

    Args:
        rows: live rows with ``key``, ``source``, ``song``, ``kind``, ``fingerprint`` (bytes or null), ``lossy``,
            ``bandwidth_hz`` and ``duration_s``.
    """
    cand = rows[rows["fingerprint"].notna()].reset_index(drop=True)
    if len(cand) < 2:
        return {}
    fps = [Fingerprint.from_bytes(bytes(b)) for b in cand["fingerprint"]]
    song = list(zip(cand["source"], cand["song"], strict=True))
    mix = (cand["kind"] == "mixture").to_numpy()
    parent = list(range(len(cand)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _m in find_near_duplicates(fps):
        if song[i] != song[j] and mix[i] == mix[j]:
            parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(cand)):
        groups.setdefault(root(i), []).append(i)
    out: dict[str, str] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        keep = min(members, key=lambda i: _rank(cand.iloc[i]))
        out.update({cand.at[i, "key"]: cand.at[keep, "key"] for i in members if i != keep})
    return out


def _rank(row: pd.Series) -> tuple[int, float, float, str]:
    lossy = row["lossy"]
    lossy_rank = 1 if lossy is None or (isinstance(lossy, float) and math.isnan(lossy)) else 2 * int(bool(lossy))
    bw = row["bandwidth_hz"]
    bw = 0.0 if bw is None or (isinstance(bw, float) and math.isnan(bw)) else float(bw)
    return lossy_rank, -bw, -float(row["duration_s"]), str(row["key"])


def mark_near_duplicates(live: pd.DataFrame, dup_of: pd.Series, flags: pd.Series) -> int:
    """Add near-duplicates to ``dup_of`` (index of ``live``: kept key or None, exact duplicates already set) and
    set or clear the ``near_duplicate`` flag in ``flags`` (lists, same index). Exact duplicates of a row that
    turns out a near-duplicate point on to the group's kept row. Returns the number of near-duplicate rows."""
    canon = live[dup_of.reindex(live.index).isna()]
    near = near_duplicate_groups(canon)
    key_of = live["key"]
    for idx in live.index:
        flags[idx] = [f for f in flags[idx] if f != NEAR_DUPLICATE_FLAG]
        target = dup_of.get(idx)
        k = key_of[idx]
        if k in near:
            dup_of[idx] = near[k]
            flags[idx] = [*flags[idx], NEAR_DUPLICATE_FLAG]
        elif isinstance(target, str) and target in near:
            dup_of[idx] = near[target]
    return len(near)


def quality_counts(cat: Catalog) -> tuple[int, int]:
    """For the ingest summary: (unmapped files among the rejects, live canonical stems from a lossy codec)."""
    rej = cat.table("rejects", columns=["reason"]).to_pandas()["reason"]
    lossy = cat.stems(columns=["lossy"])["lossy"]
    return int(rej.str.startswith("unmapped:").sum()), int((lossy == True).sum())  # noqa: E712 - nullable


__all__ = ["NEAR_DUPLICATE_FLAG", "quality_counts", "QUALITY_COLUMNS", "mark_near_duplicates", "near_duplicate_groups",
           "quality_columns"]
