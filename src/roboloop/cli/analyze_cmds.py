"""CLI command of analyze: `success` (`compare`: `compare_cmds`; failures and judged
outcomes: `outcomes_cmds`; demonstration value: `value_cmds`).

It reads the rollout index (no catalog restore) and starts or attaches the catalog only when
it needs it: stale index rows, `--where`/`--by` on derived layers (`signals.*`). It loads no
training, recorder, video, DataFusion (but for `--where`) or scipy code (tests/cli/test_imports.py): a cold
`roboloop success` on 100,000 rollouts is mostly Python start-up and the index read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from roboloop import schema
from roboloop.analyze.rollouts import load_rollouts, outcome_note, success_by
from roboloop.cli.common import console, err_console, open_workspace
from roboloop.cli.tables import check_format, guard, lazy_catalog, print_table, split_list
from roboloop.evaluate.table import DECISION_COLUMNS, attach_decisions, sequential_of
from roboloop.report.plots import plot_success

SEQ_COLUMNS = ["cell", "decision", "rollouts", "stop_round", "decided_at", "diff [CS]", "fixed_n"]
"""Columns of a sequential decision table."""


def sequential_text(rows_: list[dict]) -> list[dict]:
    """Sequential rows with the estimate and its confidence sequence as one `diff [CS]` text."""
    out = []
    for r in rows_:
        r = dict(r)
        lo, hi, est = r.get("ci_low"), r.get("ci_high"), r.get("estimate")
        r["diff [CS]"] = "-" if est is None else f"{est:+.2f} [{lo:+.2f}, {hi:+.2f}]"
        out.append(r)
    return out


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
    check_format(format)
    keys = split_list(by)
    ws = open_workspace()
    with lazy_catalog() as catalog:
        table = guard(lambda: load_rollouts(ws, dataset, eval_ids, where, needed=keys, catalog_factory=catalog))
        groups = guard(lambda: success_by(table, keys))
    cols = [*keys, "n", "successes", "rate", "ci_low", "ci_high", "mean_stage", "small"]
    cols += [c for c in ("labelled", "unlabelled") if any(g.get(c) for g in groups)]  # only when there are any
    seq_rows = sequential_of(ws, eval_ids or [])
    if keys == ["episode.cell"] and len(seq_rows) == 1:  # one sequential evaluation: its decision next to each cell
        attach_decisions(groups, next(iter(seq_rows.values())), key="episode.cell")
        cols += DECISION_COLUMNS
        seq_rows = {}
    print_table(groups, cols, format, title=f"success in {dataset}" + (f" ({', '.join(eval_ids)})" if eval_ids else ""))
    note = outcome_note({c: sum(g.get(c, 0) for g in groups) for c in ("labelled", "unlabelled")})
    if format == "table" and note:
        console.print(f"note: {note}", soft_wrap=True)
    if format == "table":
        for eid, srows in seq_rows.items():
            print_table(sequential_text(srows), SEQ_COLUMNS, "table",
                        title=f"{eid} vs {srows[0]['against']}: sequential decision ({srows[0]['metric']})")
    if plot is not None:

        path = guard(lambda: plot_success([g for g in groups if g["n"]], keys, plot))  # unlabelled-only groups have no rate
        err_console.print(f"plot: {path}")


def register(app: typer.Typer) -> typer.Typer:
    """Add `success` to `app`."""
    app.command("success")(success_cmd)
    return app
