"""The catalogue report: what is in a stem catalogue, as an HTML page with plots and a JSON file of every figure.

Counts and hours are over the *live canonical* rows (``Catalog.stems()``: not deleted, not a duplicate of another
file); duplicates, deleted files and rejects are reported in their own sections. Units: durations in seconds,
totals in hours, loudness in LUFS (BS.1770 integrated), peak and RMS in dBFS, tempo in BPM, ratios in [0, 1].
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stemdb.catalog import Catalog
from stemdb.report.html import (
    PALETTE,
    SUMMARY_COLUMNS,
    Page,
    Section,
    Table,
    bar_plot,
    box_plot,
    fmt,
    hist_plot,
    histogram,
    new_figure,
    summarize,
    summary_rows,
    to_plot,
    write_report,
)
from stemdb.report.quality_section import QUALITY_REPORT_COLUMNS, quality_section, quality_stats

log = logging.getLogger(__name__)

#: the catalogue columns the report reads (list columns such as loudness profiles are not loaded)
COLUMNS = ["key", "stem_id", "source", "path", "stream", "kind", "song", "split", "origin", "licence",
           "sample_rate", "channels", "frames", "duration_s", "format", "subtype", "bytes", "lufs", "peak_dbfs",
           "rms_dbfs", "clipping_ratio", "silence_ratio", "tempo_bpm", "flags", "duplicate_of", "deleted",
           *QUALITY_REPORT_COLUMNS]
#: groupings reported as files and hours
DIMENSIONS = ("kind", "source", "origin", "split", "licence")
#: usual order of kinds on the page (others follow alphabetically, ``mixture`` last)
KIND_ORDER = ("vocals", "drums", "bass", "other", "keys", "guitar", "piano")
LEVEL_COLUMNS = {"lufs": "loudness (LUFS)", "peak_dbfs": "sample peak (dBFS)", "rms_dbfs": "RMS (dBFS)"}
LEVEL_TITLES = {"lufs": "Integrated loudness per kind", "peak_dbfs": "Sample peak per kind",
                "rms_dbfs": "RMS level per kind"}
MISSING = "(none)"
#: how many files a findings table lists on the page (the JSON lists all)
MAX_LISTED = 50


def order_kinds(kinds: object) -> list[str]:
    """Kinds in display order: the MUSDB targets first, then other kinds alphabetically, ``mixture`` last."""
    ks = sorted({str(k) for k in kinds})
    head = [k for k in KIND_ORDER if k in ks]
    tail = sorted(k for k in ks if k not in KIND_ORDER and k != "mixture")
    return head + tail + (["mixture"] if "mixture" in ks else [])


def reason_category(reason: str) -> str:
    """The class of a reject reason: its text up to the first ``:`` or ``(`` with trailing numbers dropped
    (``"not readable as audio (Error opening '/x.wav' ...)"`` -> ``"not readable as audio"``,
    ``"bad sample rate 0"`` -> ``"bad sample rate"``), so reasons that embed paths or counts group together."""
    head = re.split(r"[:(]", str(reason), maxsplit=1)[0]
    head = re.sub(r"[\s\d.+\-]+$", "", head).strip()
    return head or str(reason).strip() or "unknown"


def load_catalog(catalog: str | Path | Catalog) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(live canonical rows, every row including duplicates and deleted ones, rejects) of a catalogue."""
    cat = catalog if isinstance(catalog, Catalog) else Catalog.open(catalog)
    every = cat.stems(include_duplicates=True, include_deleted=True, columns=COLUMNS)
    live = every[~every["deleted"].astype(bool) & every["duplicate_of"].isna()].reset_index(drop=True)
    return live, every, cat.rejects()


def multitrack_rel_levels(live: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per kind: stem loudness minus its mixture's loudness (LU), over the real multitracks of the catalogue.

    A multitrack is a (``source``, ``song``) group that has a ``mixture`` row with a measured loudness; every
    other row of the group with a measured loudness (silent stems have none) gives one value. Kinds with no value
    are left out. This is the reference level balance the remix report compares against.
    """
    if live.empty:
        return {}
    mix = (live[(live["kind"] == "mixture") & live["lufs"].notna()]
           .drop_duplicates(["source", "song"]).set_index(["source", "song"])["lufs"])
    stems = live[(live["kind"] != "mixture") & live["lufs"].notna()]
    if mix.empty or stems.empty:
        return {}
    ref = mix.reindex(pd.MultiIndex.from_frame(stems[["source", "song"]])).to_numpy()
    rel = stems["lufs"].to_numpy() - ref
    ok = np.isfinite(rel)
    kinds = stems["kind"].to_numpy()[ok]
    rel = rel[ok]
    return {k: rel[kinds == k] for k in order_kinds(set(kinds))}


def _by(df: pd.DataFrame, col: str, order: list[str] | None = None) -> tuple[dict[str, int], dict[str, float]]:
    keys = df[col].astype(object).where(df[col].notna(), MISSING).astype(str)
    g = df.groupby(keys, sort=True)["duration_s"]
    files, hours = g.size(), g.sum() / 3600.0
    idx = order if order is not None else list(files.index)
    return {k: int(files[k]) for k in idx}, {k: float(hours[k]) for k in idx}


def _table_by(df: pd.DataFrame, col: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for k, g in df.groupby(col, sort=True):
        out[str(int(k))] = {"files": int(len(g)), "hours": float(g["duration_s"].sum() / 3600.0)}
    return out


def catalog_stats_from_frames(live: pd.DataFrame, every: pd.DataFrame, rejects: pd.DataFrame) -> dict[str, Any]:
    """Every number of the catalogue report (see the module docstring for the units), as a JSON-ready dict."""
    kinds = order_kinds(live["kind"].dropna()) if len(live) else []
    stats: dict[str, Any] = {"report": "catalog", "empty": bool(live.empty)}
    stats["totals"] = {
        "files": int(len(live)), "hours": float(live["duration_s"].sum() / 3600.0) if len(live) else 0.0,
        "songs": int(live["song"].nunique()), "bytes": int(live["bytes"].sum()) if len(live) else 0,
        "duplicates": int((~every["deleted"].astype(bool) & every["duplicate_of"].notna()).sum()),
        "deleted": int(every["deleted"].astype(bool).sum()), "rejects": int(len(rejects)),
    }
    for dim in DIMENSIONS:
        files, hours = _by(live, dim, kinds if dim == "kind" else None)
        stats[f"files_by_{dim}"], stats[f"hours_by_{dim}"] = files, hours

    stem_hours = {k: h for k, h in stats["hours_by_kind"].items() if k != "mixture"}
    total = sum(stem_hours.values())
    stats["kind_share"] = {k: (h / total if total > 0 else None) for k, h in stem_hours.items()}
    smallest = min((h for h in stem_hours.values() if h > 0), default=None)
    stats["kind_ratio"] = {k: (h / smallest if smallest else None) for k, h in stem_hours.items()}

    stats["duration_s"] = {"summary": summarize(live["duration_s"]), "histogram": histogram(live["duration_s"])}
    by_kind = {k: live[live["kind"] == k] for k in kinds}
    stats["levels_by_kind"] = {k: {c: summarize(g[c]) for c in LEVEL_COLUMNS} for k, g in by_kind.items()}
    stats["unmeasured_loudness_by_kind"] = {k: int(g["lufs"].isna().sum()) for k, g in by_kind.items()}
    stats["silence_ratio_by_kind"] = {k: summarize(g["silence_ratio"]) for k, g in by_kind.items()}
    stats["silent_files_by_kind"] = {k: int((g["silence_ratio"] >= 1.0).sum()) for k, g in by_kind.items()}
    stats["clipping_ratio_by_kind"] = {k: summarize(g["clipping_ratio"]) for k, g in by_kind.items()}
    stats["clipping_files_by_kind"] = {k: int((g["clipping_ratio"] > 0.0).sum()) for k, g in by_kind.items()}
    stats["sample_rates"] = _table_by(live, "sample_rate")
    stats["channels"] = _table_by(live, "channels")
    fmt_keys = live["format"].astype(str) + "/" + live["subtype"].astype(str)
    stats["formats"] = {str(k): int(v) for k, v in fmt_keys.value_counts().sort_index().items()}
    stats["tempo_bpm"] = {"summary": summarize(live["tempo_bpm"]),
                          "histogram": histogram(live["tempo_bpm"], step=10.0),
                          "missing": int(live["tempo_bpm"].isna().sum())}

    flags = live[["key", "flags"]].explode("flags").dropna(subset=["flags"])
    stats["flags"] = {str(f): int(n) for f, n in flags["flags"].value_counts().sort_index().items()}
    stats["flagged_files"] = {str(f): sorted(g["key"].tolist()) for f, g in flags.groupby("flags", sort=True)}

    stats["rejects"] = _rejects(rejects)
    stats["quality"] = quality_stats(live, kinds)
    stats["duplicates"] = _duplicates(every)
    stats["leakage"] = _leakage(every)
    rel = multitrack_rel_levels(live)
    stats["multitrack_rel_lufs"] = {k: summarize(v) for k, v in rel.items()}
    mixes = live[live["kind"] == "mixture"]
    stats["multitrack_songs"] = int(mixes.drop_duplicates(["source", "song"]).shape[0])
    return stats


def _rejects(rejects: pd.DataFrame) -> dict[str, Any]:
    if rejects.empty:
        return {"total": 0, "by_reason": {}, "files": []}
    cats = rejects["reason"].map(reason_category)
    by_reason = {str(k): int(v) for k, v in cats.value_counts().sort_index().items()}
    files = [{"key": r.key, "source": r.source, "path": r.path, "reason": r.reason}
             for r in rejects.sort_values("key").itertuples()]
    return {"total": int(len(rejects)), "by_reason": by_reason, "files": files}


def _duplicates(every: pd.DataFrame) -> dict[str, Any]:
    dups = every[~every["deleted"].astype(bool) & every["duplicate_of"].notna()]
    groups = [{"stem_id": str(g["stem_id"].iloc[0]), "canonical": str(canon), "copies": sorted(g["key"].tolist())}
              for canon, g in dups.groupby("duplicate_of", sort=True)]
    return {"total": int(len(dups)), "groups": groups}


def _leakage(every: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Songs whose live files (duplicates included) sit in more than one split, and identical audio (one
    ``stem_id``) in more than one split; each finding names every live file involved."""
    live = every[~every["deleted"].astype(bool)]
    return {"songs": _spanning(live, "song"), "content": _spanning(live, "stem_id")}


def _spanning(live: pd.DataFrame, col: str) -> list[dict[str, Any]]:
    """Groups of ``col`` whose rows sit in more than one split, with the splits and every file named."""
    n_splits = live.groupby(col, sort=True)["split"].nunique()
    hits = n_splits[n_splits > 1].index
    out = []
    for value, g in live[live[col].isin(hits)].groupby(col, sort=True):
        out.append({col: str(value), "splits": sorted(g["split"].astype(str).unique()),
                    "files": sorted(g["key"].tolist())})
    return out


def catalog_stats(catalog: str | Path | Catalog) -> dict[str, Any]:
    """The catalogue report's numbers without writing anything (not yet JSON-sanitised: see ``json_safe``)."""
    stats = catalog_stats_from_frames(*load_catalog(catalog))
    stats["catalog"] = str(catalog.root if isinstance(catalog, Catalog) else catalog)
    return stats


def catalog_report(catalog: Path, out_html: Path) -> dict:
    """Write the catalogue report: ``out_html`` (self-contained page) and ``out_html`` with suffix ``.json``.

    Returns the JSON dict (NaN/inf as ``None``). Keys include ``files_by_kind`` and ``hours_by_kind`` (and the same
    for source, origin, split, licence), ``kind_share``, ``kind_ratio``, ``duration_s``, ``levels_by_kind``,
    ``silence_ratio_by_kind``, ``sample_rates``, ``channels``, ``tempo_bpm``, ``flags``, ``rejects``,
    ``duplicates``, ``leakage``, ``multitrack_rel_lufs``. An empty catalogue gives a page that says so.
    Raises :class:`stemdb.errors.CatalogError` when ``catalog`` is not a catalogue.
    """
    cat = Catalog.open(catalog)
    live, every, rejects = load_catalog(cat)
    stats = catalog_stats_from_frames(live, every, rejects)
    stats["catalog"] = str(Path(catalog))
    stats["fingerprint"] = cat.fingerprint()
    stats["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    page = _page(stats, live)
    safe = write_report(page, stats, Path(out_html))
    log.info("catalogue report: %s (%d stems, %.2f h)", out_html, stats["totals"]["files"], stats["totals"]["hours"])
    return safe


# -- page --------------------------------------------------------------------------------------------------------
def _hours(h: float | None) -> str:
    return "—" if h is None else f"{h:,.3f}" if h < 10 else f"{h:,.1f}"


def _page(s: Mapping[str, Any], live: pd.DataFrame) -> Page:
    t = s["totals"]
    notices = []
    if s["empty"]:
        notices.append("The catalogue is empty: no stems have been ingested (or every file was rejected, deleted "
                       "or is a duplicate). Run `stemdb ingest` and report again.")
    n_leaks = len(s["leakage"]["songs"]) + len(s["leakage"]["content"])
    if n_leaks:
        notices.append(f"Train/test leakage: {n_leaks} finding(s); see the leakage section for the files.")
    headline = [("stems", fmt(t["files"])), ("hours", _hours(t["hours"])), ("songs", fmt(t["songs"])),
                ("kinds", fmt(len(s["files_by_kind"]))), ("duplicates", fmt(t["duplicates"])),
                ("rejected", fmt(t["rejects"])), ("leakage findings", fmt(n_leaks))]
    sections: list[Section] = []
    if not s["empty"]:
        sections += [_overview(s), _durations(s), _levels(s, live), _silence(s, live), _formats(s), _tempo(s),
                     _balance(s, live), quality_section(s["quality"], live), _flags(s)]
    sections += [_rejects_section(s), _duplicates_section(s), _leakage_section(s)]
    return Page(title="stemdb catalogue report", subtitle=f"{s['catalog']} · fingerprint {s.get('fingerprint', '')}",
                headline=headline, sections=sections, notices=notices, generated_at=s.get("generated_at", ""))


def _overview(s: Mapping[str, Any]) -> Section:
    kinds = list(s["files_by_kind"])
    rows = [[k, s["files_by_kind"][k], _hours(s["hours_by_kind"][k]),
             fmt(s["kind_share"].get(k), 3) if k in s["kind_share"] else "—",
             fmt(s["kind_ratio"].get(k), 2) if k in s["kind_ratio"] else "—"] for k in kinds]
    tables = [Table("Files and hours per kind", ["kind", "files", "hours", "share of stem hours",
                                                 "ratio to the smallest kind"], rows,
                    note="Shares and ratios are over stem hours (mixtures excluded).")]
    for dim in DIMENSIONS[1:]:
        files, hours = s[f"files_by_{dim}"], s[f"hours_by_{dim}"]
        tables.append(Table(f"Files and hours per {dim}", [dim, "files", "hours"],
                            [[k, files[k], _hours(hours[k])] for k in files]))
    fig, (a1, a2) = new_figure(10, 3.6, ncols=2)
    bar_plot(a1, kinds, [s["hours_by_kind"][k] for k in kinds], title="Hours per kind", ylabel="hours",
             xlabel="kind", annotations=[f"{s['files_by_kind'][k]} files" for k in kinds])
    share = s["kind_share"]
    bar_plot(a2, list(share), [100.0 * (v or 0.0) for v in share.values()], xlabel="kind",
             title="Kind ratio: share of stem hours", ylabel="share of stem hours (%)", color=PALETTE[2],
             annotations=[f"{fmt(s['kind_ratio'][k], 2)}×" for k in share])
    plots = [to_plot(fig, "bar charts of hours and share of hours per kind",
                     "Left: hours per kind (label: files). Right: each stem kind's share of stem hours "
                     "(label: ratio to the smallest kind).")]
    fig, axes = new_figure(10, 6.4, nrows=2, ncols=2)
    for ax, dim in zip(axes.ravel(), DIMENSIONS[1:], strict=True):
        files, hours = s[f"files_by_{dim}"], s[f"hours_by_{dim}"]
        bar_plot(ax, list(hours), list(hours.values()), title=f"Hours per {dim}", ylabel="hours", horizontal=True,
                 annotations=[f"{files[k]} files" for k in hours], color=PALETTE[0])
    plots.append(to_plot(fig, "bar charts of hours per source, origin, split and licence",
                         "Hours per source, origin, split and licence (label: files)."))
    return Section("Overview", f"{_t_files(s)} live canonical stems, {_hours(s['totals']['hours'])} h "
                               f"in {s['totals']['songs']} songs.", tables, plots)


def _t_files(s: Mapping[str, Any]) -> str:
    return f"{s['totals']['files']:,}"


def _durations(s: Mapping[str, Any]) -> Section:
    d = s["duration_s"]
    fig, ax = new_figure(7.5, 3.4)
    hist_plot(ax, d["histogram"], title="Stem durations", xlabel="duration (s)", ylabel="files")
    return Section("Durations", "", [Table("Duration (s)", SUMMARY_COLUMNS,
                                           summary_rows({"all stems": d["summary"]}, 2))],
                   [to_plot(fig, "histogram of stem durations in seconds")])


def _levels(s: Mapping[str, Any], live: pd.DataFrame) -> Section:
    tables = []
    for col, label in LEVEL_COLUMNS.items():
        tables.append(Table(f"{label} per kind", SUMMARY_COLUMNS,
                            summary_rows({k: v[col] for k, v in s["levels_by_kind"].items()}, 1)))
    unmeasured = s["unmeasured_loudness_by_kind"]
    if any(unmeasured.values()):
        tables[0].note = "Not measured (digital silence): " + ", ".join(
            f"{k} {n}" for k, n in unmeasured.items() if n)
    fig, axes = new_figure(12, 3.8, ncols=3)
    for ax, (col, label) in zip(axes, LEVEL_COLUMNS.items(), strict=True):
        box_plot(ax, {k: live.loc[live["kind"] == k, col].dropna().tolist() for k in s["levels_by_kind"]},
                 title=LEVEL_TITLES[col], ylabel=label)
    return Section("Levels", "Integrated loudness (BS.1770), sample peak and RMS of each whole file.", tables,
                   [to_plot(fig, "box plots of loudness, peak and RMS per kind",
                            "Boxes: quartiles and median; whiskers: 1.5 IQR; n: files with a measurement.")])


def _silence(s: Mapping[str, Any], live: pd.DataFrame) -> Section:
    rows = summary_rows(s["silence_ratio_by_kind"], 3)
    for r, k in zip(rows, s["silence_ratio_by_kind"], strict=True):
        r.append(fmt(s["silent_files_by_kind"][k]))
    fig, ax = new_figure(7.5, 3.6)
    box_plot(ax, {k: live.loc[live["kind"] == k, "silence_ratio"].tolist() for k in s["silence_ratio_by_kind"]},
             title="Silence ratio per kind", ylabel="silent share of the file")
    ax.set_ylim(-0.03, 1.03)
    clip_rows = [[k, fmt(v["count"]), fmt(s["clipping_files_by_kind"][k]),
                  *("—" if v[c] is None else f"{v[c]:.2e}" for c in ("median", "mean", "max"))]
                 for k, v in s["clipping_ratio_by_kind"].items()]
    return Section("Silence and clipping", "Silence ratio: share of the file's duration below the ingest silence "
                   "threshold (1 = all silent). Clipping ratio: share of samples at full scale.",
                   [Table("Silence ratio per kind", [*SUMMARY_COLUMNS, "all-silent files"], rows),
                    Table("Clipping ratio per kind", ["", "n", "files with clipping", "median", "mean", "max"],
                          clip_rows)],
                   [to_plot(fig, "box plot of silence ratio per kind")])


def _formats(s: Mapping[str, Any]) -> Section:
    sr = [[f"{int(k):,} Hz", v["files"], _hours(v["hours"])] for k, v in s["sample_rates"].items()]
    ch = [[k, v["files"], _hours(v["hours"])] for k, v in s["channels"].items()]
    fm = [[k, v] for k, v in s["formats"].items()]
    return Section("Sample rates, channels and formats", "", [
        Table("Sample rates", ["sample rate", "files", "hours"], sr),
        Table("Channels", ["channels", "files", "hours"], ch),
        Table("Container / encoding", ["format/subtype", "files"], fm)])


def _tempo(s: Mapping[str, Any]) -> Section:
    tb = s["tempo_bpm"]
    fig, ax = new_figure(7.5, 3.4)
    hist_plot(ax, tb["histogram"], title="Estimated tempo (10 BPM bins)", xlabel="tempo (BPM)", ylabel="files",
              color=PALETTE[1])
    text = f"{tb['missing']} file(s) without a tempo estimate (silent, or ingested with tempo off)."
    return Section("Tempo", text, [Table("Tempo (BPM)", SUMMARY_COLUMNS, summary_rows({"all stems": tb["summary"]}, 1))],
                   [to_plot(fig, "histogram of estimated tempo in BPM")])


def _balance(s: Mapping[str, Any], live: pd.DataFrame) -> Section:
    rel = multitrack_rel_levels(live)
    fig, ax = new_figure(7.5, 3.6)
    box_plot(ax, {k: v.tolist() for k, v in rel.items()}, title="Stem level relative to its mixture",
             ylabel="stem LUFS − mixture LUFS (LU)")
    ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
    return Section("Level balance of the real multitracks",
                   f"{s['multitrack_songs']} multitrack(s) with a mixture. This is the reference the remix report "
                   "overlays its mixtures on.",
                   [Table("Stem loudness − mixture loudness (LU)", SUMMARY_COLUMNS,
                          summary_rows(s["multitrack_rel_lufs"], 1))],
                   [to_plot(fig, "box plot of stem level relative to the mixture per kind")])


def _listed(keys: list[str]) -> str:
    more = len(keys) - MAX_LISTED
    return ", ".join(keys[:MAX_LISTED]) + (f" … and {more} more (see the JSON)" if more > 0 else "")


def _flags(s: Mapping[str, Any]) -> Section:
    rows = [[f, n, _listed(s["flagged_files"][f])] for f, n in s["flags"].items()]
    text = ("Quality flags set at ingest (silent: no sound at all; clipping: samples at full scale; lossy: decoded "
            "from a lossy codec; length_mismatch: the stems of one multitrack differ in length; near_duplicate: a "
            "re-encoded or edited copy of a kept stem; has_bleed, instrumental: as MedleyDB's metadata says).")
    return Section("Quality flags", text if rows else "No quality flags.",
                   [Table("Flags", ["flag", "files", "files named"], rows)] if rows else [])


def _rejects_section(s: Mapping[str, Any]) -> Section:
    r = s["rejects"]
    if not r["total"]:
        return Section("Rejected files", "No file was rejected.")
    tables = [Table("Rejects by reason", ["reason", "files"], [[k, v] for k, v in r["by_reason"].items()]),
              Table("Rejected files", ["file", "reason"], [[f["key"], f["reason"]] for f in r["files"][:MAX_LISTED]],
                    note=f"{r['total'] - MAX_LISTED} more in the JSON." if r["total"] > MAX_LISTED else "")]
    return Section("Rejected files", f"{r['total']} file(s) could not be ingested.", tables)


def _duplicates_section(s: Mapping[str, Any]) -> Section:
    d = s["duplicates"]
    if not d["total"]:
        return Section("Duplicates", "No duplicate audio: every live file has distinct content.")
    rows = [[g["canonical"], _listed(g["copies"]), g["stem_id"][:12]] for g in d["groups"][:MAX_LISTED]]
    return Section("Duplicates", f"{d['total']} file(s) have the same decoded audio as another file (same "
                   "stem_id) or are a near-duplicate of it (flag near_duplicate: re-encoded, trimmed, gain-changed "
                   "or resampled), and are left out of every count above.",
                   [Table("Duplicate groups", ["kept (canonical)", "copies", "stem_id"], rows)])


def _leakage_section(s: Mapping[str, Any]) -> Section:
    lk = s["leakage"]
    tables = []
    if lk["songs"]:
        tables.append(Table("Songs in more than one split", ["song", "splits", "files"],
                            [[f["song"], ", ".join(f["splits"]), _listed(f["files"])] for f in lk["songs"]]))
    if lk["content"]:
        tables.append(Table("Identical audio in more than one split", ["stem_id", "splits", "files"],
                            [[f["stem_id"][:12], ", ".join(f["splits"]), _listed(f["files"])] for f in lk["content"]]))
    text = ("A song or an identical recording in more than one split lets a model be evaluated on what it was "
            "trained on." if tables else "No leakage: no song and no identical recording is in more than one split.")
    return Section("Train/test leakage", text, tables)
