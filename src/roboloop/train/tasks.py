"""The task a training run learns, and the state inputs a policy reads by default on it.

A selection's episodes name their task (``episode.task``); :func:`selection_tasks` reads them.
Without ``--state`` (``TrainConfig.state`` None) a policy reads its own ``default_state``
(the built-in ``mlp``: ALOHA's joints and the cube pose). When that names a path a task's
episodes do not record, the run reads the task's ``policy_state`` instead (insertion: joints,
peg pose, socket pose), written into the run's config as explicit paths (so deployment,
``--like`` and ``--resume`` read the same ones, widths read from the data). A run on transfer
cube keeps ``state`` None: its features, widths and digest are exactly as before.

A selection spanning registered tasks trains one multi-task policy (:func:`state_for_tasks`):
the task is an input (a one-hot over the run's tasks) and the state is the union of the
tasks' ``policy_state`` paths, zero where a task's episodes lack one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from roboloop import schema
from roboloop.envs import DEFAULT_TASK, get_task, tasks
from roboloop.train.config import TrainConfig
from roboloop.train.protocol import policy_class

__all__ = ["registered_task", "segment_tasks", "selection_tasks", "state_for_tasks"]

_TASK_COLUMN = f"{schema.EPISODE}.{schema.EPISODE_TASK}"


def segment_tasks(catalog, dataset: str, segment_ids: Sequence[str]) -> list[str]:
    """The ``episode.task`` of each segment (an episode without one: the default task)."""
    table = catalog.segment_table(dataset)
    if _TASK_COLUMN not in table.column_names:
        return [DEFAULT_TASK] * len(segment_ids)
    by_id = dict(zip(table.column("segment_id").to_pylist(), table.column(_TASK_COLUMN).to_pylist()))
    return [str(by_id.get(s) or DEFAULT_TASK) for s in segment_ids]


def selection_tasks(catalog, sel) -> tuple[str, ...]:
    """The distinct ``episode.task`` values of a selection's train and holdout episodes, sorted
    (an episode without one: the default task)."""
    names = set(segment_tasks(catalog, sel.dataset, [*sel.train_ids, *sel.holdout_ids]))
    return tuple(sorted(names)) or (DEFAULT_TASK,)


def registered_task(names: Sequence[str]) -> str | None:
    """The run's task: the one registered task its episodes name, else None (several tasks, or
    episodes imported with free-text tasks)."""
    return names[0] if len(names) == 1 and names[0] in tasks() else None


def state_for_tasks(cfg: TrainConfig, names: Sequence[str]) -> TrainConfig:
    """`cfg` with the default state inputs resolved for the tasks `names` (module docstring).

    Unchanged when a task is not registered (nothing known about its streams), or, on one task,
    when `cfg.state` is given or the policy's `default_state` only names paths the task records.
    Several registered tasks make a multi-task run (`cfg.tasks` = `names`, a one-hot `task`
    input): without ``--state`` it reads the union of the tasks' ``policy_state`` paths (in task
    order, first seen first), zeros where a task's episodes lack one.
    """
    if not names or any(n not in tasks() for n in names):
        return cfg
    if len(names) > 1:
        if cfg.state is not None:
            return dataclasses.replace(cfg, tasks=tuple(names))
        union = tuple(dict.fromkeys(p for n in names for p in get_task(n).policy_state))
        return dataclasses.replace(cfg, state=union, tasks=tuple(names))
    if cfg.state is not None:
        return cfg
    default = set(policy_class(cfg.policy).default_state)
    needed = get_task(names[0]).policy_state
    if default <= set(needed):
        return cfg
    return dataclasses.replace(cfg, state=needed)
