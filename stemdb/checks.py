"""Consistency checks the ingest runs over the whole catalogue at finalize (:func:`stemdb.ingest.finalize`): which of
a stem row and a reject row of one key is true, multitracks whose stems differ in length, train/test leakage."""

from __future__ import annotations

import pandas as pd

from stemdb.catalog import Catalog


def settle_rejects(cat: Catalog, stems: pd.DataFrame) -> tuple[set[str], set[str]]:
    """Keys with both a stem row and a reject row: (stem rows older than their reject, rejects older than their
    live stem row). The newer measurement of a file is the true one."""
    rej = cat.table("rejects", columns=["key", "rejected_at"]).to_pandas()
    if rej.empty or stems.empty:
        return set(), set()
    both = stems[["key", "ingested_at", "deleted"]].merge(rej, on="key")
    stale = both["rejected_at"] > both["ingested_at"]
    fixed = ~stale & ~both["deleted"]
    return set(both.loc[stale, "key"]), set(both.loc[fixed, "key"])


def flag_length_mismatch(live: pd.DataFrame, flags: pd.Series) -> None:
    """Add ``length_mismatch`` to the flags of every stem of a (source, song) whose stems differ in frames."""
    multi = live[live["source"].notna()]
    for (_src, _song), g in multi.groupby(["source", "song"]):
        if len(g) < 2 or g["frames"].nunique() == 1:
            continue
        for idx in g.index:
            if "length_mismatch" not in flags[idx]:
                flags[idx] = [*flags[idx], "length_mismatch"]


def leakage(live: pd.DataFrame) -> dict[str, str]:
    """Songs that leak between splits, with why: the song itself is in several splits, or a stem of it has the
    same content as a stem in another split. Digital silence is not content: the silent stems of instrumental
    tracks are identical everywhere and leak nothing."""
    canon = live[live["duplicate_of"].isna()]
    out: dict[str, str] = {}
    for song, g in canon.groupby("song"):
        if g["split"].nunique() > 1:
            out[str(song)] = f"appears in splits {sorted(g['split'].unique())}"
    audible = live[~live["flags"].map(lambda f: "silent" in list(f))]
    for _sid, g in audible.groupby("stem_id"):
        if g["split"].nunique() < 2:
            continue
        for song, split in zip(g["song"], g["split"], strict=True):
            others = sorted({f"{s} ({sp})" for s, sp in zip(g["song"], g["split"], strict=True) if sp != split})
            out.setdefault(str(song), f"({split}) shares a stem's content with {', '.join(others)}")
    return dict(sorted(out.items()))


__all__ = ["flag_length_mismatch", "leakage", "settle_rejects"]
