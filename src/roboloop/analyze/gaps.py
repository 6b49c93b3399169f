"""Coverage gaps: why does a cell of the evaluation grid fail, and what to collect next.

Pure functions over plain rows (lists of dicts or ``pyarrow.Table`` with the friendly
segment-table columns; a table is read column by column with numpy, so only its distinct values and
the ids a report lists become Python objects: `roboloop gaps` on 50,000 rollouts takes a fraction of
a second), plus thin glue that reads the catalog: :func:`gaps` reads an
evaluation, its training run and both segment tables; :func:`nearest_training` finds each
failure's nearest training episode. The entry points are :func:`coverage`, :func:`gaps`
and :func:`make_plan` (alias ``plan``), which builds a :class:`roboloop.collect.plan.Plan`.

**Coverage is measured on start states, not on labels** (DESIGN.md). A rollout's start
state is the cube's sampled pose ``(scene.cube_x, scene.cube_y, scene.cube_yaw_deg)``;
its *coverage distance* is the scaled distance to the nearest start state of an episode
the policy was trained on::

    d = sqrt((dx / position_scale_m)**2 + (dy / position_scale_m)**2 + (dyaw / yaw_scale_deg)**2)

and it is *covered* when ``d <= tolerance``. Defaults (:class:`GapConfig`), from
FIELD-NOTES ("A planted coverage gap on cube yaw", "Coverage gap"):

- ``yaw_scale_deg = 3``: a policy trained at yaw 0 succeeds 18/20 at |yaw| 0.5-2 deg,
  4/20 at 2-4 deg, 0/20 beyond 7 deg: the cliff sits at about 3 degrees.
- ``position_scale_m = 0.02``: trained on x in [0, 0.1], the policy still succeeded up to
  x ~ 0.12 and failed from x >= 0.13: a couple of centimetres beyond the data.
- ``tolerance = 1``: one scale unit (e.g. 2 deg and 1.5 cm together are just inside).

**Yaw symmetry.** The cube is a uniformly coloured cube: turning it by 90 degrees about
the vertical gives the same physical scene, and the scripted demonstrator grasps the
face nearest its approach direction, so it acts the same. Yaw differences are therefore
taken modulo ``yaw_period_deg = 90`` (yaw +44 and -44 are 2 degrees apart). Only the
edges of the +-45 range are affected. A policy whose input is the raw quaternion does
*not* share this symmetry; set ``yaw_period_deg = 0`` to compare raw angles.

**Appearance axes.** Lighting, table colour and distractors change no physics, so they
are not part of the start state: for a state policy they cannot make a cell uncovered
(FIELD-NOTES: such rollouts are bit-identical). For a camera policy they matter; list
them in ``match_labels`` (``GapConfig.for_policy`` does so when the run uses cameras)
and a training episode then only counts as near a rollout with the same labels.

**Classification of a cell** (rollouts grouped by ``episode.cell``):

- *fails* when its Wilson upper bound (95%) is below ``target_rate`` (0.8: significantly
  below target) **or** its rate is below ``fail_rate`` (0.5: clearly bad even with few
  rollouts);
- a failing cell is a ``coverage_gap`` when fewer than ``min_covered_fraction`` (0.5) of
  its rollouts are covered (collect there), otherwise ``policy_or_data_quality`` (the
  data is there and the policy still fails: inspect the failures, flag bad
  demonstrations); every other cell is ``fine``.

Cells are ranked: coverage gaps first, then quality problems, then fine cells; inside a
class by ``severity = (1 - rate) * (1 - covered_fraction)`` for gaps and ``1 - rate``
otherwise, largest first (ties: lower rate, then cell key).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from roboloop import rows, schema
from roboloop.analyze.rollouts import hashable
from roboloop.catalog.errors import CatalogError
from roboloop.catalog.index import PAIR_COLUMNS, unique_rollouts
from roboloop.collect.plan import Plan, PlanItem
from roboloop.config import Config
from roboloop.envs import DEFAULT_TASK, get_task, get_task_spec, task_specs
from roboloop.envs.conditions import Vocabulary
from roboloop.envs.task import has_corrective_expert
from roboloop.errors import RoboloopError, UnknownEvaluationError
from roboloop.stats.intervals import wilson

__all__ = [
    "CONDITION_AXES",
    "COVERAGE_GAP",
    "FINE",
    "UNLABELLED",
    "QUALITY",
    "START_COLUMNS",
    "CellGap",
    "GapConfig",
    "GapError",
    "GapReport",
    "cell_key",
    "coverage",
    "coverage_distances",
    "corrective_items",
    "gap_report",
    "evaluated_run",
    "gap_config",
    "gaps",
    "make_plan",
    "parse_cell_key",
    "plan",
    "split_budget",
    "start_states",
]

COVERAGE_GAP = "coverage_gap"
QUALITY = "policy_or_data_quality"
FINE = "fine"
UNLABELLED = schema.OUTCOME_UNLABELLED
"""Verdict of a cell none of whose rollouts has an outcome (recorded on hardware, not labelled yet): no rate."""
_CLASS_ORDER = {COVERAGE_GAP: 0, QUALITY: 1, FINE: 2, UNLABELLED: 3}

SEGMENT_ID = "segment_id"
CELL_COLUMN = f"{schema.EPISODE}.{schema.EPISODE_CELL}"
SUCCESS_COLUMN = f"{schema.OUTCOME}.{schema.OUTCOME_SUCCESS}"
SOURCE_COLUMN = f"{schema.OUTCOME}.{schema.OUTCOME_SOURCE}"
SEED_COLUMN = f"{schema.EPISODE}.{schema.EPISODE_SEED}"
TASK_COLUMN = f"{schema.EPISODE}.{schema.EPISODE_TASK}"

START_COLUMNS = get_task_spec(DEFAULT_TASK).start_columns
"""The default task's start-state columns (``scene.cube_x``, ``scene.cube_y``, ``scene.cube_yaw_deg``)."""
APPEARANCE_AXES = get_task_spec(DEFAULT_TASK).appearance_axes
"""The default task's appearance axes (what `GapConfig.for_policy` matches for a camera policy)."""


def condition_axes() -> tuple[str, ...]:
    """Every condition axis of a registered task (their union, in registration order), and `task`."""
    names = [a for t in task_specs().values() for a in t.vocabulary.names]
    return tuple(dict.fromkeys([*names, schema.TASK_AXIS]))


CONDITION_AXES = condition_axes()
"""The axes `GapConfig.match_labels` accepts (computed at import; :func:`condition_axes` for tasks registered later)."""


def _task_spec(name: Any, segment_id: Any):
    """The description of task `name` (the default task for episodes that name none); GapError naming the episode."""
    try:
        return get_task_spec(name or DEFAULT_TASK)
    except ValueError as exc:
        raise GapError(f"episode {segment_id!r}: {exc}") from None


def _row_task(row: Mapping[str, Any]):
    """The task of an episode row (`episode.task`), described (`envs.get_task_spec`: no simulator or recording code)."""
    return _task_spec(row.get(TASK_COLUMN), row.get(SEGMENT_ID))


class GapError(RoboloopError, ValueError):
    """Coverage cannot be computed from what the catalog holds (the message says why and what to do)."""


# --- configuration ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GapConfig(Config):
    """How coverage is measured and cells are classified (see the module docstring)."""

    position_scale_m: float = 0.02
    """Cube x/y distance (m) that counts as one unit of coverage distance."""
    yaw_scale_deg: float = 3.0
    """Cube yaw difference (deg) that counts as one unit of coverage distance."""
    yaw_period_deg: float = 90.0
    """Yaw differences are taken modulo this (the cube's 90-degree symmetry); 0 = raw angles."""
    tolerance: float = 1.0
    """A rollout is covered when its nearest training start state is within this scaled distance."""
    target_rate: float = 0.8
    """A cell fails when its Wilson upper bound is below this success rate."""
    fail_rate: float = 0.5
    """A cell also fails when its observed success rate is below this."""
    min_covered_fraction: float = 0.5
    """A failing cell with fewer covered rollouts than this fraction is a coverage gap."""
    confidence: float = 0.95
    """Confidence level of the Wilson interval."""
    match_labels: tuple[str, ...] = ()
    """Condition axes whose labels must be equal for a training episode to count as near (camera policies)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("position_scale_m", "yaw_scale_deg", "tolerance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise GapError(f"GapConfig.{name} must be a positive number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not isinstance(self.yaw_period_deg, (int, float)) or self.yaw_period_deg < 0:
            raise GapError(f"GapConfig.yaw_period_deg must be >= 0 (0 = no symmetry), got {self.yaw_period_deg!r}")
        object.__setattr__(self, "yaw_period_deg", float(self.yaw_period_deg))
        for name in ("target_rate", "fail_rate", "min_covered_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise GapError(f"GapConfig.{name} must be a fraction in [0, 1], got {v!r}")
            object.__setattr__(self, name, float(v))
        if not 0.0 < self.confidence < 1.0:
            raise GapError(f"GapConfig.confidence must be in (0, 1), got {self.confidence!r}")
        labels = tuple(str(a) for a in self.match_labels)
        valid = condition_axes()
        bad = [a for a in labels if a not in valid]
        if bad:
            raise GapError(f"GapConfig.match_labels: unknown axes {bad}; valid axes: {', '.join(valid)}")
        object.__setattr__(self, "match_labels", labels)

    def fails(self, rate: float, ci_high: float) -> bool:
        """The failing rule: Wilson upper bound below `target_rate`, or rate below `fail_rate`."""
        return ci_high < self.target_rate or rate < self.fail_rate

    @classmethod
    def unknown_keys_error(cls, unknown: list[str]) -> Exception:
        names = sorted(f.name for f in dataclasses.fields(cls))
        return GapError(f"unknown GapConfig keys {sorted(unknown)}; valid keys: {', '.join(names)}")

    @classmethod
    def for_policy(cls, run_info: Mapping[str, Any] | None, **overrides: Any) -> GapConfig:
        """Defaults for a run: a policy that sees cameras also needs matching appearance labels (its task's)."""
        cams = (run_info or {}).get("cameras") or ()
        task = get_task_spec((run_info or {}).get("task") or DEFAULT_TASK)
        base: dict[str, Any] = {"match_labels": task.appearance_axes} if cams else {}
        base.update(overrides)
        return cls(**base)


# --- small helpers -------------------------------------------------------------------------

def cell_key(cell: Mapping[str, Any]) -> str:
    """Key of a cell as given: `",".join(f"{k}={v}" for k, v in sorted(cell.items()))` (the task's key format)."""
    return Vocabulary.format_key(cell)


def parse_cell_key(key: str) -> dict[str, str]:
    """`"lighting=dim,yaw=any"` -> `{"lighting": "dim", "yaw": "any"}` (inverse of :func:`cell_key`; labels as
    stored, compared through `Vocabulary.comparable` of the task)."""
    try:
        return Vocabulary.split_key(key)
    except ValueError as exc:
        raise GapError(str(exc)) from None


def _as_rows(rows: Any) -> list[dict[str, Any]]:
    if rows is None:
        return []
    if hasattr(rows, "to_pylist"):
        return rows.to_pylist()
    return [dict(r) for r in rows]


class _Columns:
    """Rows (a pyarrow Table, or dict rows) read column by column, so that the gap report runs in numpy: for an Arrow
    table no per-row Python (100,000 rollouts), only its distinct values and the ids a report lists become Python."""

    def __init__(self, rows: Any) -> None:
        self.table = rows if isinstance(rows, pa.Table) else None
        self.dicts = None if self.table is not None else _as_rows(rows)
        self.n = self.table.num_rows if self.table is not None else len(self.dicts)
        self._codes: dict[str, tuple[np.ndarray, list]] = {}

    def _arrow(self, name: str):
        """The column as one Arrow array, None when the table has no such column."""
        if name not in self.table.column_names:
            return None
        return self.table.column(name).combine_chunks()

    def codes(self, name: str) -> tuple[np.ndarray, list]:
        """(a code per row, the distinct values by code, in order of first appearance): equal values share a code;
        None (or a missing column) is a value of its own."""
        if name not in self._codes:
            self._codes[name] = self._encode(name)
        return self._codes[name]

    def _encode(self, name: str) -> tuple[np.ndarray, list]:
        if self.table is None:
            return _python_codes([r.get(name) for r in self.dicts])
        col = self._arrow(name)
        if col is None:
            return np.zeros(self.n, np.int64), [None] if self.n else []
        try:
            enc = pc.dictionary_encode(col, null_encoding="encode")
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # types Arrow cannot hash (lists, nulls only)
            return _python_codes(col.to_pylist())
        return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary.to_pylist()

    def value(self, name: str, i: int) -> Any:
        """Row `i`'s value of `name` (None when missing)."""
        if self.table is None:
            return self.dicts[i].get(name)
        return self.table.column(name)[int(i)].as_py() if name in self.table.column_names else None

    def missing(self, name: str) -> np.ndarray:
        """Bool per row: no value of `name` (null, or no such column)."""
        if self.table is None:
            return np.array([r.get(name) is None for r in self.dicts], dtype=bool)
        if name not in self.table.column_names:
            return np.ones(self.n, bool)
        return self.table.column(name).is_null().to_numpy(zero_copy_only=False)

    def is_in(self, name: str, accept) -> np.ndarray:
        """Bool per row: `accept(value)` of the row's value (asked once per distinct value)."""
        codes, values = self.codes(name)
        return np.array([bool(accept(v)) for v in values], dtype=bool)[codes] if values else np.zeros(self.n, bool)

    def floats(self, name: str) -> np.ndarray:
        """The column as float64, NaN where null or missing."""
        if self.table is None:
            return np.array([np.nan if r.get(name) is None else float(r[name]) for r in self.dicts], dtype=np.float64)
        col = self._arrow(name)
        if col is None:
            return np.full(self.n, np.nan)
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            return np.array([np.nan if v is None else float(v) for v in col.to_pylist()], dtype=np.float64)
        return pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy(zero_copy_only=False)

    def outcomes(self) -> np.ndarray:
        """Per row: 1 succeeded, 0 failed, -1 no outcome (`outcome.success` null: unlabelled)."""
        col = self._arrow(SUCCESS_COLUMN) if self.table is not None else None
        if col is not None and (pa.types.is_boolean(col.type) or pa.types.is_integer(col.type)):
            ok = pc.fill_null(pc.cast(col, pa.bool_()), False).to_numpy(zero_copy_only=False)
            return np.where(col.is_valid().to_numpy(zero_copy_only=False), ok.astype(np.int8), np.int8(-1))
        return self.is_in(SUCCESS_COLUMN, bool).astype(np.int8) - self.is_in(SUCCESS_COLUMN, lambda v: v is None)

    def take(self, name: str, rows: np.ndarray) -> list:
        """The values of `name` at row indices `rows`, as Python objects."""
        if self.table is None:
            return [self.dicts[int(i)].get(name) for i in rows]
        if name not in self.table.column_names:
            return [None] * len(rows)
        return self.table.column(name).take(pa.array(rows, pa.int64())).to_pylist()

    def row(self, i: int) -> dict[str, Any]:
        """Row `i` as a dict (for the few rows whose label needs all their scene values)."""
        return self.dicts[i] if self.table is None else self.table.slice(int(i), 1).to_pylist()[0]


def _python_codes(values: list) -> tuple[np.ndarray, list]:
    index: dict[Any, int] = {}
    first: list = []
    codes = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        key = (type(v), hashable(v))  # 1 and True, or "1" and 1, stay apart
        c = index.get(key)
        if c is None:
            c = index[key] = len(first)
            first.append(v)
        codes[i] = c
    return codes, first


def _row_label(row: Mapping[str, Any], axis: str) -> str | None:
    """An episode's label on `axis` (compared through its task's vocabulary): its `scene.<axis>` property,
    or derived from the stored conditions by its task (`Task.scene_properties`; yaw from
    `scene.yaw_min/yaw_max` for episodes recorded before labels were stored, a range that is no preset
    as `lo..hi`). On the `task` axis: the episode's task."""
    task = _row_task(row)
    if axis == schema.TASK_AXIS:
        return task.name
    value = row.get(f"{schema.SCENE}.{axis}")
    lo, hi = row.get(f"{schema.SCENE}.{axis}_min"), row.get(f"{schema.SCENE}.{axis}_max")
    if value is None and lo is not None and hi is not None:
        try:
            value = task.scene_properties(task.conditions_from_dict(_scene_values(row))).get(axis)
        except ValueError:
            value = None
        if value in (None, "custom"):
            return f"{float(lo):g}..{float(hi):g}"
    return task.vocabulary.comparable(axis, value)


def _scene_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's `scene.*` values by name (None left out)."""
    prefix = f"{schema.SCENE}."
    return {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix) and v is not None}


def start_states(rows: Any) -> np.ndarray:
    """(N, 3) array of each episode's start state by its task's `start_columns` (x m, y m, yaw deg of the
    object coverage is measured on: the transfer cube's `cube_x`, `cube_y`, `cube_yaw_deg`); NaN where missing.
    `rows`: dict rows or a pyarrow Table."""
    return _start_states(_Columns(rows))


def _start_states(rows: _Columns) -> np.ndarray:
    out = np.full((rows.n, 3), np.nan)
    codes, names = rows.codes(TASK_COLUMN)
    for c, name in enumerate(names):  # each task's columns, looked up once (in order of first appearance)
        mask = codes == c
        first = int(np.argmax(mask))
        columns = tuple(_task_spec(name, rows.value(SEGMENT_ID, first)).start_columns[:3])
        for j, column in enumerate(columns):
            out[mask, j] = rows.floats(column)[mask]
    return out


def _yaw_diff(a: np.ndarray, b: np.ndarray, period: float) -> np.ndarray:
    d = np.abs(a - b)
    if period > 0:
        d = np.mod(d, period)
        d = np.minimum(d, period - d)
    return d


def _distance_chunks(r: np.ndarray, t: np.ndarray, cfg: GapConfig, same: np.ndarray | None, chunk: int):
    """Yield (first row, scaled distance matrix of rows [first, first + chunk) x training)."""
    for lo in range(0, len(r), chunk):
        a = r[lo : lo + chunk, None, :]
        dx = (a[..., 0] - t[None, :, 0]) / cfg.position_scale_m
        dy = (a[..., 1] - t[None, :, 1]) / cfg.position_scale_m
        dyaw = _yaw_diff(a[..., 2], t[None, :, 2], cfg.yaw_period_deg) / cfg.yaw_scale_deg
        d = np.sqrt(dx * dx + dy * dy + dyaw * dyaw)
        d = np.where(np.isnan(d), np.inf, d)
        if same is not None:
            d = np.where(same[lo : lo + chunk], d, np.inf)
        yield lo, d


def _same_labels(cfg: GapConfig, rollout_labels, train_labels, n_r: int, n_t: int) -> np.ndarray | None:
    if not cfg.match_labels:
        return None
    if rollout_labels is None or train_labels is None:
        raise GapError("GapConfig.match_labels needs the rollouts' and the training episodes' labels")
    codes: dict[tuple, int] = {}
    rc = np.array([codes.setdefault(tuple(lab.get(a) for a in cfg.match_labels), len(codes)) for lab in rollout_labels], dtype=np.int64)
    tc = np.array([codes.setdefault(tuple(lab.get(a) for a in cfg.match_labels), len(codes)) for lab in train_labels], dtype=np.int64)
    return (rc.reshape(n_r, 1) == tc.reshape(1, n_t)).reshape(n_r, n_t)


def coverage_distances(
    rollout_starts: np.ndarray,
    train_starts: np.ndarray,
    cfg: GapConfig = GapConfig(),
    *,
    rollout_labels: Sequence[Mapping[str, str | None]] | None = None,
    train_labels: Sequence[Mapping[str, str | None]] | None = None,
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per rollout: (scaled distance to the nearest training start, index of that training episode
    or -1, number of training starts within `cfg.tolerance`). A missing start state (NaN) is
    infinitely far; with `cfg.match_labels`, so is a training episode with other labels."""
    r = np.asarray(rollout_starts, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(train_starts, dtype=np.float64).reshape(-1, 3)
    nearest = np.full(len(r), np.inf)
    index = np.full(len(r), -1, dtype=np.int64)
    counts = np.zeros(len(r), dtype=np.int64)
    if len(r) == 0 or len(t) == 0:
        return nearest, index, counts
    same = _same_labels(cfg, rollout_labels, train_labels, len(r), len(t))
    for lo, d in _distance_chunks(r, t, cfg, same, chunk):
        idx = np.argmin(d, axis=1)
        best = d[np.arange(len(d)), idx]
        nearest[lo : lo + len(d)] = best
        index[lo : lo + len(d)] = np.where(np.isfinite(best), idx, -1)
        counts[lo : lo + len(d)] = np.sum(d <= cfg.tolerance, axis=1)
    return nearest, index, counts


# --- coverage per cell ---------------------------------------------------------------------

def _label_codes(rows: _Columns, axis: str) -> tuple[np.ndarray, list]:
    """(a code per row, the labels by code) of :func:`_row_label` on `axis`: computed once per distinct (task, label,
    range), except for rows without the label but with a range (older episodes: their label comes from all their
    scene values, row by row)."""
    if not rows.n:
        return np.zeros(0, np.int64), []
    columns = (TASK_COLUMN, *(f"{schema.SCENE}.{axis}{x}" for x in ("", "_min", "_max")))
    parts = [rows.codes(c) for c in columns]
    combined = np.zeros(rows.n, np.int64)
    for codes, values in parts:  # dense again after each column: no overflow however many distinct values
        combined = np.unique(combined * max(len(values), 1) + codes, return_inverse=True)[1].reshape(-1)
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    index: dict[Any, int] = {}
    out = np.empty(rows.n, np.int64)
    for k in np.argsort(first, kind="stable"):  # in order of first appearance
        i = int(first[k])
        task, value, lo, hi = (values[codes[i]] for codes, values in parts)
        members = np.flatnonzero(inverse == k)
        if value is None and lo is not None and hi is not None:
            out[members] = [index.setdefault(_row_label(rows.row(int(m)), axis), len(index)) for m in members]
        else:
            row = {TASK_COLUMN: task, SEGMENT_ID: rows.value(SEGMENT_ID, i), columns[1]: value, columns[2]: lo, columns[3]: hi}
            out[members] = index.setdefault(_row_label(row, axis), len(index))
    return out, list(index)


def _labels(rows: Any, axes: Sequence[str]) -> list[dict[str, str | None]]:
    """`_row_label` of every row and axis, as one dict per row (for a few rows: failures)."""
    cols = rows if isinstance(rows, _Columns) else _Columns(rows)
    per_axis = {a: _label_codes(cols, a) for a in axes}
    return [{a: labels[codes[i]] for a, (codes, labels) in per_axis.items()} for i in range(cols.n)]


def _shared_label_codes(r: dict[str, tuple], t: dict[str, tuple], axes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Codes of the rollouts' and the training episodes' label tuples on `axes`, equal exactly where every label is."""
    ids: dict[Any, int] = {}
    rc, tc = 0, 0
    for a in axes:
        (r_codes, r_labels), (t_codes, t_labels) = r[a], t[a]
        r_ids = np.array([ids.setdefault(lab, len(ids)) for lab in r_labels], np.int64)
        t_ids = np.array([ids.setdefault(lab, len(ids)) for lab in t_labels], np.int64)
        rc = rc * (len(ids) + 1) + (r_ids[r_codes] if len(r_ids) else 0)
        tc = tc * (len(ids) + 1) + (t_ids[t_codes] if len(t_ids) else 0)
    return np.asarray(rc, np.int64), np.asarray(tc, np.int64)


def _check_starts(kind: str, starts: np.ndarray, n: int) -> None:
    if n and bool(np.isnan(starts).any(axis=1).all()):
        raise GapError(
            f"none of the {n} {kind} has a start state ({', '.join(START_COLUMNS)}); the `gaps` glue "
            "recomputes missing ones from each episode's seed and scene conditions"
        )


def _cells(r: _Columns) -> tuple[np.ndarray, list[str]]:
    """(the index of its cell key per rollout, the cell keys sorted); GapError for a rollout without a cell."""
    codes, values = r.codes(CELL_COLUMN)
    if None in values:
        first = int(np.argmax(codes == values.index(None)))
        raise GapError(f"rollout {r.value(SEGMENT_ID, first)!r} has no {CELL_COLUMN}: is this an evaluation's rollout table?")
    keys = sorted({str(v) for v in values})
    position = {k: i for i, k in enumerate(keys)}
    return np.array([position[str(v)] for v in values], np.int64)[codes] if values else codes, keys


def _nearest(r_starts: np.ndarray, t_starts: np.ndarray, cfg: GapConfig, same, cell: np.ndarray, n_cells: int):
    """Per rollout: distance to the nearest training start, its index (-1: none), covered (one within tolerance);
    per cell: which training episodes are within tolerance of one of its rollouts."""
    n_r, n_t = len(r_starts), len(t_starts)
    nearest, index = np.full(n_r, np.inf), np.full(n_r, -1, dtype=np.int64)
    covered, near = np.zeros(n_r, bool), np.zeros((n_cells, n_t), bool)
    if n_t:
        for lo, d in _distance_chunks(r_starts, t_starts, cfg, same, 2048):
            hi = lo + len(d)
            idx = np.argmin(d, axis=1)
            best = d[np.arange(len(d)), idx]
            nearest[lo:hi] = best
            index[lo:hi] = np.where(np.isfinite(best), idx, -1)
            within = d <= cfg.tolerance
            covered[lo:hi] = within.any(axis=1)
            np.logical_or.at(near, cell[lo:hi], within)
    return nearest, index, covered, near


def _cell_coverage(r: _Columns, t: _Columns, cfg: GapConfig) -> list[dict[str, Any]]:
    cell, keys = _cells(r)
    r_starts, t_starts = _start_states(r), _start_states(t)
    _check_starts("rollouts", r_starts, r.n)
    _check_starts("training episodes", t_starts, t.n)
    axes = sorted({a for key in keys for a in parse_cell_key(key)} | set(cfg.match_labels))
    r_labels = {a: _label_codes(r, a) for a in axes}
    t_labels = {a: _label_codes(t, a) for a in axes}
    t_ids = t.take(SEGMENT_ID, np.arange(t.n))
    same = None
    if cfg.match_labels and t.n:
        rc, tc = _shared_label_codes(r_labels, t_labels, cfg.match_labels)
        same = rc.reshape(-1, 1) == tc.reshape(1, -1)
    nearest, index, covered, near = _nearest(r_starts, t_starts, cfg, same, cell, len(keys))
    outcome = r.outcomes()
    task_codes, task_names = r.codes(TASK_COLUMN)
    out = []
    for c, key in enumerate(keys):
        idx = np.flatnonzero(cell == c)
        cond = parse_cell_key(key)
        task = cond.get(schema.TASK_AXIS) or _task_spec(task_names[task_codes[idx[0]]], r.value(SEGMENT_ID, int(idx[0]))).name
        vocabulary = get_task_spec(task).vocabulary
        in_cell = np.ones(t.n, bool)
        for a, v in ((a, vocabulary.comparable(a, v)) for a, v in cond.items()):
            codes, labels = t_labels[a]
            in_cell &= np.array([lab == v for lab in labels], bool)[codes] if labels else False
        cov = covered[idx]
        failed_covered = index[idx][cov & (outcome[idx] == 0)]  # unlabelled: not a failure
        _, first = np.unique(failed_covered, return_index=True)
        dist = nearest[idx][np.isfinite(nearest[idx])]
        out.append(
            {
                "cell": key,
                "conditions": cond,
                "n": len(idx),
                "covered": int(cov.sum()),
                "covered_fraction": int(cov.sum()) / len(idx),
                "train_near": int(near[c].sum()),
                "train_in_cell_by_label": int(in_cell.sum()),
                "median_distance": float(np.median(dist)) if dist.size else float("inf"),
                "near_train_ids": list(dict.fromkeys(t_ids[j] for j in failed_covered[np.sort(first)])),
                "_idx": idx,
                "_covered": cov,
            }
        )
    return out


def coverage(rollouts: Any, training: Any, cfg: GapConfig = GapConfig()) -> list[dict[str, Any]]:
    """Training coverage of each grid cell of `rollouts` (grouped by `episode.cell`), sorted by cell key.

    `rollouts` and `training` are segment-table rows (list of dicts or pyarrow.Table with
    friendly columns). Per cell: `cell` (key), `conditions` (dict), `n`, `covered` (rollouts
    with a training start within tolerance), `covered_fraction`, `train_near` (distinct
    training episodes within tolerance of at least one of the cell's rollouts),
    `train_in_cell_by_label` (training episodes whose labels equal the cell's: what counting
    by containment would say), `median_distance` (scaled, to the nearest training start),
    `near_train_ids` (the nearest training episode of each failed rollout that was covered:
    the demonstrations to look at when a covered cell fails).
    """
    cells = _cell_coverage(_Columns(rollouts), _Columns(training), cfg)
    return [{k: v for k, v in c.items() if not k.startswith("_")} for c in cells]


# --- classification ------------------------------------------------------------------------

@dataclass(frozen=True)
class CellGap:
    """One grid cell: success, training coverage and the verdict."""

    cell: str
    conditions: dict[str, str]
    n: int
    successes: int
    rate: float
    ci_low: float
    ci_high: float
    covered: int
    covered_fraction: float
    train_near: int
    train_in_cell_by_label: int
    median_distance: float
    uncovered_failures: int
    """Failed rollouts that started far from every training episode (the need a plan fills)."""
    fails: bool
    verdict: str
    """coverage_gap, policy_or_data_quality or fine."""
    severity: float
    rank: int
    """1 = the worst cell."""
    advice: str
    near_train_ids: tuple[str, ...] = ()
    failed_ids: tuple[str, ...] = ()
    unlabelled: int = 0
    """Rollouts without an outcome (not in n: neither successes nor failures); coverage counts them."""
    labelled: int = 0
    """Outcomes among the n that a person labelled (`roboloop label`)."""

    @property
    def failures(self) -> int:
        return self.n - self.successes

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["near_train_ids"] = list(self.near_train_ids)
        d["failed_ids"] = list(self.failed_ids)
        d["failures"] = self.failures
        return d


@dataclass
class GapReport:
    """The cells of one evaluation, ranked worst first, with the inputs that produced them."""

    cells: list[CellGap]
    config: GapConfig = field(default_factory=GapConfig)
    eval_id: str = ""
    run_id: str = ""
    dataset: str = ""
    evals_dataset: str = ""
    n_train: int = 0
    missing_train_ids: int = 0
    """Training ids of the run that the demo dataset no longer holds (not counted)."""

    def by_verdict(self, verdict: str) -> list[CellGap]:
        return [c for c in self.cells if c.verdict == verdict]

    @property
    def gap_cells(self) -> list[CellGap]:
        return self.by_verdict(COVERAGE_GAP)

    def rows(self) -> list[dict[str, Any]]:
        """The cells as plain dicts (rank order)."""
        return [c.to_dict() for c in self.cells]

    def to_dict(self) -> dict[str, Any]:
        return {
            "eval_id": self.eval_id,
            "run_id": self.run_id,
            "dataset": self.dataset,
            "evals_dataset": self.evals_dataset,
            "n_train": self.n_train,
            "missing_train_ids": self.missing_train_ids,
            "config": self.config.to_dict(),
            "cells": self.rows(),
        }


def _advice(c: dict[str, Any], verdict: str, ctx: Mapping[str, str]) -> str:
    key = c["cell"]
    if verdict == COVERAGE_GAP:
        return (
            f"collect demonstrations under {key}: only {c['covered']}/{c['n']} rollouts start within tolerance "
            f"of a training episode ({c['train_near']} training episodes nearby)"
        )
    if verdict == QUALITY:
        ev = f" --eval {ctx['eval_id']}" if ctx.get("eval_id") else ""
        ds = ctx.get("evals_dataset") or "<dataset>_evals"
        demos = ", ".join(c["near_train_ids"][:5]) or "-"
        return (
            f"{c['covered']}/{c['n']} rollouts are covered yet {c['failed']} failed: inspect them "
            f"(roboloop failures --dataset {ds}{ev} --where \"episode.cell = '{key}'\") and the nearest "
            f"demonstrations ({demos}); flag bad ones (roboloop flag -d {ctx.get('dataset') or '<dataset>'} -s ID -r REASON)"
        )
    return ""


def gap_report(
    rollouts: Any,
    training: Any,
    cfg: GapConfig = GapConfig(),
    *,
    eval_id: str = "",
    run_id: str = "",
    dataset: str = "",
    evals_dataset: str = "",
    missing_train_ids: int = 0,
) -> GapReport:
    """Success, coverage and verdict of every cell of `rollouts`, ranked worst first (module docstring).

    `rollouts` and `training`: dict rows or pyarrow Tables (friendly columns); a table is read column by column."""
    r, t = _Columns(rollouts), _Columns(training)
    ctx = {"eval_id": eval_id, "dataset": dataset, "evals_dataset": evals_dataset}
    outcome = r.outcomes()
    by_person = r.is_in(SOURCE_COLUMN, lambda v: v == schema.OUTCOME_SOURCE_LABEL)
    cells = []
    for c in _cell_coverage(r, t, cfg):
        judged = outcome[c["_idx"]] >= 0  # unlabelled rollouts: in coverage, not in the rate
        idx, succ, cov = c["_idx"][judged], outcome[c["_idx"]][judged] == 1, c["_covered"][judged]
        n, k = len(idx), int(succ.sum())
        if n:
            rate = k / n
            lo, hi = wilson(k, n, cfg.confidence)
            fails = cfg.fails(rate, hi)
        else:
            rate = lo = hi = float("nan")
            fails = False
        if not n:
            verdict = UNLABELLED
        elif not fails:
            verdict = FINE
        elif c["covered_fraction"] < cfg.min_covered_fraction:
            verdict = COVERAGE_GAP
        else:
            verdict = QUALITY
        uncovered_failures = int(np.sum(~succ & ~cov))
        severity = 0.0 if not n else (1 - rate) * (1 - c["covered_fraction"]) if verdict == COVERAGE_GAP else 1 - rate
        cells.append(
            dict(
                cell=c["cell"], conditions=c["conditions"], n=n, successes=k, rate=rate, ci_low=lo, ci_high=hi,
                covered=c["covered"], covered_fraction=c["covered_fraction"], train_near=c["train_near"],
                train_in_cell_by_label=c["train_in_cell_by_label"], median_distance=c["median_distance"],
                uncovered_failures=uncovered_failures, fails=fails, verdict=verdict, severity=float(severity),
                advice=_advice({**c, "successes": k, "failed": n - k}, verdict, ctx),
                near_train_ids=tuple(c["near_train_ids"]) if verdict == QUALITY else (),
                failed_ids=tuple(r.take(SEGMENT_ID, idx[~succ])),
                unlabelled=len(c["_idx"]) - n,
                labelled=int(by_person[idx].sum()),
            )
        )
    cells.sort(key=lambda c: (_CLASS_ORDER[c["verdict"]], -c["severity"], c["rate"] if c["n"] else 0.0, c["cell"]))
    ranked = [CellGap(rank=i + 1, **c) for i, c in enumerate(cells)]
    return GapReport(
        ranked, cfg, eval_id=eval_id, run_id=run_id, dataset=dataset, evals_dataset=evals_dataset,
        n_train=t.n, missing_train_ids=missing_train_ids,
    )


# --- plans ---------------------------------------------------------------------------------

def split_budget(needs: Sequence[float], budget: int) -> list[int]:
    """Split `budget` episodes over cells in proportion to `needs` (largest remainder).

    Cells are given in priority order. When the budget covers every cell, each gets at
    least one; otherwise the first `budget` cells get one each.
    """
    n = len(needs)
    if budget < 0:
        raise GapError(f"budget must be >= 0, got {budget}")
    if n == 0 or budget == 0:
        return [0] * n
    if budget <= n:
        return [1 if i < budget else 0 for i in range(n)]
    w = np.maximum(np.asarray(needs, dtype=np.float64), 0.0)
    if w.sum() <= 0:
        w = np.ones(n)
    rest = budget - n  # one each first, the rest by need
    exact = w / w.sum() * rest
    out = np.floor(exact).astype(int)
    left = rest - int(out.sum())
    order = sorted(range(n), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[:left]:
        out[i] += 1
    return [int(v) + 1 for v in out]


def make_plan(
    report: GapReport,
    budget: int,
    *,
    name: str | None = None,
    dataset: str | None = None,
    corrective: int = 0,
    run: str | None = None,
    mode: str = schema.MODE_DAGGER,
):
    """A collection plan aimed at the report's coverage-gap cells.

    The budget is split by need (each gap cell's failures that started far from every training
    episode, see :func:`split_budget`), in rank order; every condition of the cell becomes the
    item's conditions. Cells classified policy_or_data_quality get no demonstrations but a suggestion
    (inspect the failures and the nearest demonstrations, flag bad ones).

    With `corrective` > 0 the plan also asks for that many corrective episodes of `run` (default: the
    evaluated run) in `mode`, spread over every failing cell, gaps and quality problems alike
    (:func:`corrective_items`). Without it the plan is exactly the demonstrations-only plan.
    """
    ds = dataset or report.dataset
    if not ds:
        raise GapError("make_plan needs the demonstration dataset (the report has none): pass dataset=")
    if corrective < 0:
        raise GapError(f"corrective must be >= 0, got {corrective}")
    gap = report.gap_cells
    counts = split_budget([max(c.uncovered_failures, 1) for c in gap], budget)
    items = [
        PlanItem(
            c.conditions, k,
            reason=f"{c.successes}/{c.n} succeeded; {c.covered}/{c.n} rollouts near training data",
        )
        for c, k in zip(gap, counts)
        if k > 0
    ]
    suggestions = [{"cell": c.cell, "action": "inspect", "detail": c.advice} for c in report.by_verdict(QUALITY)]
    src = report.eval_id
    reason = (f"coverage gaps found in evaluation {src}" if src else "coverage gaps") + f" (budget {budget})"
    if corrective:
        extra = corrective_items(report, run or report.run_id, corrective, mode)
        items += extra
        reason += (f"; {sum(it.count for it in extra)} corrective episode(s) over the failing cells, split by failures "
                   "(the policy's own mistakes, which demonstrations do not show)")
    return Plan(
        name=name or (f"plan-{src}" if src else "plan"),
        dataset=ds,
        items=tuple(items),
        reason=reason,
        source_eval=src,
        suggestions=tuple(suggestions),
        created_at=rows.now_iso(),
    )


def corrective_items(report: GapReport, run: str, episodes: int, mode: str = schema.MODE_DAGGER) -> list[PlanItem]:
    """Corrective items of `run` (`mode`) for `episodes` episodes over the report's failing cells.

    Both kinds of failing cell get them: a coverage gap (the plan's demonstrations fill it; corrective
    episodes add the states the policy's own errors lead to) and a policy_or_data_quality cell (covered
    yet failing: the demonstrations are there, the policy drifts off them; there corrective labels are
    what helped the camera policy, benchmarks/README.md "The corrective curve"). The episodes are split
    in proportion to each cell's failures (:func:`split_budget`, rank order). Cells whose task has no
    corrective expert get none; `GapError` when no failing cell has one.
    """
    if episodes <= 0:
        return []
    if not run:
        raise GapError("corrective episodes need the training run whose policy drives (the report names none): pass run=")
    failing = [c for c in report.cells if c.verdict in (COVERAGE_GAP, QUALITY)]
    cells = [c for c in failing if _has_corrective_expert(PlanItem(c.conditions, 1).task)]
    if failing and not cells:
        raise GapError("no failing cell's task has a corrective expert (an expert that acts from any state): "
                       "plan demonstrations only (`roboloop plan --corrective 0`; corrective=0 from Python)")
    counts = split_budget([c.failures for c in cells], episodes)
    return [PlanItem(c.conditions, k, reason=_corrective_reason(c, run, mode), kind=schema.KIND_CORRECTIVE, run=run, mode=mode)
            for c, k in zip(cells, counts) if k > 0]


def _has_corrective_expert(task: str) -> bool:
    return has_corrective_expert(get_task(task))


def _corrective_reason(c: CellGap, run: str, mode: str) -> str:
    why = ("a coverage gap: next to its demonstrations, the states the policy's own errors lead to" if c.verdict == COVERAGE_GAP
           else f"covered yet failing ({c.covered}/{c.n} rollouts near training data): the policy drifts off its demonstrations")
    return f"corrective: {run} drives, the expert labels ({mode}); {c.successes}/{c.n} succeeded, {why}"


plan = make_plan
"""Another name for :func:`make_plan`: ``plan(report, budget)`` reads as what it returns."""


# --- glue: the catalog -----------------------------------------------------------------------

def _filter(table, column: str, values) -> Any:
    if column not in table.column_names:
        return table.slice(0, 0)
    return table.filter(pc.is_in(table.column(column), value_set=pa.array(list(values), type=table.column(column).type)))


def _read_columns(table, *extra: str):
    """Only the columns a gap report reads (segment id, cell, task, seed, success, source, every `scene.*`) and `extra`:
    filtering and sorting 40 columns of 100,000 rollouts costs more than the report."""
    wanted = {SEGMENT_ID, CELL_COLUMN, TASK_COLUMN, SEED_COLUMN, SUCCESS_COLUMN, SOURCE_COLUMN, *extra}
    return table.select([c for c in table.column_names if c in wanted or c.startswith(f"{schema.SCENE}.")])


def fill_start_states(rows: list[dict[str, Any]]) -> int:
    """Fill missing start states from each episode's seed and scene conditions (`Task.start_state`, a
    pure function of both, by the episode's task); returns how many rows were filled. Rows without a
    seed stay NaN."""
    filled = 0
    for r in rows:
        task = _row_task(r)
        if all(r.get(c) is not None for c in task.start_columns) or r.get(SEED_COLUMN) is None:
            continue
        try:
            state = task.start_state(int(r[SEED_COLUMN]), task.conditions_from_dict(_scene_values(r)))
        except ValueError:
            continue
        r.update({f"{schema.SCENE}.{name}": v for name, v in state.items()})
        filled += 1
    return filled


def with_start_states(table):
    """A pyarrow rollout table with the start states :func:`fill_start_states` fills: only the rows that miss one (and
    have a seed) are read into Python; the table itself when none does."""
    rows = _Columns(table)
    need = np.zeros(rows.n, bool)
    columns: dict[str, None] = {}
    codes, names = rows.codes(TASK_COLUMN)
    for c, name in enumerate(names):  # an unknown task: GapError naming its first episode, as fill_start_states
        mask = codes == c
        for column in _task_spec(name, rows.value(SEGMENT_ID, int(np.argmax(mask)))).start_columns:
            columns[column] = None
            need |= mask & rows.missing(column)
    need &= ~rows.missing(SEED_COLUMN)
    if not need.any():
        return table
    picked = np.flatnonzero(need)
    filled = table.take(pa.array(picked, pa.int64())).to_pylist()
    fill_start_states(filled)
    mask = pa.array(need)
    for column in columns:
        values = pa.array([r.get(column) for r in filled], pa.float64())
        old = table.column(column).combine_chunks() if column in table.column_names else pa.nulls(rows.n, pa.float64())
        new = pc.replace_with_mask(pc.cast(old, pa.float64()), mask, values)
        table = table.set_column(table.column_names.index(column), column, new) if column in table.column_names \
            else table.append_column(column, new)
    return table


def evaluated_run(workspace, eval_id: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Evaluation `eval_id`'s row, its run id and that run's info; `GapError` for an unknown evaluation or a
    policy that was not a training run (coverage is measured against a run's training episodes)."""
    ws = workspace
    row = rows.read_row(ws, schema.EVALS_TABLE, eval_id)
    if row is None:
        known = [r.get("eval_id") or r.get(rows.KEY_FIELD) for r in rows.read_rows(ws, schema.EVALS_TABLE)]
        raise UnknownEvaluationError(f"unknown evaluation {eval_id!r}; evaluations: {', '.join(map(str, known)) or '(none: run `roboloop eval`)'}")
    run_id = row.get("run_id") or ""
    if not run_id or run_id == schema.PROVENANCE_NONE:  # a policy without a run (scripted, or given as a factory)
        raise GapError(
            f"evaluation {eval_id!r} ran policy {row.get('policy')!r}, not a training run: coverage is measured "
            "against the episodes a policy was trained on"
        )
    return row, run_id, ws.run_info(run_id)


def gap_config(workspace, eval_id: str) -> GapConfig:
    """The config `gaps(catalog, eval_id)` uses by default: :meth:`GapConfig.for_policy` of the evaluation's run."""
    return GapConfig.for_policy(evaluated_run(workspace, eval_id)[2])


def gap_datasets(workspace, eval_id: str) -> tuple[str, str]:
    """(demonstration dataset, evaluation dataset) that `gaps(catalog, eval_id)` reads."""
    row, _, info = evaluated_run(workspace, eval_id)
    dataset = row.get("dataset") or info.get("dataset")
    return dataset, row.get("evals_dataset") or schema.evals_dataset(dataset)


def gaps(catalog, eval_id: str, cfg: GapConfig | None = None, *, segment_table=None, rollout_table=None,
         workspace=None) -> GapReport:
    """Gap report of evaluation `eval_id`: its rollouts against the training episodes of its run.

    Reads the evaluation's row (table `evals`), the run's `train_ids` (`Workspace.run_info`), the
    demonstration dataset's and the evaluation dataset's segment tables (through
    `segment_table(dataset)` when given: a caller reading several evaluations caches them). Without
    `cfg`, :meth:`GapConfig.for_policy` picks the defaults for the run's policy.
    `rollout_table(evals_dataset)` replaces the evaluation dataset's segment table (`roboloop gaps`
    reads the rollout index, `catalog.index.load_table`; the report `analyze.rollouts.indexed_rollout_table`: then
    the catalog needs only the demonstration dataset, see :func:`gap_datasets`); either way the evaluation's rows are
    picked, a repeated (eval id, cell, index) pair counts once (`unique_rollouts`) and rollouts are taken in
    segment id order.
    With `workspace`, `segment_table` and `rollout_table` all given, `catalog` may be None (`roboloop gaps` reads
    both datasets' base properties from their indexes, `catalog.index.load_table`, and starts no catalog).
    """
    segment_table = segment_table or catalog.segment_table
    ws = workspace or catalog.workspace
    row, run_id, info = evaluated_run(ws, eval_id)
    train_ids = list(info.get("train_ids") or [])
    dataset = row.get("dataset") or info.get("dataset")
    evals_ds = row.get("evals_dataset") or schema.evals_dataset(dataset)
    demo = _filter(segment_table(dataset), SEGMENT_ID, train_ids).to_pylist()
    # the evaluation's rows first (a repeated (eval id, cell, index) pair repeats within one evaluation), then the repeats
    table = _read_columns((rollout_table or segment_table)(evals_ds), *PAIR_COLUMNS)
    table = unique_rollouts(_filter(table, PAIR_COLUMNS[0], [eval_id]))
    rollouts = _read_columns(table).sort_by(SEGMENT_ID) if table.num_rows else None
    if rollouts is None:
        raise GapError(f"evaluation {eval_id!r} has no rollouts in {evals_ds!r} (interrupted? resume it with `roboloop eval --resume {eval_id}`)")
    if not demo:
        raise GapError(f"none of the {len(train_ids)} training episodes of run {run_id!r} is in dataset {dataset!r}")
    fill_start_states(demo)
    rollouts = with_start_states(rollouts)
    cfg = cfg or GapConfig.for_policy(info)
    return gap_report(
        rollouts, demo, cfg, eval_id=eval_id, run_id=run_id, dataset=dataset, evals_dataset=evals_ds,
        missing_train_ids=len(set(train_ids)) - len(demo),
    )


def nearest_training(catalog, fails: list[dict[str, Any]], *, segment_table=None) -> dict[str, str]:
    """Add each failure's nearest training episode (`nearest_train_id`, `nearest_distance` scaled as in
    :class:`GapConfig`, `nearest_dataset`) in place, from its evaluation's run; returns eval id -> why it
    has none (a scripted policy, a missing run record) for evaluations that could not be matched."""
    segment_table = segment_table or catalog.segment_table
    ws = catalog.workspace
    eval_col = f"{schema.EPISODE}.{schema.EPISODE_EVAL_ID}"
    by_eval: dict[str, list[dict[str, Any]]] = {}
    for f in fails:
        by_eval.setdefault(f.get(eval_col), []).append(f)
    why: dict[str, str] = {}
    for eval_id, members in by_eval.items():
        if not isinstance(eval_id, str):  # "" for rollouts recorded outside `roboloop eval` (never the text "None")
            why[""] = "no eval id (recorded outside `roboloop eval`, e.g. with record.episode), so no training run to compare with"
            continue
        row = rows.read_row(ws, schema.EVALS_TABLE, eval_id)
        run_id = (row or {}).get("run_id") or ""
        if not run_id or run_id == schema.PROVENANCE_NONE:
            why[str(eval_id)] = "no training run (a scripted or external policy)"
            continue
        try:
            info = ws.run_info(run_id)
        except Exception as exc:  # noqa: BLE001 - a missing run record leaves the failures without a nearest episode
            why[str(eval_id)] = f"run {run_id} unreadable ({exc})"
            continue
        dataset = row.get("dataset") or info.get("dataset")
        demo = _filter(segment_table(dataset), SEGMENT_ID, list(info.get("train_ids") or [])).to_pylist()
        if not demo:
            why[str(eval_id)] = f"none of run {run_id}'s training episodes is in {dataset!r}"
            continue
        fill_start_states(demo)
        starts = [dict(f) for f in members]
        fill_start_states(starts)
        cfg = GapConfig.for_policy(info)
        axes = cfg.match_labels
        dist, index, _ = coverage_distances(
            start_states(starts), start_states(demo), cfg,
            rollout_labels=_labels(starts, axes) if axes else None, train_labels=_labels(demo, axes) if axes else None,
        )
        for f, d, i in zip(members, dist, index):
            if i >= 0:
                f.update(nearest_train_id=demo[int(i)][SEGMENT_ID], nearest_distance=float(d), nearest_dataset=dataset)
    return why


def nearest_training_episode(catalog, dataset: str, segment_id: str) -> dict:
    """The training episode whose start state is nearest rollout `segment_id`'s (:func:`nearest_training`):
    `nearest_train_id`, `nearest_dataset`, `nearest_distance`. A rollout of a policy without a training run has none."""
    rows = [r for r in catalog.segment_table(dataset).to_pylist() if r.get(schema.SEGMENT_ID) == segment_id]
    if not rows:
        raise CatalogError(f"no segment {segment_id!r} in {dataset!r}")
    why = nearest_training(catalog, rows)
    if "nearest_train_id" not in rows[0]:
        reason = next(iter(why.values()), "it is not a rollout of an evaluation")
        raise CatalogError(f"{segment_id} has no nearest training episode: {reason}")
    return rows[0]
