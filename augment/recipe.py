"""Recipes: one frozen dataclass per mixture, and its flat Parquet row (see docs/recipes.md).

A recipe names every stem by ``stem_id`` (the catalogue's content hash), so the catalogue is the only source of
audio, and rendering a recipe is a pure function of the recipe and that audio.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd
import pyarrow as pa

from augment.chain import RECORD_FIELDS, neutral_record

#: Per-stem planning columns (besides the transform columns of augment.chain.RECORD_FIELDS).
STEM_FIELDS: tuple[str, ...] = ("stem_id", "kind", "song", "offset_s", "loop", "rel_lufs", "level_db")


@dataclass(frozen=True)
class StemPlan:
    """One target's stem in a mixture.

    ``stem_id`` None means a silent target. ``offset_s``: window start in the source file (seconds);
    ``level_db``: calibrated level gain (dB); ``rel_lufs``: planned level relative to the mixture (LU);
    ``augment``: the transform columns (``pitch_semitones``, ``stretch_rate``, ``channel_swap``, ``polarity``,
    ``gain_db``, ``filter_*``, ``loudness_*``) as :meth:`augment.chain.StemAugment.to_record` writes them.
    """

    target: str
    stem_id: str | None
    kind: str | None = None
    song: str | None = None
    offset_s: float = 0.0
    loop: bool = False
    rel_lufs: float | None = None
    level_db: float = 0.0
    augment: Mapping[str, Any] = field(default_factory=neutral_record)

    @property
    def stretch_rate(self) -> float:
        return float(self.augment.get("stretch_rate", 1.0))


@dataclass(frozen=True)
class Recipe:
    """One mixture: what to read, where, and what to do to it. Measured values are filled in by the renderer."""

    index: int
    seed: int
    split: str
    mode: str
    duration_s: float
    sample_rate: int
    channels: int
    subtype: str
    stems: tuple[StemPlan, ...]
    mix_target_lufs: float | None = None
    beat_score: float | None = None
    catalog_fingerprint: str = ""
    config_fingerprint: str = ""
    mix_lufs: float | None = None
    mix_peak_dbfs: float | None = None
    clip_scale_db: float | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(s.target for s in self.stems)

    @property
    def frames(self) -> int:
        """Output length in samples per channel."""
        return int(round(self.duration_s * self.sample_rate))

    @property
    def plan_hash(self) -> str:
        """Hash of everything that decides the audio (not the measured values): names the output folder."""
        plan = asdict(replace(self, mix_lufs=None, mix_peak_dbfs=None, clip_scale_db=None))
        blob = json.dumps(plan, sort_keys=True, default=str).encode()
        return hashlib.blake2b(blob, digest_size=4).hexdigest()

    @property
    def mix_id(self) -> str:
        return f"mix-{self.index:07d}-{self.plan_hash}"

    def measured(self, *, mix_lufs: float, mix_peak_dbfs: float, clip_scale_db: float) -> Recipe:
        return replace(self, mix_lufs=_finite(mix_lufs), mix_peak_dbfs=_finite(mix_peak_dbfs),
                       clip_scale_db=float(clip_scale_db))

    # -- flat rows -----------------------------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """The flat Parquet row (columns of docs/recipes.md; per-target columns prefixed ``<target>_``)."""
        rec: dict[str, Any] = {
            "mix_id": self.mix_id, "index": self.index, "seed": self.seed, "split": self.split, "mode": self.mode,
            "duration_s": self.duration_s, "sample_rate": self.sample_rate, "channels": self.channels,
            "subtype": self.subtype, "targets": list(self.targets), "mix_lufs": self.mix_lufs,
            "mix_peak_dbfs": self.mix_peak_dbfs, "clip_scale_db": self.clip_scale_db,
            "mix_target_lufs": self.mix_target_lufs, "beat_score": self.beat_score,
            "catalog_fingerprint": self.catalog_fingerprint, "config_fingerprint": self.config_fingerprint,
        }
        for s in self.stems:
            t = s.target
            rec.update({f"{t}_{k}": getattr(s, k) for k in STEM_FIELDS})
            rec[f"{t}_silent"] = s.stem_id is None
            rec.update({f"{t}_{k}": v for k, v in s.augment.items()})
        return rec

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Recipe:
        """Rebuild a recipe from a row written by :meth:`to_record` (a dict or a pandas row)."""
        targets = list(rec["targets"])
        stems = []
        for t in targets:
            aug = {k: _py(rec[f"{t}_{k}"]) for k in RECORD_FIELDS if f"{t}_{k}" in rec}
            stems.append(StemPlan(
                target=t, stem_id=_py(rec[f"{t}_stem_id"]), kind=_py(rec[f"{t}_kind"]), song=_py(rec[f"{t}_song"]),
                offset_s=float(rec[f"{t}_offset_s"]), loop=bool(rec[f"{t}_loop"]),
                rel_lufs=_py(rec[f"{t}_rel_lufs"]), level_db=float(rec[f"{t}_level_db"]), augment=aug,
            ))
        return cls(
            index=int(rec["index"]), seed=int(rec["seed"]), split=str(rec["split"]), mode=str(rec["mode"]),
            duration_s=float(rec["duration_s"]), sample_rate=int(rec["sample_rate"]), channels=int(rec["channels"]),
            subtype=str(rec["subtype"]), stems=tuple(stems), mix_target_lufs=_py(rec["mix_target_lufs"]),
            beat_score=_py(rec["beat_score"]), catalog_fingerprint=str(rec["catalog_fingerprint"]),
            config_fingerprint=str(rec["config_fingerprint"]), mix_lufs=_py(rec["mix_lufs"]),
            mix_peak_dbfs=_py(rec["mix_peak_dbfs"]), clip_scale_db=_py(rec["clip_scale_db"]),
        )


def recipes_table(recipes: Sequence[Recipe]) -> pa.Table:
    """Arrow table of recipe rows (column order: mixture columns, then per target)."""
    df = pd.DataFrame([r.to_record() for r in recipes])
    return pa.Table.from_pandas(df, preserve_index=False)


def read_recipes(path: str) -> list[Recipe]:
    """Read ``recipes.parquet`` back into recipes."""
    df = pd.read_parquet(path)
    return [Recipe.from_record(row) for row in df.to_dict("records")]


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _py(v: Any) -> Any:
    """Plain Python value; NaN/None/NA -> None."""
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v.item() if hasattr(v, "item") else v
