"""Analyze: B against A, per cell and overall (`roboloop compare`): a pure function over two rollout tables.

Where the two evaluations share (cell, seed) pairs, the comparison is **paired**: exact McNemar test (a two-sided
binomial test on the discordant pairs: scipy's ``binomtest`` in integer arithmetic, :mod:`roboloop.stats.exact`) and
Newcombe's square-and-add score interval for a paired difference with the continuity-corrected correlation (Newcombe
1998, Stat Med 17:2635; the "Newcombe square-and-add" interval of Fagerland, Lydersen & Laake 2014, Stat Med 33:2850, among the intervals they recommend).
Where seeds differ: Fisher's exact test and Newcombe's hybrid score interval for independent proportions (Newcombe
1998, Stat Med 17:873, method 10). Cell p-values are adjusted with Holm's step-down method; the overall row is one
test, unadjusted.

Its own module: `roboloop success` (:mod:`roboloop.analyze.rollouts`) does not need it. Its exact tests do not import
`scipy.stats` (0.5-2.5 s here, :mod:`roboloop.stats.exact` says why). Rollout tables and their loading:
:mod:`roboloop.analyze.rollouts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from roboloop import schema
from roboloop.analyze.rollouts import (
    CELL,
    SEED,
    SMALL_N,
    SOURCE,
    SUCCESS,
    LazyColumns,
    columns_of_rows,
    hashable,
    n_rows,
    need_columns,
    sort_key,
)
from roboloop.catalog.index import group_codes
from roboloop.stats.exact import fisher_exact, mcnemar_exact
from roboloop.stats.intervals import newcombe_diff, newcombe_paired_diff
from roboloop.stats.multiplicity import holm

__all__ = ["VERDICT_IMPROVED", "VERDICT_NO_CHANGE", "VERDICT_REGRESSED", "VERDICT_TOO_FEW", "compare"]

VERDICT_IMPROVED = "improved"
VERDICT_REGRESSED = "regressed"
VERDICT_NO_CHANGE = "no change"
VERDICT_TOO_FEW = "too few episodes"


# --- compare -----------------------------------------------------------------------------------

def _outcomes(cols: Mapping[str, list], by: Sequence[str]) -> dict[tuple, dict[tuple, bool]]:
    """group -> {(cell, seed): success} (first rollout wins for a repeated pair)."""
    success, cell, seed = cols[SUCCESS], cols.get(CELL), cols.get(SEED)
    out: dict[tuple, dict[tuple, bool]] = {}
    keys = [cols[b] for b in by]
    for i in range(len(success)):
        if success[i] is None:
            continue
        g = tuple(hashable(k[i]) for k in keys)
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
            c = out.setdefault(tuple(hashable(k[i]) for k in keys), [0, 0])
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
        for i in range(n_rows(cols)):
            raw = tuple(k[i] for k in keys)
            originals.setdefault(tuple(hashable(v) for v in raw), raw)
    groups = sorted(ga.keys() | gb.keys(), key=sort_key)
    per_group = {g: _pair_counts(ga.get(g, {}), gb.get(g, {})) for g in groups}
    all_a = {p: s for g in ga.values() for p, s in g.items()}
    all_b = {p: s for g in gb.values() for p, s in g.items()}
    return groups, originals, per_group, _pair_counts(all_a, all_b), (_judged_counts(ca, by), _judged_counts(cb, by))


def _coded(ta, tb, names: list[str]) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """Codes of every row's values of `names` in both tables, one coding (equal exactly where the values are, what a
    join on `names` matches), and each code's values as Python (a tuple per code)."""
    if not names:
        return np.zeros(ta.num_rows, np.int64), np.zeros(tb.num_rows, np.int64), [()]
    cols = [pa.chunked_array(ta.column(n).chunks + tb.column(n).chunks, type=ta.schema.field(n).type) for n in names]
    codes = group_codes(cols)
    first = np.unique(codes, return_index=True)[1]  # codes are dense: code c first appears at row first[c]
    values = list(zip(*(c.take(pa.array(first, pa.int64())).to_pylist() for c in cols)))
    return codes[: ta.num_rows], codes[ta.num_rows :], values


def _first_outcomes(t, group: np.ndarray, pair: np.ndarray, n_pairs: int):
    """(group, pair, outcome 0/1) of the first outcome of each (group, cell + seed pair), in row order; None when a pair
    falls in two groups."""
    ok = t.column(SUCCESS)
    rows = np.flatnonzero(ok.is_valid().to_numpy(zero_copy_only=False))
    first = rows[np.sort(np.unique(group[rows] * n_pairs + pair[rows], return_index=True)[1])]
    if len(np.unique(pair[first])) != len(first):
        return None
    outcome = pc.fill_null(pc.cast(ok, pa.int64()), 0).to_numpy(zero_copy_only=False)
    return group[first], pair[first], outcome[first]


def _sums(codes: np.ndarray, n: int, *flags: np.ndarray) -> list[np.ndarray]:
    """Per code (0..n-1): how many rows, then the sum of each flag."""
    return [np.bincount(codes, minlength=n), *(np.bincount(codes, weights=f, minlength=n).astype(np.int64) for f in flags)]


def _pairs_in_both(fa, fb, n_groups: int, *, same_group: bool):
    """(pairs in both, both succeeded, only A, only B), per group (`same_group`: a pair counts where both sides put it in
    one group, the join on group and pair) or over all pairs (index 0)."""
    _, ia, ib = np.intersect1d(fa[1], fb[1], assume_unique=True, return_indices=True)
    groups, a, b = fa[0][ia], fa[2][ia], fb[2][ib]
    if same_group:
        keep = groups == fb[0][ib]
        groups, a, b = groups[keep], a[keep], b[keep]
    else:
        groups = np.zeros(len(a), np.int64)
    return _sums(groups, n_groups if same_group else 1, a * b, a * (1 - b), b * (1 - a))


def _judged_arrow(t, group: np.ndarray, n_groups: int, values: list[tuple]) -> dict[tuple, list[int]]:
    ok = t.column(SUCCESS)
    labelled = pc.and_(pc.is_valid(ok), pc.equal(t.column(SOURCE), schema.OUTCOME_SOURCE_LABEL)) if SOURCE in t.column_names \
        else pa.array(np.zeros(t.num_rows, bool))
    lab = pc.fill_null(labelled, False).to_numpy(zero_copy_only=False).astype(np.int64)
    unl = ok.is_null().to_numpy(zero_copy_only=False).astype(np.int64)
    _, n_lab, n_unl = _sums(group, n_groups, lab, unl)
    return {values[g]: [int(n_lab[g]), int(n_unl[g])] for g in range(n_groups) if n_lab[g] or n_unl[g]}


def _arrow_comparable(ca, cb, by: list[str]) -> bool:
    """Both sides are Arrow tables whose groups and pairs Arrow can count as the row-by-row path does: scalar,
    non-null keys of one type on both sides, a cell and a seed on every row."""
    if not (isinstance(ca, LazyColumns) and isinstance(cb, LazyColumns)):
        return False
    ta, tb = ca.table, cb.table
    for name in (*by, CELL, SEED):
        if name not in ta.column_names or name not in tb.column_names:
            return False
        fa, fb = ta.schema.field(name).type, tb.schema.field(name).type
        if fa != fb or pa.types.is_nested(fa) or ta.column(name).null_count or tb.column(name).null_count:
            return False
    return True


def _compare_counts_arrow(ca, cb, by: list[str]) -> _Counted | None:
    """:func:`_compare_counts` over Arrow columns with hash codes and numpy (`catalog.index.group_codes`; no Acero, whose
    import alone is a tenth of a cold `compare`). None when `_arrow_comparable` says no, or when a (cell, seed) pair falls
    in two groups of one side: the row-by-row path then decides which group it counts in."""
    if not _arrow_comparable(ca, cb, by):
        return None
    ta, tb = ca.table, cb.table
    ga, gb, values = _coded(ta, tb, by)
    pa_, pb_, pairs = _coded(ta, tb, [CELL, SEED])
    fa, fb = _first_outcomes(ta, ga, pa_, len(pairs)), _first_outcomes(tb, gb, pb_, len(pairs))
    if fa is None or fb is None:
        return None
    n = len(values)
    (na, ka), (nb, kb) = _sums(fa[0], n, fa[2]), _sums(fb[0], n, fb[2])
    shared = _pairs_in_both(fa, fb, n, same_group=True)
    present = np.flatnonzero((na > 0) | (nb > 0))
    groups = sorted((values[g] for g in present), key=sort_key)
    code = {values[g]: g for g in present}
    per_group = {g: tuple(int(c[code[g]]) for c in (na, ka, nb, kb, *shared)) for g in groups}
    totals = [sum(c[i] for c in per_group.values()) for i in range(4)]
    overall = (*totals, *(int(c[0]) for c in _pairs_in_both(fa, fb, n, same_group=False)))
    return groups, {g: g for g in groups}, per_group, overall, (_judged_arrow(ta, ga, n, values), _judged_arrow(tb, gb, n, values))


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
            need_columns(cols, [*by, SUCCESS])
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
