"""The remix report's page: the HTML sections and plots of :func:`augment.report.stats.remix_stats_from_frame`'s
numbers, the report writer (HTML + JSON), and the markdown digest a Prefect artifact shows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from augment.report.sections import boost_notice, rendered_section, set_section
from augment.report.stats import (
    TOP_USED,
    UNITS,
    measure_rendered,
    numeric_values,
    param_columns,
    read_recipes_frame,
    rel_levels,
    remix_stats_from_frame,
    silent_mask,
)
from stemdb.catalog import Catalog
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
    md_table,
    new_figure,
    summary_rows,
    to_plot,
    write_report,
)
from stemdb.report.html import markdown_summary as catalog_markdown

log = logging.getLogger(__name__)


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
    s["rendered_levels"] = measure_rendered(remix_dir, df)
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
    if boost_notice(s):
        notices.append(boost_notice(s))
    usage = s["stem_usage"]["overall"]
    headline = [("mixtures", fmt(t["mixtures"])), ("hours", f"{t['hours']:,.3f}" if t["hours"] < 10 else f"{t['hours']:,.1f}"),
                ("targets", fmt(len(s["targets"]))), ("median mixture LUFS", fmt(s["mix_lufs"]["summary"]["median"], 1)),
                ("distinct stems used", fmt(usage["distinct_stems"])), ("max reuse of a stem", fmt(usage["max_reuse"]))]
    sections: list[Section] = []
    if not s["empty"]:
        sections = [_overview(s), set_section(s), _loudness(s, live), _balance(s, df, live), rendered_section(s),
                    _silence(s), _parameters(s, df), _usage_section(s)]
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
    if not any(share.values()):
        return Section("Silent targets", "No target is silent in any mixture (remix.silent_prob draws none).",
                       [], [])
    fig, ax = new_figure(7.0, 3.2)
    bar_plot(ax, list(share), [100.0 * (v or 0.0) for v in share.values()], title="Silent targets",
             ylabel="silent (% of mixtures)", xlabel="target", color=PALETTE[3],
             annotations=[f"{100.0 * (v or 0.0):.1f}%" for v in share.values()])
    ax.set_ylim(0.0, min(100.0, 1.25 * 100.0 * max(v or 0.0 for v in share.values())))
    return Section("Silent targets", "Share of mixtures in which a target has no stem (drawn with silent_prob).",
                   [], [to_plot(fig, "bar chart of the share of silent targets per target")])


def _parameters(s: Mapping[str, Any], df: pd.DataFrame) -> Section:
    targets = s["targets"]
    names: list[str] = []
    for t in targets:
        for p in s["parameters"][t]:
            if p not in names:
                names.append(p)
    rows, constant = [], {}
    for p in names:
        for t in targets:
            d = s["parameters"][t].get(p)
            if d is None:
                continue
            if d["constant"]:
                constant.setdefault(f"{p} = {_constant_value(d)}", []).append(t)
            elif d["type"] == "numeric":
                sm = d["summary"]
                rows.append([p, t, fmt(sm["count"]), fmt(sm["min"], 2), fmt(sm["median"], 2), fmt(sm["mean"], 2),
                             fmt(sm["max"], 2)])
            else:
                rows.append([p, t, fmt(d["count"]), "", ", ".join(f"{k}: {v}" for k, v in d["counts"].items()), "",
                             ""])
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
    same = "; ".join(f"{k} ({'all targets' if len(ts) == len(targets) else ', '.join(ts)})"
                     for k, ts in constant.items())
    return Section("Augmentation parameters drawn",
                   "Every per-target parameter in the recipes that varies, over the mixtures where the target has a "
                   "stem." + (f" The same in every mixture (usually: that transform is off): {same}." if same else ""),
                   [Table("Parameters", ["parameter", "target", "n", "min", "median / counts", "mean", "max"],
                          rows)], plots)


def _constant_value(d: Mapping[str, Any]) -> str:
    """The one value of a constant parameter ('—' when it has no value at all)."""
    if d["type"] == "categorical":
        return next(iter(d["counts"]), "—")
    return fmt(d["summary"]["min"], 2)


def _shared_bins(df: pd.DataFrame, per_target: Mapping[str, Mapping[str, Any]], cols: Mapping[str, Mapping[str, str]],
                 name: str) -> dict[str, dict[str, Any]]:
    """Numeric parameters re-binned on edges shared by every target, so the panel's histograms compare bin for
    bin (the JSON keeps each target's own histogram)."""
    numeric = [t for t, d in per_target.items() if d["type"] == "numeric"]
    if not numeric:
        return dict(per_target)
    values = {t: numeric_values(df.loc[~silent_mask(df, t), cols[t][name]]) for t in numeric}
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


# -- markdown ----------------------------------------------------------------------------------------------------
def markdown_summary(stats: Mapping[str, Any]) -> str:
    """A short markdown digest of a remix or catalogue report's stats (what a Prefect artifact shows), by
    ``stats["report"]``."""
    return remix_markdown(stats) if stats.get("report") == "remix" else catalog_markdown(stats)


def remix_markdown(s: Mapping[str, Any]) -> str:
    """A short markdown digest of a remix report's stats (``stats["report"] == "remix"``)."""
    t = s["totals"]
    out = [f"# Remix report: `{s.get('remix_dir', '')}`", ""]
    if s.get("empty"):
        out.append("**The remix set is empty**: no recipes.")
    out.append(f"**{t['mixtures']:,} mixtures, {fmt(t['hours'])} h** "
               f"({', '.join(f'{k}: {v:,}' for k, v in s['mixtures_by_split'].items())}); "
               f"mixture loudness median {fmt(s['mix_lufs']['summary']['median'], 1)} LUFS.")
    f = s.get("set")
    if f and not s.get("empty"):
        out.append(f"Seed {', '.join(map(str, f['seeds']))} · config {', '.join(f['config_fingerprints'])} · "
                   f"{', '.join(map(str, f['sample_rates']))} Hz, {', '.join(map(str, f['channels']))} ch, "
                   f"{', '.join(f['subtypes'])}.")
    if s.get("boosts", {}).get("count"):
        out.append(f"**{s['boosts']['count']} stem uses boosted by more than +{s['boosts']['limit_db']:g} dB.**")
    if s["targets"]:
        rows = []
        for tg in s["targets"]:
            lv = s["rel_level_by_target"].get(tg, {})
            rows.append([tg, s["files_by_kind"].get(tg, 0), s["hours_by_kind"].get(tg, 0.0),
                         s["silent_share_by_target"].get(tg), (lv.get("remix") or {}).get("median"),
                         (lv.get("real") or {}).get("median"), s["stem_usage"]["by_target"][tg]["max_reuse"]])
        out += ["", md_table(["target", "stems used", "hours", "silent share", "level vs mix (LU, median)",
                               "real multitracks (LU, median)", "max reuse"], rows)]
    cmp = s.get("mix_lufs_vs_real") or {}
    if cmp.get("diff_lu") is not None:
        out += ["", f"Mixtures are {fmt(cmp['diff_lu'], 1)} LU relative to the catalogue's real mixtures "
                    f"(median {fmt(cmp['remix_median'], 1)} vs {fmt(cmp['real_median'], 1)} LUFS)."]
    if s.get("beat_score"):
        out += ["", f"Beat-alignment score: median {fmt(s['beat_score']['summary']['median'])} "
                    f"over {s['beat_score']['summary']['count']} mixtures."]
    return "\n".join(out) + "\n"
