"""stemdb package."""
