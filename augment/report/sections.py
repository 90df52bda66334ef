"""Remix-report sections for the set's facts and the levels measured on the rendered audio (numbers from
:mod:`augment.report.rendered`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stemdb.report.html import PALETTE, Section, Table, empty_axes, fmt, new_figure, to_plot


def _listed(values: list[Any]) -> str:
    return ", ".join(str(v) for v in values) if values else "—"


def set_section(s: Mapping[str, Any]) -> Section:
    """Seed, config fingerprint, output format and the stems resampled, up-mixed or down-mixed to reach it."""
    f = s["set"]
    rows = [["seed", _listed(f["seeds"])], ["config fingerprint", _listed(f["config_fingerprints"])],
            ["catalogue fingerprint", _listed(s.get("catalog_fingerprints", []))],
            ["output sample rate (Hz)", _listed(f["sample_rates"])], ["channels", _listed(f["channels"])],
            ["sample format", _listed(f["subtypes"])]]
    r = f["reshaped"]
    for key, what in (("resampled", "resampled to the output rate"), ("upmixed", "up-mixed (fewer channels)"),
                      ("downmixed", "down-mixed (more channels)")):
        rows.append([f"stems {what}", "needs the catalogue" if r is None else
                     f"{r[key]['uses']:,} uses of {r[key]['stems']:,} distinct stems"])
    return Section("The set", "What the set was built with: the same seed, config and catalogue rebuild it byte for "
                   "byte. A stem counts as resampled or re-channelled when its source file differs from the "
                   "output format (each use in a mixture counted).",
                   [Table("Set facts", ["", "value"], rows)], [])


def boost_notice(s: Mapping[str, Any]) -> str | None:
    """A notice when stems were raised by more than the limit (None otherwise)."""
    b = s["boosts"]
    if not b["count"]:
        return None
    worst = max(v for v in b["max_gain_db"].values() if v is not None)
    per = ", ".join(f"{t} {n}" for t, n in b["by_target"].items() if n)
    return (f"{b['count']} stem uses were boosted by more than +{b['limit_db']:g} dB ({per}; the largest "
            f"+{worst:.1f} dB): their noise floor is raised as far. See 'Levels on the rendered audio'.")


def rendered_section(s: Mapping[str, Any]) -> Section:
    """Measured vs planned relative levels on a sample of rendered mixtures, and the boosted stems."""
    r, b = s["rendered_levels"], s["boosts"]
    targets = s["targets"]
    rows = []
    for t in targets:
        d = r["by_target"][t]
        rows.append([t, fmt(d["measured"]["count"]), fmt(d["measured"]["median"], 1), fmt(d["planned"]["median"], 1),
                     fmt(d["diff_median_lu"], 2), fmt(b["max_gain_db"].get(t), 1), fmt(b["by_target"].get(t))])
    fig, ax = new_figure(6.5, 4.0)
    ax.set_title("Stem level relative to the mixture: measured vs planned")
    pts = {t: r["by_target"][t]["pairs"] for t in targets if r["by_target"][t]["pairs"]}
    if pts:
        for i, (t, p) in enumerate(pts.items()):
            ax.scatter([a for a, _ in p], [m for _, m in p], s=14, color=PALETTE[i % len(PALETTE)], label=t)
        lo = min(min(a, m) for p in pts.values() for a, m in p)
        hi = max(max(a, m) for p in pts.values() for a, m in p)
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", label="measured = planned")
        ax.set_xlabel("planned (LU)")
        ax.set_ylabel("measured on the files (LU)")
        ax.legend(fontsize=8)
    else:
        empty_axes(ax, "no rendered files measured")
    cases = [[c["mix_id"], c["target"], c["stem"], f"+{c['gain_db']:.1f}"] for c in b["cases"]]
    tables = [Table("Level relative to the mixture, rendered files (LU)",
                    ["target", "n", "measured median", "planned median", "median measured − planned",
                     "largest gain (dB)", f"stems > +{b['limit_db']:g} dB"], rows)]
    if cases:
        tables.append(Table(f"Stems boosted by more than +{b['limit_db']:g} dB (largest {len(cases)} of "
                            f"{b['count']})", ["mixture", "target", "stem", "gain (dB)"], cases))
    text = (f"Measured with BS.1770 on the written WAV files of {r['mixtures']} of {r['sampled_of']} mixtures "
            "spread evenly over the set (stem LUFS − mixture LUFS), next to the levels the planner drew. "
            "Gain: the level, gain and loudness-normalisation gains applied to a stem (dB)."
            + (f" {r['missing']} sampled mixtures have no readable files." if r["missing"] else ""))
    return Section("Levels on the rendered audio", text, tables,
                   [to_plot(fig, "scatter of measured against planned stem level relative to the mixture")])


__all__ = ["boost_notice", "rendered_section", "set_section"]
