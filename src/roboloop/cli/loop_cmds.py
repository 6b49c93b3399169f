"""CLI commands of the loop stage: `gaps`, `plan`, `report`, and executing a plan (`roboloop collect --plan FILE`).

`register(app)` adds `gaps`, `plan` and `report` to the `roboloop` Typer app (`roboloop.cli`
does); `roboloop collect --plan FILE` calls :func:`collect_plan_command`.
Command bodies are thin: parse -> one library call -> print.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from roboloop import schema
from roboloop.analyze.gaps import gap_config, gap_datasets, gaps, make_plan
from roboloop.analyze.rollouts import indexed_rollout_table, outcome_note
from roboloop.catalog.index import StaleIndexError
from roboloop.cli.common import SHOW_CONFIG_HELP, console, err_console, fail, open_catalog, open_workspace, print_config
from roboloop.collect.plan import execute_plan, load_plan, plan_summary, save_plan
from roboloop.evaluate.run import latest_eval_ids, resolve_policy
from roboloop.refine.layers import flag
from roboloop.report import write_report

VERDICT_STYLE = {"coverage_gap": "red", "policy_or_data_quality": "yellow", "fine": "green", schema.OUTCOME_UNLABELLED: "dim"}
RIGHT_ALIGNED = ("rank", "covered", "median dist", "demos near", "by label")


@contextlib.contextmanager
def _optional_dependency() -> Iterator[None]:
    """A missing optional dependency (plots, the report's extras) becomes a clean error."""
    try:
        yield
    except ImportError as exc:
        fail(str(exc))


@contextlib.contextmanager
def _gap_inputs(eval_id: str) -> Iterator[tuple]:
    """(catalog, rollout_table) for `gaps(catalog, eval_id, rollout_table=...)`: the rollouts from the rollout index and
    a catalog that restores only the demonstration dataset; the whole catalog when the index cannot answer (stale)."""
    ws = open_workspace()
    demo_ds, evals_ds = gap_datasets(ws, eval_id)
    try:
        table = indexed_rollout_table(ws, evals_ds) if evals_ds in ws.datasets() else None
    except StaleIndexError:  # rows missing (a crash between registration and the index write): the catalog rebuilds them
        table = None
    with open_catalog(datasets=None if table is None else [demo_ds]) as cat:
        yield cat, (None if table is None else lambda _dataset: table)


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
    with _gap_inputs(eval_id) as (cat, rollout_table), _optional_dependency():
        rep = gaps(cat, eval_id, rollout_table=rollout_table)
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
    with _gap_inputs(eval_id) as (cat, rollout_table), _optional_dependency():
        p = make_plan(gaps(cat, eval_id, rollout_table=rollout_table), budget, name=name, corrective=corrective)
        path = save_plan(cat.workspace, p, output or Path(f"{p.name}.toml"))
    console.print(f"plan [bold]{p.name}[/]: {p.total} episode(s) into {p.dataset} ({len(p.items)} item(s)), written to {path}")
    for line in plan_summary(p):
        console.print(line, soft_wrap=True)
    if not p.items:
        console.print("no coverage gap found: nothing to collect")
    console.print(f"execute it:  roboloop collect --plan {path}")


def report_cmd(
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
    eval_ids: Annotated[list[str] | None, typer.Option("--eval", "-e", help="Evaluation id (repeatable; the first two are compared). Default: the two latest.")] = None,
    labels: Annotated[list[str] | None, typer.Option("--label", help="Name per evaluation (repeatable), default v1, v2, ...")] = None,
    export_failures: Annotated[bool, typer.Option("--export-failures", help="Also export the listed failures as .rrd files next to the report.")] = False,
) -> None:
    """Write the self-contained HTML report (success, paired comparison, coverage, loss, selections, failures, plans)."""
    with open_catalog() as cat:
        ids = list(eval_ids or latest_eval_ids(cat.workspace))
        if not ids:
            fail("no evaluation found: run `roboloop eval` first, or name them with --eval")
        if labels and len(labels) != len(ids):
            fail(f"{len(labels)} --label for {len(ids)} evaluation(s): give one per --eval")
        with _optional_dependency():
            path = write_report(cat, ids, output, labels=labels, export_failures=export_failures)
    console.print(f"report of {', '.join(ids)} written to [bold]{path}[/] ({os.path.getsize(path) / 1e3:.0f} kB, self-contained)")


def collect_plan_command(plan_file: str | Path, *, workers: int = 1, steps: int | None = None, flag_failures: bool = True) -> None:
    """Body of `roboloop collect --plan FILE_OR_NAME`: execute the plan with a progress bar.

    With `flag_failures`, new demonstrations that failed the strict success metric are flagged
    in the quality layer (reason names the plan), so the curation query leaves them out.
    """
    counts = {"done": 0, "ok": 0}
    with open_catalog() as cat:
        p = load_plan(cat.workspace, plan_file)
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
                run = execute_plan(cat, p, workers=workers, steps=steps, on_result=on_result,
                                   policy_source=functools.partial(resolve_policy, cat.workspace))
            except KeyboardInterrupt:
                progress.stop()
                err_console.print(f"[yellow]interrupted:[/] {counts['done']} episode(s) registered; run the same command to collect the rest")
                raise typer.Exit(130) from None
            progress.update(bar, completed=p.total)
        seeds = f"seeds {run.seeds[0]}..{run.seeds[-1]}" if run.seeds else "nothing new (the plan was already executed)"
        console.print(f"collected {len(run.new_segment_ids)} episode(s), {run.successes} successful, {seeds}; plan row status {run.status}")
        if flag_failures and run.failed_segment_ids:
            ids = flag(cat, p.dataset, reason=f"plan {p.name}: demonstration failed strict success", segment_ids=run.failed_segment_ids)
            console.print(f"flagged {len(ids)} failed demonstration(s) in the quality layer (left out of selections); "
                          f"undo with: roboloop unflag -d {p.dataset} -s ID")


def register(app: typer.Typer) -> typer.Typer:
    """Add `gaps`, `plan` and `report` to `app` (`collect --plan` executes plans)."""
    app.command("gaps")(gaps_cmd)
    app.command("plan")(plan_cmd)
    app.command("report")(report_cmd)
    return app
