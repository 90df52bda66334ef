"""The catalogue report's stem-quality section: bandwidth, bleed, key and stereo per kind, lossy files, and the
worst stems (most bleed, narrowest bandwidth). Units: bandwidth in Hz, bleed in dB above a typical clean stem of
its kind (docs/quality.md), key confidence in [0, 1]. Rows measured before the quality columns existed have them
null and are counted as unmeasured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from stemdb.report.html import (
    SUMMARY_COLUMNS,
    Section,
    Table,
    box_plot,
    fmt,
    new_figure,
    summarize,
    summary_rows,
    to_plot,
)

#: The catalogue columns this section reads (besides key, kind and the others every report reads).
QUALITY_REPORT_COLUMNS = ["bandwidth_hz", "bleed", "musical_key", "key_confidence", "fake_stereo", "lossy",
                          "codec", "bitrate_kbps"]
#: How many stems the worst-stems tables list.
WORST = 20


def quality_stats(live: pd.DataFrame, kinds: list[str]) -> dict[str, Any]:
    """The section's numbers from the live canonical rows (with :data:`QUALITY_REPORT_COLUMNS`)."""
    stems = live[live["kind"] != "mixture"]
    by_kind = {k: live[live["kind"] == k] for k in kinds}
    measured = live["bandwidth_hz"].notna()
    lossy = live["lossy"].map(lambda v: v is True or v == 1)
    cols = ["key", "kind", "bleed", "bandwidth_hz"]
    worst_bleed = stems.dropna(subset=["bleed"]).nlargest(WORST, "bleed")[cols]
    narrow = stems[stems["bandwidth_hz"] > 0].nsmallest(WORST, "bandwidth_hz")[cols + ["codec", "bitrate_kbps"]]
    return {
        "measured": int(measured.sum()), "unmeasured": int((~measured).sum()),
        "bandwidth_hz_by_kind": {k: summarize(g["bandwidth_hz"]) for k, g in by_kind.items()},
        "bleed_by_kind": {k: summarize(g["bleed"]) for k, g in by_kind.items() if k != "mixture"},
        "key_confidence_by_kind": {k: summarize(g["key_confidence"]) for k, g in by_kind.items()},
        "keys": {str(k): int(n) for k, n in live["musical_key"].dropna().value_counts().sort_index().items()},
        "lossy_by_kind": {k: int(lossy[g.index].sum()) for k, g in by_kind.items()},
        "codecs": {str(k): int(n) for k, n in live["codec"].fillna("(unknown)").value_counts().sort_index().items()},
        "fake_stereo": sorted(live.loc[live["fake_stereo"].map(lambda v: v is True or v == 1), "key"].tolist()),
        "worst_bleed": worst_bleed.to_dict("records"),
        "narrowest": narrow.to_dict("records"),
    }


def quality_section(s: Mapping[str, Any], live: pd.DataFrame) -> Section:
    """The page section of :func:`quality_stats`' numbers (``s`` is the ``quality`` entry of the stats)."""
    bw = summary_rows(s["bandwidth_hz_by_kind"], 0)
    for r, k in zip(bw, s["bandwidth_hz_by_kind"], strict=True):
        r.append(fmt(s["lossy_by_kind"][k]))
    tables = [Table("Effective bandwidth (Hz) per kind", [*SUMMARY_COLUMNS, "lossy files"], bw),
              Table("Bleed score (dB over a clean stem of the kind) per kind", SUMMARY_COLUMNS,
                    summary_rows(s["bleed_by_kind"], 1)),
              Table("Most bleed", ["stem", "kind", "bleed (dB)", "bandwidth (Hz)"],
                    [[r["key"], r["kind"], fmt(r["bleed"], 1), fmt(r["bandwidth_hz"], 0)] for r in s["worst_bleed"]]),
              Table("Narrowest bandwidth", ["stem", "kind", "bandwidth (Hz)", "codec", "kbit/s"],
                    [[r["key"], r["kind"], fmt(r["bandwidth_hz"], 0), r["codec"] or "—", fmt(r["bitrate_kbps"], 0)]
                     for r in s["narrowest"]]),
              Table("Codecs", ["codec", "files"], [[k, v] for k, v in s["codecs"].items()]),
              Table("Estimated keys", ["key", "files"], [[k, v] for k, v in s["keys"].items()])]
    fig, axes = new_figure(12, 3.8, ncols=2)
    box_plot(axes[0], {k: live.loc[live["kind"] == k, "bandwidth_hz"].dropna().tolist()
                       for k in s["bandwidth_hz_by_kind"]}, title="Effective bandwidth per kind", ylabel="Hz")
    box_plot(axes[1], {k: live.loc[live["kind"] == k, "bleed"].dropna().tolist() for k in s["bleed_by_kind"]},
             title="Bleed score per kind", ylabel="dB over a clean stem of the kind")
    text = (f"{s['measured']} stem(s) measured, {s['unmeasured']} without quality columns (ingested by an older "
            f"stemdb: rerun `stemdb ingest`). Fake stereo (both channels the same signal): "
            f"{len(s['fake_stereo'])} file(s){': ' + ', '.join(s['fake_stereo'][:20]) if s['fake_stereo'] else ''}. "
            "The bleed score compares a stem with clean stems of its kind; it cannot tell bleed from a dense but "
            "clean performance (docs/quality.md).")
    return Section("Stem quality", text, tables,
                   [to_plot(fig, "box plots of effective bandwidth and bleed score per kind")])


__all__ = ["QUALITY_REPORT_COLUMNS", "quality_section", "quality_stats"]
