"""`roboloop verify`: decode every file of the workspace and report what is broken (exit code 1 if anything is)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from roboloop.cli import app, console, err_console, open_workspace


@app.command("verify")
def verify_cmd(
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Check one dataset (default: every dataset and table row).")] = None,
) -> None:
    """Decode every file of every layer (and blueprints, table rows); list what is broken, exit 1 if anything is."""
    from roboloop.verify import verify, workspace_files

    ws = open_workspace()
    total = len(workspace_files(ws, dataset))
    with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("files", total=total)
        report = verify(ws, dataset, on_file=lambda _path, _problem: bar.advance(task))
    for path, problem in report.problems:
        console.print(f"[red]broken:[/] {path}: {problem}", highlight=False, soft_wrap=True)
    scope = f"dataset {dataset}" if dataset else f"{len(report.datasets)} dataset(s) and table rows"
    if report.ok:
        console.print(f"ok: {report.checked} file(s) of {scope} decode completely ({report.seconds:.1f}s)")
        return
    console.print(f"{len(report.problems)} of {report.checked} file(s) of {scope} are broken")
    raise typer.Exit(1)
