"""The demo's wiring for `--policy vision`: corrective episodes from v1 in the plan's gap cells and the query that
keeps them (the full camera demo is a measurement, not a test: benchmarks/README.md)."""

from __future__ import annotations

from roboloop import schema
from roboloop.collect.plan import Plan, PlanItem
from roboloop.demo import CORRECTIVE_QUERY, QUERY, DemoConfig, demo_train_config, with_corrective


def test_the_default_demo_is_unchanged_and_vision_adds_corrective_episodes():
    assert DemoConfig().corrective_episodes == 0 and DemoConfig().query == QUERY  # mlp: the measured demo as before
    vision = DemoConfig(policy="vision", plan_budget=12)
    assert vision.corrective_episodes == 12 and vision.query == CORRECTIVE_QUERY
    assert DemoConfig(policy="vision", corrective=0).query == QUERY
    assert DemoConfig.from_dict(vision.to_dict()) == vision


def test_with_corrective_adds_a_corrective_item_per_gap_cell_split_like_the_demonstrations():
    plan = Plan("p", "aloha", (PlanItem({"yaw": "any", "lighting": "normal"}, 20), PlanItem({"yaw": "any", "lighting": "dim"}, 10)))
    out = with_corrective(plan, "run-1", 6, schema.MODE_DAGGER)
    extra = [it for it in out.items if it.corrective]
    assert out.items[:2] == plan.items
    assert [(it.conditions, it.count, it.run, it.mode) for it in extra] == [
        (plan.items[0].conditions, 4, "run-1", "dagger"), (plan.items[1].conditions, 2, "run-1", "dagger")]
    assert Plan.from_toml(out.to_toml()) == out and out.total == 36
    assert with_corrective(plan, "run-1", 0) == plan


def test_the_camera_demo_trains_at_the_camera_policys_budget_and_size():
    vision = DemoConfig(policy="vision", vision_epochs=7, vision_camera_size=(64, 48))
    t = demo_train_config(vision, "v1")
    assert (t.policy, t.epochs, t.batch_size) == ("vision", 7, vision.vision_batch_size)
    assert (t.model.image_width, t.model.image_height, t.model.aux_cube) == (64, 48, vision.vision_aux_cube)
    assert vision.recorded_camera_size == (64, 48)  # recorded at the size the policy deploys at: no resize
    mlp = DemoConfig()
    assert (mlp.recorded_camera_size, demo_train_config(mlp, "v1").epochs) == (mlp.camera_size, mlp.epochs)
