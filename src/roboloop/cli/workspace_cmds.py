"""Workspace maintenance: `roboloop gc` (delete superseded layer versions and dead writers' temp files)."""

from __future__ import annotations

from typing import Annotated

import typer

from roboloop.cli import app, console, open_workspace


@app.command("gc")
def gc_cmd(
    force: Annotated[bool, typer.Option("--force", help="Run even while another roboloop process has a catalog open on the workspace.")] = False,
) -> None:
    """Delete superseded layer versions (`<id>.<n>.rrd` older than the newest) and temporary files of dead writers.

    Refused while another process runs a catalog over the workspace (it may still read an
    old version). An embedded catalog does the same at its start when it is alone.
    """
    ws = open_workspace()
    versions, temps = ws.gc(force=force)
    console.print(f"{ws.root}: removed {versions} superseded version file(s) and {temps} temporary file(s)")
