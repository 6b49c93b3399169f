"""Collect: run episodes (the scripted demonstrator, or any policy) under scene conditions,
record each one as an RRD in the workspace and register it in the catalog at once.

Library use::

    from roboloop.catalog.client import Catalog
    from roboloop.collect.run import CollectConfig, RecordingSpec, collect
    from roboloop.envs.aloha import SceneConditions

    with Catalog() as cat:
        cfg = CollectConfig(dataset="aloha", episodes=50, conditions=SceneConditions.from_names(region="right"),
                            seed=1000, workers=2, spec=RecordingSpec(cameras=("top",)))
        report = collect(cat, cfg)
        print(report.successes, "/", len(report.results))

Episode ``i`` uses seed ``seed + i``; its segment id is ``<dataset>-s<seed:06d>-<6 hex>``
(sortable by seed, unique across re-runs).

**Seeds continue by default.** With ``seed=None`` (the default, and ``roboloop collect``
without ``--seed``) the episodes get the next unused seeds of the dataset:
:func:`reserve_seeds` reserves seeds after the highest seed the dataset holds or
has ever reserved, under a workspace lock, and writes the reservation down before the
episodes that use them run. A collect reserves ``SEED_BLOCK`` seeds at a time as its
episodes start (not its whole range up front: an interrupted run keeps at most one
unused block). Two concurrent collects therefore never share a seed, and a crashed
collect's seeds are never handed out again (a re-run of the same command continues
after them). A run asks for at most ``schema.MAX_EPISODES_PER_RUN`` episodes. An explicit ``seed`` (``--seed S``) is the way to re-use seeds on purpose
(bit-identical episodes for identical conditions); it is recorded as a reservation too,
so later default runs continue after it. Demonstration seeds stay below
``schema.DEMO_SEED_LIMIT``. With ``workers > 1`` each worker process
(spawn context) owns its own simulator and policy and writes each finished episode to a
temporary file named after the parent (`workspace.temp_path`); the parent owns the
catalog: it renames the file into place (the acknowledgement) and registers it as soon as
the result arrives, so a crash loses at most the episodes in flight. Workers die with
their parent (`workspace.die_with_parent`), and what they leave is garbage by its name:
an episode nobody acknowledged is never registered by a later restore, so a `--resume`
does not find it twice. A collect starts its worker processes and stops them when it ends,
unless it runs inside ``with pool.reuse_workers(workers):`` (`roboloop.collect.pool`): then
every collect of the block runs on one pool, started once (the demo's stages and the rounds of
a sequential evaluation do this).

**Executors.** ``executor="local"`` (default) uses the worker processes above;
``executor="ray"`` runs ``workers`` Ray actors (one CPU each; a local Ray instance, or the
cluster at ``ray_address``, e.g. ``auto``). An actor owns a simulator and a policy, records
each episode into a scratch folder and returns the file's bytes; the parent writes it into
the workspace atomically and registers it as it arrives, exactly like local results, so
the actors need neither the workspace nor the catalog. On a cluster, roboloop (with its
``sim`` extra) must be installed on every node, and the policy factory must be importable
there.

**Policies.** The runner drives any object with ``policy_id: str``, ``reset()`` (called
after every ``sim.reset``) and ``action(step, observation) -> 14 joint targets``, where
``observation`` is an :class:`Observation`. Policies are built inside the process that
runs them by a picklable ``policy_factory(sim) -> policy`` (a module-level function or
class), e.g. :class:`ScriptedPolicy` (the default) or, for evaluation, a function that
loads a checkpoint. Rollouts are recorded with ``kind="rollout"``. A policy that adds to the
episodes it drives subclasses :class:`PolicyHooks` and overrides its hooks (the defaults add
nothing): ``step_streams()`` (entity path -> values, recorded at every step after its action: a
corrective policy's ``/control/*`` streams, see `collect.corrective`), ``episode_properties()``
(added to the episode's ``episode`` group when it ends) and ``group_properties()`` (property group
-> values, merged into the episode's properties, e.g. the sloppy operator's ``hidden.operator``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from roboloop import faults, schema
from roboloop.collect.pool import MAX_JOBS_PER_WORKER, Context, WorkerPool, abandon, active_pool, release, shared, worker_parent
from roboloop.config import Config, ConfigError, check
from roboloop.envs import DEFAULT_TASK, get_task, register_task
from roboloop.envs.aloha.conditions import SceneConditions
from roboloop.envs.aloha.env import UnstableSimulation
from roboloop.envs.aloha.recording import RecordingSpec
from roboloop.envs.aloha.sloppy import OPERATORS, operator_expert
from roboloop.errors import RoboloopError
from roboloop.record.episode import APPLICATION_ID, EpisodeRecorder, provenance
from roboloop.record.seeds import SEED_IN_ID, SEEDS_FOLDER, SeedRangeError, check_seed_range, reserve_seeds, seeded_segment_id
from roboloop.workspace import (
    Workspace,
    atomic_path,
    atomic_write_bytes,
    publish_temp,
    temp_path,
)

__all__ = [
    "NoExpertError",
    "Observation",
    "Policy",
    "PolicyHooks",
    "OperatorPolicy",
    "ScriptedPolicy",
    "EpisodeJob",
    "EpisodeResult",
    "CollectConfig",
    "CollectReport",
    "RecordingSpec",
    "plan_jobs",
    "reserve_seeds",
    "SeedRangeError",
    "SEEDS_FOLDER",
    "SEED_IN_ID",
    "make_sim",
    "save_default_blueprint",
    "scene_properties",
    "run_episode",
    "collect",
    "episode_segment_id",
    "parse_cameras",
    "parse_size",
    "highest_demo_seed",
    "seed_floor",
]

log = logging.getLogger(__name__)


# --- policies ------------------------------------------------------------------------------

@dataclass
class Observation:
    """What a policy sees at control step `step` (before acting).

    `images` holds the recorded cameras' frames on camera steps
    (`spec.camera_step(step)`) and is empty otherwise. `state` holds the state streams
    keyed by entity path, as they are recorded (a trained policy reads its state inputs
    from it); ALOHA's joints and cube pose are filled in from `joint_positions` and
    `cube_pose` when given, so another robot passes only `state`.
    """

    step: int
    time: float
    joint_positions: np.ndarray | None = None  # ALOHA: 14
    cube_pose: np.ndarray | None = None  # ALOHA: 7: x, y, z, qw, qx, qy, qz
    images: dict[str, np.ndarray] = field(default_factory=dict)
    state: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        aloha = {schema.JOINT_POSITIONS: self.joint_positions, schema.CUBE_POSE: self.cube_pose}
        self.state = {**{k: v for k, v in aloha.items() if v is not None}, **self.state}


class Policy(Protocol):
    policy_id: str

    def reset(self) -> None: ...

    def action(self, step: int, observation: Observation) -> np.ndarray: ...


class PolicyHooks:
    """What a policy adds to the episodes it drives (module docstring, "Policies"): subclass and override.

    The runner calls each hook of a policy that subclasses this class (`hooks_of`); a policy that does not
    adds nothing, like these defaults.
    """

    def step_streams(self) -> Mapping[str, Any]:
        """The last step's extra streams (entity path -> values), recorded at that step's time."""
        return {}

    def episode_properties(self) -> dict[str, Any]:
        """Properties added to the episode's `episode` group when it ends."""
        return {}

    def group_properties(self) -> dict[str, dict[str, Any]]:
        """Property groups (group -> values) merged into the episode's properties when it ends."""
        return {}


NO_HOOKS = PolicyHooks()
"""The hooks of a policy that has none of its own."""


def hooks_of(policy: Any) -> PolicyHooks:
    """The recording hooks of `policy`: its own when it subclasses :class:`PolicyHooks`, else ones that add nothing."""
    return policy if isinstance(policy, PolicyHooks) else NO_HOOKS


class NoExpertError(RoboloopError, ValueError):
    """The task has no scripted expert, so `scripted` cannot drive it."""


class OperatorPolicy(PolicyHooks):
    """A transfer-cube demonstrator variant (`envs.aloha.sloppy.operator_expert`) as a `Policy`; the episodes it
    drives carry `hidden.operator` = its name (ground truth for scoring, read by no stage)."""

    policy_id: str = "scripted-handover-v1"

    def __init__(self, sim, operator: str) -> None:
        self.sim, self.operator = sim, operator
        self._expert = None

    def group_properties(self) -> dict[str, dict[str, Any]]:
        return {schema.HIDDEN: {schema.HIDDEN_OPERATOR: self.operator}}

    def reset(self) -> None:
        if self._expert is None:
            self._expert = operator_expert(self.operator, self.sim)  # plans from the sim's current state
        else:
            self._expert.reset()

    def action(self, step: int, observation: Observation) -> np.ndarray:
        return self._expert.action(step)


class ScriptedPolicy:
    """The scripted expert of the sim's task (`Task.expert`, e.g. the transfer cube's handover) as a `Policy`."""

    def __init__(self, sim) -> None:
        self.sim = sim
        expert = get_task(sim.task).expert(sim)
        if expert is None:
            raise NoExpertError(f"task {sim.task!r} has no scripted expert: record its demonstrations with your own "
                                "policy (collect(..., policy_factory=...)) or the recording API (roboloop.record)")
        self._expert = expert
        self.policy_id: str = expert.policy_id

    def reset(self) -> None:
        self._expert.reset()

    def action(self, step: int, observation: Observation) -> np.ndarray:
        return self._expert.action(step, observation)


# --- jobs and results ----------------------------------------------------------------------

@dataclass(frozen=True)
class EpisodeJob:
    """One episode to run: its seed, conditions and segment id.

    `properties` holds extra property groups (`{"episode": {"eval_id": ...}}`) merged over
    the defaults when the episode is recorded (evaluation provenance, plan ids, ...).
    `task` names the task it runs (an evaluation cell's); None: the collect's task.
    """

    seed: int
    conditions: SceneConditions
    segment_id: str
    properties: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    task: str | None = None


@dataclass
class EpisodeResult:
    segment_id: str
    path: Path
    seed: int
    conditions: SceneConditions
    outcome: dict[str, Any]
    wall_s: float
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)  # every property group as recorded

    @property
    def success(self) -> bool:
        return bool(self.outcome[schema.OUTCOME_SUCCESS])


@dataclass
class CollectReport:
    dataset: str
    results: list[EpisodeResult] = field(default_factory=list)
    wall_s: float = 0.0
    blueprint: Path | None = None
    seeds: range | list[int] | None = None
    """The seeds reserved for this run (None when explicit jobs were given): a range, or a sorted list when a
    concurrent collect reserved seeds in between (seeds are reserved block by block as episodes start)."""

    def _add_seeds(self, block: range) -> None:
        if not block:
            return
        if self.seeds is None or (isinstance(self.seeds, range) and not self.seeds):
            self.seeds = block
        elif isinstance(self.seeds, range) and self.seeds.stop == block.start:
            self.seeds = range(self.seeds.start, block.stop)
        else:
            self.seeds = sorted({*self.seeds, *block})

    @property
    def successes(self) -> int:
        return sum(r.success for r in self.results)

    @property
    def episodes_per_minute(self) -> float:
        return 60.0 * len(self.results) / self.wall_s if self.wall_s > 0 else 0.0


def episode_segment_id(dataset: str, seed: int) -> str:
    """`<dataset>-s<seed:06d>-<6 hex>`: sortable by seed, unique across re-runs."""
    return seeded_segment_id(dataset, seed)


def plan_jobs(
    dataset: str,
    episodes: int,
    seed: int = 0,
    conditions: SceneConditions | Sequence[SceneConditions] | None = None,
) -> list[EpisodeJob]:
    """Episode `i` gets seed `seed + i`; a list of conditions is cycled over the episodes."""
    if episodes < 0:
        raise ValueError(f"episodes must be >= 0, got {episodes}")
    return list(_jobs(dataset, range(seed, seed + episodes), _condition_list(conditions)))


def _condition_list(conditions: Any, task: str = DEFAULT_TASK) -> list[Any]:
    """`conditions` as a non-empty list (None: the task's default conditions)."""
    if conditions is None:
        return [get_task(task).conditions()]
    if hasattr(conditions, "to_dict"):  # one conditions object
        return [conditions]
    conds = list(conditions)
    if not conds:
        raise ValueError("empty list of conditions")
    return conds


def _jobs(dataset: str, seeds: Iterable[int], conds: Sequence[SceneConditions], offset: int = 0) -> Iterator[EpisodeJob]:
    """Jobs for `seeds`, the i-th (counting from `offset`) under `conds[i % len(conds)]`, made one at a time."""
    for i, seed in enumerate(seeds, offset):
        yield EpisodeJob(seed, conds[i % len(conds)], episode_segment_id(dataset, seed))


# --- seed reservations --------------------------------------------------------------------

# --- one episode ---------------------------------------------------------------------------

def make_sim(spec: RecordingSpec, task: str = DEFAULT_TASK):
    """The task's simulator (`Task.make_sim`), rendering exactly the recorded cameras at the recorded size."""
    return get_task(task).make_sim(spec.cameras, spec.width, spec.height)


def save_default_blueprint(workspace: Workspace, dataset: str, cameras: Sequence[str], task: str = DEFAULT_TASK) -> Path:
    """Write the dataset's default blueprint (`Task.blueprint`) to `workspace.blueprint_path(dataset)`, atomically."""
    final = workspace.blueprint_path(dataset)
    with atomic_path(final) as tmp:
        get_task(task).blueprint(cameras).save(APPLICATION_ID, tmp)
    return final


UNSTABLE = "unstable"
"""The failure kind of an episode whose simulation went unstable (`schema.FAILURE_KINDS`)."""


def _none_to(v, default):
    return default if v is None else v


def run_episode(
    sim,
    policy: Policy,
    job: EpisodeJob,
    *,
    workspace: Workspace,
    dataset: str,
    spec: RecordingSpec,
    kind: str = schema.KIND_DEMO,
    steps: int | None = None,
    on_step: Callable[[int], None] | None = None,
    path: Path | None = None,
) -> EpisodeResult:
    """Run one episode and write it to the workspace's base layer (not registered).

    The file appears under its final name only if the whole episode ran: an exception
    (or KeyboardInterrupt) anywhere inside leaves no file. `on_step(step)` is called
    after every control step (progress, or interruption in tests). `path` writes the
    episode elsewhere (a worker's temporary name that its parent publishes).
    """
    if sim.cameras != spec.cameras or (spec.cameras and (sim.width, sim.height) != (spec.width, spec.height)):
        raise ValueError(
            f"the simulator renders {sim.cameras} at {sim.width}x{sim.height}, the spec records "
            f"{spec.cameras} at {spec.width}x{spec.height}: build it with make_sim(spec)"
        )
    if job.task is not None and job.task != sim.task:
        raise ValueError(f"episode {job.segment_id} runs task {job.task!r}, the simulator simulates {sim.task!r}: "
                         "collect each task's jobs with its own CollectConfig(task=...)")
    n_steps = int(steps if steps is not None else sim.max_steps)
    final = workspace.segment_path(dataset, schema.BASE_LAYER, job.segment_id)
    if final.exists():
        raise FileExistsError(f"{final} already exists; segment ids must be new")
    path = final if path is None else Path(path)
    t0 = time.perf_counter()
    task = get_task(sim.task)
    sim.reset(job.seed, job.conditions)
    policy.reset()
    tracker = task.tracker()
    unstable_at: int | None = None
    hooks = hooks_of(policy)  # e.g. a corrective policy's /control/* streams and properties
    named: set[str] = set()
    with EpisodeRecorder(path, job.segment_id) as rec:
        writer = task.writer(rec, spec, sim)
        for k in range(n_steps):
            state = task.snapshot(sim)
            images = {c: sim.render(c) for c in spec.cameras} if spec.camera_step(k) else {}
            if spec.scene_step(k):
                writer.observe_scene(k, sim)
            observation = Observation(k, k * spec.dt, state[schema.JOINT_POSITIONS], state.get(schema.CUBE_POSE), images, state=state)
            action = np.asarray(policy.action(k, observation), dtype=np.float64)
            try:
                reward = sim.step(action)
            except UnstableSimulation as exc:  # a failed rollout, not an aborted run: record up to here
                unstable_at = exc.step
                break
            tracker.update(sim, reward, action)
            writer.observe(k, state, action, reward, images)
            _record_streams(rec, k * spec.dt, hooks.step_streams(), sim, named)
            faults.point("collect.step")  # a kill here leaves a half-written temporary file
            if on_step is not None:
                on_step(k)
        result = tracker.result()
        if unstable_at is not None:
            result = dataclasses.replace(result, success=False, success_step=None, failure_step=unstable_at,
                                         failure_reason=UNSTABLE)
        outcome = outcome_properties(result, n_steps, spec.dt, task.name)
        properties: dict[str, dict[str, Any]] = {
            schema.EPISODE: {**episode_properties(job, spec, kind=kind, task=task.name, policy_id=policy.policy_id),
                             **hooks.episode_properties()},
            schema.SCENE: task.scene_properties(job.conditions, job.seed),
            schema.OUTCOME: outcome,
        }
        for group, values in (*job.properties.items(), *hooks.group_properties().items()):
            properties.setdefault(group, {}).update(values)
        writer.finish(properties)
    return EpisodeResult(
        job.segment_id, path, job.seed, job.conditions, outcome, time.perf_counter() - t0, properties
    )


def _record_streams(rec, t: float, streams: Mapping[str, Any], sim, named: set[str]) -> None:
    """Append a policy's per-step streams (entity path -> values) at time `t`; a stream as wide as the robot's joints
    gets the joint names as series names."""
    for path, values in streams.items():
        values = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if path not in named:
            names = getattr(sim, "joint_names", None)
            if names is not None and len(names) == len(values):
                rec.set_series_names(path, list(names))
            named.add(path)
        rec.append_scalars(path, t, values)


def outcome_properties(res, n_steps: int, dt: float, task: str = DEFAULT_TASK) -> dict[str, Any]:
    """The `outcome` group of an episode from its tracker's result (also what `reoutcome` re-writes): the
    common properties, the stage named by the task's stages, and the task's own (`Task.outcome_properties`)."""
    judge = get_task(task)
    common = {
        schema.OUTCOME_SUCCESS: bool(res.success),
        schema.OUTCOME_MAX_REWARD: float(res.max_reward),
        schema.OUTCOME_SUCCESS_STEP: int(_none_to(res.success_step, -1)),
        schema.OUTCOME_STEPS: int(n_steps),
        schema.OUTCOME_DURATION_S: float(n_steps * dt),
        schema.OUTCOME_FAILURE_STEP: int(_none_to(res.failure_step, -1)),
        schema.OUTCOME_FAILURE_REASON: res.failure_reason or "none",  # "" would be dropped by AnyValues
    }
    extra = judge.outcome_properties(res)
    return {
        **common,
        **extra,
        schema.OUTCOME_STAGE: int(res.stage),
        schema.OUTCOME_STAGE_NAME: judge.stages[res.stage],
        schema.OUTCOME_FAILURE_TIME_S: float(res.failure_step * dt) if res.failure_step is not None else -1.0,
        schema.OUTCOME_CLASSIFIER: int(judge.classifier_version),
    }


def scene_properties(conditions: Any, seed: int | None = None, task: str = DEFAULT_TASK) -> dict[str, Any]:
    """The `scene` group of an episode of `task` (`Task.scene_properties`): every condition, canonical
    labels and, with the seed, the start state (for the transfer cube `cube_x`, `cube_y`, `cube_yaw_deg`)."""
    return get_task(task).scene_properties(conditions, seed)


def episode_properties(job: EpisodeJob, spec: RecordingSpec, *, kind: str, task: str, policy_id: str) -> dict[str, Any]:
    return {
        schema.EPISODE_KIND: kind,
        schema.EPISODE_TASK: task,
        schema.EPISODE_SEED: int(job.seed),
        schema.EPISODE_POLICY: str(policy_id),
        **provenance(),
        schema.EPISODE_CAMERAS: ",".join(spec.cameras) or "none",
        schema.EPISODE_CAMERA_HZ: int(spec.camera_hz),
        schema.EPISODE_CAMERA_SIZE: f"{spec.width}x{spec.height}",
        schema.EPISODE_CONTROL_HZ: int(spec.control_hz),
        schema.EPISODE_SCENE_HZ: int(spec.scene_hz),
    }


# --- worker processes ----------------------------------------------------------------------

def _adopt(task) -> str:
    """In a worker process: register the parent's task object (a task registered at runtime exists only in the
    process that registered it) and return its name."""
    register_task(task, replace=True)
    return task.name


@dataclass
class _EpisodeContext:
    """In a worker: a policy on the (shared) simulator of one task and recording spec (`pool.Context`)."""

    sim_key: str
    sim: Any
    policy: Policy
    spec: RecordingSpec

    def close(self) -> None:
        release(self.sim_key)


def _build_context(task, spec: RecordingSpec, policy_factory: Callable, sim_key: str) -> _EpisodeContext:
    sim = shared(sim_key, lambda: make_sim(spec, _adopt(task)))
    try:
        return _EpisodeContext(sim_key, sim, policy_factory(sim), spec)
    except BaseException:
        release(sim_key)
        raise


def episode_context(task, spec: RecordingSpec, policy_factory: Callable) -> Context:
    """The worker context of a collect: its task's simulator for `spec` (one per worker, whatever the policy)
    and the policy `policy_factory(sim)` builds on it."""
    return Context.of(_build_context, task, spec, policy_factory, Context.of(make_sim, task, spec).key)


def _run_in_worker(ctx: _EpisodeContext, job: EpisodeJob, root: str, dataset: str, kind: str, steps: int | None) -> EpisodeResult:
    """Run one episode into a temporary file named after the parent: only the parent, alive, publishes and registers it.

    A worker that outlives its parent (killed before `die_with_parent` took effect) leaves
    only a temporary file, garbage by its name, never a file restore would register.
    """
    ws = Workspace(root)
    parent = worker_parent()
    staged = temp_path(ws.segment_path(dataset, schema.BASE_LAYER, job.segment_id), parent)
    result = run_episode(ctx.sim, ctx.policy, job, workspace=ws, dataset=dataset, spec=ctx.spec, kind=kind, steps=steps, path=staged)
    if os.getppid() != parent:  # nobody will acknowledge it
        staged.unlink(missing_ok=True)
        os._exit(1)
    return result


# --- many episodes -------------------------------------------------------------------------

KINDS = (schema.KIND_DEMO, schema.KIND_ROLLOUT, schema.KIND_CORRECTIVE)
"""Episode kinds `collect` records: demonstrations and corrective episodes into the dataset, rollouts into `<dataset>_evals`."""

@dataclass(frozen=True)
class CollectConfig(Config):
    """What `collect` runs and records (saved with a plan; `roboloop collect --config FILE` loads one)."""

    dataset: str = schema.DEFAULT_DATASET
    "Dataset to record into (created if missing)."
    episodes: int = 0
    "Number of episodes (ignored when explicit jobs are given)."
    conditions: tuple[SceneConditions, ...] = ()
    "Conditions (the task's conditions type), cycled over the episodes (empty: the task's default scene)."
    seed: int | None = None
    "Episode i uses seed `seed + i`; None: continue after the dataset's highest seed (reserved, see reserve_seeds)."
    workers: int = 1
    "Worker processes (each owns a simulator and a policy)."
    spec: RecordingSpec = field(default_factory=RecordingSpec)
    "What to record: cameras, size, rates."
    task: str = DEFAULT_TASK
    "The task to run (`roboloop tasks` lists them); its simulator, expert, success judgement and recording."
    kind: str = schema.KIND_DEMO
    "Episode kind: demo, rollout (an evaluation's) or corrective (a policy drove, the expert labelled: `collect.corrective`)."
    steps: int | None = None
    "Control steps per episode (None: the task's length)."
    blueprint: bool = True
    "Write and register the dataset's default blueprint first."
    executor: str = "local"
    "Where episodes run: `local` worker processes, or `ray` actors (`pip install 'roboloop[ray]'`)."
    ray_address: str | None = None
    "Ray cluster to use with executor `ray` (`auto`, `ray://host:10001`); None starts a local Ray instance."
    operator: str | None = None
    ("Transfer-cube demonstrator variant: None the scripted handover; `clean` the same, `sloppy` one that hesitates, "
     "detours and jitters but still succeeds, `fragile` one with a light grip and a fingertip handover that succeeds "
     "only now and then, `turned` one that smoothly turns the right gripper over before a clean grasp (planted quality "
     "problems); each is recorded only as `hidden.operator`.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CollectConfig:
        """As `Config.from_dict`, conditions read back by the config's task (`Task.conditions_type.from_dict`)."""
        data = dict(data)
        conds = data.get("conditions")
        try:
            ctype = get_task(data.get("task") or DEFAULT_TASK).conditions_type
        except ValueError:  # an unknown task: __post_init__ says so
            ctype = None
        if ctype is not None and isinstance(conds, (list, tuple)):
            data["conditions"] = tuple(ctype.from_dict(c) if isinstance(c, Mapping) else c for c in conds)
        return super().from_dict(data)

    def __post_init__(self) -> None:
        if hasattr(self.conditions, "to_dict"):  # one conditions object
            object.__setattr__(self, "conditions", (self.conditions,))
        elif self.conditions is None:
            object.__setattr__(self, "conditions", ())
        elif isinstance(self.conditions, list):
            object.__setattr__(self, "conditions", tuple(self.conditions))
        super().__post_init__()
        try:
            if self.kind == schema.KIND_ROLLOUT:
                schema.validate_dataset_name(self.dataset)  # evaluate records rollouts into <dataset>_evals
            else:
                schema.validate_demo_dataset_name(self.dataset)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        check(isinstance(self.episodes, int) and self.episodes >= 0, f"episodes must be an int >= 0, got {self.episodes!r}")
        check(
            self.episodes <= schema.MAX_EPISODES_PER_RUN,
            f"{self.episodes} episodes is more than one collect runs (at most {schema.MAX_EPISODES_PER_RUN:,}); "
            f"collect in batches of up to {schema.MAX_EPISODES_PER_RUN:,}: each run's seeds continue after the previous one's",
        )
        check(self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed), f"seed must be an int >= 0 or None, got {self.seed!r}")
        check(
            self.kind == schema.KIND_ROLLOUT or self.seed is None or self.seed + self.episodes <= schema.DEMO_SEED_LIMIT,
            f"demonstration seeds must stay below {schema.DEMO_SEED_LIMIT}, got seed {self.seed} + {self.episodes} episodes",
        )
        check(isinstance(self.workers, int) and self.workers >= 1, f"workers must be >= 1, got {self.workers!r}")
        check(
            self.kind in KINDS,
            f"kind must be one of {', '.join(map(repr, KINDS))}, got {self.kind!r}",
        )
        check(self.steps is None or (isinstance(self.steps, int) and self.steps >= 1), f"steps must be >= 1 or None, got {self.steps!r}")
        try:
            task = get_task(self.task)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        check(all(isinstance(c, task.conditions_type) for c in self.conditions),
              f"conditions of task {task.name!r} must be {task.conditions_type.__name__}")
        check(isinstance(self.spec, RecordingSpec), f"spec must be a RecordingSpec, got {type(self.spec).__name__}")
        check(self.executor in EXECUTORS, f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        check(self.ray_address is None or self.executor == "ray", "ray_address applies to executor 'ray' only")
        check(self.operator is None or (self.operator in OPERATORS and self.task == "transfer_cube" and self.kind == schema.KIND_DEMO),
              f"operator must be one of {', '.join(OPERATORS)} and applies to transfer_cube demonstrations, got {self.operator!r}")

    def jobs(self, first_seed: int | None = None) -> list[EpisodeJob]:
        """The episodes this config runs: seeds `first_seed + i` (default `seed`, else 0), conditions cycled."""
        first = first_seed if first_seed is not None else (self.seed or 0)
        return plan_jobs(self.dataset, self.episodes, first, list(self.conditions) or None)


def collect(
    catalog,
    config: CollectConfig,
    *,
    jobs: Iterable[EpisodeJob] | None = None,
    policy_factory: Callable[[Any], Policy] = ScriptedPolicy,
    on_result: Callable[[EpisodeResult], None] | None = None,
    job_properties: Mapping[str, Mapping[str, Any]] | None = None,
) -> CollectReport:
    """Run, record and register episodes into `config.dataset` (created if missing).

    `job_properties`: property groups added to every episode (e.g. a corrective run's provenance).

    Each finished episode is registered before the next result is looked at. With
    `config.blueprint`, the dataset's default blueprint (for `spec.cameras`) is written to
    the workspace and registered first. `jobs` overrides `episodes`/`seed`/`conditions`.
    Without `jobs`, the seeds are reserved with `reserve_seeds` (continuing after the
    dataset's highest seed when `config.seed` is None); `report.seeds` holds them.
    """
    if not isinstance(config, CollectConfig):
        raise TypeError(f"collect(catalog, config): config must be a CollectConfig, got {type(config).__name__}")
    cfg = config
    dataset, spec = cfg.dataset, cfg.spec
    ws: Workspace = catalog.workspace
    ws.remove_stale_temp_files()
    report = CollectReport(dataset)
    catalog.ensure_dataset(dataset)
    job_iter: Iterator[EpisodeJob]
    if jobs is not None:
        job_list = list(jobs)
        n_jobs, job_iter = len(job_list), iter(job_list)
    elif cfg.kind == schema.KIND_ROLLOUT and cfg.seed is not None:
        # rollouts with explicit seeds: not demonstration seeds, nothing to reserve
        n_jobs, job_iter = cfg.episodes, _jobs(dataset, range(cfg.seed, cfg.seed + cfg.episodes), _condition_list(cfg.conditions or None, cfg.task))
    else:
        floor = seed_floor(catalog, dataset) if cfg.seed is None else 0
        n_jobs, job_iter = cfg.episodes, _reserving_jobs(ws, cfg, floor, report)
        if cfg.seed is not None:  # an explicit range is checked whole before anything runs
            check_seed_range(dataset, cfg.seed, cfg.episodes)
    if job_properties:
        job_iter = (dataclasses.replace(j, properties={
            **j.properties, **{g: {**j.properties.get(g, {}), **v} for g, v in job_properties.items()}})
                    for j in job_iter)
    if cfg.operator is not None and policy_factory is ScriptedPolicy:
        policy_factory = functools.partial(OperatorPolicy, operator=cfg.operator)
    if cfg.blueprint:
        report.blueprint = save_default_blueprint(ws, dataset, spec.cameras, cfg.task)
        catalog.register_blueprint(dataset, report.blueprint)
    t0 = time.perf_counter()

    def done(result: EpisodeResult) -> None:
        catalog.register_files(dataset, [result.path], validate=False)
        faults.point("collect.registered")
        report.results.append(result)
        if on_result is not None:
            on_result(result)

    try:
        if cfg.executor == "ray":
            _collect_ray(job_iter, n_jobs, done, ws, cfg, policy_factory)
        elif cfg.workers == 1 or n_jobs <= 1:
            sim = make_sim(spec, cfg.task)
            try:
                policy = policy_factory(sim)
                for job in job_iter:
                    done(run_episode(sim, policy, job, workspace=ws, dataset=dataset, spec=spec, kind=cfg.kind, steps=cfg.steps))
            finally:
                sim.close()
        else:
            _collect_parallel(job_iter, n_jobs, done, ws, cfg, policy_factory)
    finally:
        report.wall_s = time.perf_counter() - t0
    return report


SEED_BLOCK = 64
"""Seeds `collect` reserves at a time, as the block's first episode starts (not the whole run up front): a
crashed or interrupted collect leaves at most one block unused. A run of up to SEED_BLOCK episodes gets one
contiguous range, as does a longer one unless another collect of the same dataset reserves in between."""


def _reserving_jobs(ws: Workspace, cfg: CollectConfig, floor: int, report: CollectReport) -> Iterator[EpisodeJob]:
    """The config's jobs, reserving their seeds (`reserve_seeds`) block by block as they are taken."""
    conds = _condition_list(cfg.conditions or None, cfg.task)
    done = 0
    while done < cfg.episodes:
        k = min(SEED_BLOCK, cfg.episodes - done)
        start = None if cfg.seed is None else cfg.seed + done
        block = reserve_seeds(ws, cfg.dataset, k, start=start, floor=floor)
        report._add_seeds(block)
        yield from _jobs(cfg.dataset, block, conds, offset=done)
        done += k


def highest_demo_seed(catalog, dataset: str, table=None) -> int | None:
    """Highest demonstration seed (< `schema.DEMO_SEED_LIMIT`) of `dataset`: its registered episodes
    (`episode.seed`) and the files already written to its base layer (a finished, not yet registered
    episode counts); None for none. `table`: the dataset's segment table when the caller has it.
    Seeds in the evaluation range are ignored (with a warning): they never move demonstration seeds."""
    seeds: list[int] = []
    if table is None and dataset in catalog.dataset_names():
        table = catalog.segment_table(dataset)
    col = schema.friendly_column(schema.EPISODE, schema.EPISODE_SEED)
    if table is not None and table.num_rows and col in table.column_names:
        seeds += [int(v) for v in table.column(col).to_pylist() if isinstance(v, int)]
    if dataset in catalog.workspace.datasets():
        seeds += [int(m.group(1)) for p in catalog.workspace.segment_files(dataset, schema.BASE_LAYER)
                  if (m := SEED_IN_ID.search(Path(p).stem))]
    high = [v for v in seeds if v >= schema.DEMO_SEED_LIMIT]
    if high:
        log.warning("%d episode(s) of %s have seeds in the evaluation range; ignored for seed allocation", len(high), dataset)
    seeds = [v for v in seeds if 0 <= v < schema.DEMO_SEED_LIMIT]
    return max(seeds) if seeds else None


def _legacy_seed_state(workspace: Workspace, dataset: str) -> int:
    """`next_seed` of the reservation file plan executions of earlier versions kept (``<workspace>/seeds/<dataset>.json``), or 0."""
    try:
        return int(json.loads((workspace.root / "seeds" / f"{dataset}.json").read_text("utf-8"))["next_seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def seed_floor(catalog, dataset: str, table=None) -> int:
    """The lowest seed a new demonstration of `dataset` may take: past `highest_demo_seed` (which
    also covers imported recordings whose file names carry no seed) and past what plan executions
    of earlier versions reserved. `reserve_seeds` adds its own reservations on top."""
    top = highest_demo_seed(catalog, dataset, table)
    return max(0 if top is None else top + 1, _legacy_seed_state(catalog.workspace, dataset))


WORKER_EPISODES = MAX_JOBS_PER_WORKER
"""Episodes a collect worker process records before it is replaced (`pool.MAX_JOBS_PER_WORKER`: a Rerun thread leak)."""


@contextlib.contextmanager
def _worker_pool(workers: int, n_jobs: int) -> Iterator[WorkerPool]:
    """The pool of the open `reuse_workers(workers)` block, else one of its own for this collect."""
    reused = active_pool(workers)
    if reused is not None:
        yield reused
        return
    with WorkerPool(min(workers, n_jobs), max_jobs_per_worker=WORKER_EPISODES) as pool:
        yield pool


def _discard_staged(result: EpisodeResult) -> None:
    result.path.unlink(missing_ok=True)  # an episode that finished after its collect failed: nobody publishes it


def _collect_parallel(job_iter: Iterator[EpisodeJob], n_jobs: int, done: Callable[[EpisodeResult], None], ws: Workspace,
                      cfg: CollectConfig, policy_factory: Callable[[Any], Policy]) -> None:
    context = episode_context(get_task(cfg.task), cfg.spec, policy_factory)
    with _worker_pool(cfg.workers, n_jobs) as pool:
        n = min(pool.workers, n_jobs)
        pending: set = set()

        def submit(k: int) -> None:  # jobs are taken (and their seeds reserved) as workers free up
            for job in itertools.islice(job_iter, k):
                pending.add(pool.submit(context, _run_in_worker, job, str(ws.root), cfg.dataset, cfg.kind, cfg.steps))

        try:
            submit(2 * n)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    result = fut.result()
                    # the acknowledgement: the worker's temporary file becomes the segment's file, then is registered
                    result.path = publish_temp(result.path, ws.segment_path(cfg.dataset, schema.BASE_LAYER, result.segment_id))
                    done(result)
                submit(2 * n - len(pending))
        except BaseException:
            abandon(pending, _discard_staged)
            raise


# --- the Ray executor ------------------------------------------------------------------------

EXECUTORS = ("local", "ray")


class _EpisodeActor:
    """A Ray actor: one simulator and policy; runs jobs into a scratch folder and returns each RRD's bytes.

    Returning the bytes (an episode is a few MB at most) means the actors need no access to
    the workspace: the parent writes every file atomically and registers it, as with local
    workers, so a cluster without shared storage works too.
    """

    def __init__(self, task, spec: RecordingSpec, policy_factory: Callable) -> None:
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # a scripted policy needs no torch
            pass
        self.sim = make_sim(spec, _adopt(task))
        self.policy = policy_factory(self.sim)
        self.spec = spec
        self.scratch = Workspace(tempfile.mkdtemp(prefix="roboloop-ray-"))

    def run(self, job: EpisodeJob, dataset: str, kind: str, steps: int | None) -> tuple[EpisodeResult, bytes]:
        result = run_episode(self.sim, self.policy, job, workspace=self.scratch, dataset=dataset, spec=self.spec, kind=kind, steps=steps)
        data = result.path.read_bytes()
        result.path.unlink()
        return result, data

    def close(self) -> None:
        self.sim.close()
        shutil.rmtree(self.scratch.root, ignore_errors=True)


def _collect_ray(job_iter: Iterator[EpisodeJob], n_jobs: int, done: Callable[[EpisodeResult], None], ws: Workspace,
                 cfg: CollectConfig, policy_factory: Callable[[Any], Policy]) -> None:
    """Run the jobs on Ray actors (`cfg.workers` of them, one CPU each); register each result as it arrives."""
    try:
        import ray
    except ImportError:
        raise ConfigError("executor 'ray' needs Ray: pip install 'roboloop[ray]' (or pip install ray)") from None
    if not n_jobs:
        return
    n = min(cfg.workers, n_jobs)
    started = not ray.is_initialized()
    if started:
        local = cfg.ray_address is None and not os.environ.get("RAY_ADDRESS")
        ray.init(address=cfg.ray_address, num_cpus=n if local else None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    actor_cls = ray.remote(num_cpus=1)(_EpisodeActor)
    actors = [actor_cls.remote(get_task(cfg.task), cfg.spec, policy_factory) for _ in range(n)]
    in_flight: dict[Any, Any] = {}

    def submit(actor) -> None:
        job = next(job_iter, None)
        if job is not None:
            in_flight[actor.run.remote(job, cfg.dataset, cfg.kind, cfg.steps)] = actor

    try:
        for actor in actors:
            submit(actor)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                actor = in_flight.pop(ref)
                try:
                    result, data = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise exc.as_instanceof_cause() from None
                submit(actor)  # keep the actor busy while this episode is written and registered
                final = ws.segment_path(cfg.dataset, schema.BASE_LAYER, result.segment_id)
                atomic_write_bytes(final, data)
                done(dataclasses.replace(result, path=final))
    finally:
        try:  # best effort: close the simulators and remove the scratch folders
            ray.get([actor.close.remote() for actor in actors], timeout=30)
        except Exception:  # noqa: BLE001 - an actor that died has nothing left to close
            pass
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


# --- CLI helpers ---------------------------------------------------------------------------

def parse_cameras(text: str) -> tuple[str, ...]:
    """`"top,angle"` -> ("top", "angle"), checked against the model's cameras."""
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    bad = [c for c in names if c not in schema.CAMERAS]
    if bad:
        raise ConfigError(f"unknown camera(s) {', '.join(bad)}; valid cameras: {', '.join(schema.CAMERAS)}")
    return names


def parse_size(text: str) -> tuple[int, int]:
    """`"320x240"` -> (320, 240)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"bad camera size {text!r}: expected WIDTHxHEIGHT, e.g. 320x240") from None
    return w, h


def summarize(results: Sequence[EpisodeResult]) -> Mapping[str, Any]:
    """Success count and rate of some results."""
    n = len(results)
    s = sum(r.success for r in results)
    return {"episodes": n, "successes": s, "success_rate": (s / n) if n else float("nan")}
