"""Workspace maintenance: `roboloop gc` (delete superseded layer versions and dead writers' temp files)."""

from __future__ import annotations

from typing import Annotated

import typer

from roboloop.catalog.restore import usable_versions
from roboloop.cli.common import console, open_workspace


def gc_cmd(
    force: Annotated[bool, typer.Option("--force", help="Run even while another roboloop process has a catalog open on the workspace.")] = False,
) -> None:
    """Delete superseded layer versions (`<id>.<n>.rrd` older than the newest usable one) and temporary files of dead writers.

    A version is superseded only by a newer one that restore registers: a damaged newest
    version (truncated, another segment's recording) keeps the older one, and is itself kept.

    Refused while another process runs a catalog over the workspace (it may still read an
    old version). An embedded catalog does the same at its start when it is alone.
    """
    ws = open_workspace()
    versions, temps = ws.gc(usable_versions(ws), force=force)
    console.print(f"{ws.root}: removed {versions} superseded version file(s) and {temps} temporary file(s)")


def register(app: typer.Typer) -> typer.Typer:
    """Add `gc` to `app`."""
    app.command("gc")(gc_cmd)
    return app
