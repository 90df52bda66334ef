"""Dataset statistics reports: a stem catalogue or a remix set as a self-contained HTML page, a JSON file of every
figure beside it, and a markdown digest for Prefect artifacts.

>>> catalog_report(Path("catalog"), Path("reports/catalog.html"))          # also writes reports/catalog.json
>>> remix_report(Path("remix"), Path("reports/remix.html"), catalog=Path("catalog"))
>>> markdown_summary(stats)
"""

from stemdb.report.catalog_report import catalog_report, catalog_stats
from stemdb.report.html import markdown_summary
from stemdb.report.remix_report import remix_report, remix_stats

__all__ = ["catalog_report", "catalog_stats", "markdown_summary", "remix_report", "remix_stats"]
