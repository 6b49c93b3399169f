"""Analyze: success by any condition, failure lists: pure functions over a rollout table, and its loaders.

A *rollout table* is a ``pyarrow.Table`` or a list of dict rows with the friendly
property columns of ``<dataset>_evals`` (``episode.cell``, ``episode.seed``,
``scene.region``, ``outcome.success``, ``outcome.stage``, ...), as returned by
:func:`rollout_table` (catalog) or :func:`indexed_rollout_table` (the rollout index, no
catalog restore). Every function here is pure except those two loaders.

Statistics (all 95% by default; the intervals and tests are those of :mod:`roboloop.stats`):

* :func:`success_by`: success rates with the Wilson score interval of k successes in n.
* :func:`roboloop.analyze.compare.compare` (its own module, which
  `roboloop success` does not need): per cell and overall, B minus A, paired where seeds are shared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from roboloop import schema
from roboloop.catalog.client import UnknownDatasetError
from roboloop.catalog.index import BASE_GROUPS, KEY, PAIR_COLUMNS, group_codes, load_table, unique_rollouts
from roboloop.catalog.links import open_command
from roboloop.envs import failure_words
from roboloop.predicate import (
    Parser,
    PredicateError,
    UnknownColumnError,
    columns_of,
    given_where,
    resolver,
)
from roboloop.stats.intervals import wilson

__all__ = [
    "CELL",
    "SEED",
    "SMALL_N",
    "SOURCE",
    "STAGE",
    "SUCCESS",
    "LazyColumns",
    "columns_of_rows",
    "failures",
    "indexed_rollout_table",
    "load_rollouts",
    "outcome_note",
    "hashable",
    "n_rows",
    "need_columns",
    "outcome_sources",
    "rollout_table",
    "sort_key",
    "success_by",
]

SUCCESS = f"{schema.OUTCOME}.{schema.OUTCOME_SUCCESS}"
STAGE = f"{schema.OUTCOME}.{schema.OUTCOME_STAGE}"
SOURCE = f"{schema.OUTCOME}.{schema.OUTCOME_SOURCE}"
"""`outcome.source`: "label" where a person judged the outcome (`roboloop label`); absent where the simulator did."""
CELL = f"{schema.EPISODE}.{schema.EPISODE_CELL}"
SEED = f"{schema.EPISODE}.{schema.EPISODE_SEED}"
EVAL_ID = f"{schema.EPISODE}.{schema.EPISODE_EVAL_ID}"
SMALL_N = 10
"""Groups with fewer rollouts are marked `small` (their interval is wide; read it, not the rate)."""

# --- table access ------------------------------------------------------------------------------

class LazyColumns(dict):
    """Column name -> values, converted from a pyarrow Table only when first asked for."""

    def __init__(self, table) -> None:
        super().__init__()
        self._table = table
        self._names = list(table.column_names)

    @property
    def table(self):
        """The pyarrow Table the columns come from."""
        return self._table

    def __contains__(self, name) -> bool:
        return name in self._names

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __bool__(self) -> bool:
        return bool(self._names)

    def keys(self):
        return list(self._names)

    def values(self):
        return (self[n] for n in self._names)

    def get(self, name, default=None):
        return self[name] if name in self._names else default

    def __missing__(self, name):
        if name not in self._names:
            raise KeyError(name)
        values = self._table.column(name).to_pylist()
        self[name] = values
        return values


def columns_of_rows(rows) -> Mapping[str, list]:
    """Column name -> values for a pyarrow Table (converted lazily, per column) or a list of dict rows."""
    if hasattr(rows, "column_names") and hasattr(rows, "column"):
        return LazyColumns(rows)
    rows = list(rows)
    names: dict[str, None] = {}
    for r in rows:
        for k in r:
            names.setdefault(k, None)
    return {k: [r.get(k) for r in rows] for k in names}


def need_columns(cols: Mapping[str, list], names: Iterable[str]) -> None:
    """`UnknownColumnError` (listing the columns there are) for the first of `names` not in `cols`."""
    for name in names:
        if name not in cols:
            raise UnknownColumnError(name, list(cols))


def n_rows(cols: Mapping[str, list]) -> int:
    """How many rows `cols` (:func:`columns_of_rows`) holds."""
    if isinstance(cols, LazyColumns):
        return cols._table.num_rows
    return len(next(iter(cols.values()))) if cols else 0


def hashable(v: Any) -> Any:
    """`v` usable as a group key (lists and dicts as tuples)."""
    if isinstance(v, list):
        return tuple(hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, hashable(x)) for k, x in v.items()))
    return v


def sort_key(values: tuple) -> tuple:
    """A key sorting tuples of mixed values (None last, then by type name, then by value)."""
    return tuple((v is None, type(v).__name__, v if v is not None else 0) for v in values)


# --- success by --------------------------------------------------------------------------------

def success_by(rows, by: Sequence[str], *, confidence: float = 0.95, small_n: int = SMALL_N) -> list[dict[str, Any]]:
    """Success grouped by any columns: one dict per group, sorted by the group's values.

    Each has the `by` values and `n`, `successes`, `rate`, `ci_low`, `ci_high` (Wilson),
    `mean_stage` (mean furthest stage index, 0..4; None without `outcome.stage`),
    `small` (n < small_n), `labelled` (outcomes among the n that a person labelled,
    `roboloop label`) and `unlabelled` (rows without `outcome.success`: counted here, never in
    n nor as failures; a group of only such rows has n = 0 and no rate). `by = []` gives one
    overall group.
    """
    by = list(by)
    cols = columns_of_rows(rows)
    if not cols:
        return []
    need_columns(cols, [*by, SUCCESS])
    if isinstance(cols, LazyColumns):
        fast = _success_by_arrow(cols.table, by, confidence, small_n)
        if fast is not None:
            return fast
    success = cols[SUCCESS]
    stage = cols.get(STAGE)
    source = cols.get(SOURCE)
    keys = [cols[b] for b in by]
    groups: dict[tuple, list] = {}
    originals: dict[tuple, tuple] = {}
    for i in range(len(success)):
        s = success[i]
        raw = tuple(k[i] for k in keys)
        h = tuple(hashable(v) for v in raw)
        g = groups.get(h)
        if g is None:
            g = groups[h] = [0, 0, 0.0, 0, 0, 0]  # n, successes, stage sum, stage count, labelled, unlabelled
            originals[h] = raw
        if s is None:
            g[5] += 1
            continue
        g[0] += 1
        g[1] += bool(s)
        g[4] += source is not None and source[i] == schema.OUTCOME_SOURCE_LABEL
        if stage is not None and stage[i] is not None:
            g[2] += stage[i]
            g[3] += 1
    out = []
    for h in sorted(groups, key=sort_key):
        n, k, stage_sum, stage_n, labelled, unlabelled = groups[h]
        row = dict(zip(by, originals[h]))
        row.update(_group_stats(n, k, stage_sum, stage_n, confidence, small_n), labelled=labelled, unlabelled=unlabelled)
        out.append(row)
    return out


def _group_stats(n: int, k: int, stage_sum: float, stage_n: int, confidence: float, small_n: int) -> dict[str, Any]:
    low, high = wilson(k, n, confidence) if n else (None, None)
    return dict(n=n, successes=k, rate=k / n if n else None, ci_low=low, ci_high=high,
                mean_stage=(stage_sum / stage_n) if stage_n else None, small=n < small_n)


def _success_by_arrow(table, by: list[str], confidence: float, small_n: int) -> list[dict[str, Any]] | None:
    """success_by with Arrow's hash kernels and numpy (None when a key column is nested: the Python path handles it)."""
    if any(pa.types.is_nested(table.schema.field(b).type) for b in by):
        return None
    t = table
    has_stage = STAGE in t.column_names
    cols = {b: t.column(b) for b in by}
    cols["_ok"] = pc.cast(t.column(SUCCESS), pa.int64())
    cols["_stage"] = pc.cast(t.column(STAGE), pa.float64()) if has_stage else pa.nulls(t.num_rows, pa.float64())
    if SOURCE in t.column_names:  # a person's label (only counted where there is an outcome)
        labelled = pc.and_(pc.equal(t.column(SOURCE), schema.OUTCOME_SOURCE_LABEL), pc.is_valid(t.column(SUCCESS)))
        cols["_label"] = pc.cast(pc.fill_null(labelled, False), pa.int64())
    else:
        cols["_label"] = pa.array(np.zeros(t.num_rows, np.int64))
    # per group (`group_codes`: Arrow's hash kernels, without the Acero engine `Table.group_by` loads): outcomes (count,
    # sum), rows, stages (count, sum), labels; sums of integers (stages are whole numbers) are exact in any order
    if by:
        _, first, group = np.unique(group_codes([cols[b] for b in by]), return_index=True, return_inverse=True)
    else:  # one overall group, even of no rows
        first, group = np.zeros(1, np.int64), np.zeros(t.num_rows, np.int64)

    def per_group(arr, *, valid: bool = False) -> list:
        values = pc.is_valid(arr) if valid else pc.fill_null(arr, 0)
        return np.bincount(group, weights=values.to_numpy(zero_copy_only=False).astype(np.float64), minlength=len(first)).tolist()

    ok_n, ok_sum = per_group(cols["_ok"], valid=True), per_group(cols["_ok"])
    stage_n, stage_sum = per_group(cols["_stage"], valid=True), per_group(cols["_stage"])
    rows_n, label_sum = np.bincount(group, minlength=len(first)).tolist(), per_group(cols["_label"])
    keys = {b: t.column(b).take(pa.array(first)).to_pylist() for b in by}
    out = []
    for g in range(len(first)):
        n, k = int(ok_n[g]), int(ok_sum[g])
        row = {b: keys[b][g] for b in by}
        row.update(_group_stats(n, k, stage_sum[g], int(stage_n[g]), confidence, small_n),
                   labelled=int(label_sum[g]), unlabelled=rows_n[g] - n)
        out.append(row)
    return sorted(out, key=lambda r: sort_key(tuple(r[b] for b in by)))


def outcome_sources(rows) -> dict[str, int]:
    """How the outcomes of a rollout table were judged: `n` rows, `labelled` (a person's label, `roboloop label`,
    overriding the simulator's judgement), `unlabelled` (no `outcome.success`: left out of every rate)."""
    cols = columns_of_rows(rows)
    n = n_rows(cols)
    if not cols or SUCCESS not in cols:
        return {"n": n, "labelled": 0, "unlabelled": n}
    success, source = cols[SUCCESS], cols.get(SOURCE)
    unlabelled = sum(s is None for s in success)
    labelled = 0 if source is None else sum(s is not None and src == schema.OUTCOME_SOURCE_LABEL
                                             for s, src in zip(success, source))
    return {"n": n, "labelled": labelled, "unlabelled": unlabelled}


def outcome_note(counts: Mapping[str, int], *, what: str = "rollouts") -> str | None:
    """A footnote for a table whose outcomes include labels or unlabelled rows (None when all are the simulator's)."""
    parts = []
    if counts.get("labelled"):
        parts.append(f"{counts['labelled']} outcome(s) are a person's label (`roboloop label`), used instead of the "
                     "simulator's judgement")
    if counts.get("unlabelled"):
        parts.append(f"{counts['unlabelled']} {what} are {schema.OUTCOME_UNLABELLED} (no outcome): counted apart, "
                     "in no rate and not as failures; label them with `roboloop label`")
    return "; ".join(parts) or None


# --- failures ----------------------------------------------------------------------------------

FAILURE_COLUMNS = (
    "segment_id",
    EVAL_ID,
    f"{schema.EPISODE}.{schema.EPISODE_POLICY}",
    CELL,
    SEED,
    f"{schema.SCENE}.region",
    f"{schema.SCENE}.{schema.SCENE_YAW}",
    f"{schema.SCENE}.lighting",
    f"{schema.SCENE}.table",
    f"{schema.SCENE}.distractors",
    f"{schema.SCENE}.{schema.SCENE_CUBE_X}",
    f"{schema.SCENE}.{schema.SCENE_CUBE_Y}",
    f"{schema.SCENE}.{schema.SCENE_CUBE_YAW_DEG}",
    f"{schema.OUTCOME}.{schema.OUTCOME_STAGE_NAME}",
    f"{schema.OUTCOME}.{schema.OUTCOME_FAILURE_REASON}",
    f"{schema.OUTCOME}.{schema.OUTCOME_FAILURE_STEP}",
    f"{schema.OUTCOME}.{schema.OUTCOME_FAILURE_TIME_S}",
)


def failures(
    rows,
    *,
    dataset: str | None = None,
    url_for: Callable[[str, float], str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The failed rollouts: conditions, furthest stage, failure reason and time, and how to look.

    Each dict has the FAILURE_COLUMNS that the table holds, `failure_kind` (the kind in words,
    `envs.failure_words`: every task's kinds), `at_s` (the viewer's time cursor: the failure moment; 0 only for
    outcomes judged by the first classifier without a moment: re-judge them with
    `roboloop reoutcome`), `open` (the
    `roboloop open` command, valid after restarts) and, with `url_for(segment_id, at_s)`,
    `url` (a live catalog URL); where the table has `outcome.source`, `judged` ("simulator",
    "recorded" or "label by NAME"). Rollouts without an outcome (unlabelled) are not failures and are not
    listed (:func:`outcome_sources` counts them). Sorted by eval id, cell, seed.
    """
    cols = columns_of_rows(rows)
    if not cols:
        return []
    need_columns(cols, ["segment_id", SUCCESS])
    present = [c for c in FAILURE_COLUMNS if c in cols]
    reason_col = f"{schema.OUTCOME}.{schema.OUTCOME_FAILURE_REASON}"
    time_col = f"{schema.OUTCOME}.{schema.OUTCOME_FAILURE_TIME_S}"
    source = cols.get(SOURCE)
    by_col = cols.get(f"{schema.OUTCOME}.{schema.OUTCOME_LABELLED_BY}")
    free_col = cols.get(f"{schema.OUTCOME}.{schema.OUTCOME_FREE_KIND}")
    words = failure_words()
    out = []
    for i, s in enumerate(cols[SUCCESS]):
        if s is None or s:
            continue
        row = {c: cols[c][i] for c in present}
        reason = row.get(reason_col)
        row["failure_kind"] = words.get(reason, reason)
        t = row.get(time_col)
        row["at_s"] = float(t) if t is not None and t >= 0 else 0.0
        if source is not None:
            row["judged"] = _judged_text(source[i], by_col[i] if by_col else None, free_col[i] if free_col else None)
        out.append(row)
    out.sort(key=lambda r: sort_key((r.get(EVAL_ID), r.get(CELL), r.get(SEED), r["segment_id"])))
    if limit is not None:
        out = out[:limit]
    for row in out:
        row["open"] = open_command(row["segment_id"], row["at_s"], dataset)
        if url_for is not None:
            row["url"] = url_for(row["segment_id"], row["at_s"])
    return out


def _judged_text(source: Any, by: Any, free: Any) -> str:
    """Who judged a failure: "simulator", "recorded" (set by the recording loop, `record.episode`), or "label by NAME"
    (", free-text kind" when the kind is not the task's)."""
    if source == schema.OUTCOME_SOURCE_RECORDED:
        return "recorded"
    if source != schema.OUTCOME_SOURCE_LABEL:
        return "simulator"
    return f"label by {by or '?'}" + (", free-text kind" if free else "")


def failure_modes(fails: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Failure modes: the failures of :func:`failures` counted per (evaluation, cell, kind), one representative each.

    Each mode has `eval_id`, `cell`, `kind` (`outcome.failure_reason`), `kind_words`, `count`,
    `cell_failures` (failures in that cell), `share` (count / cell_failures) and the fields of
    its representative failure (`segment_id`, `episode.seed`, `at_s`, `open`, and `url`,
    `nearest_train_id`, `nearest_distance` when the failures carry them): the failure whose
    moment is the median of the mode's moments (the lower median; ties by seed, then segment
    id), a typical case rather than an extreme one. Sorted by eval id, cell, then largest
    mode first.
    """
    reason_col = f"{schema.OUTCOME}.{schema.OUTCOME_FAILURE_REASON}"
    words = failure_words()
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    per_cell: dict[tuple, int] = {}
    for f in fails:
        key = (f.get(EVAL_ID), f.get(CELL))
        groups.setdefault((*key, f.get(reason_col)), []).append(f)
        per_cell[key] = per_cell.get(key, 0) + 1
    out = []
    for (eval_id, cell, kind), members in groups.items():
        ordered = sorted(members, key=lambda r: sort_key((r.get("at_s", 0.0), r.get(SEED), r.get("segment_id"))))
        rep = ordered[(len(ordered) - 1) // 2]
        mode = {"eval_id": eval_id, "cell": cell, "kind": kind, "kind_words": words.get(kind, kind),
                "count": len(members), "cell_failures": per_cell[(eval_id, cell)],
                "share": len(members) / per_cell[(eval_id, cell)]}
        for name in ("segment_id", SEED, "at_s", "open", "url", "nearest_train_id", "nearest_distance",
                     f"{schema.SCENE}.{schema.SCENE_CUBE_YAW_DEG}"):
            if name in rep:
                mode[name] = rep[name]
        out.append(mode)
    out.sort(key=lambda m: sort_key((m["eval_id"], m["cell"], -m["count"], m["kind"])))
    return out


def representative_failure(fails: Sequence[Mapping[str, Any]], cell: str | None = None) -> dict[str, Any] | None:
    """The representative of the largest failure mode of `cell` (of all failures when None or absent).

    Ties between modes go to the kind that comes first alphabetically (deterministic). Returns the
    representative failure row (from `fails`) plus `mode_count`, `mode_share`, `cell_failures`.
    """
    pick = [f for f in fails if cell is not None and f.get(CELL) == cell] or list(fails)
    modes = failure_modes([{**f, EVAL_ID: None, CELL: None} for f in pick])
    if not modes:
        return None
    top = modes[0]
    rep = next(f for f in pick if f["segment_id"] == top["segment_id"])
    return {**rep, "mode_count": top["count"], "mode_share": top["share"], "cell_failures": top["cell_failures"]}


# --- loading (the only functions that read) ------------------------------------------------------

def _filter(table, evals_dataset: str, eval_ids: Sequence[str] | None, where: str | None):
    """Rows of `eval_ids` matching `where`; an (eval id, cell, index) pair recorded twice counts once
    (`unique_rollouts`: after picking the evaluations, since a repeated pair repeats within one evaluation)."""
    where = given_where(where)

    if eval_ids:
        if EVAL_ID not in table.column_names:
            raise PredicateError(f"{evals_dataset} has no {EVAL_ID} column: its rollouts were not made by `roboloop eval` "
                                 f"(e.g. recorded with record.episode(kind='rollout')), so they have no eval id; leave out "
                                 f"--eval, or pick them with --where (e.g. \"episode.policy = 'mine'\")")
        known = set(pc.unique(table.column(EVAL_ID)).to_pylist())
        unknown = [e for e in eval_ids if e not in known]
        if unknown:
            raise PredicateError(f"no rollouts of evaluation(s) {', '.join(unknown)} in {evals_dataset}; "
                                 f"evaluations there: {', '.join(sorted(str(k) for k in known if k)) or '(none)'}")
        table = table.filter(pc.is_in(table.column(EVAL_ID), value_set=pa.array(list(eval_ids))))
    table = unique_rollouts(table)
    if where is not None:
        # DataFusion (and pandas, which it loads: ~0.3-1 s) only for a `--where`: `roboloop success` and `compare` without
        # one start without it, as the catalog client starts without rerun and DataFusion until it queries
        from roboloop.predicate.select import select_ids

        # hand DataFusion only the columns the predicate reads (registering 40 columns x 100k rows costs seconds)
        resolve = resolver(table.column_names, evals_dataset)
        names = {resolve(n) for n in columns_of(Parser(where, lambda n: n).parse())} - {"segment_id"}
        ids = select_ids(table.select(["segment_id", *sorted(names)]), where, include_flagged=True, dataset=evals_dataset)
        table = table.filter(pc.is_in(table.column("segment_id"), value_set=pa.array(ids, type=pa.string())))
    return table


def rollout_table(catalog, evals_dataset: str, eval_ids: Sequence[str] | None = None, where: str | None = None, *,
                  segment_table: Callable[[str], Any] | None = None):
    """The friendly segment table of `evals_dataset` (every layer), limited to `eval_ids` and `where`.

    `segment_table(dataset)` replaces `catalog.segment_table` (a caller reading several evaluations caches it).
    """
    return _filter((segment_table or catalog.segment_table)(evals_dataset), evals_dataset, eval_ids, where)


def indexed_rollout_table(workspace, evals_dataset: str, eval_ids: Sequence[str] | None = None,
                          where: str | None = None, *, catalog=None, columns: Sequence[str] | None = None):
    """Like :func:`rollout_table` from the rollout index (base properties only, no catalog restore).

    `catalog` (a Catalog or a function returning one) is used only to rebuild stale rows. `columns`: only these
    (and the segment id and the (eval id, cell, index) pair) when there is no `where`: picking 50,000 rows of 40 columns
    costs more than a comparison of them.
    """
    if evals_dataset not in workspace.datasets():
        raise UnknownDatasetError(evals_dataset, workspace.datasets())
    table = load_table(workspace, evals_dataset, catalog)
    if table.num_rows == 0 and SUCCESS not in table.column_names:
        table = table.append_column(SUCCESS, pa.array([], pa.bool_()))
    if columns is not None and given_where(where) is None:
        keep = {*columns, KEY, *PAIR_COLUMNS}
        table = table.select([c for c in table.column_names if c in keep])
    return _filter(table, evals_dataset, eval_ids, where)


def load_rollouts(
    workspace,
    evals_dataset: str,
    eval_ids: Sequence[str] | None = None,
    where: str | None = None,
    *,
    needed: Sequence[str] = (),
    catalog_factory: Callable[[], Any] | None = None,
    columns: Sequence[str] | None = None,
):
    """The rollout table, from the index when it can answer, else from the catalog.

    The index answers when every column in `needed` (and the `where` predicate's columns)
    is a base property (episode./scene./outcome./segment_id). `catalog_factory()` starts
    or attaches a catalog; it is called only when needed (stale index rows, or columns of
    derived layers such as `signals.*`), and the caller closes what it returns. `columns`: the columns the caller reads,
    when it reads few (the index route then carries no others, :func:`indexed_rollout_table`).
    """
    names = set(needed)
    where = given_where(where)
    if where is not None:
        names |= columns_of(Parser(where, lambda n: n).parse())
    base_only = all(n == "segment_id" or n.partition(".")[0] in BASE_GROUPS for n in names)
    if base_only and evals_dataset in workspace.datasets():
        return indexed_rollout_table(workspace, evals_dataset, eval_ids, where, catalog=catalog_factory, columns=columns)
    if catalog_factory is None:
        raise ValueError("columns of derived layers need the catalog: pass catalog_factory")
    return rollout_table(catalog_factory(), evals_dataset, eval_ids, where)
