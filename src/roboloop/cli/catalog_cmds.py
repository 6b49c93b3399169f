"""Catalog commands: serve, ls, import, sql, verify."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from roboloop import schema
from roboloop.catalog.server import ServerLock, published
from roboloop.catalog.verify import verify, workspace_files
from roboloop.cli.common import console, err_console, fail, open_catalog, open_workspace, print_batches, state

SQL_FORMATS = ("table", "csv", "json")


def serve(
    port: Annotated[int, typer.Option(help="Port to bind on 127.0.0.1 (0 = any free port). A taken port is an error naming the process that holds it.")] = 9876,
) -> None:
    """Run the workspace's catalog server in the foreground; other roboloop commands on the workspace attach to it."""
    if state.catalog_url:
        fail("`serve` starts a catalog; drop --catalog / ROBOLOOP_CATALOG")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops cleanly, like Ctrl-C
    with ServerLock(open_workspace()), open_catalog(port=port, attach=False) as cat, published(cat) as rec:
        rep = cat.report
        n = sum(rep.segments.values())
        console.print(f"[bold]roboloop catalog[/] serving workspace {cat.workspace.root}")
        console.print(f"  restored {n} segment layers, {len(rep.tables)} tables, {len(rep.blueprints)} blueprints in {rep.seconds:.2f}s")
        where = "not recorded: the workspace is read-only" if cat.workspace.read_only else f"recorded in {cat.workspace.server_record_path}"
        console.print(f"  catalog URL: [bold cyan]{cat.url}[/] ({where}, pid {rec.pid})")
        console.print(f"  open it in the viewer:   {viewer_command(cat.url)}", soft_wrap=True)
        if cat.workspace.read_only:
            console.print(f"  roboloop commands attach to it with --catalog {cat.url}", soft_wrap=True)
        else:
            console.print("  roboloop commands on this workspace attach to it automatically (`--catalog ''` opts out)", soft_wrap=True)
        console.print("  Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping")


def viewer_command(target: str) -> str:
    """How to open `target` in the native Rerun viewer from a shell, with H.264 decoding working.

    The viewer decodes H.264 with an `ffmpeg` executable on PATH; setup links one into
    the virtualenv's bin folder, which may not be on the user's PATH.
    """
    venv_bin = Path(sys.prefix) / "bin"
    if shutil.which("ffmpeg") is None and (venv_bin / "ffmpeg").exists():
        return f'PATH="{venv_bin}:$PATH" rerun {target}'
    return f"rerun {target}"


def ls_() -> None:
    """List datasets (segment counts, layers) and tables."""
    with open_catalog() as cat:
        names = cat.dataset_names()
        if not names:
            console.print("no datasets yet: `roboloop collect` or `roboloop import` creates one")
        else:
            table = Table("dataset", "segments", "layers")
            for name in names:
                segments, layers = cat.dataset_summary(name)
                table.add_row(name, str(segments), ", ".join(f"{k} ({v})" for k, v in layers.items()) or "-")
            console.print(table)
        tables = cat.table_names()
        console.print(f"tables: {', '.join(tables) if tables else '(none)'}")


def import_(
    paths: Annotated[list[Path], typer.Argument(help="RRD files to copy into the workspace and register.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset to register into (created if missing).")],
    layer: Annotated[str, typer.Option(help="Layer to register the files as.")] = schema.BASE_LAYER,
) -> None:
    """Copy existing RRD files into the workspace and register them (each file validated first)."""
    with open_catalog() as cat:
        ids = cat.import_files(dataset, paths, layer=layer)
    console.print(f"imported {len(ids)} segment(s) into {dataset}/{layer}")


def sql(
    query: Annotated[str, typer.Argument(help='SQL; each dataset is a view, e.g. SELECT "scene.region", count(*) FROM aloha GROUP BY 1')],
    format: Annotated[str, typer.Option("--format", "-f", help=", ".join(SQL_FORMATS[:-1]) + " or " + SQL_FORMATS[-1])] = "table",
) -> None:
    """Read-only DataFusion SQL over the catalog (each dataset's segment table and each table is a view named after it)."""
    if format not in SQL_FORMATS:
        fail(f"unknown --format {format!r}: use {', '.join(SQL_FORMATS)}")
    with open_catalog() as cat:
        schema_, batches = cat.sql_batches(query)
        print_batches(schema_.names, batches, format)  # printed as the batches arrive: bounded memory


def verify_cmd(
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Check one dataset (default: every dataset and table row).")] = None,
) -> None:
    """Check every file of every layer (and blueprints, table rows) against its checksum and decode it; list what is broken, exit 1 if anything is."""
    ws = open_workspace()
    total = len(workspace_files(ws, dataset))
    with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("files", total=total)
        report = verify(ws, dataset, on_file=lambda _path, _problem: bar.advance(task))
    for path, problem in report.problems:
        console.print(f"[red]broken:[/] {path}: {problem}", highlight=False, soft_wrap=True)
    scope = f"dataset {dataset}" if dataset else f"{len(report.datasets)} dataset(s) and table rows"
    if report.no_checksum:
        console.print(f"note: {len(report.no_checksum)} file(s) have no checksum recorded (written before roboloop recorded "
                      "checksums): decoded only, so a change that still decodes would not be seen")
    if report.ok:
        console.print(f"ok: {report.checked} file(s) of {scope} decode completely ({report.seconds:.1f}s)")
        return
    console.print(f"{len(report.problems)} of {report.checked} file(s) of {scope} are broken")
    raise typer.Exit(1)


def register(app: typer.Typer) -> typer.Typer:
    """Add `serve`, `ls`, `import`, `sql`, `verify` to `app`."""
    app.command("serve")(serve)
    app.command("ls")(ls_)
    app.command("import")(import_)
    app.command("sql")(sql)
    app.command("verify")(verify_cmd)
    return app
