"""CLI command `compare`: B against A per cell and overall (`roboloop.analyze.compare`), from the rollout index.

Its own module: `roboloop success` does not need it. It loads no scipy (the exact tests are integer arithmetic,
`roboloop.stats.exact`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from roboloop.analyze.compare import compare
from roboloop.analyze.rollouts import CELL, SEED, SOURCE, SUCCESS, load_rollouts, outcome_note
from roboloop.cli.common import console, open_workspace
from roboloop.cli.tables import check_format, guard, lazy_catalog, print_table, split_list
from roboloop.evaluate.table import DECISION_COLUMNS, attach_decisions, evals_dataset_of, sequential_between

# --- compare -------------------------------------------------------------------------------------

COMPARE_COLUMNS = ["group", "A", "B", "B-A [95%]", "test", "n_pairs", "p", "p_holm", "verdict"]
COMPARE_DATA_COLUMNS = ["n_a", "successes_a", "rate_a", "n_b", "successes_b", "rate_b", "n_pairs", "test",
                        "diff", "diff_low", "diff_high", "discordant_a", "discordant_b", "p", "p_holm", "verdict"]


def compare_cmd(
    eval_a: Annotated[str, typer.Argument(help="Baseline evaluation id (A).")],
    eval_b: Annotated[str, typer.Argument(help="Evaluation compared with it (B).")],
    by: Annotated[str, typer.Option("--by", "-b", help="Cells to compare in, comma-separated.")] = "episode.cell",
    where: Annotated[str | None, typer.Option("--where", help="Only rollouts matching this predicate.")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level after Holm's adjustment.")] = 0.05,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """B against A per cell and overall: difference with 95% interval, paired exact McNemar on shared seeds, Holm."""
    check_format(format)
    ws = open_workspace()
    keys = split_list(by)
    with lazy_catalog() as catalog:
        tables = [
            guard(lambda e=e: load_rollouts(ws, evals_dataset_of(ws, e), [e], where, needed=keys, catalog_factory=catalog,
                                            columns=[*keys, CELL, SEED, SUCCESS, SOURCE]))
            for e in (eval_a, eval_b)
        ]
    out = guard(lambda: compare(tables[0], tables[1], keys, alpha=alpha))
    for r in out:
        r["A"] = f"{r['successes_a']}/{r['n_a']}"
        r["B"] = f"{r['successes_b']}/{r['n_b']}"
        r["B-A [95%]"] = "-" if r["diff"] != r["diff"] else f"{r['diff']:+.2f} [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}]"
    cols = COMPARE_COLUMNS if format == "table" else ["group", *keys, *COMPARE_DATA_COLUMNS]
    seq = sequential_between(ws, eval_a, eval_b)
    if seq is not None and keys == ["episode.cell"]:
        attach_decisions(out, seq["rows"], key="group", overall=seq["overall"])
        cols = [*cols, *DECISION_COLUMNS]
    judged = [f"{c}_{side}" for c in ("labelled", "unlabelled") for side in "ab"]
    if format != "table" and any(r.get(c) for r in out for c in judged):
        cols = [*cols, *judged]
    print_table(out, cols, format, title=f"{eval_b} (B) vs {eval_a} (A)")
    overall = out[-1]
    for side, eid in (("a", eval_a), ("b", eval_b)):
        note = outcome_note({"labelled": overall[f"labelled_{side}"], "unlabelled": overall[f"unlabelled_{side}"]})
        if format == "table" and note:
            console.print(f"note ({side.upper()}, {eid}): {note}", soft_wrap=True)
    if seq is not None and format == "table":
        console.print(f"seq_*: {seq['eval_id']}'s sequential decision against {seq['against']} "
                      f"(metric {seq['metric']}, alpha {seq['alpha']}, anytime-valid); n_pairs is the fixed comparison's count",
                      soft_wrap=True)


def register(app: typer.Typer) -> typer.Typer:
    """Add `compare` to `app`."""
    app.command("compare")(compare_cmd)
    return app
