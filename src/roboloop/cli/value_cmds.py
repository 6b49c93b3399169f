"""CLI command `value`: per training demonstration of a run, its estimated effect on closed-loop success.

Its own module because it loads the run's policy (torch): `roboloop success` and `compare` do not.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from roboloop.analyze.value import LABELS_PREFIX, ValueConfig, demonstration_value, describe
from roboloop.cli.common import config_help, console, err_console, open_catalog, print_rows
from roboloop.cli.tables import guard

# --- value ---------------------------------------------------------------------------------------

def value_cmd(
    run: Annotated[str, typer.Option("--run", "-r", help=config_help(ValueConfig, "run"))],
    eval_id: Annotated[str, typer.Option("--eval", "-e", help=config_help(ValueConfig, "eval"))] = ValueConfig.eval,
    metric: Annotated[str, typer.Option("--metric", help=config_help(ValueConfig, "metric"))] = ValueConfig.metric,
    lowest: Annotated[int, typer.Option("--lowest", min=0, help="How many of the lowest-valued demonstrations to list.")] = 5,
    estimator: Annotated[str, typer.Option("--estimator", help=config_help(ValueConfig, "estimator"))] = ValueConfig.estimator,
    labels: Annotated[str, typer.Option("--labels", help=config_help(ValueConfig, "labels"))] = ValueConfig.labels,
) -> None:
    """Per training demonstration of RUN, its estimated effect on closed-loop success (from EVAL's rollouts, or with
    `--estimator expert` from the expert's labels in RUN's corrective episodes), written as `signals.value`."""
    cfg = guard(lambda: ValueConfig(run=run, eval=eval_id, metric=metric, estimator=estimator, labels=labels))
    with open_catalog() as cat, Progress(
        TextColumn("value"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True
    ) as bar:
        task = bar.add_task("value", total=None)
        res = demonstration_value(cat, cfg, progress=lambda done, total: bar.update(task, completed=done, total=total))
    summary = describe(res, lowest)
    if not summary["demonstrations"]:
        console.print(f"{res.dataset}: run {res.run}'s training episodes have no samples to value; nothing written")
        return
    q = summary["quartiles"]
    source = (f"the expert's labels in {res.rollouts} corrective episode(s) of the run in {res.eval.removeprefix(LABELS_PREFIX)}"
              if cfg.estimator == "expert" else f"{res.rollouts} rollout(s) of {res.eval}")
    console.print(f"{res.dataset}: signals.value for {summary['demonstrations']} training demonstration(s) of run {res.run}, "
                  f"from {source} ({res.successes} successful) in {res.wall_s:.1f}s")
    console.print(f"  value (1 = the largest effect; > 0 helps, < 0 hurts): min {q[0]:+.2f}, quartiles {q[1]:+.2f} / {q[2]:+.2f} / "
                  f"{q[3]:+.2f}, max {q[4]:+.2f}; {summary['negative']} below 0")
    if not summary["negative"]:
        console.print("  none below 0: every demonstration is estimated to help, some less; read the order (the lowest first)")
    if summary["lowest"]:
        print_rows([{"segment": seg, "value": f"{v:+.3f}", "open": f"roboloop open {seg} --dataset {res.dataset}"}
                    for seg, v in summary["lowest"]], ["segment", "value", "open"])
    by_order = f"--order \"signals.value desc\" --limit {max(1, summary['demonstrations'] - len(summary['lowest']))}"
    if summary["negative"]:
        console.print(f"curate by it: roboloop curate --dataset {res.dataset} --name NAME --where \"outcome.success and signals.value > 0\"  "
                      f"(or {by_order})")
    else:
        console.print(f"curate by it: roboloop curate --dataset {res.dataset} --name NAME --where outcome.success {by_order}  "
                      "(drops the lowest listed above)")


def register(app: typer.Typer) -> typer.Typer:
    """Add `value` to `app`."""
    app.command("value")(value_cmd)
    return app
