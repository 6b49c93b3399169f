"""CLI commands of the loop stage: `gaps`, `plan`, `report`, and executing a plan file (`collect --plan`).

Wired into the `roboloop` command by `roboloop.cli` (`register(app, open_catalog=...)`);
`roboloop collect --plan FILE` calls `collect_plan_command`. Standalone (tests):
`python -m roboloop.cli.loop_cmds --workspace WS gaps --eval EVAL_ID`.
Command bodies are thin: parse -> one library call -> print.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from roboloop.errors import RoboloopError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(name="roboloop-loop", help="Coverage gaps, collection plans and the report.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)

_HOOKS: dict[str, Any] = {"workspace": None, "catalog_url": None, "open_catalog": None}


@contextlib.contextmanager
def _default_open_catalog() -> Iterator[Any]:
    from roboloop.catalog import Catalog
    from roboloop.workspace import Workspace

    cat = Catalog(Workspace(_HOOKS["workspace"]), _HOOKS["catalog_url"])
    try:
        yield cat
    finally:
        cat.close()


def open_catalog():
    """The catalog context manager of the host CLI (set by `register`), else an embedded one."""
    opener: Callable[[], Any] = _HOOKS["open_catalog"] or _default_open_catalog
    return opener()


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


# --- library-level helpers the commands (and the lead's collect command) call ---------------

def run_plan_file(catalog, path: str | Path, *, workers: int = 1, steps: int | None = None, on_result=None):
    """Execute a plan given as a file or by its saved name (`plan.load_plan`); returns the `PlanRun`."""
    from roboloop.plan import execute_plan, load_plan

    return execute_plan(catalog, load_plan(catalog.workspace, path), workers=workers, steps=steps, on_result=on_result)


def latest_evals(workspace, n: int = 2) -> list[str]:
    """Ids of the `n` most recent evaluations (oldest first), from the evals table."""
    from roboloop import rows, schema

    evs = rows.read_rows(workspace, schema.EVALS_TABLE)
    evs.sort(key=rows.creation_order)
    return [str(r.get("eval_id") or r[rows.KEY_FIELD]) for r in evs[-n:]]


# --- commands ------------------------------------------------------------------------------

def _print_gaps(rep) -> None:
    t = Table(title=f"coverage gaps of {rep.eval_id} (run {rep.run_id}, {rep.n_train} training episodes)")
    for col in ("rank", "cell", "success", "95% interval", "covered", "median dist", "demos near", "by label", "verdict"):
        t.add_column(col, justify="right" if col in ("rank", "covered", "median dist", "demos near", "by label") else "left")
    style = {"coverage_gap": "red", "policy_or_data_quality": "yellow", "fine": "green"}
    for c in rep.cells:
        t.add_row(
            str(c.rank), c.cell, f"{c.successes}/{c.n} ({100 * c.rate:.0f}%)", f"[{100 * c.ci_low:.0f}%, {100 * c.ci_high:.0f}%]",
            f"{c.covered}/{c.n}", f"{c.median_distance:.2f}", str(c.train_near), str(c.train_in_cell_by_label), f"[{style[c.verdict]}]{c.verdict}[/]",
        )
    console.print(t)
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


@app.command("gaps")
def gaps_cmd(
    eval_id: Annotated[str, typer.Option("--eval", "-e", help="Evaluation id (see the evals table).")],
    format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Rank the evaluation's grid cells: coverage gap (collect), policy/data-quality problem (inspect), or fine."""
    from roboloop.analyze_gaps import gaps

    with open_catalog() as cat:
        try:
            rep = gaps(cat, eval_id)
        except (RoboloopError, ImportError) as exc:
            fail(str(exc))
    if format == "json":
        print(json.dumps(rep.to_dict(), indent=2, default=str))
    else:
        _print_gaps(rep)


@app.command("plan")
def plan_cmd(
    eval_id: Annotated[str, typer.Option("--eval", "-e", help="Evaluation whose coverage gaps the plan targets.")],
    budget: Annotated[int, typer.Option("--budget", "-n", min=1, help="Episodes to collect in all (split by need).")] = 30,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Plan file to write (default: <plan name>.toml).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Plan name (default plan-<eval id>).")] = None,
) -> None:
    """Write a collection plan aimed at the evaluation's coverage gaps (execute it with `roboloop collect --plan FILE`)."""
    from roboloop.analyze_gaps import gaps, make_plan
    from roboloop.plan import plan_summary, save_plan

    with open_catalog() as cat:
        try:
            rep = gaps(cat, eval_id)
            p = make_plan(rep, budget, name=name)
            path = save_plan(cat.workspace, p, output or Path(f"{p.name}.toml"))
        except (RoboloopError, ImportError) as exc:
            fail(str(exc))
    console.print(f"plan [bold]{p.name}[/]: {p.total} episode(s) into {p.dataset} ({len(p.items)} item(s)), written to {path}")
    for line in plan_summary(p):
        console.print(line, soft_wrap=True)
    if not p.items:
        console.print("no coverage gap found: nothing to collect")
    console.print(f"execute it:  roboloop collect --plan {path}")


@app.command("report")
def report_cmd(
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
    eval_ids: Annotated[list[str] | None, typer.Option("--eval", "-e", help="Evaluation id (repeatable; the first two are compared). Default: the two latest.")] = None,
    labels: Annotated[list[str] | None, typer.Option("--label", help="Name per evaluation (repeatable), default v1, v2, ...")] = None,
    export_failures: Annotated[bool, typer.Option("--export-failures", help="Also export the listed failures as .rrd files next to the report.")] = False,
) -> None:
    """Write the self-contained HTML report (success, paired comparison, coverage, loss, selections, failures, plans)."""
    from roboloop.report import write_report

    with open_catalog() as cat:
        ids = list(eval_ids or latest_evals(cat.workspace))
        if not ids:
            fail("no evaluation found: run `roboloop eval` first, or name them with --eval")
        if labels and len(labels) != len(ids):
            fail(f"{len(labels)} --label for {len(ids)} evaluation(s): give one per --eval")
        try:
            path = write_report(cat, ids, output, labels=labels, export_failures=export_failures)
        except (RoboloopError, ImportError) as exc:
            fail(str(exc))
    console.print(f"report of {', '.join(ids)} written to [bold]{path}[/] ({os.path.getsize(path) / 1e3:.0f} kB, self-contained)")


def collect_plan_command(plan_file: str | Path, *, workers: int = 1, steps: int | None = None, flag_failures: bool = True) -> None:
    """Body of `roboloop collect --plan FILE_OR_NAME`: execute the plan with a progress bar.

    With `flag_failures`, new demonstrations that failed the strict success metric are flagged
    in the quality layer (reason names the plan), so the curation query leaves them out.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from roboloop.plan import PlanError, execute_plan, load_plan, plan_summary

    counts = {"done": 0, "ok": 0}
    with open_catalog() as cat:
        try:
            p = load_plan(cat.workspace, plan_file)
        except PlanError as exc:
            fail(str(exc))
        console.print(f"executing plan [bold]{p.name}[/] ({p.total} episode(s) into {p.dataset}; seeds after the dataset's highest)")
        for line in plan_summary(p):
            console.print(line, soft_wrap=True)
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("successes {task.fields[ok]}"), TimeElapsedColumn(), console=console)
        with progress:
            bar = progress.add_task("episodes", total=p.total, ok="0/0")

            def on_result(result) -> None:
                counts["done"] += 1
                counts["ok"] += int(result.success)
                progress.update(bar, advance=1, ok=f"{counts['ok']}/{counts['done']}")

            try:
                run = execute_plan(cat, p, workers=workers, steps=steps, on_result=on_result)
            except PlanError as exc:
                progress.stop()
                fail(str(exc))
            except KeyboardInterrupt:
                progress.stop()
                err_console.print(f"[yellow]interrupted:[/] {counts['done']} episode(s) registered; run the same command to collect the rest")
                raise typer.Exit(130) from None
            progress.update(bar, completed=p.total)
        seeds = f"seeds {run.seeds[0]}..{run.seeds[-1]}" if run.seeds else "nothing new (the plan was already executed)"
        console.print(f"collected {len(run.new_segment_ids)} episode(s), {run.successes} successful, {seeds}; plan row status {run.status}")
        if flag_failures and run.failed_segment_ids:
            from roboloop import refine

            ids = refine.flag(cat, p.dataset, reason=f"plan {p.name}: demonstration failed strict success", segment_ids=run.failed_segment_ids)
            console.print(f"flagged {len(ids)} failed demonstration(s) in the quality layer (left out of selections); "
                          f"undo with: roboloop unflag -d {p.dataset} -s ID")


@app.command("collect-plan")
def collect_plan_cmd(
    plan_file: Annotated[str, typer.Argument(help="Plan file written by `roboloop plan`, or a saved plan's name.")],
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    steps: Annotated[int | None, typer.Option(min=1, help="Control steps per episode (default: the task's 300).")] = None,
    flag_failures: Annotated[bool, typer.Option("--flag-failures/--keep-failures", help="Flag new demonstrations that failed (quality layer).")] = True,
) -> None:
    """Execute a collection plan (in the `roboloop` command: `roboloop collect --plan FILE`)."""
    collect_plan_command(plan_file, workers=workers, steps=steps, flag_failures=flag_failures)


@app.callback()
def _standalone(
    workspace: Annotated[Path | None, typer.Option("--workspace", "-w", envvar="ROBOLOOP_WORKSPACE", help="Workspace folder.")] = None,
    catalog: Annotated[str | None, typer.Option("--catalog", envvar="ROBOLOOP_CATALOG", help="Attach to a running catalog.")] = None,
) -> None:
    if _HOOKS["open_catalog"] is None:
        _HOOKS["workspace"], _HOOKS["catalog_url"] = workspace, catalog


def register(host: typer.Typer, *, open_catalog: Callable[[], Any] | None = None) -> None:
    """Add `gaps`, `plan` and `report` to the host app (`collect --plan` executes plans); commands then open the
    catalog with the host's `open_catalog` (which honours its global --workspace/--catalog)."""
    _HOOKS.update(open_catalog=open_catalog, workspace=None, catalog_url=None)
    host.command("gaps")(gaps_cmd)
    host.command("plan")(plan_cmd)
    host.command("report")(report_cmd)


if __name__ == "__main__":  # pragma: no cover
    app()
