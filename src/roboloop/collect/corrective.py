"""Corrective collection: a policy drives, the task's corrective expert labels every step (DAgger in simulation).

`collect_corrective(catalog, CorrectiveConfig(run=RUN, ...), policy_factory=...)` runs episodes through the
one rollout loop (`collect.run.collect`, kind ``corrective``, seeds reserved like demonstrations') with a
:class:`CorrectivePolicy`: at every control step the run's policy and the task's corrective expert
(`envs.task.corrective_expert`, e.g. `CorrectiveHandover`, which acts from any state) both give their
action; who acts depends on the mode:

- ``dagger``: the policy always acts; the expert only labels.
- ``gated``: the expert takes over when the two actions are further apart than ``threshold`` (the
  largest absolute difference over the 14 joint targets, radians for the joints and the gripper's 0..1
  opening for the grippers) and hands control back once the distance has stayed below
  ``threshold * HANDBACK_RATIO`` for ``handback_steps`` consecutive steps (hysteresis: no flapping).
- ``expert``: the expert always acts; the policy's action is still computed and recorded.

Every step records ``/control/source`` (``schema.SOURCE_POLICY`` 0 or ``schema.SOURCE_EXPERT`` 1: whose action
was executed), ``/control/expert_action`` (the expert's action: the training target) and
``/control/policy_action`` (the policy's); ``/robot/joint_targets`` stays what was executed. The episode's
``episode`` group adds ``kind = corrective``, ``corrected_run``, ``corrective_mode``,
``corrective_threshold``, ``expert_fraction`` (steps under expert control / steps) and ``expert_policy``,
next to the run's provenance (checkpoint, selection, config digest) and the usual outcome.

This module never loads a run itself (collect stands above train): the caller passes the run's
``policy_factory`` and provenance (`roboloop.evaluate.run.resolve_policy` builds both; the CLI and the
demo use it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from roboloop import schema
from roboloop.collect.run import CollectConfig, CollectReport, EpisodeJob, PolicyHooks, collect
from roboloop.config import Config, check
from roboloop.envs import DEFAULT_TASK, get_task
from roboloop.envs.aloha.recording import RecordingSpec
from roboloop.envs.task import corrective_expert, has_corrective_expert
from roboloop.errors import RoboloopError

__all__ = [
    "CONTROL_POLICY_ACTION",
    "DEFAULT_THRESHOLD",
    "HANDBACK_RATIO",
    "CorrectiveConfig",
    "CorrectiveFactory",
    "CorrectivePolicy",
    "NoCorrectiveExpertError",
    "action_distance",
    "collect_corrective",
]

CONTROL_POLICY_ACTION = schema.CONTROL_POLICY_ACTION
"""Corrective episodes: the policy's action at every step (`schema.CONTROL_POLICY_ACTION`)."""
DEFAULT_THRESHOLD = 0.6
"""Default takeover distance of `gated` mode (max abs joint-target difference): about the 95th percentile of the
distance along a good mlp policy's own successful rollouts (0.59; median 0.08), so such a policy keeps control;
a weak one's median is ~0.9 (benchmarks/README.md, "Corrective collection")."""
HANDBACK_RATIO = 0.5
"""`gated` mode hands control back when the distance stays below threshold * HANDBACK_RATIO for `handback_steps` steps."""


class NoCorrectiveExpertError(RoboloopError, ValueError):
    """The task has no corrective expert (an expert that can act from any state), so it has no corrective collection."""


def action_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The gated mode's distance between two actions: the largest absolute difference over their values
    (radians for ALOHA's joints, the 0..1 opening for its grippers)."""
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


class CorrectivePolicy(PolicyHooks):
    """A policy and a corrective expert acting as one `collect.Policy` (module docstring: the modes).

    Its hooks (`collect.run.PolicyHooks`): after each `action` call, `step_streams()` gives the step's
    ``/control/*`` values and, at the end, `episode_properties()` the episode's corrective properties;
    `collect.run.run_episode` records both.
    """

    def __init__(self, policy, expert, *, mode: str = schema.MODE_GATED, threshold: float = DEFAULT_THRESHOLD,
                 handback_steps: int = 10, run: str = schema.PROVENANCE_NONE) -> None:
        if mode not in schema.CORRECTIVE_MODES:
            raise ValueError(f"mode must be one of {', '.join(schema.CORRECTIVE_MODES)}, got {mode!r}")
        self.policy, self.expert = policy, expert
        self.mode, self.threshold, self.handback_steps, self.run = mode, float(threshold), int(handback_steps), run
        self.policy_id: str = policy.policy_id
        self.reset_counts()

    def reset_counts(self) -> None:
        self.expert_in_control = self.mode == schema.MODE_EXPERT
        self._calm = 0
        self.steps = 0
        self.expert_steps = 0
        self.takeovers = 0
        self._last: dict[str, Any] = {}

    def reset(self) -> None:
        self.policy.reset()
        self.expert.reset()
        self.reset_counts()

    def _decide(self, distance: float) -> bool:
        """Whether the expert acts at this step (updates the gated hysteresis)."""
        if self.mode != schema.MODE_GATED:
            return self.mode == schema.MODE_EXPERT
        if not self.expert_in_control:
            if distance > self.threshold:
                self.expert_in_control, self._calm = True, 0
                self.takeovers += 1
        elif distance < self.threshold * HANDBACK_RATIO:
            self._calm += 1
            if self._calm >= self.handback_steps:
                self.expert_in_control = False
        else:
            self._calm = 0
        return self.expert_in_control

    def action(self, step: int, observation) -> np.ndarray:
        a_policy = np.asarray(self.policy.action(step, observation), dtype=np.float64)
        a_expert = np.asarray(self.expert.action(step, observation), dtype=np.float64)
        expert_acts = self._decide(action_distance(a_policy, a_expert))
        self.steps += 1
        self.expert_steps += int(expert_acts)
        self._last = {
            schema.CONTROL_SOURCE: [float(schema.SOURCE_EXPERT if expert_acts else schema.SOURCE_POLICY)],
            schema.CONTROL_EXPERT_ACTION: a_expert,
            CONTROL_POLICY_ACTION: a_policy,
        }
        return a_expert if expert_acts else a_policy

    def step_streams(self) -> Mapping[str, Any]:
        """The last step's control streams (entity path -> values)."""
        return self._last

    def episode_properties(self) -> dict[str, Any]:
        return {
            schema.EPISODE_CORRECTED_RUN: self.run,
            schema.EPISODE_CORRECTIVE_MODE: self.mode,
            schema.EPISODE_CORRECTIVE_THRESHOLD: self.threshold,
            schema.EPISODE_EXPERT_FRACTION: self.expert_steps / self.steps if self.steps else 0.0,
            schema.EPISODE_EXPERT_POLICY: str(getattr(self.expert, "policy_id", "expert")),
        }


class CorrectiveFactory:
    """Picklable `policy_factory` for `collect`: the run's policy (`policy_factory(sim)`) and the sim task's
    corrective expert, as one :class:`CorrectivePolicy` built in the worker."""

    def __init__(self, policy_factory: Callable[[Any], Any], *, mode: str, threshold: float, handback_steps: int,
                 run: str) -> None:
        self.policy_factory, self.mode, self.threshold, self.handback_steps, self.run = (
            policy_factory, mode, threshold, handback_steps, run)

    def __call__(self, sim) -> CorrectivePolicy:
        expert = corrective_expert(get_task(sim.task), sim)
        if expert is None:
            raise NoCorrectiveExpertError(no_expert_message(sim.task))
        return CorrectivePolicy(self.policy_factory(sim), expert, mode=self.mode, threshold=self.threshold,
                                handback_steps=self.handback_steps, run=self.run)


def no_expert_message(task: str) -> str:
    return (f"task {task!r} has no corrective expert (an expert that acts from any state), so it has no corrective "
            "collection; record interventions through roboloop.record (kind='corrective') instead")


@dataclass(frozen=True)
class CorrectiveConfig(Config):
    """What `collect_corrective` runs (`roboloop collect --corrective --run RUN`)."""

    run: str = ""
    "The training run whose policy drives (stored as `episode.corrected_run`)."
    dataset: str = schema.DEFAULT_DATASET
    "Demonstration dataset the corrective episodes are recorded into (the run's own, usually)."
    mode: str = schema.MODE_GATED
    "Who acts: `dagger` (the policy; the expert labels), `gated` (the expert takes over beyond `threshold`), `expert` (the expert)."
    threshold: float = DEFAULT_THRESHOLD
    "`gated`: takeover when max |expert action - policy action| over the joint targets exceeds this (rad; gripper 0..1)."
    handback_steps: int = 10
    "`gated`: hand back after this many consecutive steps below threshold * 0.5 (hysteresis)."
    episodes: int = 10
    "Episodes to collect (conditions cycled over them)."
    conditions: tuple[Any, ...] = ()
    "Conditions (the task's conditions type), cycled over the episodes (empty: the task's default scene)."
    task: str = DEFAULT_TASK
    "The task (the run's, usually); it must have a corrective expert."
    seed: int | None = None
    "Episode i uses seed `seed + i`; None: continue after the dataset's highest seed (reserved like collect's)."
    workers: int = 1
    "Worker processes (each owns a simulator, the policy and the expert)."
    spec: RecordingSpec = field(default_factory=RecordingSpec)
    "What to record (cameras are rendered when the run's policy needs them)."
    steps: int | None = None
    "Control steps per episode (None: the task's length)."

    def __post_init__(self) -> None:
        if hasattr(self.conditions, "to_dict"):
            object.__setattr__(self, "conditions", (self.conditions,))
        elif isinstance(self.conditions, list):
            object.__setattr__(self, "conditions", tuple(self.conditions))
        super().__post_init__()
        check(isinstance(self.run, str) and bool(self.run), "run must name the training run whose policy drives (roboloop runs)")
        check(self.mode in schema.CORRECTIVE_MODES, f"mode must be one of {', '.join(schema.CORRECTIVE_MODES)}, got {self.mode!r}")
        check(isinstance(self.threshold, (int, float)) and self.threshold >= 0, f"threshold must be >= 0, got {self.threshold!r}")
        check(isinstance(self.handback_steps, int) and self.handback_steps >= 1, f"handback_steps must be >= 1, got {self.handback_steps!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CorrectiveConfig:
        data = dict(data)
        conds = data.get("conditions")
        if isinstance(conds, (list, tuple)):
            ctype = get_task(data.get("task") or DEFAULT_TASK).conditions_type
            data["conditions"] = tuple(ctype.from_dict(c) if isinstance(c, Mapping) else c for c in conds)
        return super().from_dict(data)

    def collect_config(self) -> CollectConfig:
        """The collect run behind it: kind corrective, the same dataset, seeds, conditions, workers, task and spec."""
        return CollectConfig(dataset=self.dataset, episodes=self.episodes, conditions=self.conditions, seed=self.seed,
                             workers=self.workers, spec=self.spec, task=self.task, kind=schema.KIND_CORRECTIVE,
                             steps=self.steps)


def check_task(task: str) -> None:
    """Raise NoCorrectiveExpertError before anything runs when `task` has no corrective expert."""
    if not has_corrective_expert(get_task(task)):
        raise NoCorrectiveExpertError(no_expert_message(task))


def collect_corrective(
    catalog,
    cfg: CorrectiveConfig,
    *,
    policy_factory: Callable[[Any], Any],
    provenance: Mapping[str, Any] | None = None,
    jobs: Sequence[EpisodeJob] | None = None,
    on_result: Callable[[Any], None] | None = None,
) -> CollectReport:
    """Collect `cfg.episodes` corrective episodes (module docstring) with the run's `policy_factory` (built in each
    worker) and its `provenance` (episode properties: run id, checkpoint, selection, config digest); `jobs`
    replaces the reserved seeds (a plan's items)."""
    check_task(cfg.task)
    factory = CorrectiveFactory(policy_factory, mode=cfg.mode, threshold=float(cfg.threshold),
                                handback_steps=cfg.handback_steps, run=cfg.run)
    extra = {schema.EPISODE: dict(provenance or {})}
    if jobs is not None:
        jobs = [EpisodeJob(j.seed, j.conditions, j.segment_id, _merged(j.properties, extra), j.task) for j in jobs]
        return collect(catalog, cfg.collect_config(), jobs=jobs, policy_factory=factory, on_result=on_result)
    return collect(catalog, cfg.collect_config(), policy_factory=factory, on_result=on_result,
                   job_properties=extra)


def _merged(a: Mapping[str, Mapping[str, Any]], b: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {g: dict(v) for g, v in a.items()}
    for g, v in b.items():
        out.setdefault(g, {}).update(v)
    return out
