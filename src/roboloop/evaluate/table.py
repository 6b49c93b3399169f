"""The evaluation table (`schema.EVALS_TABLE`, one row per evaluation): reading rows, their datasets and their
sequential decisions.

Nothing here simulates, trains or talks to a catalog: `roboloop success`, `compare` and `gaps` read an evaluation's
row through this module without loading the evaluation driver (`evaluate.run`, which deploys trained policies).
`evaluate.run` and `evaluate.until_decided` write the rows and re-export these readers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from roboloop import rows, schema
from roboloop.errors import RoboloopError
from roboloop.workspace import WRITER_EVAL

__all__ = [
    "DECISION_COLUMNS",
    "EvaluateError",
    "attach_decisions",
    "eval_row",
    "evals_dataset_of",
    "latest_eval_ids",
    "list_evals",
    "sequential_between",
    "sequential_of",
    "sequential_rows",
]


class EvaluateError(RoboloopError, ValueError):
    """An evaluation that cannot run as asked; the message says what to change."""


def eval_row(workspace, eval_id: str) -> dict[str, Any] | None:
    """The evaluation row of `eval_id` (from the rows on disk), or None."""
    return rows.read_row(workspace, schema.EVALS_TABLE, eval_id)


def list_evals(workspace, dataset: str | None = None) -> list[dict[str, Any]]:
    """Every evaluation row (of one demo dataset, if given), oldest first (in creation order: `rows.creation_order`), with its status as it is now:
    a row stored `running` whose writer process is gone (its lifetime lock is free) says `schema.STATUS_DEAD`."""
    out = []
    for r in rows.read_rows(workspace, schema.EVALS_TABLE):
        if dataset is not None and r.get("dataset") != dataset:
            continue
        status = workspace.live_status(WRITER_EVAL, r[rows.KEY_FIELD], r.get("status"))
        out.append(r if status == r.get("status") else {**r, "status": status})
    return sorted(out, key=rows.creation_order)


def latest_eval_ids(workspace, n: int = 2) -> list[str]:
    """Ids of the `n` most recent evaluations (oldest first), from the evals table."""
    return [str(r.get("eval_id") or r[rows.KEY_FIELD]) for r in list_evals(workspace)[-n:]]


def evals_dataset_of(workspace, eval_id: str) -> str:
    """The evaluation dataset (`<dataset>_evals`) evaluation `eval_id` wrote its rollouts to."""
    row = eval_row(workspace, eval_id)
    if row is None:
        raise EvaluateError(f"no evaluation {eval_id!r} in {workspace.root}; list them with `roboloop evals`")
    return row["evals_dataset"]


# --- sequential decisions --------------------------------------------------------------------------

def sequential_rows(row: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Per cell of an evals row's sequential result: cell, decision, rollouts (pairs used), stop_round, estimate,
    ci_low, ci_high, fixed_n, stopped; [] when the evaluation was not sequential."""
    seq = (row or {}).get(schema.EVAL_SEQUENTIAL)
    if not seq:
        return []
    out = []
    for c in seq.get("cells", []):
        out.append({
            "cell": c["cell"], "decision": c["decision"], "rollouts": c["n"], "decided_at": c.get("decided_at"),
            "stop_round": c.get("stop_round"), "stopped": c.get("stopped"), "estimate": c.get("estimate"),
            "ci_low": c.get("ci_low"), "ci_high": c.get("ci_high"), "fixed_n": seq.get("fixed_n"),
            "metric": seq.get("metric"), "against": seq.get("against"),
        })
    return out


def sequential_of(workspace, eval_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Eval id -> its per-cell :func:`sequential_rows`, for the given evaluations that have them."""
    out = {}
    for e in eval_ids:
        r = sequential_rows(eval_row(workspace, e))
        if r:
            out[e] = r
    return out


def sequential_between(workspace, eval_a: str, eval_b: str) -> dict[str, Any] | None:
    """The sequential result of B against A (or of A against B, sign as stored), if one exists."""
    for challenger, baseline in ((eval_b, eval_a), (eval_a, eval_b)):
        row = eval_row(workspace, challenger) or {}
        seq = row.get(schema.EVAL_SEQUENTIAL)
        if seq and row.get("against") == baseline:
            return {"eval_id": challenger, "against": baseline, "rows": sequential_rows(row), "overall": seq.get("overall") or {},
                    "metric": seq.get("metric"), "alpha": (seq.get("config") or {}).get("alpha")}
    return None


DECISION_COLUMNS = ("seq_decision", "seq_rollouts", "seq_stop_round")
"""Columns :func:`attach_decisions` adds to result rows."""


def attach_decisions(results: Sequence[dict[str, Any]], seq_rows: Sequence[Mapping[str, Any]], *, key: str,
                     overall: Mapping[str, Any] | None = None) -> None:
    """Add each cell's sequential decision (:data:`DECISION_COLUMNS`) to the result rows whose `key` names that cell;
    with `overall`, the row whose `key` is ``"overall"`` gets the overall decision, all pairs and the last stop round."""
    by_cell = {r["cell"]: r for r in seq_rows}
    for r in results:
        if overall is not None and r.get(key) == "overall":
            r.update(seq_decision=overall.get("decision"), seq_rollouts=sum(x["rollouts"] for x in seq_rows),
                     seq_stop_round=max((x["stop_round"] or 0) for x in seq_rows) or None)
            continue
        s = by_cell.get(r.get(key))
        if s is not None:
            r.update(seq_decision=s["decision"], seq_rollouts=s["rollouts"], seq_stop_round=s["stop_round"])
