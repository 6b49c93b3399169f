"""Deploy: rollouts of a policy over a grid of scene conditions with paired seeds, recorded as episodes.

Library use::

    from roboloop.catalog.client import Catalog
    from roboloop.evaluate.run import EvalConfig, evaluate, parse_grid

    with Catalog() as cat:
        cfg = EvalConfig(dataset="aloha", policy="scripted", grid=parse_grid("region=near,far yaw=none,any"),
                         episodes_per_cell=30)
        report = evaluate(cat, cfg)
        print(report.eval_id, report.successes, "/", report.n)

**Grid and seeds.** A grid is a product of scene-condition axes (``region``, ``yaw``,
``lighting``, ``table``, ``distractors``), each with canonical preset labels (aliases
such as ``near`` -> ``left`` resolve first). A cell is a dict ``axis -> label``; its key
is ``"axis=label,..."`` over the sorted axes. Episode ``i`` of a cell uses
:func:`cell_seed` ``(key, i)``, a pure function of the cell and the index (hashed into the
evaluation seed range, disjoint from demonstration seeds). Cells and seeds are built
before any policy exists: two policies evaluated on one grid face identical scenes, one
to one, and a comparison pairs them on (cell, seed).

**Tasks.** The axes and labels are those of the task (:func:`roboloop.envs.get_task`): the
evaluation's ``task`` (``EvalConfig.task``), or, on a grid with a ``task`` axis
(``task=transfer_cube,insertion region=near``), each cell's own. Each cell is validated by its
task's vocabulary, so every listed task must have every other axis of the grid. ``task`` is in
a cell's key (and so in its seeds) only when the grid names it: a grid without it keeps its
keys. Rollouts of a cell run and record its task (one collect per task).

**Rollouts** are recorded by collect's recorder into ``<dataset>_evals`` with
``kind = "rollout"`` and provenance properties (``episode.eval_id``, ``run_id``,
``checkpoint_sha256``, ``selection``, ``selection_digest``, ``config_digest``, ``cell``,
``index_in_cell``; ``"none"`` for a policy without a training run) and registered the
moment each finishes; a row per rollout is added to the rollout index
(:mod:`roboloop.catalog.index`) right after its registration.

**The evaluation row** (table ``schema.EVALS_TABLE``, key = eval id) is written with
status ``running`` at the start and ``finished`` / ``interrupted`` / ``failed`` at the
end. ``evaluate(..., resume=True)`` runs only the (cell, index) pairs that the catalog
does not hold yet for that eval id.

**Cameras.** The recorded cameras are ``cfg.cameras`` plus every camera the policy needs
(a vision run's ``run_info(...)["cameras"]``); all are rendered at one size and rate, the
policy's ``camera_size`` and ``camera_hz`` when it has cameras (the policy must see what it was
trained on), else ``cfg.camera_size`` and ``cfg.camera_hz``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import itertools
import json
import math
import time
import tomllib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roboloop import rows, schema
from roboloop.catalog.index import compact as compact_index
from roboloop.catalog.index import unique_rollouts
from roboloop.catalog.index import write_row as write_index_row
from roboloop.collect.run import (
    CollectConfig,
    EpisodeJob,
    EpisodeResult,
    RecordingSpec,
    ScriptedPolicy,
    collect,
)
from roboloop.config import Config
from roboloop.envs import DEFAULT_TASK, UnknownTaskError, get_task, get_task_spec, tasks
from roboloop.envs.conditions import Vocabulary
from roboloop.errors import RoboloopError, UnknownRunError
from roboloop.evaluate.table import EvaluateError, eval_row, evals_dataset_of, latest_eval_ids, list_evals
from roboloop.train import PolicyFactory, run_info
from roboloop.workspace import WRITER_EVAL, WRITER_RUN, DamagedFileError

__all__ = [
    "SEED_RULE",
    "EvalConfig",
    "EvalReport",
    "EvaluateError",
    "evals_dataset_of",
    "latest_eval_ids",
    "Grid",
    "GridError",
    "PolicySource",
    "canonical_label",
    "check_new",
    "check_resumable",
    "TASK_AXIS",
    "cell_conditions",
    "cell_key",
    "cell_seed",
    "cell_task",
    "grid_axes",
    "parse_cell_key",
    "eval_row",
    "evaluate",
    "finished_pairs",
    "list_evals",
    "load_config",
    "parse_grid",
    "resumable_row",
    "resolve_policy",
    "rollout_jobs",
    "rollout_outcomes",
    "run_dataset",
    "run_task",
    "valid_labels",
    "writing_evals",
]

SEED_RULE = "EVAL_SEED_BASE + int.from_bytes(sha256(f'{cell_key}#{index}').digest()[:8], 'big') % EVAL_SEED_SPAN"
"""How evaluation seeds are derived (stored in every evaluation row)."""


class GridError(EvaluateError):
    """A grid with an unknown axis or label, or malformed text."""


# --- labels ------------------------------------------------------------------------------------

TASK_AXIS = schema.TASK_AXIS
"""The grid axis that names a cell's task (`task=transfer_cube,insertion`)."""


def _get_task(name: str):
    try:
        return get_task(name)
    except UnknownTaskError as exc:
        raise GridError(str(exc)) from None


def grid_axes(task: str = DEFAULT_TASK) -> tuple[str, ...]:
    """The axes a grid of `task` may name: the task's condition axes, then `task`."""
    return (*_get_task(task).vocabulary.names, TASK_AXIS)


def _cell_task(cell: Mapping[str, Any], task: str) -> str:
    """The task of a cell: its `task` label when it names one, else `task`."""
    return canonical_label(TASK_AXIS, cell[TASK_AXIS]) if TASK_AXIS in cell else task


def valid_labels(axis: str, task: str = DEFAULT_TASK) -> list[str]:
    """Every label `axis` accepts for `task` (canonical names first, then aliases, then counts); the
    registered tasks for the `task` axis."""
    if axis == TASK_AXIS:
        return sorted(tasks())
    vocabulary = _get_task(task).vocabulary
    if axis not in vocabulary.names:
        raise GridError(f"unknown grid axis {axis!r}; valid axes: {', '.join(grid_axes(task))} (of task {task!r})")
    return vocabulary.axis(axis).accepted()


def canonical_label(axis: str, label: str, task: str = DEFAULT_TASK) -> str:
    """The canonical label of `label` on `axis` of `task` (`near` -> `left`, distractors `2` -> `few`):
    the task's rule (:mod:`roboloop.envs.conditions`), as a GridError when unknown. On the `task`
    axis, a registered task's name."""
    valid = valid_labels(axis, task)
    key = str(label).strip().lower() if axis == TASK_AXIS else _get_task(task).vocabulary.lookup(axis, label)
    if key is None or (axis == TASK_AXIS and key not in valid):
        raise GridError(f"unknown {axis} label {label!r}; valid {axis} labels: {', '.join(valid)}")
    return key


def cell_key(cell: Mapping[str, str], task: str = DEFAULT_TASK) -> str:
    """Canonical key of a cell: labels canonicalized by the vocabulary of the cell's task (its `task` label,
    else `task`), axes sorted, e.g. `lighting=dim,yaw=any` (`task` is in the key only when the cell names it)."""
    if not cell:
        raise GridError("a cell needs at least one axis, e.g. {'region': 'default'}")
    own = _cell_task(cell, task)
    return Vocabulary.format_key({axis: canonical_label(axis, label, own) for axis, label in sorted(cell.items())})


def parse_cell_key(key: str, task: str = DEFAULT_TASK) -> dict[str, str]:
    """Inverse of :func:`cell_key`."""
    try:
        pairs = Vocabulary.split_key(key)
    except ValueError as exc:
        raise GridError(str(exc)) from None
    if not pairs:
        raise GridError(f"bad cell key {key!r}: expected axis=label,axis=label")
    own = _cell_task(pairs, task)
    return {axis: canonical_label(axis, label, own) for axis, label in pairs.items()}


def cell_seed(key: str, index: int) -> int:
    """The seed of episode `index` of the cell whose canonical key is `key` (see SEED_RULE).

    A pure function of (cell, index): never of the run, the policy or the time.
    """
    if index < 0:
        raise ValueError(f"episode index must be >= 0, got {index}")
    digest = hashlib.sha256(f"{key}#{index}".encode()).digest()
    return schema.EVAL_SEED_BASE + int.from_bytes(digest[:8], "big") % schema.EVAL_SEED_SPAN


def cell_task(cell: Mapping[str, str], task: str = DEFAULT_TASK) -> str:
    """The name of the task a cell runs: its `task` label, else `task` (the evaluation's)."""
    return _cell_task(cell, task)


def cell_conditions(cell: Mapping[str, str], task: str = DEFAULT_TASK):
    """The conditions of a cell, built by the cell's task (`Task.conditions`; axes it does not name keep their defaults)."""
    own = _cell_task(cell, task)
    names = {axis: canonical_label(axis, label, own) for axis, label in cell.items() if axis != TASK_AXIS}
    try:
        return _get_task(own).conditions(names)
    except ValueError as exc:
        raise GridError(str(exc)) from None


# --- grid --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Grid:
    """A product of condition axes; axes sorted by name, labels canonical and unique.

    Each cell is validated by the vocabulary of its task: the `task` axis when the grid has one
    (every task it lists must have every other axis of the grid, with the same canonical labels),
    else `task` (the evaluation's; not stored, not compared: `to_dict` holds the axes only).
    """

    axes: tuple[tuple[str, tuple[str, ...]], ...]
    task: str = field(default=DEFAULT_TASK, compare=False)

    def __post_init__(self) -> None:
        if not self.axes:
            raise GridError(f"a grid needs at least one axis (valid axes: {', '.join(grid_axes(self.task))}), "
                            "e.g. region=default")
        given: dict[str, Any] = {}
        for axis, labels in self.axes:
            if axis in given:
                raise GridError(f"grid axis {axis!r} is given twice")
            if isinstance(labels, str) or not labels:
                example = ",".join(valid_labels(axis, self.task)[:2]) if axis in grid_axes(self.task) else "a,b"
                raise GridError(f"grid axis {axis!r} needs a list of labels, e.g. {axis}={example}")
            given[axis] = labels
        scope = [self.task]
        seen: dict[str, tuple[str, ...]] = {}
        if TASK_AXIS in given:
            seen[TASK_AXIS] = scope = self._canonical(TASK_AXIS, given.pop(TASK_AXIS), self.task)
        for axis, labels in given.items():
            per_task = {t: self._canonical(axis, labels, t) for t in scope}
            if len(set(per_task.values())) > 1:
                raise GridError(f"grid axis {axis!r}: the tasks read {list(labels)} differently ({per_task}); "
                                "evaluate them in separate grids")
            seen[axis] = per_task[scope[0]]
        object.__setattr__(self, "axes", tuple(sorted(seen.items())))

    @staticmethod
    def _canonical(axis: str, labels: Sequence[Any], task: str) -> tuple[str, ...]:
        if axis != TASK_AXIS and axis not in grid_axes(task):
            raise GridError(f"unknown grid axis {axis!r}; valid axes: {', '.join(grid_axes(task))} (of task {task!r}: "
                            "each cell is validated by its own task's vocabulary; evaluate tasks without this axis in "
                            "another grid)")
        canon: list[str] = []
        for label in labels:
            c = canonical_label(axis, label, task)
            if c in canon:
                raise GridError(f"grid axis {axis!r} lists {c!r} twice ({label!r} means {c!r})")
            canon.append(c)
        return tuple(canon)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], task: str = DEFAULT_TASK) -> Grid:
        """`{"region": ["near", "far"], "yaw": "none,any"}` -> Grid (cells of `task` unless it has a `task` axis)."""
        axes = []
        for axis, labels in d.items():
            name = str(axis).strip().lower()
            examples = valid_labels(name, task)[:2] if name in grid_axes(task) else ["near", "far"]
            example = f"{name}={','.join(examples)}"
            if isinstance(labels, str):
                labels = [p.strip() for p in labels.split(",")]
                if "" in labels:
                    raise GridError(f"grid axis {name!r} has an empty label in {d[axis]!r} (a doubled or trailing comma?); "
                                    f"write e.g. {example}")
            elif not isinstance(labels, (list, tuple)) or any(isinstance(x, bool) or not isinstance(x, (str, int)) for x in labels):
                toml = ", ".join(f'"{x}"' for x in examples)
                raise GridError(f"grid axis {name!r} needs a list of labels, got {labels!r}; write e.g. {example} "
                                f"(in TOML: {name} = [{toml}])")
            axes.append((name, tuple(str(x) for x in labels)))
        return cls(tuple(axes), task)

    def to_dict(self) -> dict[str, list[str]]:
        return {axis: list(labels) for axis, labels in self.axes}

    def for_task(self, task: str) -> Grid:
        """This grid with cells of `task` where a cell names no task (validated again)."""
        return self if task == self.task else Grid(self.axes, task)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the grid's cells run (its `task` axis, else its task)."""
        return dict(self.axes).get(TASK_AXIS, (self.task,))

    def cells(self) -> list[dict[str, str]]:
        """Every cell, in a fixed order (product over the sorted axes, labels in grid order)."""
        names = [axis for axis, _ in self.axes]
        return [dict(zip(names, combo)) for combo in itertools.product(*(labels for _, labels in self.axes))]

    def keys(self) -> list[str]:
        """Canonical keys of :meth:`cells`, same order."""
        return [cell_key(c, self.task) for c in self.cells()]

    def __str__(self) -> str:
        return " ".join(f"{axis}={','.join(labels)}" for axis, labels in self.axes)


def parse_grid(text_or_path: str | Path, task: str = DEFAULT_TASK) -> Grid:
    """A grid from inline text (`region=near,far yaw=none,any`) or a TOML file.

    TOML: axes as keys with a list of labels (or a comma-separated string), at top level or
    under a `[grid]` table::

        [grid]
        region = ["near", "far"]
        lighting = ["normal", "dim"]
    """
    if isinstance(text_or_path, Path) or str(text_or_path).strip().endswith(".toml"):
        path = Path(text_or_path)
        if not path.is_file():
            raise GridError(f"grid file {path} not found")
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise GridError(f"grid file {path} is not valid TOML: {exc}") from None
        if "grid" in data and isinstance(data["grid"], dict):
            data = data["grid"]
        return Grid.from_dict(data, task)
    text = str(text_or_path).strip()
    axes: dict[str, str] = {}
    for token in text.replace(";", " ").split():
        axis, sep, labels = token.partition("=")
        if not sep or not axis or not labels:
            raise GridError(f"bad grid term {token!r}: expected axis=label,label (e.g. region=near,far); "
                            f"valid axes: {', '.join(grid_axes(task))}")
        axis = axis.strip().lower()
        if axis in axes:
            raise GridError(f"grid axis {axis!r} is given twice")
        axes[axis] = labels
    return Grid.from_dict(axes, task)


# --- config ------------------------------------------------------------------------------------

def _camera_names(task_names: Sequence[str]) -> tuple[str, ...]:
    """The cameras every one of the tasks can render."""
    renderable = [set(get_task(t).cameras) for t in task_names]
    return tuple(c for c in get_task(task_names[0]).cameras if all(c in r for r in renderable))


@dataclass(frozen=True)
class EvalConfig(Config):
    """One evaluation: which policy, on which grid, how many episodes per cell, what to record."""

    dataset: str = schema.DEFAULT_DATASET
    """Demonstration dataset the policy belongs to; rollouts go to `<dataset>_evals`."""
    policy: str = schema.POLICY_SCRIPTED
    """`scripted` (the scripted demonstrator) or a training run id."""
    grid: Grid = field(default_factory=lambda: Grid((("region", ("default",)),)))
    """Condition axes whose product gives the cells (a `task` axis runs each cell on its task)."""
    episodes_per_cell: int = 10
    """Rollouts per cell; episode i of a cell uses cell_seed(cell, i)."""
    eval_id: str | None = None
    """The evaluation's id (row key, provenance); None = generated at start."""
    workers: int = 1
    """Worker processes, each with its own simulator and policy."""
    cameras: tuple[str, ...] = ("top",)
    """Cameras to record (the policy's own cameras are always added)."""
    camera_size: tuple[int, int] = (160, 120)
    """Recorded camera size (width, height), unless the policy needs its own."""
    camera_hz: int = schema.CAMERA_HZ
    """Camera rate (divides the 50 Hz control rate), unless the policy needs its own."""
    scene_hz: int = schema.SCENE_HZ
    """Rate of the recorded 3D scene poses (divides 50)."""
    steps: int | None = None
    """Control steps per rollout (None = the task's 300)."""
    task: str = DEFAULT_TASK
    """The task of every cell that names none (`roboloop tasks` lists them)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalConfig:
        """As `Config.from_dict`, the grid read with the config's task (whose vocabulary validates its cells)."""
        data = dict(data)
        if isinstance(data.get("grid"), Mapping):
            data["grid"] = Grid.from_dict(data["grid"], str(data.get("task") or DEFAULT_TASK))
        return super().from_dict(data)

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            get_task(self.task)
        except UnknownTaskError as exc:
            raise EvaluateError(str(exc)) from None
        try:
            schema.validate_demo_dataset_name(self.dataset)
        except ValueError as exc:
            raise EvaluateError(str(exc)) from None
        if not isinstance(self.policy, str) or not self.policy:
            raise EvaluateError(f"policy must be 'scripted' or a training run id, got {self.policy!r}")
        if self.policy != schema.POLICY_SCRIPTED:
            schema.validate_segment_id(self.policy)
        if not isinstance(self.grid, Grid):
            object.__setattr__(self, "grid", Grid.from_dict(self.grid, self.task))
        object.__setattr__(self, "grid", self.grid.for_task(self.task))
        if isinstance(self.episodes_per_cell, bool) or not isinstance(self.episodes_per_cell, int) or self.episodes_per_cell < 1:
            raise EvaluateError(f"episodes_per_cell must be an int >= 1, got {self.episodes_per_cell!r}")
        n_cells = math.prod(len(labels) for _, labels in self.grid.axes)
        if n_cells * self.episodes_per_cell > schema.MAX_EPISODES_PER_RUN:
            raise EvaluateError(
                f"{n_cells} cell(s) x {self.episodes_per_cell:,} episodes per cell = {n_cells * self.episodes_per_cell:,} "
                f"rollouts, more than one evaluation runs (at most {schema.MAX_EPISODES_PER_RUN:,}); use fewer episodes "
                "per cell (`roboloop eval --against EVAL --until-decided` stops as soon as the comparison is decided) or evaluate "
                "the grid in parts (fewer cells per evaluation)"
            )
        if self.eval_id is not None:
            if len(self.eval_id) > 64:
                raise EvaluateError(f"eval id {self.eval_id!r} is longer than 64 characters")
            rows.validate_key(self.eval_id)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise EvaluateError(f"workers must be an int >= 1, got {self.workers!r}")
        object.__setattr__(self, "cameras", tuple(self.cameras))
        valid = _camera_names(self.grid.tasks)
        bad = [c for c in self.cameras if c not in valid]
        if bad:
            raise EvaluateError(f"unknown camera(s) {', '.join(bad)}; valid cameras: {', '.join(valid)}")
        object.__setattr__(self, "camera_size", tuple(int(v) for v in self.camera_size))
        if len(self.camera_size) != 2:
            raise EvaluateError(f"camera_size must be (width, height), got {self.camera_size!r}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            raise EvaluateError(f"steps must be None or an int >= 1, got {self.steps!r}")
        self.spec()  # validates rates and size

    def spec(self, extra_cameras: Sequence[str] = (), size: Sequence[int] | None = None,
             hz: int | None = None) -> RecordingSpec:
        """The recording spec: cfg cameras + `extra_cameras`, at `size` and `hz` (default cfg.camera_size, cfg.camera_hz)."""
        cams = tuple(dict.fromkeys([*self.cameras, *extra_cameras]))
        w, h = (int(v) for v in (size or self.camera_size))
        try:
            return RecordingSpec(cameras=cams, width=w, height=h, camera_hz=int(hz or self.camera_hz), scene_hz=self.scene_hz)
        except ValueError as exc:
            raise EvaluateError(str(exc)) from None

    @property
    def evals_dataset(self) -> str:
        return schema.evals_dataset(self.dataset)

    @classmethod
    def unknown_keys_error(cls, unknown: list[str]) -> Exception:
        names = sorted(f.name for f in dataclasses.fields(cls))
        return EvaluateError(f"unknown EvalConfig keys {sorted(unknown)}; valid keys: {', '.join(names)}")

    def to_json(self, indent: int | None = None) -> str:
        """Compact JSON with sorted keys (the form evaluations have always stored)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)


# --- policy ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PolicySource:
    """How to build the evaluated policy in each worker, and what to record about it."""

    name: str  # cfg.policy
    factory: Callable[[Any], Any]
    run_id: str = schema.PROVENANCE_NONE
    cameras: tuple[str, ...] = ()
    camera_size: tuple[int, int] | None = None
    camera_hz: int | None = None  # the rate the run's camera frames were recorded at (None: no cameras / unknown)
    provenance: dict[str, Any] = field(default_factory=dict)  # episode-group properties
    dataset: str | None = None  # the demonstration dataset the run trained on (None: any)
    task: str | None = None  # the task the run trained on, when its run info says (None: any)
    rate_hz: float | None = None  # the control rate the run trained at (None: not a run; any)


def source_camera(source: PolicySource) -> tuple[tuple[str, ...], tuple[int, int] | None, int | None]:
    """The cameras, size and rate a policy needs recorded (`EvalConfig.spec`'s arguments): its own when it has cameras."""
    if not source.cameras:
        return (), None, None
    return source.cameras, source.camera_size, source.camera_hz


def no_run_provenance() -> dict[str, Any]:
    """Provenance properties of a rollout whose policy comes from no training run (a scripted policy)."""
    none = schema.PROVENANCE_NONE
    return {
        schema.EPISODE_RUN_ID: none,
        schema.EPISODE_CHECKPOINT_SHA256: none,
        schema.EPISODE_SELECTION: none,
        schema.EPISODE_SELECTION_DIGEST: none,
        schema.EPISODE_CONFIG_DIGEST: none,
    }


def _run_rate(info: Mapping[str, Any]) -> float | None:
    hz = (info.get("config") or {}).get("rate_hz", info.get("rate_hz"))
    return float(hz) if hz is not None else None


def _check_rate(source: PolicySource, task_names: Sequence[str]) -> None:
    """EvaluateError, before anything is written, for a run trained at another control rate than a task's simulator
    steps at (e.g. a run on your own robot's 20 Hz episodes; a chunk is executed one step per control step)."""
    if source.rate_hz is None:  # not a run (scripted), or a run that recorded no rate
        return
    for name in task_names:
        hz = get_task_spec(name).control_hz
        if float(source.rate_hz) != float(hz):
            raise EvaluateError(
                f"run {source.run_id} was trained at {source.rate_hz:g} Hz and task {name!r} simulates at {hz:g} Hz: a chunk "
                f"is executed one step per control step, so evaluate a run trained at the simulator's rate (roboloop train "
                f"--rate-hz {hz:g}); a run on your own robot's episodes is deployed in your own loop (roboloop.train.load_policy)")


def resolve_policy(workspace, policy: str) -> PolicySource:
    """`scripted` -> the scripted demonstrator; anything else -> that training run (roboloop.train)."""
    if policy == schema.POLICY_SCRIPTED:
        return PolicySource(policy, ScriptedPolicy, provenance=no_run_provenance())
    try:
        info = run_info(workspace, policy)
    except DamagedFileError:
        raise  # the run exists; its record names itself and the fix
    except (OSError, LookupError, ValueError, RoboloopError) as exc:
        runs = sorted(p.name for p in workspace.runs_dir.iterdir()) if workspace.runs_dir.is_dir() else []
        why = "" if isinstance(exc, UnknownRunError) else f" ({exc})"  # its text lists the runs again
        raise EvaluateError(
            f"no training run {policy!r} in {workspace.root}{why}; runs: {', '.join(runs) or '(none)'}; "
            "or use --policy scripted"
        ) from exc
    status = workspace.live_status(WRITER_RUN, policy, info.get("status"))  # `running` with no live trainer: dead
    if status == schema.STATUS_DEAD:  # killed while training: its newest checkpoint may be mid-run; never evaluate it as if final
        raise EvaluateError(f"training run {policy!r} died while running (its process is gone; status {status!r}); finish it "
                            f"with `roboloop train --resume {policy}`, then evaluate it")
    if status not in (None, schema.RUN_STATUS_FINISHED):
        hint = f"; continue it with `roboloop train --resume {policy}`" if status in (
            schema.RUN_STATUS_INTERRUPTED, schema.RUN_STATUS_FAILED) else ""
        raise EvaluateError(f"training run {policy!r} has status {status!r}; evaluate a finished run{hint}")
    size = info.get("camera_size")

    def get(key: str) -> str:
        v = info.get(key)
        return str(v) if v not in (None, "") else schema.PROVENANCE_NONE

    return PolicySource(
        policy,
        PolicyFactory(str(workspace.root), policy),
        dataset=info.get("dataset"),
        task=info.get("task") or None,
        rate_hz=_run_rate(info),
        run_id=policy,
        cameras=tuple(info.get("cameras") or ()),
        camera_size=tuple(int(v) for v in size) if size else None,
        camera_hz=int(info["camera_hz"]) if info.get("camera_hz") else None,
        provenance={
            schema.EPISODE_RUN_ID: policy,
            schema.EPISODE_CHECKPOINT_SHA256: get("checkpoint_sha256"),
            schema.EPISODE_SELECTION: get("selection"),
            schema.EPISODE_SELECTION_DIGEST: get("selection_digest"),
            schema.EPISODE_CONFIG_DIGEST: get("config_digest"),
        },
    )


def run_dataset(workspace, run_id: str) -> str:
    """The demonstration dataset a training run was trained on (from its run_info)."""
    return str(resolve_policy(workspace, run_id).dataset or schema.DEFAULT_DATASET)


def run_task(workspace, run_id: str) -> str:
    """The task a training run was trained on (its run_info's `task`; the default task when it names none)."""
    return str(resolve_policy(workspace, run_id).task or DEFAULT_TASK)


# --- report ------------------------------------------------------------------------------------

@dataclass
class EvalReport:
    """What one `evaluate` call did."""

    eval_id: str
    config: EvalConfig
    cells: list[str]
    results: list[EpisodeResult] = field(default_factory=list)
    skipped: int = 0  # (cell, index) pairs already finished before this call (resume)
    wall_s: float = 0.0
    status: str = "running"

    @property
    def evals_dataset(self) -> str:
        return self.config.evals_dataset

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def successes(self) -> int:
        return sum(r.success for r in self.results)

    @property
    def success_rate(self) -> float:
        return self.successes / self.n if self.n else float("nan")


def load_config(workspace, eval_id: str) -> EvalConfig:
    """The stored config of an evaluation (for `--resume`)."""
    row = eval_row(workspace, eval_id)
    if row is None:
        known = [r[rows.KEY_FIELD] for r in rows.read_rows(workspace, schema.EVALS_TABLE)]
        raise EvaluateError(f"no evaluation {eval_id!r} in {workspace.root}; evaluations: {', '.join(known) or '(none)'}")
    return EvalConfig.from_dict(row["config"])


def finished_pairs(catalog, evals_dataset: str, eval_id: str) -> dict[tuple[str, int], bool]:
    """(cell key, index in cell) -> success, for the rollouts of `eval_id` that the catalog holds."""
    if evals_dataset not in catalog.dataset_names():
        return {}
    table = catalog.segment_table(evals_dataset)
    cols = table.column_names
    need = (f"{schema.EPISODE}.{schema.EPISODE_EVAL_ID}", f"{schema.EPISODE}.{schema.EPISODE_CELL}",
            f"{schema.EPISODE}.{schema.EPISODE_INDEX_IN_CELL}", f"{schema.OUTCOME}.{schema.OUTCOME_SUCCESS}")
    if table.num_rows == 0 or not all(c in cols for c in need):
        return {}
    table = unique_rollouts(table)  # a pair recorded twice counts once, as every reader counts it
    ids, cells, idx, ok = (table.column(c).to_pylist() for c in need)
    return {
        (c, int(i)): bool(s) for e, c, i, s in zip(ids, cells, idx, ok) if e == eval_id and c is not None and i is not None
    }


def new_eval_id() -> str:
    """`eval-<utc yyyymmdd-hhmmss>-<4 hex>`."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"eval-{stamp}-{uuid.uuid4().hex[:4]}"


# --- evaluate ----------------------------------------------------------------------------------

def plan_pairs(cfg: EvalConfig) -> list[tuple[int, dict[str, str], str, int, int]]:
    """Every (cell number, cell, cell key, index, seed) of the evaluation, before any policy exists."""
    out = []
    for no, cell in enumerate(cfg.grid.cells()):
        key = cell_key(cell, cfg.task)
        for i in range(cfg.episodes_per_cell):
            out.append((no, cell, key, i, cell_seed(key, i)))
    return out


CARRIED_ROW_KEYS = (schema.EVAL_SEQUENTIAL, "against", "extended_by", "extra_rollouts")
"""Keys of an evals row that `evaluate(..., resume=True)` keeps from the stored row (written by sequential runs)."""


def resumable_row(workspace, cfg: EvalConfig, *, also: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The stored row of the evaluation that `cfg` resumes, once it is checked: it exists, `also(row)`
    (a mode's own checks, e.g. the sequential settings) passes, and `cfg` may continue it
    (`check_resumable`). Raises `EvaluateError` otherwise (fixed-grid and sequential alike)."""
    if cfg.eval_id is None:
        raise EvaluateError("resume needs the eval id of the evaluation to continue")
    previous = eval_row(workspace, cfg.eval_id)
    if previous is None:
        raise EvaluateError(f"cannot resume {cfg.eval_id!r}: no such evaluation; start it without --resume")
    if also is not None:
        also(previous)
    check_resumable(previous["config"], cfg)
    return previous


def check_new(workspace, cfg: EvalConfig) -> None:
    """A new evaluation may not take the id of one that exists (`EvaluateError` naming `--resume`)."""
    if cfg.eval_id is not None and eval_row(workspace, cfg.eval_id) is not None:
        raise EvaluateError(f"evaluation {cfg.eval_id!r} exists already; continue it with --resume {cfg.eval_id} "
                            "or choose another --name")


def check_resumable(stored_config: Mapping[str, Any], cfg: EvalConfig) -> None:
    """EvaluateError unless `cfg` continues the stored config: equal up to `workers`, `episodes_per_cell` not smaller.

    A larger `episodes_per_cell` tops the evaluation up (cell seeds are a pure function of
    (cell, index), so indices n..N-1 extend the same grid).
    """
    skip = ("workers", "episodes_per_cell")
    stored = {k: v for k, v in stored_config.items() if k not in skip}
    asked = {k: v for k, v in cfg.to_dict().items() if k not in skip}
    if stored != asked:
        diff = sorted(k for k in stored.keys() | asked.keys() if stored.get(k) != asked.get(k))
        raise EvaluateError(f"cannot resume {cfg.eval_id!r} with a different config (differs in {', '.join(diff)})")
    before = int(stored_config.get("episodes_per_cell") or 0)
    if cfg.episodes_per_cell < before:
        raise EvaluateError(f"cannot resume {cfg.eval_id!r} with fewer episodes per cell ({cfg.episodes_per_cell}) than it "
                            f"has planned ({before}); resume with --episodes-per-cell {before} or more")


def rollout_jobs(eval_id: str, source: PolicySource,
                 todo: Sequence[tuple[int, Mapping[str, str], str, int, int]], task: str = DEFAULT_TASK) -> list[EpisodeJob]:
    """Episode jobs of (cell number, cell, cell key, index, seed) tuples, with the rollout provenance of `eval_id`;
    each job runs the cell's task (its `task` label, else `task`)."""
    jobs = []
    for no, cell, key, index, seed in todo:
        sid = schema.validate_segment_id(f"{eval_id}-c{no:02d}-i{index:04d}-{uuid.uuid4().hex[:6]}")
        provenance = {
            schema.EPISODE_EVAL_ID: eval_id,
            **source.provenance,
            schema.EPISODE_CELL: key,
            schema.EPISODE_INDEX_IN_CELL: index,
        }
        jobs.append(EpisodeJob(seed, cell_conditions(dict(cell), task), sid, {schema.EPISODE: provenance},
                               task=cell_task(cell, task)))
    return jobs


def rollout_outcomes(catalog, evals_dataset: str, eval_ids: Sequence[str]) -> dict[str, dict[tuple[str, int], dict[str, Any]]]:
    """eval id -> (cell key, index) -> {"success": bool (None: no outcome, unlabelled), "stage": int}, for rollouts
    the catalog holds (a person's label wins over the simulator's judgement: the segment table takes the newest
    `outcome` layer)."""
    out: dict[str, dict[tuple[str, int], dict[str, Any]]] = {e: {} for e in eval_ids}
    if evals_dataset not in catalog.dataset_names():
        return out
    table = catalog.segment_table(evals_dataset)
    cols = table.column_names
    need = (f"{schema.EPISODE}.{schema.EPISODE_EVAL_ID}", f"{schema.EPISODE}.{schema.EPISODE_CELL}",
            f"{schema.EPISODE}.{schema.EPISODE_INDEX_IN_CELL}", f"{schema.OUTCOME}.{schema.OUTCOME_SUCCESS}")
    if table.num_rows == 0 or not all(c in cols for c in need):
        return out
    table = unique_rollouts(table)  # a pair recorded twice counts once, as every reader counts it
    stage_col = f"{schema.OUTCOME}.{schema.OUTCOME_STAGE}"
    stages = table.column(stage_col).to_pylist() if stage_col in cols else [None] * table.num_rows
    ids, cells, idx, ok = (table.column(c).to_pylist() for c in need)
    for e, c, i, s, st in zip(ids, cells, idx, ok, stages):
        if e in out and c is not None and i is not None:
            out[e][(c, int(i))] = {schema.OUTCOME_SUCCESS: None if s is None else bool(s),  # None: unlabelled
                                   schema.OUTCOME_STAGE: None if st is None else int(st)}
    return out


def collect_rollouts(catalog, dataset: str, jobs: list[EpisodeJob], *, spec: RecordingSpec, task: str, policy_factory,
                     steps: int | None, workers: int, on_result) -> None:
    """Run and register rollout jobs through collect (the same runner and recorder as demonstrations): one
    collect per task, in the order the jobs first name it (a job without a task runs `task`)."""
    by_task: dict[str, list[EpisodeJob]] = {}
    for job in jobs:
        by_task.setdefault(job.task or task, []).append(job)
    for name, group in by_task.items():
        config = CollectConfig(dataset=dataset, workers=workers, spec=spec, task=name, kind=schema.KIND_ROLLOUT, steps=steps)
        collect(catalog, config, jobs=group, policy_factory=policy_factory, on_result=on_result)



def eval_row_base(cfg: EvalConfig, eval_id: str, source, spec: RecordingSpec, keys: Sequence[str],
                  previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields every evaluation row has (fixed grid or sequential): policy, provenance, grid, seed rule, recording."""
    return {
        "eval_id": eval_id,
        "dataset": cfg.dataset,
        "evals_dataset": cfg.evals_dataset,
        "policy": cfg.policy,
        "run_id": source.run_id,
        "checkpoint_sha256": source.provenance.get(schema.EPISODE_CHECKPOINT_SHA256, schema.PROVENANCE_NONE),
        "grid": cfg.grid.to_dict(),
        "grid_text": str(cfg.grid),
        "episodes_per_cell": cfg.episodes_per_cell,
        "seed_rule": SEED_RULE,
        "cells": list(keys),
        "cameras": list(spec.cameras),
        "camera_size": [spec.width, spec.height],
        "config": cfg.to_dict(),
        "created_at": previous["created_at"] if previous else rows.now_iso(),
    }


@contextlib.contextmanager
def final_status(report: EvalReport, write: Callable[[str], None], t0: float, workspace):
    """Around an evaluation's rollouts: whatever happens, write the row's final status (finished, interrupted
    or failed) with the wall time, then compact the rollout index (a cache: readers rebuild it if this fails)."""
    status = "failed"
    try:
        yield
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        report.wall_s = time.perf_counter() - t0
        report.status = status
        write(status)
        with contextlib.suppress(Exception):
            compact_index(workspace, report.evals_dataset)

@contextlib.contextmanager
def writing_evals(workspace, *eval_ids: str, error: type[EvaluateError] = EvaluateError):
    """Hold the lifetime writer lock of each evaluation in `eval_ids` (DESIGN: one writer per evaluation).

    Raises EvaluateError, naming the evaluation, when another live process writes one of
    them (two `eval --resume E` at once would run the same (cell, index) pairs twice).
    The kernel releases the locks when this process dies, so `evals` shows a killed
    evaluation as dead rather than running.
    """
    with contextlib.ExitStack() as stack:
        for eval_id in dict.fromkeys(eval_ids):
            if not stack.enter_context(workspace.writer(WRITER_EVAL, eval_id)):
                raise error(
                    f"evaluation {eval_id!r} is being written by another running process (an `eval` or `eval --resume`); "
                    f"wait for it to end (see `roboloop evals`), then continue it with `roboloop eval --resume {eval_id}` "
                    "if it did not finish"
                )
        yield


def evaluate(
    catalog,
    cfg: EvalConfig,
    *,
    on_result: Callable[[EpisodeResult], None] | None = None,
    resume: bool = False,
    policy_factory: Callable[[Any], Any] | None = None,
) -> EvalReport:
    """Run, record and register the evaluation's rollouts; keep its row in the evals table.

    The process holds the evaluation's writer lock throughout (:func:`writing_evals`): a
    second writer of the same eval id is refused with EvaluateError.

    `resume` runs only the (cell, index) pairs of `cfg.eval_id` that are not in the catalog
    yet (the row must exist and its config must match `cfg` up to `workers`; a larger
    `episodes_per_cell` tops the evaluation up to that many per cell, e.g. a sequential
    evaluation that stopped early, to show a full grid).
    `policy_factory` (tests, custom baselines) replaces the policy that `cfg.policy` names;
    no training run is looked up then and the run provenance is "none".
    `on_result(result)` is called after each rollout is registered and indexed.
    """
    if not resume and cfg.eval_id is None:
        cfg = EvalConfig.from_dict({**cfg.to_dict(), "eval_id": new_eval_id()})
    if cfg.eval_id is None:
        raise EvaluateError("resume needs the eval id of the evaluation to continue")
    with writing_evals(catalog.workspace, str(cfg.eval_id)):
        return _evaluate(catalog, cfg, on_result=on_result, resume=resume, policy_factory=policy_factory)


def _evaluate(catalog, cfg: EvalConfig, *, on_result, resume: bool, policy_factory) -> EvalReport:
    """:func:`evaluate` under the evaluation's writer lock."""
    ws = catalog.workspace
    pairs = plan_pairs(cfg)  # cells and seeds exist before the policy does
    previous = None
    if resume:
        previous = resumable_row(ws, cfg)
    else:
        check_new(ws, cfg)
        if cfg.eval_id is None:
            cfg = EvalConfig.from_dict({**cfg.to_dict(), "eval_id": new_eval_id()})
    eval_id = str(cfg.eval_id)
    evals_ds = cfg.evals_dataset
    keys = cfg.grid.keys()

    source = (PolicySource(cfg.policy, policy_factory, provenance=no_run_provenance())
              if policy_factory is not None else resolve_policy(ws, cfg.policy))
    if source.dataset and source.dataset != cfg.dataset:
        raise EvaluateError(f"run {cfg.policy!r} was trained on dataset {source.dataset!r}, not {cfg.dataset!r}; "
                            f"evaluate it with --dataset {source.dataset} (rollouts go to {source.dataset}_evals)")
    if source.task and source.task not in cfg.grid.tasks:
        raise EvaluateError(f"run {cfg.policy!r} was trained on task {source.task!r}, not {', '.join(cfg.grid.tasks)}; "
                            f"evaluate it with --task {source.task} (or a grid with task={source.task})")
    _check_rate(source, cfg.grid.tasks)
    spec = cfg.spec(*source_camera(source))

    done_pairs = finished_pairs(catalog, evals_ds, eval_id) if resume else {}
    todo = [p for p in pairs if (p[2], p[3]) not in done_pairs]
    jobs = rollout_jobs(eval_id, source, todo, cfg.task)

    report = EvalReport(eval_id, cfg, keys, skipped=len(pairs) - len(todo))
    base_row = {**eval_row_base(cfg, eval_id, source, spec, keys, previous), "planned": len(pairs)}
    if previous:  # what other writers added to the row (a sequential result, top-ups of a baseline) stays
        base_row = {**{k: previous[k] for k in CARRIED_ROW_KEYS if k in previous}, **base_row}
    wall_before = float(previous.get("wall_s", 0.0)) if previous else 0.0
    planned = {(p[2], p[3]) for p in pairs}
    counts = {"done": report.skipped, "ok": sum(ok for pair, ok in done_pairs.items() if pair in planned)}

    def write(status: str) -> None:
        rows.write_row(ws, schema.EVALS_TABLE, eval_id, {
            **base_row, "status": status, "finished": counts["done"], "successes": counts["ok"],
            "wall_s": round(wall_before + report.wall_s, 3), "updated_at": rows.now_iso(),
        })

    t0 = time.perf_counter()

    def done(result: EpisodeResult) -> None:
        write_index_row(ws, evals_ds, result.segment_id, result.properties)
        report.results.append(result)
        counts["done"] += 1
        counts["ok"] += int(result.success)
        if on_result is not None:
            on_result(result)

    with final_status(report, write, t0, ws):  # an interrupt from here on leaves the row `interrupted`, never `running`
        write("running")
        collect_rollouts(catalog, evals_ds, jobs, spec=spec, task=cfg.task, policy_factory=source.factory, steps=cfg.steps,
                         workers=cfg.workers, on_result=done)
    return report
