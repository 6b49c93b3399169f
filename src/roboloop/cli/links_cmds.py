"""CLI command `open`: one episode in the Rerun viewer at a moment (links that outlive the process, `roboloop.catalog.links`)."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from roboloop.analyze.gaps import nearest_training_episode
from roboloop.catalog import links
from roboloop.cli.common import console, open_catalog, open_workspace
from roboloop.cli.tables import guard


def open_cmd(
    segment_id: Annotated[str, typer.Argument(help="Segment id (e.g. from `roboloop failures`).")],
    at: Annotated[float | None, typer.Option("--at", min=0.0, help="Put the time cursor here (seconds since episode start).")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset holding the segment (default: found in the workspace).")] = None,
    with_nearest: Annotated[bool, typer.Option("--with-nearest", help="Also open the training episode whose start state is nearest this rollout's (same blueprint, same time cursor).")] = False,
    print_only: Annotated[bool, typer.Option("--print", help="Print the URL and the viewer command, then exit (a URL needs a running `roboloop serve`; without one, prints how to open it instead).")] = False,
) -> None:
    """Open one episode in the Rerun viewer at a moment (starts or attaches the catalog)."""
    ws = open_workspace()
    ds = dataset or guard(lambda: links.find_segment_dataset(ws, segment_id))
    with open_catalog() as cat:
        urls = [guard(lambda: links.segment_url(cat, ds, segment_id, at))]
        if with_nearest:
            near = guard(lambda: nearest_training_episode(cat, ds, segment_id))
            urls.append(guard(lambda: links.segment_url(cat, near["nearest_dataset"], near["nearest_train_id"], at)))
            console.print(f"nearest training episode: {near['nearest_train_id']} in {near['nearest_dataset']} "
                          f"(scaled start-state distance {near['nearest_distance']:.2f})", soft_wrap=True)
        if print_only and cat.embedded:  # the URL would die with this process's catalog
            for line in links.no_server_note(segment_id, at, dataset, with_nearest=with_nearest):
                console.print(line, soft_wrap=True)
            return
        if print_only:
            for u in urls:
                console.print(u, soft_wrap=True)
            console.print(links.viewer_command(urls[0]) + "".join(f" {shlex.quote(u)}" for u in urls[1:]), soft_wrap=True)
            return
        links.view(urls, embedded=cat.embedded, say=lambda s: console.print(s, soft_wrap=True))


def register(app: typer.Typer) -> typer.Typer:
    """Add `open` to `app`."""
    app.command("open")(open_cmd)
    return app
