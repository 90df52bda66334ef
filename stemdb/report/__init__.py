"""Dataset statistics reports of the catalogue: a self-contained HTML page, a JSON file of every figure beside it,
and a markdown digest for Prefect artifacts. The remix set's report (built on the same page machinery,
:mod:`stemdb.report.html`) is :mod:`augment.report`.

>>> catalog_report(Path("catalog"), Path("reports/catalog.html"))          # also writes reports/catalog.json
>>> markdown_summary(stats)
"""

from stemdb.report.catalog_report import catalog_report, catalog_stats
from stemdb.report.html import markdown_summary

__all__ = ["catalog_report", "catalog_stats", "markdown_summary"]
