"""The demo's wiring for `--policy vision`: corrective episodes from v1 in the plan (analyze.gaps.make_plan, tested in
tests/analyze/test_gaps.py) and the query that keeps them (the full camera demo is a measurement, not a test: benchmarks/README.md)."""

from __future__ import annotations

from roboloop.demo import CORRECTIVE_QUERY, QUERY, DemoConfig, demo_train_config


def test_the_default_demo_is_unchanged_and_vision_adds_corrective_episodes():
    assert DemoConfig().corrective_episodes == 0 and DemoConfig().query == QUERY  # mlp: the measured demo as before
    vision = DemoConfig(policy="vision", plan_budget=12)
    assert vision.corrective_episodes == vision.vision_corrective > 0 and vision.query == CORRECTIVE_QUERY
    assert DemoConfig(policy="vision", corrective=7).corrective_episodes == 7
    assert (DemoConfig().demonstration_budget, vision.demonstration_budget) == (30, vision.vision_plan_budget)
    assert DemoConfig(policy="vision", corrective=0).query == QUERY
    assert DemoConfig.from_dict(vision.to_dict()) == vision


def test_the_camera_demo_trains_at_the_camera_policys_budget_and_size():
    vision = DemoConfig(policy="vision", vision_epochs=7, vision_camera_size=(64, 48))
    t = demo_train_config(vision, "v1")
    assert (t.policy, t.epochs, t.batch_size) == ("vision", 7, vision.vision_batch_size)
    assert (t.model.image_width, t.model.image_height, t.model.aux_cube) == (64, 48, vision.vision_aux_cube)
    assert t.model.brightness == vision.vision_brightness > 0  # the camera demo augments against its two lightings
    assert vision.recorded_camera_size == (64, 48)  # recorded at the size the policy deploys at: no resize
    mlp = DemoConfig()
    assert (mlp.recorded_camera_size, demo_train_config(mlp, "v1").epochs) == (mlp.camera_size, mlp.epochs)
