"""Writing what a run measured: ``results.json``/``.csv``, ``summary.md`` and ``report.html``
with figures, and the paper preset's table, all computed from the streamed rows.
"""

from __future__ import annotations

from .html import Report, markdown_table
from .figures import (
    certified_curve_plot,
    drilldown_maps,
    heatmap_grid,
    line_plot,
    region_overlay,
    series_styles,
)
from .write import (
    METRIC_NOTES,
    write_csv,
    write_report,
    setup_items,
)
from .paper_table import TABLE_FILE, markdown_to_rst, write_paper_table

__all__ = [
    "Report",
    "markdown_table",
    "certified_curve_plot",
    "drilldown_maps",
    "heatmap_grid",
    "line_plot",
    "region_overlay",
    "series_styles",
    "METRIC_NOTES",
    "write_csv",
    "write_report",
    "setup_items",
    "TABLE_FILE",
    "markdown_to_rst",
    "write_paper_table",
]
