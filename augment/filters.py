"""The remix's quality filters (``remix.filters`` in data.yaml): which catalogue rows a remix may draw.

:func:`filter_mask` applies :class:`augment.config.StemFilters` to catalogue rows read with
:data:`FILTER_COLUMNS`; :func:`augment.pool.build_pool` applies it to the stems (never to ``mixture`` rows, which
calibrate the levels).
"""

from __future__ import annotations

import pandas as pd

from augment.config import StemFilters
from stemdb.catalog import SCHEMA_VERSION
from stemdb.errors import ConfigError

#: Catalogue columns :func:`filter_mask` reads.
FILTER_COLUMNS = ["bandwidth_hz", "bleed", "lossy", "flags", "duplicate_of", "schema_version"]
#: The flag ingest gives a near-duplicate (:data:`stemdb.quality.columns.NEAR_DUPLICATE_FLAG`).
NEAR_DUPLICATE = "near_duplicate"


def filter_mask(df: pd.DataFrame, filters: StemFilters, targets: pd.Series) -> pd.Series:
    """True for the rows of ``df`` that pass ``filters``.

    Args:
        df: catalogue rows with :data:`FILTER_COLUMNS` (read with duplicates included when ``dedupe`` is off).
        filters: the ``remix.filters`` section.
        targets: each row's remix target (for a per-target ``max_bleed``), same index as ``df``.

    Raises:
        ConfigError: a quality filter is set but the catalogue has rows measured before the quality columns
            existed (rerun ``stemdb ingest`` to measure them).
    """
    keep = pd.Series(True, index=df.index)
    dup = df["duplicate_of"].notna()
    near = df["flags"].map(lambda f: f is not None and NEAR_DUPLICATE in list(f))
    keep &= ~dup | (near & (not filters.dedupe))
    quality_set = filters.min_bandwidth_hz is not None or filters.max_bleed is not None
    if quality_set and (df["schema_version"] < SCHEMA_VERSION).any():
        raise ConfigError("remix.filters: the catalogue has rows measured before the quality columns existed "
                          f"(schema_version < {SCHEMA_VERSION}); rerun `stemdb ingest` to measure them",
                          key="remix.filters")
    if filters.min_bandwidth_hz is not None:
        keep &= df["bandwidth_hz"].fillna(-1.0) >= filters.min_bandwidth_hz
    if filters.max_bleed is not None:
        mb = filters.max_bleed
        limit = targets.map(mb) if isinstance(mb, dict) else pd.Series(float(mb), index=df.index)
        bleed = df["bleed"].astype(float)
        keep &= limit.isna() | (bleed <= limit.fillna(float("inf")))
    if filters.lossy == "exclude":
        keep &= df["lossy"].map(lambda v: v is False or v == 0)
    return keep


__all__ = ["FILTER_COLUMNS", "filter_mask"]
