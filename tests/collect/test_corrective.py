"""Corrective collection through the real rollout loop, simulator and catalog: the three modes against a plain
demonstration of the same seed, what each step records, the episode's properties, and a plan's corrective item.

The driving policy is `HoldStill` (it commands the current joints): the expert's labels and takeovers are then
known without a trained run (the CLI test with a trained run is in tests/train/test_corrective_train.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from roboloop import schema
from roboloop.collect.corrective import (
    CONTROL_POLICY_ACTION,
    CorrectiveConfig,
    CorrectivePolicy,
    NoCorrectiveExpertError,
    check_task,
    collect_corrective,
)
from roboloop.collect.plan import Plan, PlanError, PlanItem
from roboloop.collect.plan_run import execute_plan
from roboloop.collect.run import CollectConfig, RecordingSpec, collect
from roboloop.config import ConfigError
from tests.fixtures.policies import HoldStill

pytestmark = pytest.mark.sim

SPEC = RecordingSpec(cameras=())
STEPS = 60  # past the scripted re-aim (step 45): the expert's plan is exercised
SEED = 11


def _values(cat, dataset: str, segment: str, entity: str) -> np.ndarray:
    table = cat.dataset(dataset).filter_segments([segment]).filter_contents([entity]).reader(index=schema.TIMELINE).to_arrow_table()
    return np.array(table.column(f"{entity}:{schema.SCALARS_COMPONENT}").to_pylist(), dtype=np.float64)


def _corrective(cat, mode: str, threshold: float = 0.1):
    cfg = CorrectiveConfig(run="run-x", dataset="d", mode=mode, threshold=threshold, episodes=1, seed=SEED, spec=SPEC, steps=STEPS)
    result = collect_corrective(cat, cfg, policy_factory=HoldStill, provenance={schema.EPISODE_RUN_ID: "run-x"}).results[0]
    return result, {e: _values(cat, "d", result.segment_id, e) for e in (
        schema.JOINT_TARGETS, schema.JOINT_POSITIONS, schema.CONTROL_SOURCE, schema.CONTROL_EXPERT_ACTION, CONTROL_POLICY_ACTION)}


def test_the_three_modes_against_a_plain_demonstration(catalog):
    demo = collect(catalog, CollectConfig(dataset="d", episodes=1, seed=SEED, spec=SPEC, steps=STEPS)).results[0]
    demo_targets = _values(catalog, "d", demo.segment_id, schema.JOINT_TARGETS)

    # expert: the expert always acts -> the executed targets are the scripted demonstration's, bit for bit
    res, v = _corrective(catalog, schema.MODE_EXPERT)
    assert np.array_equal(v[schema.JOINT_TARGETS], demo_targets)
    assert np.array_equal(v[schema.CONTROL_EXPERT_ACTION], demo_targets)
    assert (v[schema.CONTROL_SOURCE][:, 0] == schema.SOURCE_EXPERT).all() and len(v[schema.CONTROL_SOURCE]) == STEPS
    np.testing.assert_array_equal(v[CONTROL_POLICY_ACTION], v[schema.JOINT_POSITIONS])  # HoldStill's own action, recorded
    ep = res.properties[schema.EPISODE]
    assert ep[schema.EPISODE_KIND] == schema.KIND_CORRECTIVE and ep[schema.EPISODE_CORRECTED_RUN] == "run-x"
    assert ep[schema.EPISODE_CORRECTIVE_MODE] == "expert" and ep[schema.EPISODE_EXPERT_FRACTION] == 1.0
    assert ep[schema.EPISODE_RUN_ID] == "run-x" and ep[schema.EPISODE_POLICY] == HoldStill.policy_id
    assert ep[schema.EPISODE_EXPERT_POLICY] == "corrective-handover-v1"

    # dagger: the policy always acts; the expert labels every step. The policy holds still, so the cube never moves and
    # the expert's labels are the scripted plan's actions (the cube settles alike: no contact before step 60)
    res, v = _corrective(catalog, schema.MODE_DAGGER)
    assert (v[schema.CONTROL_SOURCE][:, 0] == schema.SOURCE_POLICY).all()
    assert len(v[schema.CONTROL_EXPERT_ACTION]) == STEPS
    np.testing.assert_array_equal(v[schema.JOINT_TARGETS], v[schema.JOINT_POSITIONS])  # what was executed: HoldStill's
    np.testing.assert_allclose(v[schema.CONTROL_EXPERT_ACTION], demo_targets, atol=1e-9)
    assert res.properties[schema.EPISODE][schema.EPISODE_EXPERT_FRACTION] == 0.0

    # gated degenerates: threshold 0 -> the expert takes over at once and never hands back; inf -> never takes over
    res0, v0 = _corrective(catalog, schema.MODE_GATED, 0.0)
    assert np.array_equal(v0[schema.JOINT_TARGETS], demo_targets) and (v0[schema.CONTROL_SOURCE] == 1).all()
    res_inf, v_inf = _corrective(catalog, schema.MODE_GATED, float("inf"))
    np.testing.assert_array_equal(v_inf[schema.JOINT_TARGETS], v_inf[schema.JOINT_POSITIONS])
    assert (v_inf[schema.CONTROL_SOURCE] == 0).all()

    rows = catalog.sql('SELECT "episode.kind" AS k, count(*) AS n FROM d GROUP BY 1 ORDER BY 1').to_pylist()
    assert rows == [{"k": "corrective", "n": 4}, {"k": "demo", "n": 1}]  # `curate --where "episode.kind = 'corrective'"`


class _Scripted:
    """A fake policy/expert pair whose distance is scripted per step (the gated hysteresis, without a simulator)."""

    policy_id = "fake"

    def __init__(self, values):
        self.values = values

    def reset(self):
        pass

    def action(self, step, observation):
        return np.full(14, self.values[step])


def test_gated_takes_over_beyond_the_threshold_and_hands_back_with_hysteresis():
    distance = [0.0, 0.05, 0.2, 0.3, 0.08, 0.04, 0.04, 0.04, 0.2, 0.0]  # |expert - policy| per step
    policy = CorrectivePolicy(_Scripted([0.0] * 10), _Scripted(distance), mode=schema.MODE_GATED, threshold=0.1, handback_steps=3)
    policy.reset()
    sources = []
    for k in range(10):
        policy.action(k, None)
        sources.append(int(policy.step_streams()[schema.CONTROL_SOURCE][0]))
    # takeover at 0.2 > 0.1; 0.08 is not below 0.05 (threshold * 0.5), so no calm step; three calm steps hand back
    assert sources == [0, 0, 1, 1, 1, 1, 1, 0, 1, 1]
    assert policy.takeovers == 2 and policy.episode_properties()[schema.EPISODE_EXPERT_FRACTION] == 0.7


def test_config_refuses_what_it_cannot_run():
    with pytest.raises(ConfigError, match="mode"):
        CorrectiveConfig(run="r", mode="sometimes")
    with pytest.raises(ConfigError, match="run"):
        CorrectiveConfig(run="")
    with pytest.raises(NoCorrectiveExpertError, match="'insertion' has no corrective expert.*roboloop.record"):
        check_task("insertion")  # before anything runs


def test_a_plan_asks_for_corrective_episodes_in_a_cell(catalog, tmp_path):
    items = (PlanItem({"yaw": "any"}, 1), PlanItem({"yaw": "any"}, 1, kind="corrective", run="run-x", mode="dagger"))
    plan = Plan("p1", "d", items)
    assert Plan.from_toml(plan.to_toml()) == plan  # the corrective item round-trips through the file
    with pytest.raises(PlanError, match="corrective"):
        execute_plan(catalog, plan, steps=20)  # who loads the run? the CLI passes resolve_policy
    source = SimpleNamespace(factory=HoldStill, provenance={schema.EPISODE_RUN_ID: "run-x"}, cameras=(), camera_size=None)
    run = execute_plan(catalog, plan, steps=20, spec=SPEC, policy_source=lambda run_id: source)
    rows = {r["segment_id"]: r for r in catalog.segment_table("d").to_pylist()}
    kinds = sorted((rows[s]["episode.kind"], rows[s]["scene.yaw"], rows[s].get("episode.corrected_run")) for s in run.new_segment_ids)
    assert kinds == [("corrective", "any", "run-x"), ("demo", "any", None)]
    assert run.done and run.failed_segment_ids == [s for s in run.new_segment_ids if rows[s]["episode.kind"] == "demo"
                                                   and not rows[s]["outcome.success"]]  # corrective failures: not flag candidates
