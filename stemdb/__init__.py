"""stemdb: the stem catalogue (schema, audio I/O, measurement, ingest, queries, statistics).

Importing ``stemdb`` stays fast: it imports neither torch nor prefect, and the catalogue module loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Catalog", "__version__"]

if TYPE_CHECKING:
    from stemdb.catalog import Catalog


def __getattr__(name: str) -> Any:
    if name == "Catalog":
        from stemdb.catalog import Catalog

        return Catalog
    raise AttributeError(f"module 'stemdb' has no attribute {name!r}")
