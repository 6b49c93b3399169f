"""Analyze: success by any condition, fair comparisons, failure lists: pure functions over a rollout table.

A *rollout table* is a ``pyarrow.Table`` or a list of dict rows with the friendly
property columns of ``<dataset>_evals`` (``episode.cell``, ``episode.seed``,
``scene.region``, ``outcome.success``, ``outcome.stage``, ...), as returned by
:func:`rollout_table` (catalog) or :func:`indexed_rollout_table` (the rollout index, no
catalog restore). Every function here is pure except those two loaders.

Statistics (all 95% by default; the intervals and tests are those of :mod:`roboloop.stats`):

* :func:`success_by`: success rates with the Wilson score interval of k successes in n.
* :func:`compare`: per cell and overall, B minus A. Where the two evaluations share
  (cell, seed) pairs, the comparison is **paired**: exact McNemar test (a two-sided
  binomial test on the discordant pairs, ``scipy.stats.binomtest``) and Newcombe's
  square-and-add score interval for a paired difference with the continuity-corrected
  correlation (Newcombe 1998, Stat Med 17:2635; the "Newcombe square-and-add" interval of
  Fagerland, Lydersen & Laake 2014, Stat Med 33:2850, among the intervals they recommend).
  Where seeds differ: Fisher's exact test and Newcombe's hybrid score interval for
  independent proportions (Newcombe 1998, Stat Med 17:873, method 10). Cell p-values
  are adjusted with Holm's step-down method; the overall row is one test, unadjusted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from roboloop import schema
from roboloop.catalog.client import UnknownDatasetError
from roboloop.catalog.index import BASE_GROUPS, load_table, unique_rollouts
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
from roboloop.stats.exact import fisher_exact, mcnemar_exact
from roboloop.stats.intervals import newcombe_diff, newcombe_paired_diff, wilson
from roboloop.stats.multiplicity import holm

__all__ = [
    "CELL",
    "SEED",
    "SMALL_N",
    "SOURCE",
    "STAGE",
    "SUCCESS",
    "columns_of_rows",
    "compare",
    "failures",
    "indexed_rollout_table",
    "load_rollouts",
    "outcome_note",
    "outcome_sources",
    "rollout_table",
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

VERDICT_IMPROVED = "improved"
VERDICT_REGRESSED = "regressed"
VERDICT_NO_CHANGE = "no change"
VERDICT_TOO_FEW = "too few episodes"


# --- table access ------------------------------------------------------------------------------

class _Columns(dict):
    """Column name -> values, converted from a pyarrow Table only when first asked for."""

    def __init__(self, table) -> None:
        super().__init__()
        self._table = table
        self._names = list(table.column_names)

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
        return _Columns(rows)
    rows = list(rows)
    names: dict[str, None] = {}
    for r in rows:
        for k in r:
            names.setdefault(k, None)
    return {k: [r.get(k) for r in rows] for k in names}


def _need(cols: Mapping[str, list], names: Iterable[str]) -> None:
    for name in names:
        if name not in cols:
            raise UnknownColumnError(name, list(cols))


def _n_rows(cols: Mapping[str, list]) -> int:
    if isinstance(cols, _Columns):
        return cols._table.num_rows
    return len(next(iter(cols.values()))) if cols else 0


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def _sort_key(values: tuple) -> tuple:
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
    _need(cols, [*by, SUCCESS])
    if isinstance(cols, _Columns):
        fast = _success_by_arrow(cols._table, by, confidence, small_n)
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
        h = tuple(_hashable(v) for v in raw)
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
    for h in sorted(groups, key=_sort_key):
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
    """success_by with Arrow's hash aggregation (None when a key column is nested: the Python path handles it)."""
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
    agg = pa.table(cols).group_by(by, use_threads=False).aggregate(
        [("_ok", "sum"), ("_ok", "count"), ([], "count_all"), ("_stage", "sum"), ("_stage", "count"), ("_label", "sum")]
    )
    out = []
    for r in agg.to_pylist():
        n, k = r["_ok_count"], int(r["_ok_sum"] or 0)
        row = {b: r[b] for b in by}
        row.update(_group_stats(n, k, r["_stage_sum"] or 0.0, r["_stage_count"], confidence, small_n),
                   labelled=int(r["_label_sum"] or 0), unlabelled=r["count_all"] - n)
        out.append(row)
    return sorted(out, key=lambda r: _sort_key(tuple(r[b] for b in by)))


def outcome_sources(rows) -> dict[str, int]:
    """How the outcomes of a rollout table were judged: `n` rows, `labelled` (a person's label, `roboloop label`,
    overriding the simulator's judgement), `unlabelled` (no `outcome.success`: left out of every rate)."""
    cols = columns_of_rows(rows)
    n = _n_rows(cols)
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


# --- compare -----------------------------------------------------------------------------------

def _outcomes(cols: Mapping[str, list], by: Sequence[str]) -> dict[tuple, dict[tuple, bool]]:
    """group -> {(cell, seed): success} (first rollout wins for a repeated pair)."""
    success, cell, seed = cols[SUCCESS], cols.get(CELL), cols.get(SEED)
    out: dict[tuple, dict[tuple, bool]] = {}
    keys = [cols[b] for b in by]
    for i in range(len(success)):
        if success[i] is None:
            continue
        g = tuple(_hashable(k[i]) for k in keys)
        pair = (cell[i] if cell else None, seed[i] if seed else ("row", i))
        out.setdefault(g, {}).setdefault(pair, bool(success[i]))
    return out


def _judged_counts(cols: Mapping[str, list], by: Sequence[str]) -> dict[tuple, list[int]]:
    """group -> [labelled outcomes, unlabelled rows] (only groups that have either)."""
    if not cols:
        return {}
    success, source = cols[SUCCESS], cols.get(SOURCE)
    keys = [cols[b] for b in by]
    out: dict[tuple, list[int]] = {}
    for i, s in enumerate(success):
        labelled = s is not None and source is not None and source[i] == schema.OUTCOME_SOURCE_LABEL
        if s is None or labelled:
            c = out.setdefault(tuple(_hashable(k[i]) for k in keys), [0, 0])
            c[0 if labelled else 1] += 1
    return out


def _pair_counts(a: Mapping[tuple, bool], b: Mapping[tuple, bool]) -> tuple[int, int, int, int, int, int, int, int]:
    """(n_a, successes_a, n_b, successes_b, shared pairs, both succeeded, only A, only B) of two pair -> success maps."""
    shared = a.keys() & b.keys()
    return (len(a), sum(a.values()), len(b), sum(b.values()), len(shared), sum(a[p] and b[p] for p in shared),
            sum(a[p] and not b[p] for p in shared), sum(b[p] and not a[p] for p in shared))


def _compare_group(counts: Sequence[int], *, min_n: int, confidence: float) -> dict[str, Any]:
    na, ka, nb, kb, shared, both, only_a, only_b = (int(c) for c in counts)
    row: dict[str, Any] = {
        "n_a": na, "successes_a": ka, "rate_a": ka / na if na else None,
        "n_b": nb, "successes_b": kb, "rate_b": kb / nb if nb else None,
        "n_pairs": shared,
    }
    if shared and shared * 2 >= min(na, nb):
        neither = shared - both - only_a - only_b
        diff, low, high = newcombe_paired_diff(both, only_b, only_a, neither, confidence)
        row.update(test="mcnemar", n=shared, diff=diff, diff_low=low, diff_high=high,
                   discordant_a=only_a, discordant_b=only_b, p=mcnemar_exact(only_b, only_a))
    else:
        diff, low, high = newcombe_diff(kb, nb, ka, na, confidence)
        row.update(test="fisher", n=min(na, nb), diff=diff, diff_low=low, diff_high=high,
                   discordant_a=None, discordant_b=None, p=fisher_exact(kb, nb, ka, na) if na and nb else None)
    row["too_few"] = row["n"] < min_n
    return row


def _verdict(row: Mapping[str, Any], p: float | None, alpha: float) -> str:
    if row["too_few"] or p is None:
        return VERDICT_TOO_FEW
    if p < alpha:
        return VERDICT_IMPROVED if row["diff"] > 0 else VERDICT_REGRESSED
    return VERDICT_NO_CHANGE


_Counted = tuple[list[tuple], dict[tuple, tuple], dict[tuple, tuple], tuple, tuple[dict, dict]]
"""(sorted groups, group -> its `by` values, group -> pair counts, overall pair counts, (judged A, judged B))."""


def _compare_counts(ca: Mapping[str, list], cb: Mapping[str, list], by: list[str]) -> _Counted:
    """What :func:`compare` counts, row by row (any table, any key type)."""
    ga = _outcomes(ca, by) if ca else {}
    gb = _outcomes(cb, by) if cb else {}
    originals: dict[tuple, tuple] = {}
    for cols in (ca, cb):
        if not cols:
            continue
        keys = [cols[b] for b in by]
        for i in range(_n_rows(cols)):
            raw = tuple(k[i] for k in keys)
            originals.setdefault(tuple(_hashable(v) for v in raw), raw)
    groups = sorted(ga.keys() | gb.keys(), key=_sort_key)
    per_group = {g: _pair_counts(ga.get(g, {}), gb.get(g, {})) for g in groups}
    all_a = {p: s for g in ga.values() for p, s in g.items()}
    all_b = {p: s for g in gb.values() for p, s in g.items()}
    return groups, originals, per_group, _pair_counts(all_a, all_b), (_judged_counts(ca, by), _judged_counts(cb, by))


_PAIR = ("_cell", "_seed")


def _first_outcomes(t, by: list[str]):
    """Arrow: one row per (group, cell, seed) with its first outcome (`_ok`, row order), keys renamed `_k<i>`."""
    t = t.filter(pc.is_valid(t.column(SUCCESS)))
    cols = {f"_k{i}": t.column(b) for i, b in enumerate(by)}
    cols.update(_cell=t.column(CELL), _seed=t.column(SEED), _ok=pc.cast(t.column(SUCCESS), pa.int64()))
    keys = [*(f"_k{i}" for i in range(len(by))), *_PAIR]
    first = pa.table(cols).group_by(keys, use_threads=False).aggregate([("_ok", "first")])
    return first.rename_columns([*keys, "_ok"])


def _side_counts(first, keys: list[str]) -> dict[tuple, tuple[int, int]]:
    agg = first.group_by(keys, use_threads=False).aggregate([("_ok", "count"), ("_ok", "sum")])
    return {tuple(r[k] for k in keys): (r["_ok_count"], r["_ok_sum"]) for r in agg.to_pylist()}


def _shared_counts(fa, fb, keys: list[str], on: list[str]) -> dict[tuple, tuple[int, int, int, int]]:
    """group (`keys`) -> (pairs in both, both succeeded, only A, only B), pairs matched on `on`."""
    j = fa.select([*on, "_ok"]).join(fb.select([*on, "_ok"]).rename_columns([*on, "_ok_b"]), on, join_type="inner",
                                      use_threads=False)
    if not j.num_rows:
        return {}
    a, b = pc.cast(j.column("_ok"), pa.int64()), pc.cast(j.column("_ok_b"), pa.int64())
    flags = {"_both": pc.multiply(a, b), "_only_a": pc.multiply(a, pc.subtract(1, b)), "_only_b": pc.multiply(b, pc.subtract(1, a))}
    t = pa.table({**{k: j.column(k) for k in keys}, **flags, "_n": pa.array(np.ones(j.num_rows, np.int64))})
    agg = t.group_by(keys, use_threads=False).aggregate([(c, "sum") for c in ("_n", *flags)]) if keys else \
        pa.table({f"{c}_sum": [pc.sum(t.column(c)).as_py()] for c in ("_n", *flags)})
    return {tuple(r[k] for k in keys): (r["_n_sum"], r["_both_sum"], r["_only_a_sum"], r["_only_b_sum"]) for r in agg.to_pylist()}


def _judged_arrow(t, by: list[str]) -> dict[tuple, list[int]]:
    ok = t.column(SUCCESS)
    labelled = pc.and_(pc.is_valid(ok), pc.equal(t.column(SOURCE), schema.OUTCOME_SOURCE_LABEL)) if SOURCE in t.column_names \
        else pa.array(np.zeros(t.num_rows, bool))
    cols = {f"_k{i}": t.column(b) for i, b in enumerate(by)}
    cols.update(_lab=pc.cast(pc.fill_null(labelled, False), pa.int64()), _unl=pc.cast(pc.is_null(ok), pa.int64()))
    keys = [f"_k{i}" for i in range(len(by))]
    agg = pa.table(cols).group_by(keys, use_threads=False).aggregate([("_lab", "sum"), ("_unl", "sum")])
    return {tuple(r[k] for k in keys): [r["_lab_sum"], r["_unl_sum"]] for r in agg.to_pylist() if r["_lab_sum"] or r["_unl_sum"]}


def _arrow_comparable(ca, cb, by: list[str]) -> bool:
    """Both sides are Arrow tables whose groups and pairs Arrow can count as the row-by-row path does: scalar,
    non-null keys of one type on both sides, a cell and a seed on every row."""
    if not (isinstance(ca, _Columns) and isinstance(cb, _Columns)):
        return False
    ta, tb = ca._table, cb._table
    for name in (*by, CELL, SEED):
        if name not in ta.column_names or name not in tb.column_names:
            return False
        fa, fb = ta.schema.field(name).type, tb.schema.field(name).type
        if fa != fb or pa.types.is_nested(fa) or ta.column(name).null_count or tb.column(name).null_count:
            return False
    return True


def _compare_counts_arrow(ca, cb, by: list[str]) -> _Counted | None:
    """:func:`_compare_counts` with Arrow's hash aggregation and joins (None when `_arrow_comparable` says no, or when a
    (cell, seed) pair falls in two groups of one side: the row-by-row path then decides which group it counts in)."""
    if not _arrow_comparable(ca, cb, by):
        return None
    ta, tb = ca._table, cb._table
    keys = [f"_k{i}" for i in range(len(by))]
    fa, fb = _first_outcomes(ta, by), _first_outcomes(tb, by)
    for f in (fa, fb):
        if f.select(list(_PAIR)).group_by(list(_PAIR), use_threads=False).aggregate([]).num_rows != f.num_rows:
            return None
    sa, sb = _side_counts(fa, keys), _side_counts(fb, keys)
    shared = _shared_counts(fa, fb, keys, [*keys, *_PAIR])
    groups = sorted(sa.keys() | sb.keys(), key=_sort_key)
    per_group = {g: (*sa.get(g, (0, 0)), *sb.get(g, (0, 0)), *shared.get(g, (0, 0, 0, 0))) for g in groups}
    totals = [sum(c[i] for c in per_group.values()) for i in range(4)]
    overall = (*totals, *_shared_counts(fa, fb, [], list(_PAIR)).get((), (0, 0, 0, 0)))
    return groups, {g: g for g in groups}, per_group, overall, (_judged_arrow(ta, by), _judged_arrow(tb, by))


def compare(
    rows_a,
    rows_b,
    by: Sequence[str] = (CELL,),
    *,
    alpha: float = 0.05,
    min_n: int = SMALL_N,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """B against A per group of `by` (default: the grid cell) and overall.

    One dict per group (sorted), then one with `group` = "overall": the `by` values,
    `group` (readable), `n_a`, `successes_a`, `rate_a`, the same for B, `n_pairs`
    (shared (cell, seed) pairs), `test` ("mcnemar" when paired: at least half of the
    smaller side's rollouts share a (cell, seed); else "fisher"), `n` (pairs, or the
    smaller side), `diff` (B - A: on the pairs when paired), `diff_low`/`diff_high`,
    `discordant_a` (A succeeded, B failed) / `discordant_b`, `p`, `p_holm` (cells
    adjusted together; overall = `p`), `verdict`: improved / regressed / no change /
    too few episodes (n < min_n), and `labelled_a` / `unlabelled_a` (and `_b`): outcomes a
    person labelled, and rollouts without an outcome (in no count above; overall: all of them).
    """
    by = list(by)
    ca, cb = columns_of_rows(rows_a), columns_of_rows(rows_b)
    for cols in (ca, cb):
        if cols:
            _need(cols, [*by, SUCCESS])
    counted = _compare_counts_arrow(ca, cb, by)
    if counted is None:
        counted = _compare_counts(ca, cb, by)
    groups, originals, per_group, overall_counts, judged = counted
    out = []
    for g in groups:
        row = dict(zip(by, originals[g]))
        row["group"] = ",".join(f"{b}={v}" for b, v in zip(by, originals[g])) if len(by) != 1 else str(originals[g][0])
        row.update(_compare_group(per_group[g], min_n=min_n, confidence=confidence))
        for side, counts in zip("ab", judged):
            row[f"labelled_{side}"], row[f"unlabelled_{side}"] = counts.get(g, (0, 0))
        out.append(row)
    for row, p_adj in zip(out, holm([r["p"] for r in out])):
        row["p_holm"] = p_adj
        row["verdict"] = _verdict(row, p_adj, alpha)
    overall: dict[str, Any] = dict.fromkeys(by)
    overall["group"] = "overall"
    overall.update(_compare_group(overall_counts, min_n=min_n, confidence=confidence))
    for side, counts in zip("ab", judged):
        overall[f"labelled_{side}"] = sum(c[0] for c in counts.values())
        overall[f"unlabelled_{side}"] = sum(c[1] for c in counts.values())
    overall["p_holm"] = overall["p"]
    overall["verdict"] = _verdict(overall, overall["p"], alpha)
    out.append(overall)
    return out


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
    _need(cols, ["segment_id", SUCCESS])
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
    out.sort(key=lambda r: _sort_key((r.get(EVAL_ID), r.get(CELL), r.get(SEED), r["segment_id"])))
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
        ordered = sorted(members, key=lambda r: _sort_key((r.get("at_s", 0.0), r.get(SEED), r.get("segment_id"))))
        rep = ordered[(len(ordered) - 1) // 2]
        mode = {"eval_id": eval_id, "cell": cell, "kind": kind, "kind_words": words.get(kind, kind),
                "count": len(members), "cell_failures": per_cell[(eval_id, cell)],
                "share": len(members) / per_cell[(eval_id, cell)]}
        for name in ("segment_id", SEED, "at_s", "open", "url", "nearest_train_id", "nearest_distance",
                     f"{schema.SCENE}.{schema.SCENE_CUBE_YAW_DEG}"):
            if name in rep:
                mode[name] = rep[name]
        out.append(mode)
    out.sort(key=lambda m: _sort_key((m["eval_id"], m["cell"], -m["count"], m["kind"])))
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
    (`unique_rollouts`)."""
    table = unique_rollouts(table)
    where = given_where(where)

    if eval_ids:
        if EVAL_ID not in table.column_names:
            raise PredicateError(f"{evals_dataset} has no {EVAL_ID} column: its rollouts were not made by `roboloop eval` "
                                 f"(e.g. recorded with record.episode(kind='rollout')), so they have no eval id; leave out "
                                 f"--eval, or pick them with --where (e.g. \"episode.policy = 'mine'\")")
        known = set(table.column(EVAL_ID).to_pylist())
        unknown = [e for e in eval_ids if e not in known]
        if unknown:
            raise PredicateError(f"no rollouts of evaluation(s) {', '.join(unknown)} in {evals_dataset}; "
                                 f"evaluations there: {', '.join(sorted(str(k) for k in known if k)) or '(none)'}")
        table = table.filter(pc.is_in(table.column(EVAL_ID), value_set=pa.array(list(eval_ids))))
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
                          where: str | None = None, *, catalog=None):
    """Like :func:`rollout_table` from the rollout index (base properties only, no catalog restore).

    `catalog` (a Catalog or a function returning one) is used only to rebuild stale rows.
    """
    if evals_dataset not in workspace.datasets():
        raise UnknownDatasetError(evals_dataset, workspace.datasets())
    table = load_table(workspace, evals_dataset, catalog)
    if table.num_rows == 0 and SUCCESS not in table.column_names:
        table = table.append_column(SUCCESS, pa.array([], pa.bool_()))
    return _filter(table, evals_dataset, eval_ids, where)


def load_rollouts(
    workspace,
    evals_dataset: str,
    eval_ids: Sequence[str] | None = None,
    where: str | None = None,
    *,
    needed: Sequence[str] = (),
    catalog_factory: Callable[[], Any] | None = None,
):
    """The rollout table, from the index when it can answer, else from the catalog.

    The index answers when every column in `needed` (and the `where` predicate's columns)
    is a base property (episode./scene./outcome./segment_id). `catalog_factory()` starts
    or attaches a catalog; it is called only when needed (stale index rows, or columns of
    derived layers such as `signals.*`), and the caller closes what it returns.
    """
    names = set(needed)
    where = given_where(where)
    if where is not None:
        names |= columns_of(Parser(where, lambda n: n).parse())
    base_only = all(n == "segment_id" or n.partition(".")[0] in BASE_GROUPS for n in names)
    if base_only and evals_dataset in workspace.datasets():
        return indexed_rollout_table(workspace, evals_dataset, eval_ids, where, catalog=catalog_factory)
    if catalog_factory is None:
        raise ValueError("columns of derived layers need the catalog: pass catalog_factory")
    return rollout_table(catalog_factory(), evals_dataset, eval_ids, where)
