"""Recipes: one frozen dataclass per mixture, its flat Parquet row (see docs/recipes.md), and blocks of recipes as
columns (what the vectorised planner produces and ``recipes.parquet`` stores).

A recipe names every stem by ``stem_id`` (the catalogue's content hash), so the catalogue is the only source of
audio, and rendering a recipe is a pure function of the recipe and that audio.

Versions (the ``recipe_version`` column): 1, the planner before issue 17 (one ``SeedSequence([seed, i])`` generator
per mixture; the plan hash over the dataclass as JSON); 2, the vectorised planner (counter-based uniforms, see
:mod:`augment.rng`) and the plan hash over the flat row (:func:`plan_hashes`). A version-1 ``recipes.parquet`` still
reads and re-renders into its own folders (its rows carry no ``recipe_version``; the old hash is kept for them).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from augment.chain import RECORD_FIELDS, neutral_record

#: The recipe schema version this planner writes (see the module docstring).
RECIPE_VERSION = 2

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
    version: int = RECIPE_VERSION

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
        if self.version == 1:
            plan = asdict(replace(self, mix_lufs=None, mix_peak_dbfs=None, clip_scale_db=None))
            plan.pop("version")
            blob = json.dumps(plan, sort_keys=True, default=str).encode()
            return hashlib.blake2b(blob, digest_size=4).hexdigest()
        return plan_hashes({k: [v] for k, v in self._flat().items()}, self.targets, 1)[0]

    @property
    def mix_id(self) -> str:
        return f"mix-{self.index:07d}-{self.plan_hash}"

    def measured(self, *, mix_lufs: float, mix_peak_dbfs: float, clip_scale_db: float) -> Recipe:
        return replace(self, mix_lufs=_finite(mix_lufs), mix_peak_dbfs=_finite(mix_peak_dbfs),
                       clip_scale_db=float(clip_scale_db))

    # -- flat rows -----------------------------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """The flat Parquet row (columns of docs/recipes.md; per-target columns prefixed ``<target>_``)."""
        return {"mix_id": self.mix_id, **self._flat()}

    def _flat(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "recipe_version": self.version, "index": self.index, "seed": self.seed, "split": self.split,
            "mode": self.mode, "duration_s": self.duration_s, "sample_rate": self.sample_rate,
            "channels": self.channels, "subtype": self.subtype, "targets": list(self.targets),
            "mix_lufs": self.mix_lufs, "mix_peak_dbfs": self.mix_peak_dbfs, "clip_scale_db": self.clip_scale_db,
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
            version=int(_py(rec.get("recipe_version")) or 1),
        )


#: Per-mixture columns of ``recipes.parquet`` and their Arrow types (before the per-target columns).
MIX_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("mix_id", pa.string()), ("recipe_version", pa.int16()), ("index", pa.int64()), ("seed", pa.int64()),
    ("split", pa.string()), ("mode", pa.string()), ("duration_s", pa.float64()), ("sample_rate", pa.int32()),
    ("channels", pa.int16()), ("subtype", pa.string()), ("targets", pa.list_(pa.string())),
    ("mix_lufs", pa.float64()), ("mix_peak_dbfs", pa.float64()), ("clip_scale_db", pa.float64()),
    ("mix_target_lufs", pa.float64()), ("beat_score", pa.float64()), ("catalog_fingerprint", pa.string()),
    ("config_fingerprint", pa.string()),
)
_STEM_TYPES = {"stem_id": pa.string(), "kind": pa.string(), "song": pa.string(), "offset_s": pa.float64(),
               "loop": pa.bool_(), "rel_lufs": pa.float64(), "level_db": pa.float64(), "silent": pa.bool_()}
_NEUTRAL = neutral_record()
_RECORD_TYPES = {k: pa.bool_() if isinstance(v, bool) else pa.int64() if isinstance(v, int) else pa.float64()
                 for k, v in _NEUTRAL.items()}


def recipe_schema(targets: Sequence[str]) -> pa.Schema:
    """The Arrow schema of ``recipes.parquet`` for ``targets`` (docs/recipes.md)."""
    fields = list(MIX_COLUMNS)
    for t in targets:
        fields += [(f"{t}_{k}", v) for k, v in _STEM_TYPES.items()]
        fields += [(f"{t}_{k}", _RECORD_TYPES[k]) for k in RECORD_FIELDS]
    return pa.schema(fields)


def _hashed(targets: Sequence[str]) -> tuple[list[str], list[str]]:
    """The columns the plan hash reads: numeric ones (as float64) and text ones, in a fixed order."""
    nums = ["duration_s", "sample_rate", "channels", "mix_target_lufs", "beat_score"]
    texts = ["recipe_version", "seed", "split", "mode", "subtype", "catalog_fingerprint", "config_fingerprint"]
    for t in targets:
        nums += [f"{t}_{k}" for k in ("offset_s", "loop", "rel_lufs", "level_db", "silent", *RECORD_FIELDS)]
        texts += [f"{t}_{k}" for k in ("stem_id", "kind", "song")]
    return nums, texts


def plan_hashes(cols: Mapping[str, Sequence[Any]], targets: Sequence[str], n: int) -> list[str]:
    """The plan hash (8 hex digits) of ``n`` version-2 recipes given as columns (flat-row names; null as None or
    NaN): BLAKE2b over the numeric columns as float64 (one NaN pattern for null), the index as int64 and the text
    columns joined. Everything that decides the audio is in it; the measured columns and ``mix_id`` are not."""
    nums, texts = _hashed(targets)
    num = np.empty((n, len(nums)), dtype=np.float64)
    for j, name in enumerate(nums):
        num[:, j] = np.asarray(cols[name], dtype=np.float64) if n else 0.0
    num[np.isnan(num)] = np.nan
    rows = num.view(np.dtype((np.void, 8 * len(nums)))).ravel()
    index = np.asarray(cols["index"], dtype=np.int64)
    text = [cols[name] for name in texts]
    head = "\x1e".join(targets).encode()
    out = []
    for i in range(n):
        h = hashlib.blake2b(head, digest_size=4)
        h.update(rows[i].tobytes())
        h.update(index[i].tobytes())
        h.update("\x1f".join("\x00" if c[i] is None else str(c[i]) for c in text).encode())
        out.append(h.hexdigest())
    return out


@dataclass
class RecipeBlock:
    """Recipes as columns: the flat rows of ``recipes.parquet`` (null as None or NaN), ``mix_id`` derived.

    What the vectorised planner (:func:`augment.remix.plan_block`) returns: a block of thousands of recipes costs a
    few array operations, and becomes Parquet (:meth:`table`) or :class:`Recipe` objects (:meth:`recipe`) only where
    needed.
    """

    targets: tuple[str, ...]
    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.cols["index"])

    @cached_property
    def mix_ids(self) -> np.ndarray:
        """``mix-<index:07d>-<plan hash>`` of every recipe (a given ``mix_id`` column is kept)."""
        given = self.cols.get("mix_id")
        if given is not None and all(v is not None for v in given):
            return np.asarray(given, dtype=object)
        hashes = plan_hashes(self.cols, self.targets, len(self))
        return np.array([f"mix-{i:07d}-{h}" for i, h in zip(self.cols["index"].tolist(), hashes, strict=True)],
                        dtype=object)

    def record(self, j: int) -> dict[str, Any]:
        """Row ``j`` as a flat record."""
        rec = {k: v[j] for k, v in self.cols.items() if k not in ("mix_id", "targets")}
        rec["mix_id"], rec["targets"] = self.mix_ids[j], list(self.targets)
        return rec

    def recipe(self, j: int) -> Recipe:
        return Recipe.from_record(self.record(j))

    def recipes(self) -> list[Recipe]:
        return [self.recipe(j) for j in range(len(self))]

    def table(self) -> pa.Table:
        """The block in :func:`recipe_schema` (NaN in a float column is written as null)."""
        schema = recipe_schema(self.targets)
        cols = {**self.cols, "mix_id": self.mix_ids}
        n = len(self)
        arrays = []
        for f in schema:
            v = cols.get(f.name)
            if f.name == "targets":
                arrays.append(pa.array([list(self.targets)] * n, type=f.type))
            elif v is None:
                arrays.append(pa.nulls(n, type=f.type))
            else:
                arrays.append(pa.array(v, type=f.type, from_pandas=True))
        return pa.Table.from_arrays(arrays, schema=schema)


def recipes_table(recipes: Sequence[Recipe], targets: Sequence[str] | None = None) -> pa.Table:
    """Arrow table of recipe rows in :func:`recipe_schema` (column order: mixture columns, then per target)."""
    targets = tuple(targets if targets is not None else (recipes[0].targets if recipes else ()))
    recs = [r.to_record() for r in recipes]
    names = [n for n in recipe_schema(targets).names if n != "targets"]
    cols = {k: _column([r.get(k) for r in recs]) for k in names}
    return RecipeBlock(targets, cols).table()


def _column(values: list[Any]) -> np.ndarray:
    """A list of Python values as a column: float64 (None -> NaN) when numeric with nulls, else as numpy infers."""
    if any(isinstance(v, float) for v in values) and all(v is None or isinstance(v, int | float) for v in values):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr if any(v is None or isinstance(v, str) for v in values) else np.array(values)


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
