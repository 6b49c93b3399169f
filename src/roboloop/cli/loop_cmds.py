"""CLI commands of the loop stage: `gaps` and `plan` (the report: `report_cmds`; executing a plan: `collect --plan`
in `collect_cmds`).

`register(app)` adds `gaps` and `plan` to the `roboloop` Typer app (`roboloop.cli` does).
Command bodies are thin: parse -> one library call -> print. Neither loads training, the recorder or video
code: the rollouts come from the rollout index (tests/cli/test_imports.py).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from roboloop import schema
from roboloop.analyze.gaps import gap_config, gap_datasets, gaps, make_plan
from roboloop.analyze.rollouts import outcome_note
from roboloop.catalog.index import StaleIndexError, load_table
from roboloop.cli.common import SHOW_CONFIG_HELP, console, err_console, open_catalog, open_workspace, optional_dependency, print_config
from roboloop.cli.tables import lazy_catalog
from roboloop.collect.plan import plan_summary, save_plan

VERDICT_STYLE = {"coverage_gap": "red", "policy_or_data_quality": "yellow", "fine": "green", schema.OUTCOME_UNLABELLED: "dim"}
RIGHT_ALIGNED = ("rank", "covered", "median dist", "demos near", "by label")


@contextlib.contextmanager
def _gap_inputs(eval_id: str) -> Iterator[tuple]:
    """(workspace, catalog or None, tables) for `gaps(catalog, eval_id, workspace=..., **tables)`.

    Both datasets' base properties come from their indexes (`catalog.index.load_table`: the rollout index, and the
    demonstrations' index, written the first time `gaps` reads them): no catalog starts. A catalog restoring only the
    demonstration dataset starts when its index misses episodes (its first use, new demonstrations); the whole
    catalog when the rollout index cannot answer (stale) or a dataset is not in the workspace."""
    ws = open_workspace()
    demo_ds, evals_ds = gap_datasets(ws, eval_id)
    try:
        # the whole index as stored: `gaps` picks the evaluation's rows, then drops repeated pairs (on those rows only)
        table = load_table(ws, evals_ds) if {demo_ds, evals_ds} <= set(ws.datasets()) else None
    except StaleIndexError:  # rows missing (a crash between registration and the index write): the catalog rebuilds them
        table = None
    if table is None:
        with open_catalog() as cat:
            yield ws, cat, {}
        return
    with lazy_catalog(datasets=[demo_ds]) as catalog:
        demos = load_table(ws, demo_ds, catalog)
        yield ws, None, {"segment_table": {demo_ds: demos}.__getitem__, "rollout_table": lambda _dataset: table}


def print_gaps(rep) -> None:
    """A gap report as a ranked table, each cell's advice, and how coverage was measured."""
    t = Table(title=f"coverage gaps of {rep.eval_id} (run {rep.run_id}, {rep.n_train} training episodes)")
    for col in ("rank", "cell", "success", "95% interval", "covered", "median dist", "demos near", "by label", "verdict"):
        t.add_column(col, justify="right" if col in RIGHT_ALIGNED else "left")
    for c in rep.cells:
        success = f"{c.successes}/{c.n} ({100 * c.rate:.0f}%)" if c.n else "-"
        interval = f"[{100 * c.ci_low:.0f}%, {100 * c.ci_high:.0f}%]" if c.n else "-"
        if c.unlabelled:
            success += f" +{c.unlabelled} {schema.OUTCOME_UNLABELLED}"
        t.add_row(
            str(c.rank), c.cell, success, interval,
            f"{c.covered}/{c.n + c.unlabelled}", f"{c.median_distance:.2f}", str(c.train_near), str(c.train_in_cell_by_label),
            f"[{VERDICT_STYLE[c.verdict]}]{c.verdict}[/]",
        )
    console.print(t)
    note = outcome_note({"labelled": sum(c.labelled for c in rep.cells), "unlabelled": sum(c.unlabelled for c in rep.cells)})
    if note:
        console.print(f"note: {note}", soft_wrap=True)
    for c in rep.cells:
        if c.advice:
            console.print(f"[bold]{c.rank}. {c.cell}[/]: {c.advice}", soft_wrap=True)
    cfg = rep.config
    console.print(
        f"[dim]covered = a training start within {cfg.tolerance:g} scaled unit ({cfg.position_scale_m * 100:g} cm, "
        f"{cfg.yaw_scale_deg:g} deg, yaw modulo {cfg.yaw_period_deg:g}); fails = Wilson upper < {cfg.target_rate:g} "
        f"or rate < {cfg.fail_rate:g}; gap = covered fraction < {cfg.min_covered_fraction:g}[/]"
    )
    if rep.missing_train_ids:
        err_console.print(f"[yellow]warning:[/] {rep.missing_train_ids} training episode(s) of the run are no longer in {rep.dataset}")


def gaps_cmd(
    eval_id: Annotated[str, typer.Option("--eval", "-e", help="Evaluation id (see the evals table).")],
    format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    show_config: Annotated[bool, typer.Option("--show-config", help=SHOW_CONFIG_HELP)] = False,
) -> None:
    """Rank the evaluation's grid cells: coverage gap (collect), policy/data-quality problem (inspect), or fine."""
    if show_config:
        print_config(gap_config(open_workspace(), eval_id))
        return
    with _gap_inputs(eval_id) as (ws, cat, tables), optional_dependency():
        rep = gaps(cat, eval_id, workspace=ws, **tables)
    if format == "json":
        print(json.dumps(rep.to_dict(), indent=2, default=str))
    else:
        print_gaps(rep)


def plan_cmd(
    eval_id: Annotated[str, typer.Option("--eval", "-e", help="Evaluation whose coverage gaps the plan targets.")],
    budget: Annotated[int, typer.Option("--budget", "-n", min=1, help="Episodes to collect in all (split by need).")] = 30,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Plan file to write (default: <plan name>.toml).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Plan name (default plan-<eval id>).")] = None,
    corrective: Annotated[int, typer.Option("--corrective", min=0, help="Also this many corrective (dagger) episodes of the evaluated run, "
                                            "over every failing cell (gaps and covered-yet-failing), split by failures.")] = 0,
) -> None:
    """Write a collection plan aimed at the evaluation's coverage gaps (execute it with `roboloop collect --plan FILE`)."""
    with _gap_inputs(eval_id) as (ws, cat, tables), optional_dependency():
        p = make_plan(gaps(cat, eval_id, workspace=ws, **tables), budget, name=name, corrective=corrective)
        path = save_plan(ws, p, output or Path(f"{p.name}.toml"))
    console.print(f"plan [bold]{p.name}[/]: {p.total} episode(s) into {p.dataset} ({len(p.items)} item(s)), written to {path}")
    for line in plan_summary(p):
        console.print(line, soft_wrap=True)
    if not p.items:
        console.print("no coverage gap found: nothing to collect")
    console.print(f"execute it:  roboloop collect --plan {path}")


def register(app: typer.Typer) -> typer.Typer:
    """Add `gaps` and `plan` to `app`."""
    app.command("gaps")(gaps_cmd)
    app.command("plan")(plan_cmd)
    return app
