"""Tasks: what a robot does, under which conditions, and how success is judged.

:mod:`roboloop.envs.task` defines the task protocol; ``envs/aloha/`` is the ALOHA bimanual
transfer-cube task in MuJoCo (its scene conditions, simulator, scripted demonstrator, strict
success, and what one of its episodes records).

**The registry.** :func:`tasks` lists the registered tasks by name, :func:`get_task` gives one
(:class:`UnknownTaskError`, listing the tasks, for a name it does not know). :func:`get_task_spec` and
:func:`task_specs` give a task's description (:class:`~roboloop.envs.task.TaskSpec`: vocabulary, start states,
stages; what `roboloop gaps` and plans need): for a built-in task from its ``spec`` module, without loading its
recording code (rerun, video); a task registered or installed as a plugin is its own description. Built-in tasks are
named by import path and loaded on first use; a package adds its own with
:func:`register_task` or the entry point group ``roboloop.tasks`` (``name = "module:attr"``,
where ``attr`` is a task instance or a class built without arguments).

Importing this package loads no simulator.
"""

from __future__ import annotations

import functools
import inspect
import logging
from importlib.metadata import entry_points
from typing import Any

from roboloop import plugins, schema
from roboloop.envs.task import Task, TaskSpec
from roboloop.errors import RoboloopError

__all__ = [
    "DEFAULT_TASK", "ENTRY_POINT_GROUP", "Task", "TaskLoadError", "TaskRegistrationError", "TaskSpec", "UnknownTaskError", "describe_task", "failure_words",
    "get_task", "get_task_spec", "register_task", "task_specs", "tasks", "unregister_task",
]

DEFAULT_TASK = "transfer_cube"
"""The task of an episode, collect or evaluation that names none (every recording before tasks had names)."""
ENTRY_POINT_GROUP = "roboloop.tasks"
"""Entry point group through which installed packages add tasks."""

BUILTIN: dict[str, str] = {
    "transfer_cube": "roboloop.envs.aloha.task:TRANSFER_CUBE",
    "insertion": "roboloop.envs.insertion.task:INSERTION",
}
"""Built-in tasks: name -> ``module:attribute`` (loaded on first use)."""

log = logging.getLogger(__name__)
BUILTIN_SPECS: dict[str, str] = {
    "transfer_cube": "roboloop.envs.aloha.spec:TRANSFER_CUBE_SPEC",
    "insertion": "roboloop.envs.insertion.spec:INSERTION_SPEC",
}
"""Built-in tasks' descriptions (:class:`TaskSpec`): name -> ``module:attribute``, modules without recording code."""

_REGISTERED: dict[str, Any] = {}
_BUILTIN_LOADED: dict[str, Any] = {}
_SPECS: dict[str, Any] = {}


class UnknownTaskError(RoboloopError, ValueError):
    """A task name the registry does not know (the message lists the tasks)."""


class TaskLoadError(RoboloopError):
    """An installed task (entry point group ``roboloop.tasks``) failed to import, or is not a task."""


class TaskRegistrationError(RoboloopError, ValueError):
    """:func:`register_task` refused an object: it lacks members of the task protocol, or its name is taken."""


def register_task(task: Any, *, replace: bool = False) -> Any:
    """Register a task object (it must have the members of :class:`Task`); returns it.

    TaskRegistrationError (a ValueError) when a task of that name is registered already (unless `replace`) or the
    object lacks members of the protocol.
    """
    missing = _missing_members(task)
    if missing:
        raise TaskRegistrationError(f"{task!r} is not a task: it lacks {', '.join(missing)} (see roboloop.envs.task.Task)")
    name = str(task.name)
    if not replace and name in _names() and _load(name) is not task:
        raise TaskRegistrationError(f"a task named {name!r} is registered already; pass replace=True to replace it")
    _REGISTERED[name] = task
    return task


def unregister_task(name: str) -> None:
    """Forget a task registered with :func:`register_task` (a built-in or entry-point task loads again on next use)."""
    _REGISTERED.pop(name, None)


_MEMBERS = tuple(
    m for m in dir(Task) if not m.startswith("_")
) + tuple(dict.fromkeys(a for k in Task.__mro__ if k is not object for a in inspect.get_annotations(k) if not a.startswith("_")))


def _missing_members(task: Any) -> list[str]:
    return [m for m in _MEMBERS if not hasattr(task, m)]


@functools.cache
def _entry_points() -> dict[str, Any]:
    """The installed packages' tasks (read once per process: scanning the installed distributions is slow).

    One named like a built-in task is never used (the built-in wins: stored episodes and runs name it): it is
    left out with a warning naming it, rather than silently shadowed.
    """
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name in sorted(found.keys() & BUILTIN.keys()):
        log.warning("installed task %r (%s, entry point group %s) has the name of a built-in task and is not used; give it "
                    "another name in its package's [project.entry-points.\"%s\"]", name, found.pop(name).value,
                    ENTRY_POINT_GROUP, ENTRY_POINT_GROUP)
    return found


def _names() -> list[str]:
    return sorted({*BUILTIN, *_REGISTERED, *_entry_points()})


def _instance(obj: Any) -> Any:
    return obj() if isinstance(obj, type) else obj


def _load(name: str) -> Any:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in BUILTIN:
        task = _BUILTIN_LOADED[name] = _instance(plugins.import_object(BUILTIN[name]))
    else:
        ep = _entry_points()[name]
        try:
            task = _instance(ep.load())
        except Exception as exc:  # a broken plugin is named, with its error, not a traceback
            raise TaskLoadError(f"task {name!r} ({ep.value}, entry point group {ENTRY_POINT_GROUP}) failed to load: "
                                f"{type(exc).__name__}: {exc}; fix or uninstall the package that provides it") from exc
        missing = _missing_members(task)
        if missing:  # checked here, once, rather than as an AttributeError deep inside a command
            raise TaskLoadError(f"task {name!r} ({ep.value}, entry point group {ENTRY_POINT_GROUP}) is not a task: it lacks "
                                f"{', '.join(missing)}; give it every member of roboloop.envs.task.Task (the README's "
                                "'Writing a task'; subclassing a built-in task is the short way), or uninstall the package")
    _REGISTERED[name] = task
    return task


def tasks() -> dict[str, Any]:
    """Every registered task, by name (sorted)."""
    return {name: _load(name) for name in _names()}


def get_task(name: str | None = None) -> Any:
    """The task called `name` (None: :data:`DEFAULT_TASK`); UnknownTaskError listing the tasks otherwise."""
    name = DEFAULT_TASK if name is None else str(name).strip()
    if name not in _REGISTERED and name not in _names():
        raise UnknownTaskError(_unknown_task_message(name))
    return _load(name)


def _unknown_task_message(name: str) -> str:
    """What :class:`UnknownTaskError` says: the registered tasks and how to add one of your own (a task is given
    by its name, never by import path: the name is what episodes, runs and grid cells store)."""
    listed = f"tasks: {', '.join(_names())} (list them with `roboloop tasks`)"
    target, task = (name, "your_task") if ":" in name else ("pkg.mod:attr", name)
    how = (f"name it in your package's [project.entry-points.\"{ENTRY_POINT_GROUP}\"] (`{task} = \"{target}\"`) and "
           "install the package (`pip install -e .`), or call roboloop.envs.register_task(...) in the process that runs it")
    if ":" in name:
        return f"unknown task {name!r}: a task is given by its name (its `name`), not its import path; {listed}; {how}"
    return f"unknown task {name!r}; {listed}; a task of your own: {how}"


def get_task_spec(name: str | None = None) -> Any:
    """The description (:class:`TaskSpec`) of the task called `name` (None: :data:`DEFAULT_TASK`): a built-in
    task's from :data:`BUILTIN_SPECS` (no simulator or recording code loads), any other task itself (it has every
    member of the description); UnknownTaskError listing the tasks, as :func:`get_task`."""
    name = DEFAULT_TASK if name is None else str(name).strip()
    registered = _REGISTERED.get(name)
    if name in BUILTIN_SPECS and (registered is None or registered is _BUILTIN_LOADED.get(name)):  # not replaced
        if name not in _SPECS:
            _SPECS[name] = _instance(plugins.import_object(BUILTIN_SPECS[name]))
        return _SPECS[name]
    return registered if registered is not None else get_task(name)


def task_specs() -> dict[str, Any]:
    """Every registered task's description (:func:`get_task_spec`), by name (sorted)."""
    return {name: get_task_spec(name) for name in _names()}


def describe_task(task: Any) -> dict[str, Any]:
    """A task as plain data (what `roboloop tasks` prints): its axes with labels, aliases and counts,
    cameras, stages, failure kinds, episode length and rate, start-state columns."""
    axes = []
    for axis in task.vocabulary.axes:
        axes.append({
            "axis": axis.name,
            "labels": list(axis.labels),
            "aliases": dict(axis.aliases),
            "counts": f"0-{axis.max_count}" if axis.max_count is not None else "",
            "appearance": axis.name in task.appearance_axes,
        })
    return {
        "name": task.name,
        "description": task.description,
        "axes": axes,
        "cameras": list(task.cameras),
        "stages": list(task.stages),
        "failure_kinds": dict(task.failure_kinds),
        "episode_steps": int(task.episode_steps),
        "control_hz": int(task.control_hz),
        "start_state": list(task.start_columns),
        "classifier_version": int(task.classifier_version),
    }


def failure_words() -> dict[str, str]:
    """Every failure kind in words: the stored kinds `schema.FAILURE_KINDS` names (older classifiers'
    included), then each registered task's own (`TaskSpec.failure_kinds`: the descriptions, no recording code)."""
    words = dict(schema.FAILURE_KINDS)
    for task in task_specs().values():
        words.update(task.failure_kinds)
    return words
