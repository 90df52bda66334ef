"""What the remix report adds beyond the recipes' own columns: the set's facts, the gains applied to each stem, and
the relative levels measured on the rendered audio of a sample of mixtures.

* :func:`set_facts`: the seed(s), config fingerprint(s), output rate, channels and sample format of the set, and
  (with the catalogue) how many stems were resampled, up-mixed or down-mixed to reach them.
* :func:`boosts`: the gain applied to each stem in each mixture (``level_db + gain_db + loudness_gain_db``, dB;
  the clip protection common to all stems left out), and the stems boosted by more than :data:`BOOST_DB`: a quiet
  source raised that far brings its noise floor with it.
* :func:`rendered_levels`: each target's loudness relative to its mixture measured on the written WAV files
  (``stem LUFS - mixture LUFS``, BS.1770 through :func:`stemdb.measure.integrated_loudness`) for up to
  :data:`SAMPLE` mixtures spread evenly over the set, next to the planned ``<target>_rel_lufs``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stemdb import audio
from stemdb.errors import AudioReadError
from stemdb.measure import integrated_loudness
from stemdb.report.html import summarize

#: A stem raised by more than this (dB) is flagged.
BOOST_DB = 12.0
#: Mixtures whose rendered files are measured.
SAMPLE = 24
#: Per-target gain columns the renderer applies to a stem (dB).
GAIN_FIELDS = ("level_db", "gain_db", "loudness_gain_db")


def _distinct(df: pd.DataFrame, col: str) -> list[Any]:
    if col not in df.columns:
        return []
    return sorted({v.item() if hasattr(v, "item") else v for v in df[col].dropna()}, key=str)


def set_facts(df: pd.DataFrame, targets: Sequence[str], silent: Mapping[str, pd.Series],
              live: pd.DataFrame | None) -> dict[str, Any]:
    """The set's seed(s), config fingerprint(s), output format, and the stems reshaped to reach it.

    ``reshaped`` (null without the catalogue): ``{"resampled" | "upmixed" | "downmixed": {"uses": stem uses in
    mixtures, "stems": distinct stems}}``: a source at another sample rate than the output, with fewer channels,
    or with more channels.
    """
    facts: dict[str, Any] = {"seeds": _distinct(df, "seed"), "config_fingerprints": _distinct(df, "config_fingerprint"),
                             "sample_rates": _distinct(df, "sample_rate"), "channels": _distinct(df, "channels"),
                             "subtypes": _distinct(df, "subtype"), "reshaped": None}
    if live is None or df.empty:
        return facts
    src = live.drop_duplicates("stem_id").set_index("stem_id")[["sample_rate", "channels"]]
    uses = []
    for t in targets:
        col = f"{t}_stem_id"
        if col not in df.columns:
            continue
        rows = df.loc[~silent[t], [col, "sample_rate", "channels"]].rename(columns={col: "stem_id"})
        uses.append(rows.merge(src.add_suffix("_src"), left_on="stem_id", right_index=True, how="inner"))
    if not uses:
        return facts
    u = pd.concat(uses, ignore_index=True)
    masks = {"resampled": u["sample_rate_src"] != u["sample_rate"], "upmixed": u["channels_src"] < u["channels"],
             "downmixed": u["channels_src"] > u["channels"]}
    facts["reshaped"] = {k: {"uses": int(m.sum()), "stems": int(u.loc[m, "stem_id"].nunique())}
                         for k, m in masks.items()}
    return facts


def stem_gain_db(df: pd.DataFrame, target: str) -> pd.Series:
    """The gain (dB) applied to ``target``'s stem in each mixture: the sum of its :data:`GAIN_FIELDS` present."""
    total = pd.Series(0.0, index=df.index)
    for f in GAIN_FIELDS:
        col = f"{target}_{f}"
        if col in df.columns:
            total = total + pd.to_numeric(df[col], errors="coerce").fillna(0.0).astype("float64")
    return total


def boosts(df: pd.DataFrame, targets: Sequence[str], silent: Mapping[str, pd.Series],
           live: pd.DataFrame | None, *, limit_db: float = BOOST_DB, top: int = 20) -> dict[str, Any]:
    """Stems raised by more than ``limit_db``: the count per target, the largest gain, and the ``top`` cases
    (mix_id, target, stem key when the catalogue is given, gain dB), largest first."""
    keys = dict(zip(live["stem_id"], live["key"], strict=False)) if live is not None else {}
    cases, per_target, largest = [], {}, {}
    for t in targets:
        g = stem_gain_db(df, t)[~silent[t]]
        over = g[g > limit_db]
        per_target[t] = int(over.size)
        largest[t] = float(g.max()) if g.size else None
        for i, v in over.items():
            sid = df.at[i, f"{t}_stem_id"]
            cases.append({"mix_id": str(df.at[i, "mix_id"]) if "mix_id" in df.columns else str(i), "target": t,
                          "stem": keys.get(sid, str(sid)), "gain_db": float(v)})
    cases.sort(key=lambda c: -c["gain_db"])
    return {"limit_db": limit_db, "count": len(cases), "by_target": per_target, "max_gain_db": largest,
            "cases": cases[:top]}


def _lufs(path: Path) -> float | None:
    x, info = audio.load(path)
    v = integrated_loudness(x, info.sample_rate)
    return v if math.isfinite(v) else None


def sample_rows(n: int, sample: int = SAMPLE) -> list[int]:
    """Up to ``sample`` row positions spread evenly over ``n`` rows (first and last included; no randomness)."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(sample, n))}) if n else []


def rendered_levels(remix_dir: str | Path, df: pd.DataFrame, targets: Sequence[str],
                    silent: Mapping[str, pd.Series], *, sample: int = SAMPLE) -> dict[str, Any]:
    """Each target's level relative to the mixture (LU) measured on the rendered files of a sample of mixtures.

    Returns ``{"mixtures": measured, "missing": mixtures whose files are absent or unreadable, "by_target": {t:
    {"measured": summary, "planned": summary of the same mixtures' rel_lufs, "diff_median_lu": median of measured
    - planned}}}``. A silent target, or a stem or mixture with no gated loudness, is left out of its target.
    """
    measured: dict[str, list[float]] = {t: [] for t in targets}
    planned: dict[str, list[float]] = {t: [] for t in targets}
    done = missing = 0
    for pos in sample_rows(len(df), sample):
        row = df.iloc[pos]
        folder = Path(remix_dir) / str(row["split"]) / str(row["mix_id"])
        try:
            mix = _lufs(folder / "mixture.wav")
            stems = {t: _lufs(folder / f"{t}.wav") for t in targets if not bool(silent[t].iloc[pos])}
        except AudioReadError:
            missing += 1
            continue
        done += 1
        for t, v in stems.items():
            plan = row.get(f"{t}_rel_lufs")
            if mix is None or v is None:
                continue
            measured[t].append(v - mix)
            planned[t].append(float(plan) if plan is not None and pd.notna(plan) else math.nan)
    by_target = {}
    for t in targets:
        m, p = np.asarray(measured[t]), np.asarray(planned[t])
        diff = m - p
        diff = diff[np.isfinite(diff)]
        by_target[t] = {"measured": summarize(m), "planned": summarize(p[np.isfinite(p)]),
                        "diff_median_lu": float(np.median(diff)) if diff.size else None,
                        "pairs": [[float(a), float(b)] for a, b in zip(p, m, strict=True) if math.isfinite(a)]}
    return {"mixtures": done, "missing": missing, "sampled_of": int(len(df)), "by_target": by_target}


__all__ = ["BOOST_DB", "GAIN_FIELDS", "SAMPLE", "boosts", "rendered_levels", "sample_rows", "set_facts",
           "stem_gain_db"]
