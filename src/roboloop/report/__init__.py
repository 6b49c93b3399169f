"""The self-contained HTML report of an experiment loop: data gathering (`data`), figures (`plots`), HTML (`render`).

``write_report(catalog, eval_ids, "report.html")`` gathers, renders and writes it;
``plot_success`` draws a `success` table for ``roboloop success --plot``.
"""

from roboloop.report.data import EvalSection, ReportData, build_report_data, failure_thumbnail
from roboloop.report.plots import plot_success
from roboloop.report.render import SECTIONS, render_report, write_report

__all__ = [
    "SECTIONS",
    "EvalSection",
    "ReportData",
    "build_report_data",
    "failure_thumbnail",
    "plot_success",
    "render_report",
    "write_report",
]
