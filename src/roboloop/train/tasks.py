"""The task a training run learns, and the state inputs a policy reads by default on it.

A selection's episodes name their task (``episode.task``); :func:`selection_tasks` reads them.
Without ``--state`` (``TrainConfig.state`` None) a policy reads its own ``default_state``
(the built-in ``mlp``: ALOHA's joints and the cube pose). When that names a path a task's
episodes do not record, the run reads the task's ``policy_state`` instead (insertion: joints,
peg pose, socket pose), written into the run's config as explicit paths (so deployment,
``--like`` and ``--resume`` read the same ones, widths read from the data). A run on transfer
cube keeps ``state`` None: its features, widths and digest are exactly as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from roboloop import schema
from roboloop.envs import DEFAULT_TASK, get_task, tasks
from roboloop.train.config import TrainConfig, TrainError
from roboloop.train.protocol import policy_class

__all__ = ["registered_task", "selection_tasks", "state_for_tasks"]

_TASK_COLUMN = f"{schema.EPISODE}.{schema.EPISODE_TASK}"


def selection_tasks(catalog, sel) -> tuple[str, ...]:
    """The distinct ``episode.task`` values of a selection's train and holdout episodes, sorted
    (an episode without one: the default task)."""
    table = catalog.segment_table(sel.dataset)
    if _TASK_COLUMN not in table.column_names:
        return (DEFAULT_TASK,)
    ids = set(sel.train_ids) | set(sel.holdout_ids)
    names = {str(t or DEFAULT_TASK) for s, t in zip(table.column("segment_id").to_pylist(), table.column(_TASK_COLUMN).to_pylist())
             if s in ids}
    return tuple(sorted(names)) or (DEFAULT_TASK,)


def registered_task(names: Sequence[str]) -> str | None:
    """The run's task: the one registered task its episodes name, else None (several tasks, or
    episodes imported with free-text tasks)."""
    return names[0] if len(names) == 1 and names[0] in tasks() else None


def state_for_tasks(cfg: TrainConfig, names: Sequence[str]) -> TrainConfig:
    """`cfg` with the default state inputs resolved for the tasks `names` (module docstring).

    Unchanged when `cfg.state` is given, when a task is not registered (nothing known about its
    streams), or when the policy's `default_state` only names paths every task records. Raises
    TrainError when the tasks need different default inputs (pass ``--state`` paths they all record).
    """
    if cfg.state is not None or not names or any(n not in tasks() for n in names):
        return cfg
    default = set(policy_class(cfg.policy).default_state)
    needed = {get_task(n).policy_state for n in names}
    if all(default <= set(paths) for paths in needed):
        return cfg
    if len(needed) > 1:
        raise TrainError(
            f"the selection spans tasks {', '.join(names)} whose default state inputs differ "
            f"({'; '.join(', '.join(p) for p in sorted(needed))}); train on one task's episodes, or pass "
            "--state with entity paths every episode records")
    return dataclasses.replace(cfg, state=next(iter(needed)))
