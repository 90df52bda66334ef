"""Rendering for the statistics reports: plots (matplotlib, Agg, no pyplot), the HTML page (jinja2), JSON, markdown.

Figures are built on :class:`matplotlib.figure.Figure` objects directly, never through ``pyplot``: nothing is
registered in pyplot's global figure list, so nothing can leak, and the process-wide backend is left alone. Each
figure is rendered to PNG, embedded as a ``data:`` URI (the page is self-contained and loads nothing from the
network) and released. Page text goes through jinja2 with autoescaping on.

Numbers shown in tables are formatted here; the JSON keeps full precision with NaN/inf turned into ``null``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stemdb.atomic import write_text_atomic as _write_text_atomic

TEMPLATE = "template.html.j2"
DPI = 90
#: one colour per series, colour-blind friendly (Okabe-Ito)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


# -- page model ------------------------------------------------------------------------------------------------
@dataclass
class Table:
    """A table: ``columns`` (header labels) and ``rows`` (cells, already numbers or strings)."""

    caption: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    note: str = ""


@dataclass
class Plot:
    """An embedded figure: ``uri`` is a ``data:image/png;base64,...`` URI."""

    uri: str
    alt: str
    caption: str = ""


@dataclass
class Section:
    """One titled part of the page: a paragraph, then tables and plots."""

    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    anchor: str = ""

    def __post_init__(self) -> None:
        if not self.anchor:
            self.anchor = "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")


@dataclass
class Page:
    """The whole report page. ``notices`` are shown in a highlighted box at the top (empty inputs, stale data)."""

    title: str
    subtitle: str
    headline: Sequence[tuple[str, str]]  # (label, value) pairs shown as big numbers
    sections: list[Section]
    notices: list[str] = field(default_factory=list)
    generated_at: str = ""


# -- JSON --------------------------------------------------------------------------------------------------------
def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(allow_nan=False)`` accepts: numpy scalars and arrays become Python
    numbers and lists, NaN/inf become ``None``, mapping keys become strings, tuples and sets become lists."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    with contextlib.suppress(TypeError, ValueError):
        import pandas as pd

        if pd.isna(obj):
            return None
    return str(obj)


def summarize(values: Iterable[float]) -> dict[str, float | int | None]:
    """Summary of the finite values: ``count``, ``min``, ``p10``, ``median``, ``mean``, ``std`` (population),
    ``p90``, ``max`` (quantiles by linear interpolation, as numpy and pandas compute them by default).

    Non-finite and missing values are left out; with no values every statistic is ``None`` and ``count`` is 0.
    """
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"count": 0, "min": None, "p10": None, "median": None, "mean": None, "std": None, "p90": None,
                "max": None}
    return {
        "count": int(a.size), "min": float(a.min()), "p10": float(np.quantile(a, 0.1)),
        "median": float(np.median(a)), "mean": float(a.mean()), "std": float(a.std()),
        "p90": float(np.quantile(a, 0.9)), "max": float(a.max()),
    }


def histogram(values: Iterable[float], *, edges: Sequence[float] | None = None, max_bins: int = 40,
              step: float | None = None) -> dict[str, list]:
    """``{"edges": [...], "counts": [...]}`` of the finite values (``numpy.histogram`` semantics: the last bin
    is closed). Edges: given, or on multiples of ``step``, or numpy's ``auto`` rule capped at ``max_bins``."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"edges": [], "counts": []}
    if edges is None:
        if step is not None:
            lo = math.floor(a.min() / step) * step
            hi = math.ceil(a.max() / step) * step
            if hi <= lo:
                hi = lo + step
            e = np.arange(lo, hi + step / 2, step)
        else:
            e = np.histogram_bin_edges(a, bins="auto")
            if len(e) - 1 > max_bins:
                e = np.histogram_bin_edges(a, bins=max_bins)
    else:
        e = np.asarray(edges, dtype=np.float64)
    counts, e = np.histogram(a, bins=e)
    return {"edges": [float(x) for x in e], "counts": [int(c) for c in counts]}


# -- figures -----------------------------------------------------------------------------------------------------
def new_figure(width: float = 7.5, height: float = 3.6, *, nrows: int = 1, ncols: int = 1,  # noqa: ANN201
               layout: str | None = "constrained"):
    """A fresh ``Figure`` (Agg canvas; constrained layout unless ``layout=None``, for big grids where it is slow)
    and its axes (an array when ``nrows * ncols > 1``). Sizes in inches at :data:`DPI`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=True)
    return fig, axes


def to_plot(fig, alt: str, caption: str = "") -> Plot:  # noqa: ANN001
    """Render ``fig`` to an embedded PNG and release it (``Figure.clear``; no pyplot state is ever touched)."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
    finally:
        fig.clear()
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return Plot(uri=uri, alt=alt, caption=caption)


def empty_axes(ax, message: str) -> None:  # noqa: ANN001
    """Mark an axes as having no data (so a figure never shows a silently blank panel)."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def bar_plot(ax, labels: Sequence[str], values: Sequence[float], *, title: str, ylabel: str,  # noqa: ANN001
             xlabel: str = "", annotations: Sequence[str] | None = None, horizontal: bool = False,
             color: str = PALETTE[0]) -> None:
    """Bars with an optional text label on each (e.g. the file count)."""
    ax.set_title(title)
    if not labels:
        empty_axes(ax, "no data")
        return
    pos = np.arange(len(labels))
    if horizontal:
        bars = ax.barh(pos, values, color=color)
        ax.set_yticks(pos, [_short(lbl) for lbl in labels])
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
        if xlabel:
            ax.set_ylabel(xlabel)
    else:
        bars = ax.bar(pos, values, color=color)
        ax.set_xticks(pos, [_short(lbl) for lbl in labels], rotation=30 if len(labels) > 5 else 0,
                      ha="right" if len(labels) > 5 else "center")
        ax.set_ylabel(ylabel)
        if xlabel:
            ax.set_xlabel(xlabel)
    if annotations is not None:
        ax.bar_label(bars, labels=list(annotations), padding=2, fontsize=8)
        if horizontal:
            ax.margins(x=0.18)
        else:
            ax.margins(y=0.15)


def hist_plot(ax, hist: Mapping[str, Sequence[float]], *, title: str, xlabel: str,  # noqa: ANN001
              ylabel: str = "files", color: str = PALETTE[0], label: str | None = None) -> None:
    """Draw a histogram already computed by :func:`histogram` (so the plot shows exactly the JSON's counts)."""
    ax.set_title(title)
    edges, counts = list(hist.get("edges", [])), list(hist.get("counts", []))
    if not counts:
        empty_axes(ax, "no data")
        return
    ax.stairs(counts, edges, fill=True, color=color, alpha=0.75, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def box_plot(ax, groups: Mapping[str, Sequence[float]], *, title: str, ylabel: str,  # noqa: ANN001
             xlabel: str = "kind") -> None:
    """One box per group (median, quartiles, 1.5 IQR whiskers) with the group's sample count under its name."""
    ax.set_title(title)
    data = {k: np.asarray([v for v in vals if v is not None and math.isfinite(v)], dtype=float)
            for k, vals in groups.items()}
    data = {k: v for k, v in data.items() if v.size}
    if not data:
        empty_axes(ax, "no data")
        return
    ax.boxplot(list(data.values()), tick_labels=[f"{_short(k)}\nn={v.size}" for k, v in data.items()],
               widths=0.6, patch_artist=True, boxprops={"facecolor": "#cfe3f3"}, medianprops={"color": "k"})
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", alpha=0.3)


def _short(label: str, n: int = 22) -> str:
    s = str(label)
    return s if len(s) <= n else s[: n - 1] + "…"


# -- page --------------------------------------------------------------------------------------------------------
def fmt(v: Any, digits: int = 2) -> str:
    """A table cell: floats to ``digits`` decimals, None/NaN as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return "—" if not math.isfinite(float(v)) else f"{float(v):,.{digits}f}"
    return str(v)


def summary_rows(per_group: Mapping[str, Mapping[str, Any]], unit_digits: int = 1) -> list[list[str]]:
    """Rows ``[group, n, min, p10, median, mean, p90, max]`` of :func:`summarize` outputs."""
    rows = []
    for k, s in per_group.items():
        rows.append([k, fmt(s["count"]), *(fmt(s[c], unit_digits) for c in ("min", "p10", "median", "mean", "p90", "max"))])
    return rows


SUMMARY_COLUMNS = ("", "n", "min", "p10", "median", "mean", "p90", "max")


def render_html(page: Page) -> str:
    """The page as a self-contained HTML string (template ``template.html.j2`` beside this module)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(page=page, fmt=fmt)


def write_text_atomic(text: str, path: Path) -> Path:
    """Write UTF-8 text atomically (see :mod:`stemdb.atomic`)."""
    return _write_text_atomic(path, text)


def json_path(out_html: Path) -> Path:
    """Where the JSON of a page goes: ``FILE.html`` -> ``FILE.json`` beside it."""
    return Path(out_html).with_suffix(".json")


def write_report(page: Page, stats: Mapping[str, Any], out_html: Path) -> dict[str, Any]:
    """Write the page and its JSON (NaN-free) beside it; returns the JSON-safe stats."""
    safe = json_safe(stats)
    out_html = Path(out_html)
    text = json.dumps(safe, indent=2, sort_keys=True, allow_nan=False)
    write_text_atomic(render_html(page), out_html)
    write_text_atomic(text + "\n", json_path(out_html))
    return safe


# -- markdown ----------------------------------------------------------------------------------------------------
def markdown_summary(stats: Mapping[str, Any]) -> str:
    """A short markdown digest of a catalogue report's stats (what a Prefect artifact shows): the dict returned by
    :func:`stemdb.report.catalog_report` (``stats["report"] == "catalog"``). A remix report's digest is
    :func:`augment.report.markdown_summary`'s (which takes both)."""
    kind = stats.get("report")
    if kind == "catalog":
        return _md_catalog(stats)
    raise ValueError(f"markdown_summary: stats['report'] is {kind!r}; expected 'catalog'")


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _md_catalog(s: Mapping[str, Any]) -> str:
    t = s["totals"]
    out = [f"# Catalogue report: `{s.get('catalog', '')}`", ""]
    if s.get("empty"):
        out.append("**The catalogue is empty**: no stems have been ingested.")
    out.append(f"**{t['files']:,} stems, {fmt(t['hours'])} h**, {t['songs']:,} songs; "
               f"{t['duplicates']:,} duplicates, {t['rejects']:,} rejected files, "
               f"{len(s['leakage']['songs']) + len(s['leakage']['content'])} train/test leakage findings.")
    if s["files_by_kind"]:
        out += ["", md_table(["kind", "files", "hours", "share of stem hours"],
                              ([k, s["files_by_kind"][k], s["hours_by_kind"][k], s["kind_share"].get(k)]
                               for k in s["files_by_kind"]))]
    findings = []
    for f in s["leakage"]["songs"]:
        findings.append(f"- leakage: song `{f['song']}` is in splits {', '.join(f['splits'])}")
    for f in s["leakage"]["content"]:
        findings.append(f"- leakage: identical audio in splits {', '.join(f['splits'])}: "
                        + ", ".join(f"`{k}`" for k in f["files"]))
    for reason, n in s["rejects"]["by_reason"].items():
        findings.append(f"- {n} rejected: {reason}")
    for flag, n in s["flags"].items():
        findings.append(f"- {n} flagged `{flag}`")
    if findings:
        out += ["", "## Findings", *findings]
    return "\n".join(out) + "\n"
