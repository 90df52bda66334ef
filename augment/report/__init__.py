"""The remix report: what a remix set (``<out>/recipes.parquet``) contains, as a self-contained HTML page with plots,
a JSON file of every figure beside it, and a markdown digest for Prefect artifacts (the page machinery is
:mod:`stemdb.report.html`'s; the catalogue report is :mod:`stemdb.report`).

>>> remix_report(Path("remix"), Path("reports/remix.html"), catalog=Path("catalog"))   # also writes remix.json
>>> markdown_summary(stats)          # a remix or a catalogue report's stats
"""

from augment.report.page import markdown_summary, remix_markdown, remix_report
from augment.report.stats import remix_stats

__all__ = ["markdown_summary", "remix_markdown", "remix_report", "remix_stats"]
