"""CLI command `report`: the self-contained HTML report of evaluations (`roboloop.report`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from roboloop.cli.common import console, fail, open_catalog, open_workspace, optional_dependency
from roboloop.evaluate.table import latest_eval_ids
from roboloop.report.data import report_datasets
from roboloop.report.render import write_report


def report_cmd(
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
    eval_ids: Annotated[list[str] | None, typer.Option("--eval", "-e", help="Evaluation id (repeatable; the first two are compared). Default: the two latest.")] = None,
    labels: Annotated[list[str] | None, typer.Option("--label", help="Name per evaluation (repeatable), default v1, v2, ...")] = None,
    export_failures: Annotated[bool, typer.Option("--export-failures", help="Also export the listed failures as .rrd files next to the report.")] = False,
) -> None:
    """Write the self-contained HTML report (success, paired comparison, coverage, loss, selections, failures, plans)."""
    ws = open_workspace()
    ids = list(eval_ids or latest_eval_ids(ws))
    if not ids:
        fail("no evaluation found: run `roboloop eval` first, or name them with --eval")
    if labels and len(labels) != len(ids):
        fail(f"{len(labels)} --label for {len(ids)} evaluation(s): give one per --eval")
    with open_catalog(datasets=report_datasets(ws, ids)) as cat:
        with optional_dependency():
            path = write_report(cat, ids, output, labels=labels, export_failures=export_failures)
    console.print(f"report of {', '.join(ids)} written to [bold]{path}[/] ({os.path.getsize(path) / 1e3:.0f} kB, self-contained)")


def register(app: typer.Typer) -> typer.Typer:
    """Add `report` to `app`."""
    app.command("report")(report_cmd)
    return app
