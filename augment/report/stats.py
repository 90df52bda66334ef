"""The remix report's numbers: what a remix set (``<out>/recipes.parquet``, see docs/recipes.md) contains, as an HTML page with
plots and a JSON file of every figure.

Per-target columns are found by the recipe's ``targets`` list (``<target>_<field>``). A target is *silent* in a
mixture when its ``<target>_stem_id`` is null (or ``<target>_silent`` is true). Augmentation parameters are every
other per-target numeric or boolean column (offsets, levels, pitch, stretch, filter, gain, channel swap, polarity,
...), reported over the mixtures where the target is not silent.

The level balance compares each target's level relative to its mixture with the same quantity measured on the
real multitracks of the catalogue (:func:`stemdb.report.catalog_report.multitrack_rel_levels`): measured
``<target>_lufs - mix_lufs`` when the recipes carry ``<target>_lufs``, else the planned ``<target>_rel_lufs``
(the JSON says which under ``rel_level_basis``); ``rendered_levels`` measures the same on the written files of a
sample of mixtures (:mod:`augment.report.rendered`, with the set's facts and the stems boosted by more than
+12 dB). Units: LUFS, LU, dB, seconds, hours, semitones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from augment.report.rendered import boosts, rendered_levels, set_facts
from stemdb.errors import StemdbError
from stemdb.report.catalog_report import load_catalog, multitrack_rel_levels
from stemdb.report.html import histogram, summarize

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
        if _is_bool(df[col]) or numeric_values(df[col]) is not None:
            out[t][name] = col
    return out


def _is_bool(s: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(s.dtype)


def numeric_values(s: pd.Series) -> pd.Series | None:
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
    num = numeric_values(values)
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
    s["set"] = set_facts(df, targets, silent, live)
    s["boosts"] = boosts(df, targets, silent, live)
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
    s["rendered_levels"] = measure_rendered(remix_dir, df)
    s["remix_dir"] = str(remix_dir)
    s["catalog"] = str(catalog) if catalog is not None else None
    return s


def measure_rendered(remix_dir: str | Path, df: pd.DataFrame) -> dict[str, Any]:
    """:func:`augment.report.rendered.rendered_levels` of the set's targets and silent masks."""
    targets = recipe_targets(df)
    return rendered_levels(remix_dir, df, targets, {t: silent_mask(df, t) for t in targets})
