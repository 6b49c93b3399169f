"""Executing a collection plan (:mod:`roboloop.collect.plan`): seeds after the dataset's highest, the recording
settings the dataset already has, one `collect` call per task (or corrective episodes of a run), the plan row updated.

Separate from the plan type so that building and saving plans (`roboloop gaps`, `roboloop plan`) does not load the
rollout loop, the simulator or the recorder.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roboloop import rows, schema
from roboloop.collect.corrective import CorrectiveConfig, collect_corrective
from roboloop.collect.plan import (
    STATUS_EXECUTED,
    STATUS_EXECUTING,
    STATUS_INTERRUPTED,
    STATUS_PLANNED,
    Plan,
    PlanError,
    plan_row,
    write_plan_row,
)
from roboloop.collect.run import (
    CollectConfig,
    EpisodeJob,
    RecordingSpec,
    SeedRangeError,
    collect,
    episode_segment_id,
    highest_demo_seed,
    seed_floor,
)
from roboloop.collect.run import reserve_seeds as reserve_workspace_seeds
from roboloop.workspace import Workspace

__all__ = ["PlanRun", "dataset_max_seed", "execute_plan", "reserve_seeds", "spec_like_dataset"]


# --- seeds ---------------------------------------------------------------------------------

def dataset_max_seed(catalog, dataset: str, table=None) -> int | None:
    """Highest demonstration seed of `dataset`, registered or on disk (`collect.run.highest_demo_seed`)."""
    return highest_demo_seed(catalog, dataset, table)


def reserve_seeds(catalog, dataset: str, n: int, table=None) -> int:
    """Reserve `n` consecutive demonstration seeds for `dataset`; returns the first.

    Delegates to `collect.reserve_seeds` (the single place seeds are handed out, shared with
    `roboloop collect`): the first seed is after the highest seed the dataset holds
    (`collect.run.seed_floor`: registered or on disk) and every seed reserved before, under a
    workspace lock, so concurrent collects and plans never share a seed. Raises PlanError if
    the range would reach ``schema.DEMO_SEED_LIMIT`` (the evaluation seeds start there).
    """
    if n < 0:
        raise PlanError(f"cannot reserve {n} seeds")
    schema.validate_dataset_name(dataset)
    try:
        return reserve_workspace_seeds(catalog.workspace, dataset, n, floor=seed_floor(catalog, dataset, table)).start
    except SeedRangeError as exc:
        raise PlanError(
            f"no room for {n} demonstration seeds in {dataset}: seeds must stay below {schema.DEMO_SEED_LIMIT} "
            f"(evaluation seeds start there); {exc}"
        ) from None


# --- execution -----------------------------------------------------------------------------

@dataclass
class PlanRun:
    """What executing a plan did."""

    plan: Plan
    collected: dict[str, list[str]] = field(default_factory=dict)
    """Item key -> segment ids of every episode collected for it (this and earlier executions)."""
    new_segment_ids: list[str] = field(default_factory=list)
    """Episodes collected by this execution."""
    seeds: list[int] = field(default_factory=list)
    """Seeds used by this execution."""
    successes: int = 0
    """Successful episodes among the new ones."""
    failed_segment_ids: list[str] = field(default_factory=list)
    """New episodes the demonstrator failed (strict success): candidates for a quality flag."""
    wall_s: float = 0.0
    status: str = STATUS_PLANNED

    @property
    def done(self) -> bool:
        return all(len(self.collected.get(it.slot, ())) >= it.count for it in self.plan.items)


def spec_like_dataset(table):
    """The RecordingSpec most episodes of a dataset (its segment table, or None) were recorded with (default spec if none)."""
    if table is None:
        return RecordingSpec()
    cols = [f"{schema.EPISODE}.{c}" for c in (schema.EPISODE_CAMERAS, schema.EPISODE_CAMERA_SIZE, schema.EPISODE_CAMERA_HZ, schema.EPISODE_SCENE_HZ)]
    if table.num_rows == 0 or not all(c in table.column_names for c in cols):
        return RecordingSpec()
    combos = Counter(zip(*(table.column(c).to_pylist() for c in cols)))
    (cams, size, cam_hz, scene_hz), _ = combos.most_common(1)[0]
    cameras = () if not cams or cams == "none" else tuple(c for c in str(cams).split(",") if c)
    try:
        w, h = (int(v) for v in str(size).lower().split("x"))
        return RecordingSpec(cameras=cameras, width=w, height=h, camera_hz=int(cam_hz), scene_hz=int(scene_hz))
    except (TypeError, ValueError):
        return RecordingSpec(cameras=cameras)


def execute_plan(
    catalog,
    plan: Plan,
    *,
    workers: int = 1,
    on_result: Callable[[Any], None] | None = None,
    spec=None,
    steps: int | None = None,
    policy_source: Callable[[str], Any] | None = None,
) -> PlanRun:
    """Collect what `plan` asks for with the scripted demonstrator (through `collect.collect`), and its corrective
    items through `collect.corrective` (the item's run drives: `policy_source(run_id)` gives its `factory`,
    `provenance`, `cameras` and `camera_size`, as `roboloop.evaluate.run.resolve_policy` does).

    Items already collected by an earlier execution of the same plan (episodes still in the
    dataset) are not collected again. Seeds are reserved with :func:`reserve_seeds`. The plan's
    row is written before (executing) and after (executed, or interrupted with what finished).
    `on_result(EpisodeResult)` is called as each episode is registered. Failed demonstrations are
    listed in `failed_segment_ids` (flag candidates); failed corrective episodes are not (their labels are
    the expert's, whatever the outcome).
    """
    if policy_source is None and any(it.corrective for it in plan.items):
        raise PlanError(f"plan {plan.name!r} has corrective items: execute it with `roboloop collect --plan`, which loads "
                        "their runs (library: execute_plan(..., policy_source=...))")
    ws: Workspace = catalog.workspace
    run = PlanRun(plan)
    previous = plan_row(ws, plan.name) or {}
    present: set[str] = set()
    table = None
    if plan.dataset in catalog.dataset_names():
        table = catalog.segment_table(plan.dataset)  # fetched once: present ids, the recording spec, the seed floor
        present = set(table.column("segment_id").to_pylist())
    for key, ids in (previous.get("collected") or {}).items():
        kept = [s for s in ids if s in present]
        if kept:
            run.collected[key] = kept
    missing = [(it, it.count - len(run.collected.get(it.slot, []))) for it in plan.items]
    missing = [(it, k) for it, k in missing if k > 0]
    total = sum(k for _, k in missing)
    if total == 0:
        run.status = STATUS_EXECUTED
        write_plan_row(ws, plan, run.status, collected=run.collected)
        return run
    spec = spec or spec_like_dataset(table)
    start = reserve_seeds(catalog, plan.dataset, total, table)
    jobs, item_of_seed = [], {}
    seed = start
    for it, k in missing:
        cond = it.scene_conditions()
        for _ in range(k):
            jobs.append(EpisodeJob(seed, cond, episode_segment_id(plan.dataset, seed), task=it.task))
            item_of_seed[seed] = it
            seed += 1
    run.seeds = list(range(start, seed))
    run.status = STATUS_EXECUTING
    write_plan_row(ws, plan, run.status, collected=run.collected, seeds=[start, seed])

    def done(result) -> None:
        item = item_of_seed[result.seed]
        run.collected.setdefault(item.slot, []).append(result.segment_id)
        run.new_segment_ids.append(result.segment_id)
        run.successes += int(result.success)
        if not result.success and not item.corrective:
            run.failed_segment_ids.append(result.segment_id)
        if on_result is not None:
            on_result(result)

    t0 = time.perf_counter()
    try:
        groups: dict[tuple[str, str, str], list[EpisodeJob]] = {}  # (task, run, mode) -> jobs, in item order
        for job in jobs:
            item = item_of_seed[job.seed]
            groups.setdefault((job.task, item.run if item.corrective else "", item.mode), []).append(job)
        for (task, policy_run, mode), group in groups.items():
            if policy_run:
                _collect_corrective_jobs(catalog, plan.dataset, group, task=task, run=policy_run, mode=mode, spec=spec,
                                         steps=steps, workers=workers, source=policy_source(policy_run), on_result=done)
            else:
                collect(catalog, CollectConfig(dataset=plan.dataset, workers=workers, spec=spec, steps=steps, task=task),
                        jobs=group, on_result=done)
        run.status = STATUS_EXECUTED
    except BaseException:
        run.status = STATUS_INTERRUPTED
        raise
    finally:
        run.wall_s = time.perf_counter() - t0
        write_plan_row(
            ws, plan, run.status, collected=run.collected, seeds=[start, seed],
            executed_at=rows.now_iso(),
        )
    return run


def _collect_corrective_jobs(catalog, dataset: str, jobs: list[EpisodeJob], *, task: str, run: str, mode: str, spec, steps,
                             workers: int, source, on_result) -> None:
    """A plan's corrective episodes of one run: recorded like the dataset, plus the cameras the run's policy sees."""
    if source.cameras:
        w, h = source.camera_size or (spec.width, spec.height)
        spec = dataclasses.replace(spec, cameras=tuple(dict.fromkeys((*spec.cameras, *source.cameras))), width=w, height=h)
    cfg = CorrectiveConfig(run=run, dataset=dataset, mode=mode, task=task, workers=workers, spec=spec, steps=steps,
                           episodes=len(jobs))
    collect_corrective(catalog, cfg, policy_factory=source.factory, provenance=source.provenance, jobs=jobs, on_result=on_result)


