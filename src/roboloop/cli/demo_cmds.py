"""The demo command: the whole loop on the embedded catalog, narrated, with progress bars."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from roboloop.cli.common import SHOW_CONFIG_HELP, config_help, console, open_catalog, print_config, user_input
from roboloop.config import resolve
from roboloop.demo import DemoConfig, run_demo


def demo(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="DemoConfig file (.toml or .json); options given override it.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help=config_help(DemoConfig, "dataset"))] = None,
    demos: Annotated[Optional[int], typer.Option(help=config_help(DemoConfig, "demos"))] = None,
    episodes_per_cell: Annotated[Optional[int], typer.Option(help=config_help(DemoConfig, "episodes_per_cell"))] = None,
    plan_budget: Annotated[Optional[int], typer.Option(help=config_help(DemoConfig, "plan_budget"))] = None,
    epochs: Annotated[Optional[int], typer.Option(help=config_help(DemoConfig, "epochs"))] = None,
    workers: Annotated[Optional[int], typer.Option(help=config_help(DemoConfig, "workers"))] = None,
    steps: Annotated[Optional[int], typer.Option(help="Control steps per episode (quick checks only; default the task's 300).")] = None,
    policy: Annotated[Optional[str], typer.Option(help=config_help(DemoConfig, "policy"))] = None,
    corrective: Annotated[Optional[int], typer.Option(min=0, help=config_help(DemoConfig, "corrective"))] = None,
    show_config: Annotated[bool, typer.Option("--show-config", help=SHOW_CONFIG_HELP)] = False,
) -> None:
    """The whole loop: collect (with a planted gap), refine, curate, train, evaluate, find the gap, collect there, re-train, compare, report."""

    with user_input():
        cfg = resolve(DemoConfig, config, dataset=dataset, demos=demos, episodes_per_cell=episodes_per_cell, plan_budget=plan_budget,
                      epochs=epochs, workers=workers, steps=steps, policy=policy, corrective=corrective)
    if show_config:
        print_config(cfg)
        return
    with open_catalog() as cat:
        console.print(f"[bold]roboloop demo[/] workspace {cat.workspace.root}, catalog {cat.url}", soft_wrap=True)
        bars = Progress(TextColumn("       {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=True)
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=max(total, done))

        with bars:
            result = run_demo(cat, cfg, say=lambda text: console.print(text, highlight=False, soft_wrap=True, markup=False),
                              progress=progress)
        timing = ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
        console.print(f"\n[bold]done[/] ({timing})", soft_wrap=True)
        console.print(
            f"[bold]next:[/] open {result.report} in a browser; `./run serve` keeps the catalog up for the viewer;\n"
            f"      every run, evaluation, selection and plan is queryable: ./run sql 'SELECT * FROM evals'",
            soft_wrap=True,
        )


def register(app: typer.Typer) -> typer.Typer:
    """Add `demo` to `app`."""
    app.command("demo")(demo)
    return app
