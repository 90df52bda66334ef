"""Plain-text tables the commands print (score summaries): kept out of :mod:`pipelines.cli` so it stays thin."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def num(x: float | None) -> str:
    """A score for a table: two decimals, ``n/a`` for a missing (``null``) value."""
    return "n/a" if x is None else f"{x:.2f}"


def run_scores_lines(result: dict[str, Any]) -> list[str]:
    """The median table of ``train.separate.evaluate_run``'s result: SDR, SI-SDR, dSDR/N, dSDR per stem (dB), a
    stem the model does not estimate named with the reason."""
    from train.separate import stems_summary

    lines = [f"{'stem':<10} {'SDR':>8} {'SI-SDR':>8} {'dSDR/N':>8} {'dSDR':>8}   (median over "
             f"{len(result['tracks'])} tracks; dSDR/N: improvement over the mixture divided by the number of "
             "stems, dSDR: over the unprocessed mixture)"]
    skipped = result.get("not_estimated", {})
    for stem, s, si, imp_n, imp in stems_summary(result):
        if stem in skipped:
            lines.append(f"{stem:<10} not estimated ({skipped[stem]})")
        else:
            lines.append(f"{stem:<10} {num(s):>8} {num(si):>8} {num(imp_n):>8} {num(imp):>8}")
    return lines


def compare_lines(results: dict[str, Any], out: Path) -> list[str]:
    """What ``stemdb compare`` prints: the results table, the scoring cost and the files written."""
    from train.compare.results import text_table

    t = results["timing"]
    return [*text_table(results),
            f"scoring: {num(t['scoring_s_per_audio_minute'])} s per minute of audio, "
            f"{100 * (t['scoring_share'] or 0):.1f} % of the {t['wall_s']:.0f} s wall time",
            f"wrote {Path(out) / 'results.json'} and {Path(out) / 'report.html'}"]
