"""The remix report: what a remix set (``<out>/recipes.parquet``, see docs/recipes.md) contains, as an HTML page with
plots and a JSON file of every figure.

Per-target columns are found by the recipe's ``targets`` list (``<target>_<field>``). A target is *silent* in a
mixture when its ``<target>_stem_id`` is null (or ``<target>_silent`` is true). Augmentation parameters are every
other per-target numeric or boolean column (offsets, levels, pitch, stretch, filter, gain, channel swap, polarity,
...), reported over the mixtures where the target is not silent.

The level balance compares each target's level relative to its mixture with the same quantity measured on the
real multitracks of the catalogue (:func:`stemdb.report.catalog_report.multitrack_rel_levels`): measured
``<target>_lufs - mix_lufs`` when the recipes carry ``<target>_lufs``, else the planned ``<target>_rel_lufs``
(the JSON says which under ``rel_level_basis``). Units: LUFS, LU, dB, seconds, hours, semitones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stemdb.catalog import Catalog
from stemdb.errors import StemdbError
from stemdb.report.catalog_report import load_catalog, multitrack_rel_levels
from stemdb.report.html import (
    PALETTE,
    SUMMARY_COLUMNS,
    Page,
    Plot,
    Section,
    Table,
    bar_plot,
    empty_axes,
    fmt,
    hist_plot,
    histogram,
    new_figure,
    summarize,
    summary_rows,
    to_plot,
    write_report,
)

log = logging.getLogger(__name__)

RECIPES = "recipes.parquet"
#: per-target columns that identify the stem or are measurements, not drawn parameters
IDENTITY_FIELDS = frozenset({"stem_id", "kind", "song", "silent", "lufs"})
#: units of known parameters, for axis labels
UNITS = {"offset_s": "s", "rel_lufs": "LU", "level_db": "dB", "gain_db": "dB", "pitch_semitones": "semitones",
         "stretch_rate": "× speed", "filter_freq_hz": "Hz", "filter_gain_db": "dB", "filter_q": "octaves",
         "loudness_target_lufs": "LUFS", "loudness_gain_db": "dB", "mix_target_lufs": "LUFS"}
TOP_USED = 10


def read_recipes_frame(remix_dir: str | Path) -> pd.DataFrame:
    """``<remix_dir>/recipes.parquet`` as a DataFrame; raises StemdbError naming the path when it is missing."""
    path = Path(remix_dir) / RECIPES
    if not path.is_file():
        raise StemdbError(f"{path}: no recipes here; build the remix set first (`stemdb remix`)")
    return pd.read_parquet(path)


def recipe_targets(df: pd.DataFrame) -> list[str]:
    """Target names in output order (the first recipe's order, then any other target seen)."""
    out: list[str] = []
    if "targets" in df.columns:
        for ts in df["targets"]:
            for t in (list(ts) if ts is not None else []):
                if t not in out:
                    out.append(str(t))
    return out


def param_columns(df: pd.DataFrame, targets: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{target: {parameter: column}}`` for every per-target numeric/boolean column that is not an identity or
    measurement field. A column is given to the longest target name it starts with (``other_keys_gain_db`` is
    target ``other_keys``'s when both ``other`` and ``other_keys`` are targets)."""
    out: dict[str, dict[str, str]] = {t: {} for t in targets}
    by_len = sorted(targets, key=len, reverse=True)
    for col in df.columns:
        t = next((t for t in by_len if col.startswith(f"{t}_")), None)
        if t is None:
            continue
        name = col[len(t) + 1:]
        if name in IDENTITY_FIELDS:
            continue
        if _is_bool(df[col]) or _numeric(df[col]) is not None:
            out[t][name] = col
    return out


def _is_bool(s: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(s.dtype)


def _numeric(s: pd.Series) -> pd.Series | None:
    """The column as float64 when it is numeric (object columns of numbers/None included), else None."""
    if pd.api.types.is_bool_dtype(s.dtype):
        return None
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.astype("float64")
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        vals = s.dropna()
        if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in vals):
            return pd.to_numeric(s, errors="coerce").astype("float64")
    return None


def silent_mask(df: pd.DataFrame, target: str) -> pd.Series:
    """True where ``target`` is silent in the mixture (no stem)."""
    m = df[f"{target}_stem_id"].isna() if f"{target}_stem_id" in df.columns else pd.Series(True, index=df.index)
    if f"{target}_silent" in df.columns:
        m = m | df[f"{target}_silent"].fillna(False).astype(bool)
    return m


def describe_param(values: pd.Series) -> dict[str, Any]:
    """A parameter's distribution: booleans and small-integer columns (polarity) as ``counts`` by value, other
    numbers as a ``summary`` and ``histogram``; ``constant`` is true when every value is the same (not applied)."""
    v = values.dropna()
    if _is_bool(values) or (pd.api.types.is_integer_dtype(values.dtype) and v.nunique() <= 12):
        keys = v.astype(bool) if _is_bool(values) else v.astype(int)
        counts = {str(k).lower(): int(n) for k, n in keys.value_counts().sort_index().items()}
        return {"type": "categorical", "count": int(len(v)), "counts": counts, "constant": len(counts) <= 1}
    num = _numeric(values)
    num = num if num is not None else pd.Series(dtype="float64")
    return {"type": "numeric", "summary": summarize(num), "histogram": histogram(num, max_bins=30),
            "constant": bool(num.dropna().nunique() <= 1)}


def remix_stats_from_frame(df: pd.DataFrame, live: pd.DataFrame | None = None) -> dict[str, Any]:
    """Every number of the remix report from the recipes frame and (optionally) the catalogue's live rows."""
    targets = recipe_targets(df)
    s: dict[str, Any] = {"report": "remix", "empty": bool(df.empty), "targets": targets}
    dur = df["duration_s"].astype(float) if "duration_s" in df.columns else pd.Series(dtype=float)
    s["totals"] = {"mixtures": int(len(df)), "hours": float(dur.sum() / 3600.0)}
    s["mixtures_by_split"] = _counts(df, "split")
    s["hours_by_split"] = ({str(k): float(v / 3600.0) for k, v in df.groupby("split", sort=True)["duration_s"].sum().items()}
                           if len(df) else {})
    s["mixtures_by_mode"] = _counts(df, "mode")

    silent = {t: silent_mask(df, t) for t in targets}
    s["files_by_kind"] = {t: int((~silent[t]).sum()) for t in targets}
    s["hours_by_kind"] = {t: float(dur[~silent[t]].sum() / 3600.0) for t in targets}
    s["silent_share_by_target"] = {t: (float(silent[t].mean()) if len(df) else None) for t in targets}
    s["kinds_by_target"] = {t: _counts(df[~silent[t]], f"{t}_kind") for t in targets}

    mix = df["mix_lufs"].astype(float) if "mix_lufs" in df.columns else pd.Series(dtype=float)
    s["mix_lufs"] = {"summary": summarize(mix), "histogram": histogram(mix, step=1.0),
                     "unmeasured": int(mix.isna().sum())}
    s["mix_peak_dbfs"] = summarize(df["mix_peak_dbfs"].astype(float)) if "mix_peak_dbfs" in df.columns else summarize([])
    clip = df["clip_scale_db"].astype(float) if "clip_scale_db" in df.columns else pd.Series(dtype=float)
    s["clip_scale_db"] = {"summary": summarize(clip), "scaled_mixtures": int((clip.fillna(0.0) != 0.0).sum())}
    s["mixture_parameters"] = {c: describe_param(df[c]) for c in ("mix_target_lufs",) if c in df.columns}

    # level balance
    basis = "measured" if any(f"{t}_lufs" in df.columns and df[f"{t}_lufs"].notna().any() for t in targets) \
        else "planned"
    s["rel_level_basis"] = basis
    rel = rel_levels(df, targets, basis, silent)
    real = multitrack_rel_levels(live) if live is not None else {}
    s["rel_level_by_target"] = {}
    for t in targets:
        r = summarize(rel[t])
        ref = summarize(real[t]) if t in real else None
        diff = (r["median"] - ref["median"]) if ref and ref["median"] is not None and r["median"] is not None else None
        s["rel_level_by_target"][t] = {"remix": r, "real": ref, "diff_median_lu": diff}
    real_mix = (live.loc[(live["kind"] == "mixture"), "lufs"].astype(float) if live is not None
                else pd.Series(dtype=float))
    s["real_mix_lufs"] = summarize(real_mix) if live is not None else None
    rm, mm = s["mix_lufs"]["summary"]["median"], (s["real_mix_lufs"] or {}).get("median")
    s["mix_lufs_vs_real"] = {"remix_median": rm, "real_median": mm,
                             "diff_lu": (rm - mm) if rm is not None and mm is not None else None}

    cols = param_columns(df, targets)
    s["parameters"] = {t: {p: describe_param(df.loc[~silent[t], c]) for p, c in cols[t].items()} for t in targets}
    s["stem_usage"] = _usage(df, targets, silent, live)
    beat = df["beat_score"].astype(float) if "beat_score" in df.columns else pd.Series(dtype=float)
    s["beat_score"] = ({"summary": summarize(beat), "histogram": histogram(beat, edges=np.linspace(0, 1, 11))}
                       if beat.notna().any() else None)
    fps = sorted({str(v) for v in df.get("catalog_fingerprint", pd.Series(dtype=object)).dropna()})
    s["catalog_fingerprints"] = fps
    return s


def rel_levels(df: pd.DataFrame, targets: Sequence[str], basis: str,
               silent: Mapping[str, pd.Series] | None = None) -> dict[str, np.ndarray]:
    """Per target, the level relative to the mixture (LU) over mixtures where the target is not silent:
    ``<t>_lufs - mix_lufs`` (``basis="measured"``) or ``<t>_rel_lufs`` (``"planned"``); NaN values dropped."""
    out = {}
    for t in targets:
        keep = ~(silent[t] if silent is not None else silent_mask(df, t))
        if basis == "measured":
            col = f"{t}_lufs"
            v = (df.loc[keep, col].astype(float) - df.loc[keep, "mix_lufs"].astype(float)) if col in df.columns \
                else pd.Series(dtype=float)
        else:
            col = f"{t}_rel_lufs"
            v = df.loc[keep, col].astype(float) if col in df.columns else pd.Series(dtype=float)
        a = v.to_numpy(dtype=float)
        out[t] = a[np.isfinite(a)]
    return out


def _counts(df: pd.DataFrame, col: str) -> dict[str, int]:
    if col not in df.columns or df.empty:
        return {}
    return {str(k): int(v) for k, v in df[col].dropna().astype(str).value_counts().sort_index().items()}


def _usage(df: pd.DataFrame, targets: Sequence[str], silent: Mapping[str, pd.Series],
           live: pd.DataFrame | None) -> dict[str, Any]:
    """How often each source stem was used. Coverage of a target: distinct stems used / candidate stems in the
    catalogue (live, canonical, not all silent, of a kind used for the target, in a catalogue split the used stems
    come from); null without a catalogue."""
    by_target = {}
    used_all = []
    for t in targets:
        ids = df.loc[~silent[t], f"{t}_stem_id"].astype(str) if f"{t}_stem_id" in df.columns else pd.Series(dtype=str)
        used_all.append(pd.DataFrame({"stem_id": ids, "target": t}))
        vc = ids.value_counts()
        cand = None
        if live is not None and len(vc):
            kinds = set(df.loc[~silent[t], f"{t}_kind"].dropna().astype(str)) if f"{t}_kind" in df.columns else {t}
            splits = set(live.loc[live["stem_id"].isin(vc.index), "split"].astype(str))
            pool = live[(live["kind"] != "mixture") & live["kind"].isin(kinds) & live["split"].isin(splits)
                        & (live["silence_ratio"] < 1.0)]
            cand = int(pool["stem_id"].nunique())
        by_target[t] = {
            "uses": int(vc.sum()), "distinct_stems": int(len(vc)), "max_reuse": int(vc.max()) if len(vc) else 0,
            "mean_reuse": float(vc.mean()) if len(vc) else None, "candidates": cand,
            "coverage": (len(vc) / cand) if cand else None,
            "reuse_histogram": histogram(vc.to_numpy(dtype=float), step=1.0) if len(vc) else histogram([]),
        }
    allu = pd.concat(used_all, ignore_index=True) if used_all else pd.DataFrame(columns=["stem_id", "target"])
    vc = allu["stem_id"].value_counts()
    keys = {}
    if live is not None:
        keys = dict(zip(live["stem_id"], live["key"], strict=False))
    top = [{"stem_id": str(sid), "uses": int(n), "key": keys.get(sid),
            "targets": sorted(allu.loc[allu["stem_id"] == sid, "target"].unique().tolist())}
           for sid, n in vc.head(TOP_USED).items()]
    overall = {"uses": int(vc.sum()), "distinct_stems": int(len(vc)), "max_reuse": int(vc.max()) if len(vc) else 0,
               "mean_reuse": float(vc.mean()) if len(vc) else None}
    return {"by_target": by_target, "overall": overall, "most_used": top}


def remix_stats(remix_dir: str | Path, *, catalog: str | Path | None = None) -> dict[str, Any]:
    """The remix report's numbers without writing anything (not yet JSON-sanitised)."""
    df = read_recipes_frame(remix_dir)
    live = load_catalog(catalog)[0] if catalog is not None else None
    s = remix_stats_from_frame(df, live)
    s["remix_dir"] = str(remix_dir)
    s["catalog"] = str(catalog) if catalog is not None else None
    return s


def remix_report(remix_dir: Path, out_html: Path, *, catalog: Path | None = None) -> dict:
    """Write the remix report: ``out_html`` (self-contained page) and ``out_html`` with suffix ``.json``.

    ``catalog``: the catalogue the set was drawn from; it gives the real-multitrack level reference, the real
    mixtures' loudness, stem coverage and file names (all null/absent without it). Returns the JSON dict; its
    ``files_by_kind`` / ``hours_by_kind`` are, per target, the mixtures that use a stem (not silent) and their
    hours. Raises StemdbError when ``remix_dir`` has no ``recipes.parquet``.
    """
    df = read_recipes_frame(remix_dir)
    live, fingerprint = None, None
    if catalog is not None:
        cat = Catalog.open(catalog)
        live = load_catalog(cat)[0]
        fingerprint = cat.fingerprint()
    s = remix_stats_from_frame(df, live)
    s["remix_dir"] = str(remix_dir)
    s["catalog"] = str(catalog) if catalog is not None else None
    s["catalog_fingerprint"] = fingerprint
    s["catalog_matches"] = (fingerprint in s["catalog_fingerprints"]) if fingerprint and s["catalog_fingerprints"] \
        else None
    s["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    page = _page(s, df, live)
    safe = write_report(page, s, Path(out_html))
    log.info("remix report: %s (%d mixtures, %.2f h)", out_html, s["totals"]["mixtures"], s["totals"]["hours"])
    return safe


# -- page --------------------------------------------------------------------------------------------------------
def _page(s: Mapping[str, Any], df: pd.DataFrame, live: pd.DataFrame | None) -> Page:
    t = s["totals"]
    notices = []
    if s["empty"]:
        notices.append("The remix set is empty: recipes.parquet has no mixtures.")
    if live is None:
        notices.append("No catalogue given: the real-multitrack level reference, real mixture loudness and stem "
                       "coverage are not shown (pass the catalogue the set was drawn from).")
    elif s.get("catalog_matches") is False:
        notices.append(f"The recipes were planned from catalogue state {', '.join(s['catalog_fingerprints'])}, "
                       f"but the catalogue now has fingerprint {s['catalog_fingerprint']}: the set may be stale.")
    usage = s["stem_usage"]["overall"]
    headline = [("mixtures", fmt(t["mixtures"])), ("hours", f"{t['hours']:,.3f}" if t["hours"] < 10 else f"{t['hours']:,.1f}"),
                ("targets", fmt(len(s["targets"]))), ("median mixture LUFS", fmt(s["mix_lufs"]["summary"]["median"], 1)),
                ("distinct stems used", fmt(usage["distinct_stems"])), ("max reuse of a stem", fmt(usage["max_reuse"]))]
    sections: list[Section] = []
    if not s["empty"]:
        sections = [_overview(s), _loudness(s, live), _balance(s, df, live), _silence(s), _parameters(s, df),
                    _usage_section(s)]
        if s["beat_score"]:
            sections.append(_beats(s))
    sub = f"{s['remix_dir']}" + (f" · catalogue {s['catalog']}" if s.get("catalog") else "")
    return Page(title="stemdb remix report", subtitle=sub, headline=headline, sections=sections, notices=notices,
                generated_at=s.get("generated_at", ""))


def _overview(s: Mapping[str, Any]) -> Section:
    split = s["mixtures_by_split"]
    rows = [[k, split[k], f"{s['hours_by_split'][k]:.3f}"] for k in split]
    trows = [[t, s["files_by_kind"][t], f"{s['hours_by_kind'][t]:.3f}", fmt(s["silent_share_by_target"][t], 3),
              ", ".join(f"{k} {n}" for k, n in s["kinds_by_target"][t].items())] for t in s["targets"]]
    fig, (a1, a2) = new_figure(10, 3.4, ncols=2)
    bar_plot(a1, list(split), list(split.values()), title="Mixtures per split", ylabel="mixtures", xlabel="split",
             annotations=[f"{s['hours_by_split'][k]:.2f} h" for k in split])
    bar_plot(a2, s["targets"], [s["hours_by_kind"][t] for t in s["targets"]], title="Hours of stem audio per target",
             ylabel="hours", xlabel="target", color=PALETTE[2],
             annotations=[f"{s['files_by_kind'][t]} stems" for t in s["targets"]])
    modes = ", ".join(f"{k} {v}" for k, v in s["mixtures_by_mode"].items())
    return Section("Overview", f"{s['totals']['mixtures']:,} mixtures ({modes}).",
                   [Table("Mixtures and hours per split", ["split", "mixtures", "hours"], rows),
                    Table("Stems per target", ["target", "mixtures with a stem", "hours", "silent share",
                                               "catalogue kinds used"], trows)],
                   [to_plot(fig, "bar charts of mixtures per split and hours per target")])


def _loudness(s: Mapping[str, Any], live: pd.DataFrame | None) -> Section:
    h = s["mix_lufs"]["histogram"]
    fig, ax = new_figure(7.5, 3.6)
    hist_plot(ax, h, title="Mixture loudness", xlabel="integrated loudness (LUFS)", ylabel="mixtures",
              label="remix mixtures")
    if live is not None and h["counts"]:
        real = live.loc[live["kind"] == "mixture", "lufs"].dropna()
        for v in real:
            ax.axvline(v, color=PALETTE[5], lw=1.2, alpha=0.8)
        if len(real):
            ax.plot([], [], color=PALETTE[5], label="real mixtures (catalogue)")
        ax.legend(loc="upper left", fontsize=8)
    tables = [Table("Mixture loudness (LUFS)", SUMMARY_COLUMNS, summary_rows({"remix": s["mix_lufs"]["summary"]}, 1)
                    + (summary_rows({"real mixtures": s["real_mix_lufs"]}, 1) if s["real_mix_lufs"] else [])),
              Table("Mixture peak and clip protection", ["", "value"], [
                  ["median sample peak (dBFS)", fmt(s["mix_peak_dbfs"]["median"], 1)],
                  ["max sample peak (dBFS)", fmt(s["mix_peak_dbfs"]["max"], 1)],
                  ["mixtures scaled down to avoid clipping", fmt(s["clip_scale_db"]["scaled_mixtures"])],
                  ["largest clip-protection gain (dB)", fmt(s["clip_scale_db"]["summary"]["min"], 2)]])]
    cmp = s["mix_lufs_vs_real"]
    text = (f"Median mixture loudness {fmt(cmp['remix_median'], 1)} LUFS"
            + (f", {fmt(cmp['diff_lu'], 1)} LU from the catalogue's real mixtures ({fmt(cmp['real_median'], 1)} "
               "LUFS)." if cmp["diff_lu"] is not None else "."))
    return Section("Mixture loudness", text, tables,
                   [to_plot(fig, "histogram of mixture loudness in LUFS with the real mixtures marked",
                            "Bars: remix mixtures (1 LU bins). Vertical lines: the catalogue's real mixtures.")])


def _balance(s: Mapping[str, Any], df: pd.DataFrame, live: pd.DataFrame | None) -> Section:
    targets = s["targets"]
    rel = rel_levels(df, targets, s["rel_level_basis"])
    real = multitrack_rel_levels(live) if live is not None else {}
    fig, ax = new_figure(8.5, 3.8)
    ax.set_title("Stem level relative to the mixture: remix vs real multitracks")
    pos = np.arange(len(targets), dtype=float)
    drawn = False
    for off, data, colour, label in ((-0.18, rel, "#cfe3f3", "remix"), (0.18, real, "#f6d7b0", "real multitracks")):
        vals = [np.asarray(data.get(t, []), dtype=float) for t in targets]
        have = [i for i, v in enumerate(vals) if v.size]
        if not have:
            continue
        drawn = True
        bp = ax.boxplot([vals[i] for i in have], positions=pos[have] + off, widths=0.32, patch_artist=True,
                        boxprops={"facecolor": colour}, medianprops={"color": "k"}, manage_ticks=False)
        bp["boxes"][0].set_label(label)
    if drawn:
        ax.set_xticks(pos, targets)
        ax.set_xlim(-0.6, len(targets) - 0.4)
        ax.set_xlabel("target")
        ax.set_ylabel("stem LUFS − mixture LUFS (LU)")
        ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    else:
        empty_axes(ax, "no level data")
    rows = []
    for t in targets:
        lv = s["rel_level_by_target"][t]
        real_s = lv["real"] or {}
        rows.append([t, fmt(lv["remix"]["count"]), fmt(lv["remix"]["median"], 1), fmt(lv["remix"]["mean"], 1),
                     fmt(lv["remix"]["std"], 1), fmt(real_s.get("count")), fmt(real_s.get("median"), 1),
                     fmt(real_s.get("mean"), 1), fmt(lv["diff_median_lu"], 1)])
    basis = ("measured on the rendered stems (<target>_lufs − mix_lufs)" if s["rel_level_basis"] == "measured"
             else "as planned by the remixer (<target>_rel_lufs); the recipes carry no measured stem loudness")
    return Section("Level balance against real multitracks",
                   f"Each stem's loudness relative to its mixture, {basis}, next to the same figure on the real "
                   "multitracks of the catalogue (stem LUFS − mixture LUFS per song).",
                   [Table("Level relative to the mixture (LU)", ["target", "remix n", "remix median", "remix mean",
                                                                 "remix std", "real n", "real median", "real mean",
                                                                 "median difference"], rows)],
                   [to_plot(fig, "paired box plots of stem level relative to the mixture, remix and real")])


def _silence(s: Mapping[str, Any]) -> Section:
    share = s["silent_share_by_target"]
    fig, ax = new_figure(7.0, 3.2)
    bar_plot(ax, list(share), [100.0 * (v or 0.0) for v in share.values()], title="Silent targets",
             ylabel="mixtures with the target silent (%)", xlabel="target", color=PALETTE[3],
             annotations=[f"{100.0 * (v or 0.0):.1f}%" for v in share.values()])
    return Section("Silent targets", "Share of mixtures in which a target has no stem (drawn with silent_prob).",
                   [], [to_plot(fig, "bar chart of the share of silent targets per target")])


def _parameters(s: Mapping[str, Any], df: pd.DataFrame) -> Section:
    targets = s["targets"]
    names: list[str] = []
    for t in targets:
        for p in s["parameters"][t]:
            if p not in names:
                names.append(p)
    rows = []
    for p in names:
        for t in targets:
            d = s["parameters"][t].get(p)
            if d is None:
                continue
            if d["type"] == "numeric":
                sm = d["summary"]
                rows.append([p, t, fmt(sm["count"]), fmt(sm["min"], 2), fmt(sm["median"], 2), fmt(sm["mean"], 2),
                             fmt(sm["max"], 2), "constant" if d["constant"] else ""])
            else:
                rows.append([p, t, fmt(d["count"]), "", ", ".join(f"{k}: {v}" for k, v in d["counts"].items()), "",
                             "", "constant" if d["constant"] else ""])
    plots: list[Plot] = []
    cols = param_columns(df, targets)
    mix_params = {k: d for k, d in s["mixture_parameters"].items() if not d["constant"]}
    varied = [p for p in names if any(not s["parameters"][t][p]["constant"] for t in targets
                                      if p in s["parameters"][t])]
    all_names = [*(f"mixture: {k}" for k in mix_params), *varied]
    if all_names:
        ncols = 3
        nrows = -(-len(all_names) // ncols)
        fig, axes = new_figure(12, 2.6 * nrows + 0.2, nrows=nrows, ncols=ncols, layout=None)
        fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.45 / (2.6 * nrows + 0.2),
                            bottom=0.7 / (2.6 * nrows + 0.2), hspace=0.62, wspace=0.22)
        axes = np.atleast_1d(axes).ravel()
        for ax, name in zip(axes, all_names, strict=False):
            if name.startswith("mixture: "):
                p = name.removeprefix("mixture: ")
                _param_panel(ax, p, {"mixture": mix_params[p]}, title=f"{p} (per mixture)")
            else:
                per_t = {t: s["parameters"][t][name] for t in targets if name in s["parameters"][t]}
                _param_panel(ax, name, _shared_bins(df, per_t, cols, name), title=name)
        for ax in axes[len(all_names):]:
            ax.set_visible(False)
        plots.append(to_plot(fig, "grid of augmentation parameter distributions per target",
                             "One panel per varied parameter: numeric parameters as stepped histograms per "
                             "target, yes/no and ±1 parameters as the share of each value. Silent targets are left "
                             "out; parameters that were never varied are only in the table."))
    return Section("Augmentation parameters drawn",
                   "Every per-target parameter in the recipes, over the mixtures where the target has a stem. "
                   "'constant': every value drawn is the same (usually: that transform is off).",
                   [Table("Parameters", ["parameter", "target", "n", "min", "median / counts", "mean", "max", ""],
                          rows)], plots)


def _shared_bins(df: pd.DataFrame, per_target: Mapping[str, Mapping[str, Any]], cols: Mapping[str, Mapping[str, str]],
                 name: str) -> dict[str, dict[str, Any]]:
    """Numeric parameters re-binned on edges shared by every target, so the panel's histograms compare bin for
    bin (the JSON keeps each target's own histogram)."""
    numeric = [t for t, d in per_target.items() if d["type"] == "numeric"]
    if not numeric:
        return dict(per_target)
    values = {t: _numeric(df.loc[~silent_mask(df, t), cols[t][name]]) for t in numeric}
    edges = histogram(pd.concat(list(values.values())), max_bins=30)["edges"]
    out = dict(per_target)
    for t in numeric:
        out[t] = {**per_target[t], "histogram": histogram(values[t], edges=edges) if edges else histogram([])}
    return out


def _param_panel(ax, name: str, per_target: Mapping[str, Mapping[str, Any]], *, title: str) -> None:  # noqa: ANN001
    ax.set_title(title, fontsize=10)
    unit = UNITS.get(name, "")
    numeric = {t: d for t, d in per_target.items() if d["type"] == "numeric" and d["histogram"]["counts"]}
    cats = {t: d for t, d in per_target.items() if d["type"] == "categorical" and d["count"]}
    if numeric:
        for i, (t, d) in enumerate(numeric.items()):
            h = d["histogram"]
            ax.stairs(h["counts"], h["edges"], color=PALETTE[i % len(PALETTE)], lw=1.6, label=t)
        ax.set_xlabel(f"{name} ({unit})" if unit else name, fontsize=9)
        ax.set_ylabel("mixtures", fontsize=9)
    elif cats:
        values = sorted({k for d in cats.values() for k in d["counts"]})
        width = 0.8 / len(cats)
        x = np.arange(len(values))
        for i, (t, d) in enumerate(cats.items()):
            share = [100.0 * d["counts"].get(v, 0) / d["count"] for v in values]
            ax.bar(x + (i - (len(cats) - 1) / 2) * width, share, width, color=PALETTE[i % len(PALETTE)], label=t)
        ax.set_xticks(x, values)
        ax.set_ylim(0, 105)
        ax.set_xlabel(name, fontsize=9)
        ax.set_ylabel("share (%)", fontsize=9)
    else:
        empty_axes(ax, "no values")
        return
    ax.tick_params(labelsize=8)
    if len(per_target) > 1:
        ax.legend(fontsize=7)


def _usage_section(s: Mapping[str, Any]) -> Section:
    u = s["stem_usage"]
    rows = [[t, d["uses"], d["distinct_stems"], fmt(d["candidates"]), fmt(d["coverage"], 3), d["max_reuse"],
             fmt(d["mean_reuse"], 2)] for t, d in u["by_target"].items()]
    o = u["overall"]
    rows.append(["all targets", o["uses"], o["distinct_stems"], "", "", o["max_reuse"], fmt(o["mean_reuse"], 2)])
    top = [[d["key"] or d["stem_id"], d["uses"], ", ".join(d["targets"])] for d in u["most_used"]]
    fig, ax = new_figure(7.5, 3.4)
    ax.set_title("How often each source stem was used")
    drawn = False
    for i, (t, d) in enumerate(u["by_target"].items()):
        h = d["reuse_histogram"]
        if h["counts"]:
            ax.stairs(h["counts"], h["edges"], color=PALETTE[i % len(PALETTE)], lw=1.6, label=t)
            drawn = True
    if drawn:
        ax.set_xlabel("times used (mixtures)")
        ax.set_ylabel("source stems")
        ax.legend(fontsize=8)
    else:
        empty_axes(ax, "no stems used")
    return Section("Stem usage", "Coverage: distinct stems used / candidate stems of the same kinds and catalogue "
                   "split(s) in the catalogue (live, not duplicates, not all silent).",
                   [Table("Usage per target", ["target", "uses", "distinct stems", "candidates", "coverage",
                                               "max reuse", "mean reuse"], rows),
                    Table(f"Most used stems (top {TOP_USED})", ["stem", "uses", "targets"], top)],
                   [to_plot(fig, "histogram of the number of times each source stem was used, per target")])


def _beats(s: Mapping[str, Any]) -> Section:
    b = s["beat_score"]
    fig, ax = new_figure(7.0, 3.2)
    hist_plot(ax, b["histogram"], title="Beat-alignment score", xlabel="score (0 = unaligned, 1 = aligned)",
              ylabel="mixtures", color=PALETTE[2])
    return Section("Beat alignment", "Score of tempo-aware mixing (null in mixtures drawn without it).",
                   [Table("Beat-alignment score", SUMMARY_COLUMNS, summary_rows({"mixtures": b["summary"]}, 3))],
                   [to_plot(fig, "histogram of beat-alignment scores")])
