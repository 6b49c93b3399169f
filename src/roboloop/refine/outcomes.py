"""Re-judge recorded outcomes: the failure kind and moment, recomputed, as a new `outcome` layer version.

DESIGN.md, "Outcomes can be re-judged; the recording is not rewritten": the base
recording's ``outcome.*`` is what was judged at record time. :func:`reoutcome` recomputes
the judgement with the current classifier (``envs/aloha/success.py``) and writes it as a new
version of the segment's ``outcome`` layer (``schema.OUTCOME_LAYER``: the ``outcome``
properties and a new ``/outcome`` text, registered with REPLACE after the base layer, so its
values win in the catalog's segment table and in the viewer) plus a new row of the rollout index, so every reader (success,
compare, failures, gaps, report) sees the re-judged outcome. The base file is only read.

**Why re-simulation, measured.** The classifier needs what the cube touches (fingers,
table, robot links) on every step; a recording holds the joint positions, the joint
targets (the actions) and the cube pose, not the contacts. The simulator is deterministic
(same seed, scene conditions and actions give bit-identical states), so the rollout is
replayed from its seed and scene conditions with its recorded actions, and the replay is
checked against the recording on every step: the 14 joint positions and the cube pose must
equal the recorded values (within ``REPLAY_TOLERANCE``; stored as float64 they match
exactly here). A segment whose replay diverges (recorded with other physics, or another
robot) is not re-judged and is listed with the step and size of the divergence, so a
re-judged outcome is always the judgement of exactly the recorded motion. A segment whose
outcome a person labelled (`roboloop label`, ``outcome.source = "label"``) is never re-judged:
it is listed as skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rerun as rr

from roboloop import faults, rows, schema
from roboloop.catalog.index import BASE_GROUPS
from roboloop.catalog.index import read as read_index
from roboloop.collect.run import outcome_properties
from roboloop.envs import DEFAULT_TASK, UnknownTaskError, get_task
from roboloop.errors import RoboloopError
from roboloop.record.episode import write_layer_version
from roboloop.refine.layers import read_streams

__all__ = ["REPLAY_TOLERANCE", "ReplayMismatch", "ReoutcomeError", "ReoutcomeReport", "judge_replay", "reoutcome"]

REPLAY_TOLERANCE = 1e-6
"""Largest difference (rad, m) between a replayed and a recorded state that still counts as the same motion."""


class ReoutcomeError(RoboloopError):
    """Nothing to re-judge (unknown dataset or evaluation) or a rollout lacks what a replay needs."""


class ReplayMismatch(ReoutcomeError):
    """The replay of a recording diverged from it: it cannot be re-judged by re-simulation."""


@dataclass
class ReoutcomeReport:
    dataset: str
    judged: dict[str, dict[str, Any]] = field(default_factory=dict)  # segment id -> new outcome group
    changed: list[str] = field(default_factory=list)  # segment ids whose kind or moment changed
    skipped: dict[str, str] = field(default_factory=dict)  # segment id -> why it was not re-judged
    before: dict[str, str] = field(default_factory=dict)  # segment id -> the kind it had


def _conditions(row: Mapping[str, Any], task):
    prefix = f"{schema.SCENE}."
    return task.conditions_from_dict({k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix) and v is not None})


def judge_replay(sim, seed: int, conditions, targets: np.ndarray, positions: np.ndarray | None = None,
                 cube: np.ndarray | None = None, *, tolerance: float = REPLAY_TOLERANCE):
    """Replay `targets` (steps x 14) from `seed`/`conditions` in `sim`; the `SuccessResult` of the replay.

    With `positions` / `cube` (the recorded joint positions and cube pose, one row per step,
    observed before each action) every step is checked: a divergence raises ReplayMismatch.
    """
    sim.reset(int(seed), conditions)
    task = get_task(sim.task)
    tracker = task.tracker()
    recorded = ((schema.JOINT_POSITIONS, "joint positions differ", positions), (schema.CUBE_POSE, "cube pose differs", cube))
    checked = [(path, name, values) for path, name, values in recorded if values is not None]
    for k in range(len(targets)):
        state = task.snapshot(sim) if checked else {}
        for path, name, values in checked:
            if path not in state:
                continue
            diff = float(np.max(np.abs(np.asarray(state[path], np.float64) - values[k])))
            if not diff <= tolerance:
                raise ReplayMismatch(f"the replay's {name} from the recording by {diff:.3g} at step {k} "
                                     f"(tolerance {tolerance:g}): recorded with other physics or software")
        action = np.asarray(targets[k], np.float64)
        reward = sim.step(action)
        tracker.update(sim, reward, action)
    return tracker.result()


def reoutcome(
    catalog,
    dataset: str,
    *,
    eval_ids: Sequence[str] | None = None,
    segment_ids: Sequence[str] | None = None,
    all_segments: bool = False,
    on_segment: Callable[[str], None] | None = None,
) -> ReoutcomeReport:
    """Re-judge the failures of `dataset` (rollouts or demonstrations) and write `outcome` layer versions.

    By default only failures judged by an older classifier (no `outcome.classifier` or a
    lower version) are re-judged; `all_segments` re-judges every segment in scope (successes
    too: a success stays a success, the replay is the same motion). `eval_ids` /
    `segment_ids` narrow the scope. Per batch of 50: the layer files are written, then the
    rollout-index rows, then the files are registered; an interruption loses at most the
    batch in flight, and a re-run re-judges any segment whose catalog or index still holds
    an older judgement. The base files are only read.
    """
    ws = catalog.workspace
    if dataset not in ws.datasets():
        raise ReoutcomeError(f"no dataset {dataset!r} in {ws.root}; datasets: {', '.join(ws.datasets()) or '(none)'}")
    table = _in_scope(catalog.segment_table(dataset).to_pylist(), dataset, eval_ids, segment_ids)
    indexed = rows.rows_dir(ws, schema.rollout_index_table(dataset)).is_dir()  # evaluation datasets keep an index
    index_rows = {r["segment_id"]: r for r in read_index(ws, dataset)} if indexed else {}
    if not all_segments:
        table = _judged_by_an_older_classifier(table, index_rows if indexed else None)
    report = ReoutcomeReport(dataset)
    if not table:
        return report
    sims: dict[str, Any] = {}
    entry = catalog.dataset(dataset)
    entities = [schema.JOINT_TARGETS, schema.JOINT_POSITIONS, schema.CUBE_POSE]
    try:
        for lo in range(0, len(table), 50):
            batch = table[lo : lo + 50]
            streams = read_streams(entry, [r["segment_id"] for r in batch], entities)
            paths = []
            for r in batch:
                path = _rejudge(ws, dataset, sims, r, streams[r["segment_id"]], report)
                if path is not None:
                    paths.append(path)
                    if on_segment is not None:
                        on_segment(r["segment_id"])
            if paths:
                # index rows before registration: a crash after the layer files are written leaves the workspace
                # consistent (restore registers them), and a re-run re-judges whatever the index still holds as old
                if indexed:
                    _update_index(ws, dataset, batch, report, index_rows)
                catalog.register_files(dataset, paths, layer=schema.OUTCOME_LAYER, validate=False)
                faults.point("layer.registered")
    finally:
        for sim in sims.values():
            sim.close()
    return report


_OK_COL = f"{schema.OUTCOME}.{schema.OUTCOME_SUCCESS}"
_EVAL_COL = f"{schema.EPISODE}.{schema.EPISODE_EVAL_ID}"
_VERSION_COL = f"{schema.OUTCOME}.{schema.OUTCOME_CLASSIFIER}"
_REASON_COL = f"{schema.OUTCOME}.{schema.OUTCOME_FAILURE_REASON}"


def _in_scope(table: list[dict[str, Any]], dataset: str, eval_ids: Sequence[str] | None,
              segment_ids: Sequence[str] | None) -> list[dict[str, Any]]:
    """The segment-table rows of `eval_ids` / `segment_ids` (each must exist), or all rows."""
    if eval_ids:
        known = {r.get(_EVAL_COL) for r in table}
        unknown = [e for e in eval_ids if e not in known]
        if unknown:
            raise ReoutcomeError(f"no rollouts of evaluation(s) {', '.join(unknown)} in {dataset}; "
                                 f"evaluations there: {', '.join(sorted(str(k) for k in known if k)) or '(none)'}")
        table = [r for r in table if r.get(_EVAL_COL) in set(eval_ids)]
    if segment_ids:
        wanted = set(segment_ids)
        missing = wanted - {r["segment_id"] for r in table}
        if missing:
            raise ReoutcomeError(f"no segment(s) {', '.join(sorted(missing))} in {dataset}")
        table = [r for r in table if r["segment_id"] in wanted]
    return table


def _judged_by_an_older_classifier(table: list[dict[str, Any]], index_rows: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The failures whose judgement (the older of the catalog's and, with an index, the index's) predates this classifier."""

    def version(r: Mapping[str, Any]) -> int:
        v = int(r.get(_VERSION_COL) or 1)
        if index_rows is not None:
            v = min(v, int((index_rows.get(r["segment_id"]) or {}).get(_VERSION_COL) or 1))
        return v

    return [r for r in table if r.get(_OK_COL) is False and version(r) < _classifier_version(r)]


def _classifier_version(row: Mapping[str, Any]) -> int:
    """The version of the success judgement of the row's task (0 for a task not registered here: never older)."""
    try:
        return int(get_task(row.get(f"{schema.EPISODE}.{schema.EPISODE_TASK}") or DEFAULT_TASK).classifier_version)
    except UnknownTaskError:
        return 0


def _rejudge(ws, dataset: str, sims: dict[str, Any], r: Mapping[str, Any], streams, report: ReoutcomeReport):
    """Replay one segment, judge it and write its outcome layer version (its path); None if it was skipped."""
    sid = r["segment_id"]
    report.before[sid] = str(r.get(_REASON_COL))
    if r.get(f"{schema.OUTCOME}.{schema.OUTCOME_SOURCE}") == schema.OUTCOME_SOURCE_LABEL:
        who = r.get(f"{schema.OUTCOME}.{schema.OUTCOME_LABELLED_BY}") or "a person"
        report.skipped[sid] = f"labelled by {who}: a person's label is not re-judged (relabel it with `roboloop label`)"
        return None
    try:
        res, dt = _replay(sims, r, streams)
    except ReoutcomeError as exc:
        report.skipped[sid] = str(exc)
        return None
    task = r.get(f"{schema.EPISODE}.{schema.EPISODE_TASK}") or DEFAULT_TASK
    new = outcome_properties(res, len(streams.values(schema.JOINT_TARGETS)), dt, task)
    new[schema.OUTCOME_JUDGED_AT] = rows.now_iso()
    report.judged[sid] = new
    old_t = r.get(f"{schema.OUTCOME}.{schema.OUTCOME_FAILURE_TIME_S}")
    if new[schema.OUTCOME_FAILURE_REASON] != r.get(_REASON_COL) or not _same(new[schema.OUTCOME_FAILURE_TIME_S], old_t):
        report.changed.append(sid)
    text = rr.TextDocument(get_task(task).markdown(_groups(r, new)), media_type="text/markdown")
    return write_layer_version(ws, dataset, schema.OUTCOME_LAYER, sid, {schema.OUTCOME: new}, statics={schema.OUTCOME_TEXT: text})


def _update_index(ws, dataset: str, batch, report: ReoutcomeReport, index_rows: Mapping[str, Any]) -> None:
    """The rollout-index rows of the batch's re-judged segments, with their new outcome."""
    for r in batch:
        sid = r["segment_id"]
        if sid in report.judged:
            base = index_rows.get(sid) or {k: v for k, v in r.items()
                                           if k == "segment_id" or k.partition(".")[0] in BASE_GROUPS}
            merged = {**base, **{f"{schema.OUTCOME}.{k}": v for k, v in report.judged[sid].items()}}
            rows.write_row(ws, schema.rollout_index_table(dataset), sid, merged)


def _groups(row: Mapping[str, Any], outcome: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Friendly segment-table row + the new outcome -> property groups (for the outcome text)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        group, sep, name = key.partition(".")
        if sep and value is not None:
            out.setdefault(group, {})[name] = value
    out[schema.OUTCOME] = {**out.get(schema.OUTCOME, {}), **outcome}
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


def _replay(sims: dict[str, Any], row: Mapping[str, Any], streams) -> tuple[Any, float]:
    sid = row["segment_id"]
    seed = row.get(f"{schema.EPISODE}.{schema.EPISODE_SEED}")
    name = row.get(f"{schema.EPISODE}.{schema.EPISODE_TASK}") or DEFAULT_TASK
    hz = row.get(f"{schema.EPISODE}.{schema.EPISODE_CONTROL_HZ}") or schema.CONTROL_HZ
    targets = streams.values(schema.JOINT_TARGETS)
    if seed is None or targets is None or len(targets) == 0:
        raise ReoutcomeError(f"{sid} has no seed or no recorded joint targets: it cannot be replayed")
    try:
        task = get_task(name)
    except UnknownTaskError as exc:
        raise ReoutcomeError(f"{sid}: task {name!r} cannot be simulated here ({exc})") from exc
    try:
        conditions = _conditions(row, task)
    except (ValueError, TypeError) as exc:
        raise ReoutcomeError(f"{sid}: its scene conditions do not read back ({exc})") from exc
    sim = sims.get(name)
    if sim is None:
        try:
            sim = sims[name] = task.make_sim(())
        except ValueError as exc:
            raise ReoutcomeError(f"{sid}: task {name!r} cannot be simulated here ({exc})") from exc
    positions = streams.values(schema.JOINT_POSITIONS)
    cube = streams.values(schema.CUBE_POSE)
    res = judge_replay(sim, int(seed), conditions, targets, positions, cube)
    return res, 1.0 / float(hz)
