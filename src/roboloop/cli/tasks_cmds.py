"""Tasks: `roboloop tasks` lists the registered tasks with their condition axes and labels."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from roboloop.cli.common import console
from roboloop.envs import describe_task, tasks


def tasks_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print every task as one JSON object per line.")] = False,
) -> None:
    """List the tasks (built-in and registered): condition axes with labels and aliases, cameras, stages, failure kinds."""
    described = [describe_task(t) for t in tasks().values()]
    if as_json:
        for d in described:
            typer.echo(json.dumps(d))
        return
    for d in described:
        console.print(f"[bold]{d['name']}[/]: {d['description']}")
        console.print(f"  {d['episode_steps']} steps at {d['control_hz']} Hz; start state {', '.join(d['start_state'])}")
        table = Table("axis", "labels", "aliases", box=None, pad_edge=False)
        for a in d["axes"]:
            labels = ", ".join(a["labels"]) + (f", or a count {a['counts']}" if a["counts"] else "")
            aliases = ", ".join(f"{k} = {v}" for k, v in a["aliases"].items())
            table.add_row(a["axis"] + (" (appearance)" if a["appearance"] else ""), labels, aliases)
        console.print(table)
        console.print(f"  cameras: {', '.join(d['cameras'])}")
        console.print(f"  stages: {' > '.join(d['stages'])}")
        console.print("  failure kinds: " + ", ".join(f"{k} ({v})" for k, v in d["failure_kinds"].items()))


def register(app: typer.Typer) -> typer.Typer:
    """Add `tasks` to `app`."""
    app.command("tasks")(tasks_cmd)
    return app
