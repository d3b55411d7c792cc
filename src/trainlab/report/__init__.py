"""Reporting: plots, the Markdown run report."""
