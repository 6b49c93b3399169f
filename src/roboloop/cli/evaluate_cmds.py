"""CLI commands of evaluate/analyze: `eval`, `evals`, `success`, `compare`, `failures`, `open`, `reoutcome`.

`register(app)` adds them to the `roboloop` Typer app (`roboloop.cli` does). Bodies are thin: parse -> one library call -> print. The
shared options (`--workspace`, `--catalog`) and helpers come from `roboloop.cli`,
imported when a command runs.

Analysis commands (`success`, `compare`, `failures --no-nearest` without `--export/--open`) read the
rollout index (no catalog restore) and start or attach the catalog only when they need
it: stale index rows, `--where`/`--by` on derived layers (`signals.*`), live URLs,
exports, each failure's nearest training episode (the demonstrations' start states).
"""

from __future__ import annotations

import contextlib
import csv
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from roboloop import schema

FORMATS = ("table", "csv", "json")


def _cli():
    from roboloop import cli

    return cli


def _split(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def _check_format(format: str) -> None:
    if format not in FORMATS:
        _cli().fail(f"unknown --format {format!r}: use table, csv or json")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def print_rows(rows: Sequence[dict], columns: Sequence[str], format: str, *, title: str | None = None) -> None:
    """Rows as a rich table, CSV or JSON lines (only `columns`, in that order)."""
    if format == "json":
        for r in rows:
            sys.stdout.write(json.dumps({c: r.get(c) for c in columns}, default=str) + "\n")
        return
    if format == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")  # not the csv default CRLF: shells keep the \r
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c) for c in columns])
        return
    from rich.table import Table

    t = Table(*columns, title=title)
    for r in rows:
        t.add_row(*[_fmt(r.get(c)) for c in columns])
    _cli().console.print(t)


@contextlib.contextmanager
def _lazy_catalog():
    """A function starting (or attaching) the catalog on first call; closed on exit."""
    stack = contextlib.ExitStack()
    box: dict[str, Any] = {}

    def get():
        if "cat" not in box:
            box["cat"] = stack.enter_context(_cli().open_catalog())
        return box["cat"]

    with stack:
        yield get


def _evals_dataset_of(ws, eval_id: str) -> str:
    from roboloop.evaluate import eval_row

    row = eval_row(ws, eval_id)
    if row is None:
        _cli().fail(f"no evaluation {eval_id!r} in {ws.root}; list them with `roboloop evals`")
    return row["evals_dataset"]


def _guard(fn: Callable[[], Any]) -> Any:
    """Run a library call under `roboloop.cli.user_input`: a user error becomes `error: ...` and exit 1."""
    with _cli().user_input():
        return fn()


# --- eval ----------------------------------------------------------------------------------------

def eval_cmd(
    grid: Annotated[str | None, typer.Option("--grid", "-g", help="Grid: 'region=near,far yaw=none,any lighting=normal,dim' or a TOML file.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Training run id to evaluate.")] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="'scripted' to evaluate the scripted demonstrator (the baseline).")] = None,
    episodes_per_cell: Annotated[int | None, typer.Option("--episodes-per-cell", "-n", min=1, help="Rollouts per grid cell (default 10; with --resume: top the evaluation up to N per cell; with --until-decided: the fixed grid a later top-up fills, default the baseline's).")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Demonstration dataset; rollouts go to <dataset>_evals (default: the run's, else aloha).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Evaluation id (default: generated).")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue evaluation EVAL_ID: run only its missing (cell, episode) pairs (a sequential one continues its sequence).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each owns a simulator and the policy).")] = 1,
    cameras: Annotated[str, typer.Option(help="Cameras to record, comma-separated ('' for none); the policy's own cameras are always added.")] = "top",
    camera_size: Annotated[str, typer.Option(help="Recorded size WIDTHxHEIGHT (a vision policy's own size wins).")] = "160x120",
    steps: Annotated[int | None, typer.Option(min=1, help="Control steps per rollout (default 300; with --against: the baseline's).")] = None,
    against: Annotated[str | None, typer.Option("--against", help="Baseline evaluation EVAL_A: roll out on its cells and seeds, paired (with --until-decided).")] = None,
    until_decided: Annotated[bool, typer.Option("--until-decided", help="Run rounds until an anytime-valid paired test decides every cell (needs --against).")] = False,
    metric: Annotated[str, typer.Option("--metric", help="success (binary) or stage (partial credit: furthest stage reached).")] = schema.METRIC_SUCCESS,
    alpha: Annotated[float, typer.Option("--alpha", help="Familywise error of all decisions, in (0, 1).")] = 0.05,
    margin: Annotated[float, typer.Option("--margin", help="Differences smaller than this count as no difference, in (0, 1].")] = 0.1,
    max_per_cell: Annotated[int, typer.Option("--max-per-cell", help="A cell stops undecided at this many pairs.")] = 200,
    round_size: Annotated[int, typer.Option("--round", help="Pairs per cell per round (cells interleaved).")] = 5,
) -> None:
    """Evaluate a policy over a grid of scene conditions; every rollout is recorded and registered.

    With --against EVAL_A --until-decided: compare sequentially with that evaluation, K pairs
    per cell per round, until every cell is decided (improved / regressed / no difference).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from roboloop.collect import parse_size
    from roboloop.evaluate import (
        EvalConfig,
        eval_row,
        evaluate,
        load_config,
        parse_grid,
        run_dataset,
    )

    cli = _cli()
    ws = cli.open_workspace()
    if (against or until_decided) and not (against and until_decided):
        cli.fail("a sequential comparison needs both --against EVAL_A and --until-decided")
    if resume:
        if grid or run or policy or name or against:
            cli.fail("--resume continues a stored evaluation: drop --grid/--run/--policy/--name/--against")
        stored = eval_row(ws, resume)
        cfg = _guard(lambda: load_config(ws, resume))
        seq_row = (stored or {}).get(schema.EVAL_SEQUENTIAL)
        if seq_row and episodes_per_cell is None:
            if seq_row.get("done"):
                cli.console.print(f"{resume} is decided (sequentially, against {stored.get('against')}): nothing to continue; "
                                  f"top it up to a fixed grid with `roboloop eval --resume {resume} -n N`", soft_wrap=True)
                return
            cfg = _guard(lambda: EvalConfig.from_dict({**cfg.to_dict(), "workers": workers}))
            _run_sequential(cfg, stored["against"], seq_row["config"], resume=True)
            return
        n = episodes_per_cell or cfg.episodes_per_cell
        cfg = _guard(lambda: EvalConfig.from_dict({**cfg.to_dict(), "workers": workers, "episodes_per_cell": n}))
    elif against:
        if run and policy:
            cli.fail("give --run RUN_ID or --policy scripted, not both")
        if policy and policy != schema.POLICY_SCRIPTED:
            cli.fail(f"--policy takes {schema.POLICY_SCRIPTED!r}; evaluate a training run with --run RUN_ID")
        if not (run or policy):
            cli.fail("give the challenger: --run RUN_B or --policy scripted")
        base = _guard(lambda: load_config(ws, against))
        if dataset is None:
            dataset = _guard(lambda: run_dataset(ws, run)) if run else base.dataset
        cfg = _guard(lambda: EvalConfig(
            dataset=dataset, policy=run or schema.POLICY_SCRIPTED, grid=parse_grid(grid) if grid else base.grid,
            episodes_per_cell=episodes_per_cell or base.episodes_per_cell, eval_id=name, workers=workers,
            cameras=tuple(_split(cameras)), camera_size=parse_size(camera_size),
            steps=steps if steps is not None else base.steps, task=base.task,
        ))
        seq = {"metric": metric, "alpha": alpha, "margin": margin, "max_per_cell": max_per_cell, "round_size": round_size}
        _run_sequential(cfg, against, seq, resume=False)
        return
    else:
        if run and policy:
            cli.fail("give --run RUN_ID or --policy scripted, not both")
        if policy and policy != schema.POLICY_SCRIPTED:
            cli.fail(f"--policy takes {schema.POLICY_SCRIPTED!r}; evaluate a training run with --run RUN_ID")
        if not grid:
            cli.fail("--grid is required, e.g. --grid 'region=near,far lighting=normal,dim'")
        if dataset is None:
            dataset = _guard(lambda: run_dataset(ws, run)) if run else schema.DEFAULT_DATASET
        cfg = _guard(lambda: EvalConfig(
            dataset=dataset, policy=run or schema.POLICY_SCRIPTED, grid=parse_grid(grid), episodes_per_cell=episodes_per_cell or 10,
            eval_id=name, workers=workers, cameras=tuple(_split(cameras)), camera_size=parse_size(camera_size), steps=steps,
        ))
    total = len(cfg.grid.cells()) * cfg.episodes_per_cell
    cli.console.print(f"evaluating [bold]{cfg.policy}[/] on {cfg.grid} ({len(cfg.grid.cells())} cells x {cfg.episodes_per_cell}) "
                      f"into {cfg.evals_dataset}, {cfg.workers} worker(s)", soft_wrap=True)
    counts = {"n": 0, "ok": 0}
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("success {task.fields[ok]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=cli.console)
    with cli.open_catalog() as cat, progress:
        bar = progress.add_task("rollouts", total=total, ok="-")

        def on_result(result) -> None:
            counts["n"] += 1
            counts["ok"] += int(result.success)
            progress.update(bar, advance=1, ok=f"{counts['ok']}/{counts['n']} ({counts['ok'] / counts['n']:.0%})")

        try:
            report = _guard(lambda: evaluate(cat, cfg, on_result=on_result, resume=bool(resume)))
        except KeyboardInterrupt:
            progress.stop()
            cli.err_console.print(f"[yellow]interrupted:[/] {counts['n']} rollout(s) registered; continue with "
                                  f"`roboloop eval --resume {cfg.eval_id or '<eval id in `roboloop evals`>'}`")
            raise typer.Exit(130) from None
        if report.skipped:
            progress.update(bar, advance=report.skipped)
    cli.console.print(f"evaluation [bold]{report.eval_id}[/]: {report.successes}/{report.n} successes in {report.wall_s:.1f}s"
                      + (f" ({report.skipped} rollout(s) were already done)" if report.skipped else ""))
    cli.console.print(f"next: roboloop success --dataset {report.evals_dataset} --eval {report.eval_id} --by episode.cell", soft_wrap=True)


def _decision_text(counts: dict[str, int]) -> str:
    short = {"improved": "improved", "regressed": "regressed", "no_difference": "no diff", "undecided": "undecided"}
    return ", ".join(f"{short[d]} {n}" for d, n in counts.items() if n)


def _seq_table_rows(row: dict | None) -> list[dict]:
    from roboloop.evaluate_sequential import sequential_rows

    return _seq_rows_text(sequential_rows(row))


def _seq_rows_text(rows_: list[dict]) -> list[dict]:
    out = []
    for r in rows_:
        r = dict(r)
        lo, hi, est = r.get("ci_low"), r.get("ci_high"), r.get("estimate")
        r["diff [CS]"] = "-" if est is None else f"{est:+.2f} [{lo:+.2f}, {hi:+.2f}]"
        out.append(r)
    return out


SEQ_COLUMNS = ["cell", "decision", "rollouts", "stop_round", "decided_at", "diff [CS]", "fixed_n"]


def _run_sequential(cfg, against: str, seq: dict, *, resume: bool) -> None:
    """The body of `eval --against A --until-decided` (and of its --resume): rounds with a live display."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from roboloop.evaluate_sequential import evaluate_until_decided

    cli = _cli()
    ws = cli.open_workspace()
    cells = cfg.grid.cells()
    cli.console.print(f"{'continuing' if resume else 'deciding'}: [bold]{cfg.policy}[/] against [bold]{against}[/] on {cfg.grid} "
                      f"({len(cells)} cells), metric {seq['metric']}, alpha {seq['alpha']}, margin {seq['margin']}, "
                      f"{seq['round_size']} pair(s) per cell per round, at most {seq['max_per_cell']} per cell", soft_wrap=True)
    counts = {"n": 0}
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} rollouts"),
                        TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=cli.console)
    with cli.open_catalog() as cat, progress:
        bar = progress.add_task("round -", total=None, state="")

        def on_result(result) -> None:
            counts["n"] += 1
            progress.update(bar, advance=1)

        def on_round(ev) -> None:
            state = f"{ev.active} cell(s) active; {_decision_text(ev.decisions())}"
            if not ev.finished:
                progress.reset(bar, total=sum(ev.request.values()), description=f"round {ev.round}", state=state)
            else:
                progress.update(bar, state=state)
                progress.console.print(f"round {ev.round}: {state}")

        def on_result_pairs(result) -> None:  # baseline top-ups also count in the bar
            on_result(result)
            task = progress.tasks[0]
            if task.total is not None and task.completed > task.total:
                progress.update(bar, total=task.completed)

        try:
            report = _guard(lambda: evaluate_until_decided(cat, cfg, against=against, seq=seq, on_result=on_result_pairs,
                                                           on_round=on_round, resume=resume))
        except KeyboardInterrupt:
            progress.stop()
            cli.err_console.print(f"[yellow]interrupted:[/] {counts['n']} rollout(s) registered; continue the same sequence with "
                                  f"`roboloop eval --resume {cfg.eval_id or '<eval id in `roboloop evals`>'}`")
            raise typer.Exit(130) from None
    from roboloop.evaluate import eval_row

    row = eval_row(ws, report.eval_id)
    print_rows(_seq_table_rows(row), SEQ_COLUMNS, "table",
               title=f"{report.eval_id} vs {against}: sequential decision ({seq['metric']})")
    ov = report.overall
    used = sum(c["n"] for c in report.sequential.get("cells", []))
    fixed = (report.sequential.get("fixed_n") or 0) * len(cells)
    cli.console.print(f"evaluation [bold]{report.eval_id}[/]: overall {ov.get('decision')} "
                      f"({ov.get('estimate', 0):+.2f} [{ov.get('ci_low', 0):+.2f}, {ov.get('ci_high', 0):+.2f}]) with {used} paired "
                      f"rollouts (the baseline's fixed grid: {fixed}); {len(report.results)} new rollout(s), "
                      f"{len(report.baseline_results)} baseline top-up(s), {report.wall_s:.1f}s", soft_wrap=True)
    cli.console.print(f"next: roboloop compare {against} {report.eval_id}; a full grid: "
                      f"roboloop eval --resume {report.eval_id} -n N", soft_wrap=True)


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
    from roboloop.evaluate_sequential import plan_from_eval

    _check_format(format)
    ws = _cli().open_workspace()
    with _lazy_catalog() as catalog:
        plan = _guard(lambda: plan_from_eval(ws, baseline, effect=effect, alpha=alpha, power=power, metric=metric, margin=margin,
                                             max_per_cell=max_per_cell, round_size=round_size, n_sim=sims, catalog=catalog))
    cols = ["cell", "baseline_n", "baseline_rate", "challenger_rate", "fixed_n", "sequential_mean", "sequential_p90",
            "sequential_decided"]
    if format != "table":
        cols += ["alpha_per_cell", "sequential_improved", "max_per_cell", "round_size"]
    print_rows(plan, cols, format, title=f"rollouts per cell to detect +{effect:.2f} over {baseline} ({metric}, alpha {alpha}, power {power})")
    if format == "table":
        fixed = sum(p["fixed_n"] or 0 for p in plan)
        mean = sum(p["sequential_mean"] for p in plan)
        _cli().console.print(f"total: fixed-n {fixed}, sequential mean {mean:.0f} (fixed_n '-' = not reached within "
                             f"{10 * max_per_cell}); undecided simulations count as --max-per-cell")


def evals_cmd(
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Only evaluations of this demonstration dataset.")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """List evaluations (from the evals table; no rollout is read)."""
    from roboloop.evaluate import list_evals

    _check_format(format)
    rows = list_evals(_cli().open_workspace(), dataset)
    for r in rows:
        r["progress"] = f"{r.get('finished', 0)}/{r.get('planned', '?')}"
        r["success"] = f"{r.get('successes', 0)}/{r.get('finished', 0)}"
    print_rows(rows, ["eval_id", "policy", "evals_dataset", "grid_text", "episodes_per_cell", "progress", "success",
                      "status", "wall_s", "created_at"], format)


# --- success -------------------------------------------------------------------------------------

def success_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Evaluation dataset (<dataset>_evals).")] = schema.evals_dataset(schema.DEFAULT_DATASET),
    eval_ids: Annotated[list[str] | None, typer.Option("--eval", "-e", help="Only these evaluations (repeatable).")] = None,
    by: Annotated[str, typer.Option("--by", "-b", help="Group by these columns, comma-separated (e.g. scene.region,scene.lighting).")] = "episode.cell",
    where: Annotated[str | None, typer.Option("--where", help="Predicate, e.g. \"scene.lighting = 'dim'\".")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG: bars with intervals (one key) or a heatmap (two keys).")] = None,
) -> None:
    """Success rate grouped by any property, with Wilson 95% intervals and the mean stage reached."""
    from roboloop import analyze

    _check_format(format)
    keys = _split(by)
    with _lazy_catalog() as catalog:
        table = _guard(lambda: analyze.load_rollouts(_cli().open_workspace(), dataset, eval_ids, where, needed=keys,
                                                     catalog_factory=catalog))
        groups = _guard(lambda: analyze.success_by(table, keys))
    cols = [*keys, "n", "successes", "rate", "ci_low", "ci_high", "mean_stage", "small"]
    seq_rows = _sequential_of(_cli().open_workspace(), eval_ids or [])
    if keys == ["episode.cell"] and len(seq_rows) == 1:  # one sequential evaluation: its decision next to each cell
        ((eid, srows),) = seq_rows.items()
        by_cell = {r["cell"]: r for r in srows}
        for g in groups:
            s_ = by_cell.get(g.get("episode.cell"))
            if s_ is not None:
                g.update(seq_decision=s_["decision"], seq_rollouts=s_["rollouts"], seq_stop_round=s_["stop_round"])
        cols += ["seq_decision", "seq_rollouts", "seq_stop_round"]
        seq_rows = {}
    print_rows(groups, cols, format, title=f"success in {dataset}" + (f" ({', '.join(eval_ids)})" if eval_ids else ""))
    if format == "table":
        for eid, srows in seq_rows.items():
            print_rows(_seq_rows_text(srows), SEQ_COLUMNS, "table",
                       title=f"{eid} vs {srows[0]['against']}: sequential decision ({srows[0]['metric']})")
    if plot is not None:
        from roboloop.report import plot_success

        path = _guard(lambda: plot_success(groups, keys, plot))
        _cli().err_console.print(f"plot: {path}")


def _sequential_of(ws, eval_ids) -> dict[str, list[dict]]:
    """eval id -> its per-cell sequential rows, for the given evaluations that have them."""
    from roboloop.evaluate import eval_row
    from roboloop.evaluate_sequential import sequential_rows

    out = {}
    for e in eval_ids:
        r = sequential_rows(eval_row(ws, e))
        if r:
            out[e] = r
    return out


# --- compare -------------------------------------------------------------------------------------

def compare_cmd(
    eval_a: Annotated[str, typer.Argument(help="Baseline evaluation id (A).")],
    eval_b: Annotated[str, typer.Argument(help="Evaluation compared with it (B).")],
    by: Annotated[str, typer.Option("--by", "-b", help="Cells to compare in, comma-separated.")] = "episode.cell",
    where: Annotated[str | None, typer.Option("--where", help="Only rollouts matching this predicate.")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level after Holm's adjustment.")] = 0.05,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """B against A per cell and overall: difference with 95% interval, paired exact McNemar on shared seeds, Holm."""
    from roboloop import analyze

    _check_format(format)
    ws = _cli().open_workspace()
    keys = _split(by)
    with _lazy_catalog() as catalog:
        tables = [
            _guard(lambda e=e: analyze.load_rollouts(ws, _evals_dataset_of(ws, e), [e], where, needed=keys, catalog_factory=catalog))
            for e in (eval_a, eval_b)
        ]
    out = _guard(lambda: analyze.compare(tables[0], tables[1], keys, alpha=alpha))
    for r in out:
        r["A"] = f"{r['successes_a']}/{r['n_a']}"
        r["B"] = f"{r['successes_b']}/{r['n_b']}"
        r["B-A [95%]"] = "-" if r["diff"] != r["diff"] else f"{r['diff']:+.2f} [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}]"
    cols = ["group", "A", "B", "B-A [95%]", "test", "n_pairs", "p", "p_holm", "verdict"]
    if format != "table":
        cols = ["group", *keys, "n_a", "successes_a", "rate_a", "n_b", "successes_b", "rate_b", "n_pairs", "test",
                "diff", "diff_low", "diff_high", "discordant_a", "discordant_b", "p", "p_holm", "verdict"]
    seq = _sequential_between(ws, eval_a, eval_b)
    if seq is not None and keys == ["episode.cell"]:
        by_cell = {r["cell"]: r for r in seq["rows"]}
        for r in out:
            s_ = by_cell.get(r["group"])
            if r["group"] == "overall":
                ov = seq["overall"]
                r.update(seq_decision=ov.get("decision"), seq_rollouts=sum(x["rollouts"] for x in seq["rows"]),
                         seq_stop_round=max((x["stop_round"] or 0) for x in seq["rows"]) or None)
            elif s_ is not None:
                r.update(seq_decision=s_["decision"], seq_rollouts=s_["rollouts"], seq_stop_round=s_["stop_round"])
        cols += ["seq_decision", "seq_rollouts", "seq_stop_round"]
    print_rows(out, cols, format, title=f"{eval_b} (B) vs {eval_a} (A)")
    if seq is not None and format == "table":
        _cli().console.print(f"seq_*: {seq['eval_id']}'s sequential decision against {seq['against']} "
                             f"(metric {seq['metric']}, alpha {seq['alpha']}, anytime-valid); n_pairs is the fixed comparison's count",
                             soft_wrap=True)


def _sequential_between(ws, eval_a: str, eval_b: str) -> dict | None:
    """The sequential result of B against A (or of A against B, sign as stored), if one exists."""
    from roboloop.evaluate import eval_row
    from roboloop.evaluate_sequential import sequential_rows

    for challenger, baseline in ((eval_b, eval_a), (eval_a, eval_b)):
        row = eval_row(ws, challenger) or {}
        seq = row.get(schema.EVAL_SEQUENTIAL)
        if seq and row.get("against") == baseline:
            return {"eval_id": challenger, "against": baseline, "rows": sequential_rows(row), "overall": seq.get("overall") or {},
                    "metric": seq.get("metric"), "alpha": (seq.get("config") or {}).get("alpha")}
    return None


# --- failures ------------------------------------------------------------------------------------

def failures_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Evaluation dataset (<dataset>_evals).")] = schema.evals_dataset(schema.DEFAULT_DATASET),
    eval_ids: Annotated[list[str] | None, typer.Option("--eval", "-e", help="Only these evaluations (repeatable).")] = None,
    where: Annotated[str | None, typer.Option("--where", help="Only rollouts matching this predicate.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many failures.")] = None,
    modes: Annotated[bool, typer.Option("--modes", help="Only the failure modes (counts per kind per cell, one representative each).")] = False,
    nearest: Annotated[bool, typer.Option("--nearest/--no-nearest", help="Each failure's nearest training episode (start state) and its distance.")] = True,
    urls: Annotated[bool, typer.Option("--urls", help="Also print live catalog URLs (only while a catalog serves: use with --catalog).")] = False,
    open_: Annotated[bool, typer.Option("--open", help="Open the failures in the Rerun viewer at their failure moment.")] = False,
    export: Annotated[Path | None, typer.Option("--export", help="Write each failure as a self-contained .rrd into this folder.")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """Failure modes (counts per kind per cell, a representative each), then every failed rollout: kind, moment,
    nearest training episode, and how to open it at that moment."""
    from roboloop import analyze, links
    from roboloop.analyze_gaps import nearest_training

    _check_format(format)
    cli = _cli()
    ws = cli.open_workspace()
    live = urls and bool(cli.state.catalog_url)
    if urls and not live:
        cli.err_console.print("[yellow]note:[/] live URLs die with this command's embedded catalog; use the `open` "
                              "commands, --export, or run `roboloop serve` and pass --catalog")
    with _lazy_catalog() as catalog:
        table = _guard(lambda: analyze.load_rollouts(ws, dataset, eval_ids, where, catalog_factory=catalog))
        url_for = (lambda s, t: links.segment_url(catalog(), dataset, s, t)) if (live or open_) else None
        out = _guard(lambda: analyze.failures(table, dataset=dataset, url_for=url_for, limit=limit))
        unmatched: dict[str, str] = {}
        if nearest and out:
            unmatched = _guard(lambda: nearest_training(catalog(), out))
        mode_rows = analyze.failure_modes(out)
        mode_cols = ["eval_id", "cell", "kind_words", "count", "share", "open"]
        if format != "table":
            mode_cols = ["eval_id", "cell", "kind", "kind_words", "count", "cell_failures", "share", "segment_id",
                         "episode.seed", "at_s", "open", "nearest_train_id", "nearest_distance"]
        if modes or format == "table":
            print_rows(mode_rows, mode_cols, format, title=f"{len(mode_rows)} failure mode(s): kind per cell, a representative each")
        if not modes:
            cols = ["segment_id", "episode.cell", "failure_kind", "at_s", "nearest_train_id", "nearest_distance", "open"]
            if format != "table":
                cols = [*analyze.FAILURE_COLUMNS, "failure_kind", "at_s", "nearest_train_id", "nearest_distance",
                        "nearest_dataset", "open"] + (["url"] if url_for else [])
            elif live:
                cols.append("url")
            print_rows(out, cols, format, title=f"{len(out)} failure(s) in {dataset}")
        if format == "table":
            for eval_id, why in unmatched.items():
                cli.err_console.print(f"note: no nearest training episodes for {eval_id}: {why}", soft_wrap=True)
            if nearest and any("nearest_train_id" in r for r in out):
                cli.err_console.print("nearest_distance: scaled start-state distance (1 = 2 cm or 3 deg, `roboloop gaps`); "
                                      "compare with `roboloop open SEGMENT --with-nearest`", soft_wrap=True)
        if export is not None:
            paths = _guard(lambda: links.export_segments(catalog(), dataset, [r["segment_id"] for r in out], export))
            cli.err_console.print(f"exported {len(paths)} file(s) to {export} (every layer + the blueprint); open one with: "
                                  f"{links.viewer_command(str(paths[0])) if paths else 'rerun FILE.rrd'}", soft_wrap=True)
        if open_ and out:
            _view([r["url"] for r in out], embedded=catalog().embedded)


def _viewer_argv(targets: Sequence[str]) -> list[str] | None:
    import os
    import shutil

    exe = shutil.which("rerun") or str(Path(sys.prefix) / "bin" / "rerun")
    return [exe, *targets] if os.path.exists(exe) else None


def _view(urls: Sequence[str], *, embedded: bool) -> None:
    """Open URLs in the native viewer; keep an embedded catalog serving until the viewer (or Ctrl-C) ends."""
    import os

    from roboloop import links

    cli = _cli()
    argv = _viewer_argv(urls)
    if argv is None or not links.has_display():
        cli.console.print("no display here; open in a viewer on this machine:", soft_wrap=True)
        for u in urls:
            cli.console.print(f"  {links.viewer_command(u)}", soft_wrap=True)
        if not embedded:
            return
        cli.console.print("the catalog serves these URLs until Ctrl-C")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # the viewer finds ffmpeg there
    proc = subprocess.Popen(argv, env=env)
    if embedded:
        cli.console.print("viewer open; the embedded catalog serves it until the viewer closes (or Ctrl-C)")
        try:
            proc.wait()
        except KeyboardInterrupt:
            proc.terminate()


# --- open ----------------------------------------------------------------------------------------

def open_cmd(
    segment_id: Annotated[str, typer.Argument(help="Segment id (e.g. from `roboloop failures`).")],
    at: Annotated[float | None, typer.Option("--at", min=0.0, help="Put the time cursor here (seconds since episode start).")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset holding the segment (default: found in the workspace).")] = None,
    with_nearest: Annotated[bool, typer.Option("--with-nearest", help="Also open the training episode whose start state is nearest this rollout's (same blueprint, same time cursor).")] = False,
    print_only: Annotated[bool, typer.Option("--print", help="Print the URL and the viewer command, then exit (a URL needs a running `roboloop serve`; without one, prints how to open it instead).")] = False,
) -> None:
    """Open one episode in the Rerun viewer at a moment (starts or attaches the catalog)."""
    from roboloop import links

    cli = _cli()
    ws = cli.open_workspace()
    ds = dataset or _guard(lambda: links.find_segment_dataset(ws, segment_id))
    with cli.open_catalog() as cat:
        url = _guard(lambda: links.segment_url(cat, ds, segment_id, at))
        urls = [url]
        if with_nearest:
            near = _guard(lambda: links.nearest_training_episode(cat, ds, segment_id))
            urls.append(_guard(lambda: links.segment_url(cat, near["nearest_dataset"], near["nearest_train_id"], at)))
            cli.console.print(f"nearest training episode: {near['nearest_train_id']} in {near['nearest_dataset']} "
                              f"(scaled start-state distance {near['nearest_distance']:.2f})", soft_wrap=True)
        if print_only and cat.embedded:  # the URL would die with this process's catalog
            for line in links.no_server_note(segment_id, at, dataset, with_nearest=with_nearest):
                cli.console.print(line, soft_wrap=True)
            return
        if print_only:
            for u in urls:
                cli.console.print(u, soft_wrap=True)
            cli.console.print(links.viewer_command(urls[0]) + "".join(f" {shlex.quote(u)}" for u in urls[1:]), soft_wrap=True)
            return
        _view(urls, embedded=cat.embedded)


# --- reoutcome -----------------------------------------------------------------------------------

def reoutcome_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose outcomes to re-judge (rollouts: <dataset>_evals).")] = schema.evals_dataset(schema.DEFAULT_DATASET),
    eval_ids: Annotated[list[str] | None, typer.Option("--eval", "-e", help="Only these evaluations (repeatable).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Re-judge every segment in scope, not only failures judged by an older classifier.")] = False,
) -> None:
    """Re-judge failures (kind and moment) by replaying each recording; writes a new `outcome` layer version."""
    from roboloop.outcomes import reoutcome

    cli = _cli()
    with cli.open_catalog() as cat:
        rep = _guard(lambda: reoutcome(cat, dataset, eval_ids=eval_ids, all_segments=all_))
    counts: dict[tuple[str, str], int] = {}
    for sid, new in rep.judged.items():
        key = (rep.before.get(sid, "?"), str(new[schema.OUTCOME_FAILURE_REASON]))
        counts[key] = counts.get(key, 0) + 1
    print_rows([{"was": a, "now": b, "n": n} for (a, b), n in sorted(counts.items())], ["was", "now", "n"], "table",
               title=f"{len(rep.judged)} outcome(s) re-judged in {dataset} ({len(rep.changed)} changed), layer '{schema.OUTCOME_LAYER}'")
    for sid, why in rep.skipped.items():
        cli.err_console.print(f"[yellow]not re-judged[/] {sid}: {why}", soft_wrap=True)
    if not rep.judged and not rep.skipped:
        cli.console.print("nothing to re-judge (every failure was judged by the current classifier; --all re-judges everything)")


# --- registration ----------------------------------------------------------------------------------

COMMANDS = {
    "eval": eval_cmd,
    "evals": evals_cmd,
    "success": success_cmd,
    "compare": compare_cmd,
    "plan-eval": plan_eval_cmd,
    "failures": failures_cmd,
    "open": open_cmd,
    "reoutcome": reoutcome_cmd,
}


def register(app: typer.Typer) -> typer.Typer:
    """Add the evaluate/analyze commands to `app` (idempotent)."""
    present = {c.name for c in app.registered_commands}
    for name, fn in COMMANDS.items():
        if name not in present:
            app.command(name)(fn)
    return app


if __name__ == "__main__":
    from roboloop.cli import app as _app
    from roboloop.cli import main as _main

    register(_app)
    _main()
