"""What the flows publish to Prefect: the statistics of a remix set and of a catalogue as markdown and table
artifacts (the full HTML + JSON reports by :mod:`augment.report` / :mod:`stemdb.report` when they are usable, a
basic table from ``recipes.parquet`` or the catalogue summary otherwise)."""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from stemdb.catalog import Catalog

log = logging.getLogger(__name__)

REMIX_ARTIFACT = "remix-stats"  # markdown; the table is REMIX_ARTIFACT + "-table"
CATALOG_ARTIFACT = "catalog-stats"


def _report_module(name: str) -> Any | None:
    """The report package ``name`` (``stemdb.report`` or ``augment.report``) when it is importable (it imports
    matplotlib), else None."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - the statistics fall back to the tables below
        log.warning("%s is not usable (%s); artifacts carry the basic tables only", name, exc)
        return None


def remix_table(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Totals and one row per target of a remix set, from its ``recipes.parquet`` alone (no audio read).

    Totals: ``mixtures``, ``hours``, ``by_split``, ``mix_lufs_median``. Per target: ``stems_used`` (distinct
    stems), ``silent_share``, ``level_db_median``, ``rel_lufs_median`` (LU vs the mixture), ``pitched_share`` and
    ``stretched_share`` (share of stems with a pitch shift / time stretch applied).
    """
    df = pd.read_parquet(out / "recipes.parquet")
    targets = list(df["targets"].iloc[0]) if len(df) else []
    totals = {
        "mixtures": int(len(df)),
        "hours": float(df["duration_s"].sum() / 3600.0) if len(df) else 0.0,
        "by_split": {str(k): int(v) for k, v in df["split"].value_counts().sort_index().items()} if len(df) else {},
        "mix_lufs_median": _num(df["mix_lufs"].median()) if len(df) else None,
    }
    rows = []
    for t in targets:
        live = df[~df[f"{t}_silent"].astype(bool)]
        pitch = df.get(f"{t}_pitch_semitones")
        rate = df.get(f"{t}_stretch_rate")
        rows.append({
            "target": t,
            "stems_used": int(live[f"{t}_stem_id"].nunique()),
            "silent_share": _num(1.0 - len(live) / len(df)),
            "level_db_median": _num(live[f"{t}_level_db"].median()),
            "rel_lufs_median": _num(pd.to_numeric(live[f"{t}_rel_lufs"], errors="coerce").median()),
            "pitched_share": _num((pitch.fillna(0.0) != 0.0).mean()) if pitch is not None else 0.0,
            "stretched_share": _num((rate.fillna(1.0) != 1.0).mean()) if rate is not None else 0.0,
        })
    return totals, rows


def _num(x: Any, digits: int = 3) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return round(v, digits) if math.isfinite(v) else None


def remix_markdown(out: Path, totals: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown digest of :func:`remix_table` (used when ``augment.report`` cannot give one)."""
    split = ", ".join(f"{k}: {v}" for k, v in totals["by_split"].items())
    lines = [f"# Remix set `{out}`", "",
             f"**{totals['mixtures']} mixtures, {totals['hours']:.3f} h** ({split}); mixture loudness median "
             f"{totals['mix_lufs_median']} LUFS.", ""]
    if rows:
        cols = list(rows[0])
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def publish_remix_stats(out: Path, catalog: Path, *, out_html: Path | None = None) -> dict[str, Any]:
    """Publish a remix set's statistics: markdown artifact ``remix-stats`` and table artifact ``remix-stats-table``.

    With ``out_html`` the full report (HTML + JSON) is written too, by ``augment.report.remix_report``. The
    markdown comes from ``augment.report.markdown_summary`` when that module works, else from :func:`remix_markdown`.
    Returns ``{mixtures, hours, reports}``.
    """
    totals, rows = remix_table(out)
    report = _report_module("augment.report")
    markdown, reports = None, []
    if report is not None:
        try:
            if out_html is not None:
                stats = report.remix_report(out, out_html, catalog=catalog)
                reports.append(str(out_html))
            else:
                stats = report.remix_stats(out, catalog=catalog)
            markdown = report.markdown_summary(stats) if isinstance(stats, Mapping) else None
        except Exception as exc:  # noqa: BLE001 - the artifact falls back to the basic table
            log.warning("augment.report failed on %s (%s); publishing the basic table", out, exc)
    if markdown is None:
        markdown = remix_markdown(out, totals, rows)
    create_markdown_artifact(markdown=markdown, key=REMIX_ARTIFACT, description=f"Remix set statistics: {out}")
    create_table_artifact(table=rows, key=f"{REMIX_ARTIFACT}-table",
                          description=f"{totals['mixtures']} mixtures, {totals['hours']:.3f} h: {out}")
    return {"mixtures": totals["mixtures"], "hours": totals["hours"], "reports": reports}


def publish_catalog_table(cat: Catalog) -> list[dict[str, Any]]:
    s = cat.summary()
    rows = [{"kind": k, "files": n, "hours": round(h, 4)} for k, (n, h) in s.by_kind.items()]
    create_table_artifact(table=rows, key=f"{CATALOG_ARTIFACT}-table",
                          description=f"{s.files} stems, {s.hours:.3f} h, {s.duplicates} duplicates, "
                                      f"{s.rejects} rejected: {cat.root}")
    return rows


def publish_catalog_stats(catalog: Path, out_html: Path) -> dict[str, Any]:
    """Write the catalogue report with ``stemdb.report.catalog_report`` (when usable) and publish the markdown
    artifact ``catalog-stats`` and the table artifact ``catalog-stats-table``. Returns ``{files, hours, reports}``."""
    cat = Catalog.open(catalog)
    s = cat.summary()
    publish_catalog_table(cat)
    report = _report_module("stemdb.report")
    markdown, reports = None, []
    if report is not None:
        try:
            stats = report.catalog_report(catalog, out_html)
            reports.append(str(out_html))
            markdown = report.markdown_summary(stats)
        except Exception as exc:  # noqa: BLE001 - the artifact falls back to the summary line
            log.warning("stemdb.report failed on %s (%s); publishing the summary line", catalog, exc)
    if markdown is None:
        markdown = f"# Catalogue `{catalog}`\n\n{s.line()}\n"
    create_markdown_artifact(markdown=markdown, key=CATALOG_ARTIFACT, description=f"Catalogue statistics: {catalog}")
    return {"files": s.files, "hours": s.hours, "reports": reports}
