"""The self-contained HTML report of an experiment loop, and figures of analysis tables."""

from roboloop.report.plots import plot_success
from roboloop.report.render import (
    SECTIONS,
    EvalSection,
    ReportData,
    build_report_data,
    open_command,
    render_report,
    write_report,
)

__all__ = [
    "SECTIONS",
    "EvalSection",
    "ReportData",
    "build_report_data",
    "open_command",
    "plot_success",
    "render_report",
    "write_report",
]
