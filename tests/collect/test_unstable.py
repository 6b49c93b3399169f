"""An unstable simulation ends its episode as a failed rollout (kind `unstable`); the run goes on.

Finite commands far outside the joint limits (100 rad, even 1e12) do not destabilise gym-aloha's
model (its position actuators clamp to their ctrlrange), so the instability is made the way MuJoCo
meets it: a state that blows up (huge joint velocities) inside the real simulator's step.
"""

from __future__ import annotations

import numpy as np
import pytest

from roboloop import schema
from roboloop.collect.run import CollectConfig, collect
from roboloop.envs import get_task
from roboloop.envs.aloha.recording import RecordingSpec
from roboloop.evaluate.run import EvalConfig, evaluate, parse_grid

SPEC = RecordingSpec(cameras=(), width=64, height=48)
STEPS = 8
BLOW_UP_AT = 3


class BlowingUp:
    """Holds still; in the first episode, at step BLOW_UP_AT, the state goes non-physical before the step."""

    policy_id = "blowing-up-v0"

    def __init__(self, sim) -> None:
        self.sim, self.episodes = sim, 0

    def reset(self) -> None:
        self.episodes += 1

    def action(self, step, observation) -> np.ndarray:
        if self.episodes == 1 and step == BLOW_UP_AT:
            self.sim.physics.data.qvel[:] = 1e30
        return observation.joint_positions


@pytest.mark.parametrize("task", ["transfer_cube", "insertion"])
def test_unstable_rollout_is_a_failure_and_the_run_continues(catalog, task):
    assert "unstable" in get_task(task).failure_kinds
    cfg = CollectConfig(dataset="evals", episodes=2, seed=7, spec=SPEC, steps=STEPS, kind=schema.KIND_ROLLOUT, task=task)
    report = collect(catalog, cfg, policy_factory=BlowingUp)
    rows = sorted(catalog.segment_table("evals").to_pylist(), key=lambda r: r["segment_id"])
    assert len(rows) == 2 and len(report.results) == 2
    first, second = rows
    assert first["outcome.failure_reason"] == "unstable" and not first["outcome.success"]
    assert first["outcome.failure_step"] == BLOW_UP_AT
    assert np.isclose(first["outcome.failure_time_s"], BLOW_UP_AT * SPEC.dt)
    assert second["outcome.failure_reason"] != "unstable"
    assert schema.FAILURE_KINDS["unstable"] == "the simulation went unstable"


def test_eval_with_an_unstable_rollout_finishes_with_every_row(catalog):
    cfg = EvalConfig(dataset="demo", grid=parse_grid("region=near"), episodes_per_cell=3, steps=STEPS, cameras=(),
                     eval_id="ev-unstable", policy="blowing-up")
    report = evaluate(catalog, cfg, policy_factory=BlowingUp)
    reasons = [r.outcome["failure_reason"] for r in report.results]
    assert len(reasons) == 3 and reasons.count("unstable") == 1
    assert catalog.segment_table("demo_evals").num_rows == 3
