"""The demo command: the whole loop (as far as it is built) on the embedded catalog."""

from __future__ import annotations

from typing import Annotated

import typer

from roboloop import schema
from roboloop.cli import app, console, open_catalog, user_input


@app.command()
def demo(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset to build the loop on.")] = schema.DEFAULT_DATASET,
    episodes: Annotated[int, typer.Option(help="Demonstrations the dataset should hold (missing ones are collected).")] = 24,
    workers: Annotated[int, typer.Option(help="Worker processes for collection and streaming.")] = 2,
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
) -> None:
    """Run the whole loop (as far as it is built) on the embedded catalog: collect, refine, flag, curate, stream, query."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from roboloop.demo import DemoConfig, run_demo

    with user_input():
        cfg = DemoConfig(dataset=dataset, episodes=episodes, workers=max(1, workers), seed=seed)
    with open_catalog() as cat:
        console.print(f"[bold]roboloop demo[/] workspace {cat.workspace.root}, catalog {cat.url}", soft_wrap=True)
        with Progress(TextColumn("      {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("episodes", total=None)

            def on_episode(result) -> None:
                progress.update(task, advance=1, total=progress.tasks[0].total or episodes)

            result = run_demo(cat, cfg, say=lambda text: console.print(text, highlight=False, soft_wrap=True), on_episode=on_episode)
        console.print(
            "\n[bold]next:[/] open the episodes in the Rerun viewer: `./run serve`, then `rerun <printed URL>`;\n"
            f"      ask anything: ./run sql 'SELECT \"scene.lighting\", count(*) FROM {dataset} GROUP BY 1'",
            soft_wrap=True,
        )
        if result.collected and result.successes < result.collected:
            console.print(f"[yellow]{result.collected - result.successes} collected episode(s) failed the strict success check[/]")
