"""CLI commands of evaluate: `eval` (fixed grid, or `--against A --until-decided`), `evals`, `plan-eval`.

`register(app)` adds them to the `roboloop` Typer app (`roboloop.cli` does). Options left out
(None) take the config's default (`EvalConfig`, `SequentialConfig`); `--show-config` prints
the resolved configs and exits. Bodies are thin: parse -> one library call -> print.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from roboloop import schema
from roboloop.cli.analyze_cmds import SEQ_COLUMNS, sequential_text
from roboloop.cli.common import (
    INTERRUPTED_EXIT,
    SHOW_CONFIG_HELP,
    config_help,
    console,
    err_console,
    fail,
    open_catalog,
    open_workspace,
    print_config,
)
from roboloop.cli.tables import check_format, guard, lazy_catalog, print_table, split_list
from roboloop.collect.run import parse_size
from roboloop.config import override, resolve
from roboloop.evaluate.run import (
    EvalConfig,
    eval_row,
    evaluate,
    list_evals,
    load_config,
    new_eval_id,
    parse_grid,
    run_dataset,
    run_task,
)
from roboloop.evaluate.until_decided import challenger_config, evaluate_until_decided, plan_from_eval, sequential_rows
from roboloop.stats.sequential import SequentialConfig

E, S = EvalConfig, SequentialConfig


# --- eval ----------------------------------------------------------------------------------------

def _check_policy(run: str | None, policy: str | None) -> None:
    if run and policy:
        fail("give --run RUN_ID or --policy scripted, not both")
    if policy and policy != schema.POLICY_SCRIPTED:
        fail(f"--policy takes {schema.POLICY_SCRIPTED!r}; evaluate a training run with --run RUN_ID")


def _size(camera_size: str | None):
    return guard(lambda: parse_size(camera_size)) if camera_size is not None else None


def _cameras(cameras: str | None):
    return tuple(split_list(cameras)) if cameras is not None else None


def eval_cmd(
    grid: Annotated[str | None, typer.Option("--grid", "-g", help="Grid: 'region=near,far yaw=none,any lighting=normal,dim' or a TOML file.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Training run id to evaluate.")] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="'scripted' to evaluate the scripted demonstrator (the baseline).")] = None,
    episodes_per_cell: Annotated[int | None, typer.Option("--episodes-per-cell", "-n", min=1, help=config_help(E, "episodes_per_cell", " With --resume: top the evaluation up to N per cell; with --until-decided: the fixed grid a later top-up fills (the baseline's unless given).")) ] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Demonstration dataset; rollouts go to <dataset>_evals (default: the run's, else aloha).")] = None,
    task: Annotated[str | None, typer.Option("--task", help=config_help(E, "task", " Default: the run's task, else transfer_cube."))] = None,
    name: Annotated[str | None, typer.Option("--name", help="Evaluation id (default: generated).")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue evaluation EVAL_ID: run only its missing (cell, episode) pairs (a sequential one continues its sequence).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help=config_help(E, "workers"))] = None,
    cameras: Annotated[str | None, typer.Option(help=config_help(E, "cameras", " Comma-separated, '' for none."))] = None,
    camera_size: Annotated[str | None, typer.Option(help=config_help(E, "camera_size", " WIDTHxHEIGHT."))] = None,
    camera_hz: Annotated[int | None, typer.Option(min=1, help=config_help(E, "camera_hz"))] = None,
    steps: Annotated[int | None, typer.Option(min=1, help=config_help(E, "steps", " With --against: the baseline's."))] = None,
    against: Annotated[str | None, typer.Option("--against", help="Baseline evaluation EVAL_A: roll out on its cells and seeds, paired (with --until-decided).")] = None,
    until_decided: Annotated[bool, typer.Option("--until-decided", help="Run rounds until an anytime-valid paired test decides every cell (needs --against).")] = False,
    metric: Annotated[str | None, typer.Option("--metric", help=config_help(S, "metric"))] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help=config_help(S, "alpha"))] = None,
    margin: Annotated[float | None, typer.Option("--margin", help=config_help(S, "margin"))] = None,
    max_per_cell: Annotated[int | None, typer.Option("--max-per-cell", help=config_help(S, "max_per_cell"))] = None,
    round_size: Annotated[int | None, typer.Option("--round", help=config_help(S, "round_size"))] = None,
    show_config: Annotated[bool, typer.Option("--show-config", help=SHOW_CONFIG_HELP)] = False,
) -> None:
    """Evaluate a policy over a grid of scene conditions; every rollout is recorded and registered.

    With --against EVAL_A --until-decided: compare sequentially with that evaluation, K pairs
    per cell per round, until every cell is decided (improved / regressed / no difference).
    """
    ws = open_workspace()
    if (against or until_decided) and not (against and until_decided):
        fail("a sequential comparison needs both --against EVAL_A and --until-decided")
    if resume:
        if grid or run or policy or name or against:
            fail("--resume continues a stored evaluation: drop --grid/--run/--policy/--name/--against")
        _resume(resume, episodes_per_cell, workers, show_config)
        return
    options = dict(episodes_per_cell=episodes_per_cell, eval_id=name, cameras=_cameras(cameras), camera_size=_size(camera_size),
                   camera_hz=camera_hz, steps=steps, workers=workers)
    _check_policy(run, policy)
    if against:
        if not (run or policy):
            fail("give the challenger: --run RUN_B or --policy scripted")
        cfg = guard(lambda: challenger_config(ws, against, run=run, dataset=dataset, grid=parse_grid(grid) if grid else None,
                                              **options))
        seq = guard(lambda: resolve(SequentialConfig, None, metric=metric, alpha=alpha, margin=margin, max_per_cell=max_per_cell,
                                    round_size=round_size))
        if show_config:
            print_config(cfg, ("sequential", seq))
            return
        run_sequential(cfg, against, seq, resume=False)
        return
    if not grid:
        fail("--grid is required, e.g. --grid 'region=near,far lighting=normal,dim'")
    if dataset is None:
        dataset = guard(lambda: run_dataset(ws, run)) if run else EvalConfig.dataset
    if task is None:
        task = guard(lambda: run_task(ws, run)) if run else EvalConfig.task
    cfg = guard(lambda: resolve(EvalConfig, None, dataset=dataset, policy=run or schema.POLICY_SCRIPTED,
                                grid=parse_grid(grid, task), task=task, **options))
    if show_config:
        print_config(cfg)
        return
    run_fixed(cfg, resume=False)


def _resume(eval_id: str, episodes_per_cell: int | None, workers: int | None, show_config: bool) -> None:
    """`eval --resume EVAL_ID`: a sequential evaluation continues its sequence, a fixed one (or `-n N`) its grid."""
    ws = open_workspace()
    stored = eval_row(ws, eval_id)
    cfg = guard(lambda: override(load_config(ws, eval_id), workers=workers if workers is not None else EvalConfig.workers))
    seq_row = (stored or {}).get(schema.EVAL_SEQUENTIAL)
    if seq_row and episodes_per_cell is None:
        seq = guard(lambda: SequentialConfig.from_dict(seq_row["config"]))
        if show_config:
            print_config(cfg, ("sequential", seq))
            return
        if seq_row.get("done"):
            console.print(f"{eval_id} is decided (sequentially, against {stored.get('against')}): nothing to continue; "
                          f"top it up to a fixed grid with `roboloop eval --resume {eval_id} -n N`", soft_wrap=True)
            return
        run_sequential(cfg, stored["against"], seq, resume=True)
        return
    cfg = guard(lambda: override(cfg, episodes_per_cell=episodes_per_cell))
    if show_config:
        print_config(cfg)
        return
    run_fixed(cfg, resume=True)


def named(cfg: EvalConfig) -> EvalConfig:
    """`cfg` with its evaluation id (a new one when `--name` was not given), so an interrupt can name what to resume."""
    return cfg if cfg.eval_id is not None else EvalConfig.from_dict({**cfg.to_dict(), "eval_id": new_eval_id()})


def interrupted(eval_id: str, registered: int, what: str) -> None:
    """The one line an interrupted `eval` prints: what to resume, or that nothing was written (no row yet)."""
    if eval_row(open_workspace(), eval_id) is None:
        err_console.print(f"[yellow]interrupted[/] before evaluation {eval_id} started: nothing was written", soft_wrap=True)
        return
    err_console.print(f"[yellow]interrupted:[/] {registered} rollout(s) registered; continue{what} with "
                      f"`roboloop eval --resume {eval_id}`", soft_wrap=True)


def run_fixed(cfg: EvalConfig, *, resume: bool) -> None:
    """The body of `eval` on a fixed grid (and of its --resume): rollouts with a progress bar."""
    cfg = named(cfg)
    total = len(cfg.grid.cells()) * cfg.episodes_per_cell
    console.print(f"evaluating [bold]{cfg.policy}[/] on {cfg.grid} ({len(cfg.grid.cells())} cells x {cfg.episodes_per_cell}) "
                  f"into {cfg.evals_dataset}, {cfg.workers} worker(s)", soft_wrap=True)
    counts = {"n": 0, "ok": 0}
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("success {task.fields[ok]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console)
    with open_catalog() as cat, progress:
        bar = progress.add_task("rollouts", total=total, ok="-")

        def on_result(result) -> None:
            counts["n"] += 1
            counts["ok"] += int(result.success)
            progress.update(bar, advance=1, ok=f"{counts['ok']}/{counts['n']} ({counts['ok'] / counts['n']:.0%})")

        try:
            report = guard(lambda: evaluate(cat, cfg, on_result=on_result, resume=resume))
        except KeyboardInterrupt:
            progress.stop()
            interrupted(str(cfg.eval_id), counts["n"], "")
            raise typer.Exit(INTERRUPTED_EXIT) from None
        if report.skipped:
            progress.update(bar, advance=report.skipped)
    console.print(f"evaluation [bold]{report.eval_id}[/]: {report.successes}/{report.n} successes in {report.wall_s:.1f}s"
                  + (f" ({report.skipped} rollout(s) were already done)" if report.skipped else ""))
    console.print(f"next: roboloop success --dataset {report.evals_dataset} --eval {report.eval_id} --by episode.cell", soft_wrap=True)


def _decision_text(counts: dict[str, int]) -> str:
    short = {"improved": "improved", "regressed": "regressed", "no_difference": "no diff", "undecided": "undecided"}
    return ", ".join(f"{short[d]} {n}" for d, n in counts.items() if n)


def run_sequential(cfg: EvalConfig, against: str, seq: SequentialConfig, *, resume: bool) -> None:
    """The body of `eval --against A --until-decided` (and of its --resume): rounds with a live display."""
    cfg = named(cfg)
    cells = cfg.grid.cells()
    console.print(f"{'continuing' if resume else 'deciding'}: [bold]{cfg.policy}[/] against [bold]{against}[/] on {cfg.grid} "
                  f"({len(cells)} cells), metric {seq.metric}, alpha {seq.alpha}, margin {seq.margin}, "
                  f"{seq.round_size} pair(s) per cell per round, at most {seq.max_per_cell} per cell", soft_wrap=True)
    counts = {"n": 0}
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} rollouts"),
                        TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=console)
    with open_catalog() as cat, progress:
        bar = progress.add_task("round -", total=None, state="")

        def on_round(ev) -> None:
            state = f"{ev.active} cell(s) active; {_decision_text(ev.decisions())}"
            if not ev.finished:
                progress.reset(bar, total=sum(ev.request.values()), description=f"round {ev.round}", state=state)
            else:
                progress.update(bar, state=state)
                progress.console.print(f"round {ev.round}: {state}")

        def on_result(result) -> None:  # baseline top-ups also count in the bar
            counts["n"] += 1
            progress.update(bar, advance=1)
            task = progress.tasks[0]
            if task.total is not None and task.completed > task.total:
                progress.update(bar, total=task.completed)

        try:
            report = guard(lambda: evaluate_until_decided(cat, cfg, against=against, seq=seq, on_result=on_result,
                                                          on_round=on_round, resume=resume))
        except KeyboardInterrupt:
            progress.stop()
            interrupted(str(cfg.eval_id), counts["n"], " the same sequence")
            raise typer.Exit(INTERRUPTED_EXIT) from None
    print_table(sequential_text(sequential_rows(eval_row(open_workspace(), report.eval_id))), SEQ_COLUMNS, "table",
                title=f"{report.eval_id} vs {against}: sequential decision ({seq.metric})")
    ov = report.overall
    used = sum(c["n"] for c in report.sequential.get("cells", []))
    fixed = (report.sequential.get("fixed_n") or 0) * len(cells)
    console.print(f"evaluation [bold]{report.eval_id}[/]: overall {ov.get('decision')} "
                  f"({ov.get('estimate', 0):+.2f} [{ov.get('ci_low', 0):+.2f}, {ov.get('ci_high', 0):+.2f}]) with {used} paired "
                  f"rollouts (the baseline's fixed grid: {fixed}); {len(report.results)} new rollout(s), "
                  f"{len(report.baseline_results)} baseline top-up(s), {report.wall_s:.1f}s", soft_wrap=True)
    console.print(f"next: roboloop compare {against} {report.eval_id}; a full grid: "
                  f"roboloop eval --resume {report.eval_id} -n N", soft_wrap=True)


# --- plan-eval, evals ----------------------------------------------------------------------------

def plan_eval_cmd(
    baseline: Annotated[str, typer.Option("--baseline", help="Evaluation whose per-cell rates (or stage distributions) to plan from.")],
    effect: Annotated[float, typer.Option("--effect", help="Improvement in success rate to detect.")] = 0.15,
    alpha: Annotated[float, typer.Option("--alpha", help="Familywise error, split over the cells.")] = 0.05,
    power: Annotated[float, typer.Option("--power", help="Power of the fixed-n test.")] = 0.8,
    metric: Annotated[str, typer.Option("--metric", help="success or stage (the sequential test's metric).")] = schema.METRIC_SUCCESS,
    margin: Annotated[float, typer.Option("--margin", help="No-difference margin of the sequential test.")] = 0.1,
    max_per_cell: Annotated[int, typer.Option("--max-per-cell", min=1, help="Cap of the sequential test per cell.")] = 400,
    round_size: Annotated[int, typer.Option("--round", min=1, help="Pairs per cell per round.")] = 1,
    sims: Annotated[int, typer.Option("--sims", min=1, help="Simulated comparisons per cell.")] = 1000,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """Rollouts per cell a comparison needs: fixed-n exact McNemar vs the sequential test (mean and p90, simulated)."""
    check_format(format)
    ws = open_workspace()
    with lazy_catalog() as catalog:
        plan = guard(lambda: plan_from_eval(ws, baseline, effect=effect, alpha=alpha, power=power, metric=metric, margin=margin,
                                            max_per_cell=max_per_cell, round_size=round_size, n_sim=sims, catalog=catalog))
    cols = ["cell", "baseline_n", "baseline_rate", "challenger_rate", "fixed_n", "sequential_mean", "sequential_p90",
            "sequential_decided"]
    if format != "table":
        cols += ["alpha_per_cell", "sequential_improved", "max_per_cell", "round_size"]
    print_table(plan, cols, format, title=f"rollouts per cell to detect +{effect:.2f} over {baseline} ({metric}, alpha {alpha}, power {power})")
    if format == "table":
        fixed = sum(p["fixed_n"] or 0 for p in plan)
        mean = sum(p["sequential_mean"] for p in plan)
        console.print(f"total: fixed-n {fixed}, sequential mean {mean:.0f} (fixed_n '-' = not reached within "
                      f"{10 * max_per_cell}); undecided simulations count as --max-per-cell")


def evals_cmd(
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Only evaluations of this demonstration dataset.")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """List evaluations (from the evals table; no rollout is read)."""
    check_format(format)
    rows = list_evals(open_workspace(), dataset)
    for r in rows:
        r["progress"] = f"{r.get('finished', 0)}/{r.get('planned', '?')}"
        r["success"] = f"{r.get('successes', 0)}/{r.get('finished', 0)}"
    print_table(rows, ["eval_id", "policy", "evals_dataset", "grid_text", "episodes_per_cell", "progress", "success",
                       "status", "wall_s", "created_at"], format)


def register(app: typer.Typer) -> typer.Typer:
    """Add `eval`, `evals` and `plan-eval` to `app`."""
    app.command("eval")(eval_cmd)
    app.command("evals")(evals_cmd)
    app.command("plan-eval")(plan_eval_cmd)
    return app
