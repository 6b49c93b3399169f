"""Collection plans: TOML round trip, validation, seed reservation, execution on the real simulator."""

from __future__ import annotations

import pytest

from roboloop import rows, schema
from roboloop.collect.plan import (
    Plan,
    PlanError,
    PlanItem,
    canonical_conditions,
    plan_row,
    read_plan,
    save_plan,
    write_plan,
)
from roboloop.collect.plan_run import dataset_max_seed, execute_plan, reserve_seeds


def _plan(**kw) -> Plan:
    base = {
        "name": "plan-ev1",
        "dataset": "aloha",
        "items": (
            PlanItem({"yaw": "any", "lighting": "normal"}, 12, reason="0/30 succeeded"),
            PlanItem({"yaw": "any", "lighting": "dim", "region": "near"}, 8),
        ),
        "reason": "coverage gaps",
        "source_eval": "ev1",
        "suggestions": ({"cell": "yaw=none", "action": "inspect", "detail": "roboloop failures ..."},),
        "created_at": "2026-11-23T14:00:00+00:00",
    }
    base.update(kw)
    return Plan(**base)


def test_toml_round_trip(tmp_path):
    p = _plan()
    assert p.total == 20
    assert dict(p.items[1].conditions) == {"lighting": "dim", "region": "left", "yaw": "any"}  # alias resolved, sorted
    path = write_plan(p, tmp_path / "plan.toml")
    text = path.read_text()
    assert "[[items]]" in text and 'seed_rule = "after-dataset-max"' in text
    back = read_plan(path)
    assert back == p
    assert Plan.from_dict(p.to_dict()) == p
    # an item's conditions build the scene the demonstrator runs in
    sc = p.items[1].scene_conditions()
    assert (sc.region, sc.yaw_min, sc.yaw_max, sc.lighting) == ("left", -45.0, 45.0, "dim")


def test_hand_written_file(tmp_path):
    f = tmp_path / "hand.toml"
    f.write_text(
        'name = "more-yaw"\ndataset = "aloha"\n\n[[items]]\ncount = 5\nconditions = { yaw = "small", distractors = "2" }\n'
    )
    p = read_plan(f)
    assert p.total == 5 and p.items[0].conditions == {"distractors": "2", "yaw": "small"}
    assert p.seed_rule == "after-dataset-max" and p.suggestions == () and p.source_eval == ""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"items": ({"conditions": {"colour": "red"}, "count": 1},)}, "unknown condition axis 'colour'; valid axes: region, yaw"),
        ({"items": ({"conditions": {"yaw": "sideways"}, "count": 1},)}, "unknown yaw label 'sideways'; valid yaw labels: none, small, any"),
        ({"items": ({"conditions": {"yaw": "any"}, "count": 0},)}, "count must be an integer >= 1"),
        ({"items": ({"conditions": {"yaw": "any"}},)}, "missing 'count'"),
        ({"items": ({"conditions": {"yaw": "any"}, "count": 2, "seeds": 3},)}, "unknown keys ['seeds']"),
        (
            {"items": ({"conditions": {"region": "near"}, "count": 1}, {"conditions": {"region": "left"}, "count": 2})},
            "items 1 and 2 have the same conditions (region=left); merge them",
        ),
        ({"seed_rule": "random"}, "unknown seed_rule 'random'; valid: after-dataset-max"),
        ({"name": "bad name!"}, "invalid plan name"),
        ({"dataset": "9lives"}, "invalid dataset name"),
    ],
)
def test_validation_errors(change, message):
    d = _plan().to_dict()
    d.update(change)
    with pytest.raises(PlanError) as exc:
        Plan.from_dict(d)
    assert message in str(exc.value)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(PlanError, match="bad.toml is not valid TOML"):
        read_plan(bad)
    bad.write_text('name = "x"\n')
    with pytest.raises(PlanError, match="bad.toml: a plan needs 'dataset'"):
        read_plan(bad)
    with pytest.raises(PlanError, match="cannot read plan file"):
        read_plan(tmp_path / "missing.toml")


def test_canonical_conditions():
    assert canonical_conditions({"region": "FAR", "distractors": "few"}) == {"distractors": "few", "region": "right"}
    with pytest.raises(PlanError, match="valid distractors labels"):
        canonical_conditions({"distractors": "9"})


def _demo_episode(ws, catalog, synthetic_episode, seed):
    sid = f"aloha-s{seed:06d}-abc123"
    _, path = synthetic_episode(
        ws, "aloha", sid, duration_s=0.2, properties={schema.EPISODE: {schema.EPISODE_SEED: seed, schema.EPISODE_KIND: "demo"}}
    )
    catalog.register_files("aloha", [path])
    return sid


def test_reserve_seeds_continue_after_dataset_max(ws, catalog, synthetic_episode):
    assert dataset_max_seed(catalog, "aloha") is None
    assert reserve_seeds(catalog, "aloha", 2) == 0
    _demo_episode(ws, catalog, synthetic_episode, 5)
    _demo_episode(ws, catalog, synthetic_episode, 17)
    assert dataset_max_seed(catalog, "aloha") == 17
    assert reserve_seeds(catalog, "aloha", 3) == 18
    assert reserve_seeds(catalog, "aloha", 2) == 21  # reserved seeds are never handed out twice
    # a finished file not yet registered counts too
    synthetic_episode(ws, "aloha", "aloha-s000040-def456", duration_s=0.2)
    assert dataset_max_seed(catalog, "aloha") == 40
    assert reserve_seeds(catalog, "aloha", 1) == 41
    with pytest.raises(PlanError, match="evaluation seeds start there"):
        reserve_seeds(catalog, "aloha", schema.DEMO_SEED_LIMIT)


def test_save_plan_writes_row_and_file(ws, tmp_path):
    p = _plan()
    path = save_plan(ws, p, tmp_path / "p.toml")
    assert read_plan(path) == p
    row = rows.read_row(ws, schema.PLANS_TABLE, "plan-ev1")
    assert row["status"] == "planned" and row["total"] == 20 and row["source_eval"] == "ev1"
    assert Plan.from_dict({k: row[k] for k in p.to_dict()}) == p


@pytest.mark.sim
def test_execute_plan_on_the_simulator(ws, catalog, synthetic_episode):
    from roboloop.collect.run import RecordingSpec

    _demo_episode(ws, catalog, synthetic_episode, 41)
    p = Plan(
        name="plan-sim",
        dataset="aloha",
        items=(PlanItem({"yaw": "any"}, 1), PlanItem({"region": "far", "lighting": "dim"}, 1)),
        source_eval="ev-x",
    )
    seen = []
    run = execute_plan(catalog, p, spec=RecordingSpec(cameras=()), steps=5, on_result=seen.append)
    assert run.status == "executed" and run.done
    assert run.seeds == [42, 43] and len(run.new_segment_ids) == 2 and len(seen) == 2
    table = {r["segment_id"]: r for r in catalog.segment_table("aloha").to_pylist()}
    assert len(table) == 3
    by_seed = {r["episode.seed"]: r for r in table.values() if r["segment_id"] in run.new_segment_ids}
    assert set(by_seed) == {42, 43}
    assert all(s < schema.DEMO_SEED_LIMIT for s in by_seed)
    assert (by_seed[42]["scene.yaw_min"], by_seed[42]["scene.yaw_max"]) == (-45.0, 45.0)
    assert (by_seed[43]["scene.region"], by_seed[43]["scene.lighting"]) == ("right", "dim")
    assert by_seed[43]["episode.cameras"] == "none" and by_seed[43]["outcome.steps"] == 5
    row = plan_row(ws, "plan-sim")
    assert row["status"] == "executed" and row["seeds"] == [42, 44]
    assert row["collected"] == {"yaw=any": [by_seed[42]["segment_id"]], "lighting=dim,region=right": [by_seed[43]["segment_id"]]}
    assert sorted(run.failed_segment_ids) == sorted(run.new_segment_ids)  # 5 steps cannot succeed
    # the start state recomputed from seed + conditions (for episodes recorded without it) is the
    # cube pose the simulator actually started from
    import math

    from roboloop.analyze.gaps import fill_start_states

    row = dict(by_seed[42])
    for c in ("scene.cube_x", "scene.cube_y", "scene.cube_yaw_deg"):
        row.pop(c, None)
    assert fill_start_states([row]) == 1
    pose = (
        catalog.dataset("aloha").filter_segments([row["segment_id"]]).filter_contents([schema.CUBE_POSE])
        .reader(index=schema.TIMELINE).to_arrow_table()
    )
    first = pose.column(f"{schema.CUBE_POSE}:{schema.SCALARS_COMPONENT}").to_pylist()[0]
    x, y, _, qw, _, _, qz = first
    assert row["scene.cube_x"] == pytest.approx(x, abs=1e-3) and row["scene.cube_y"] == pytest.approx(y, abs=1e-3)
    assert row["scene.cube_yaw_deg"] == pytest.approx(math.degrees(2 * math.atan2(qz, qw)), abs=0.5)
    assert abs(row["scene.cube_yaw_deg"]) > 0.5  # yaw "any" really turned the cube
    # executing it again collects nothing: the plan is done
    again = execute_plan(catalog, p, spec=RecordingSpec(cameras=()), steps=5)
    assert again.new_segment_ids == [] and again.done
    assert catalog.segment_table("aloha").num_rows == 3


def test_cli_errors_are_actionable(tmp_path):
    from typer.testing import CliRunner

    from roboloop.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["--workspace", str(tmp_path / "ws"), "--catalog", "", "gaps", "--eval", "nope"])
    assert res.exit_code == 1 and "unknown evaluation 'nope'" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "p"\ndataset = "aloha"\n[[items]]\ncount = 1\nconditions = { yaw = "sideways" }\n')
    res = runner.invoke(app, ["--workspace", str(tmp_path / "ws"), "--catalog", "", "collect", "--plan", str(bad)])
    assert res.exit_code == 1 and "valid yaw labels: none, small, any" in res.output


@pytest.mark.sim
def test_cli_collect_plan(tmp_path):
    from typer.testing import CliRunner

    from roboloop.cli import app
    from roboloop.workspace import Workspace

    f = tmp_path / "p.toml"
    write_plan(Plan(name="cli-plan", dataset="clids", items=(PlanItem({"yaw": "small"}, 2),)), f)
    wsdir = tmp_path / "ws"
    res = CliRunner().invoke(app, ["--workspace", str(wsdir), "--catalog", "", "collect", "--plan", str(f), "--steps", "5"])
    assert res.exit_code == 0, res.output
    assert "collected 2 episode(s)" in res.output and "seeds 0..1" in res.output
    row = plan_row(Workspace(wsdir), "cli-plan")
    assert row["status"] == "executed" and len(row["collected"]["yaw=small"]) == 2
    # 5-step demonstrations fail: they are flagged in the quality layer, so selections leave them out
    assert "flagged 2 failed demonstration(s)" in res.output
    from roboloop.catalog.client import Catalog

    with Catalog(Workspace(wsdir), url="") as cat:
        table = {r["segment_id"]: r for r in cat.segment_table("clids").to_pylist()}
    assert sorted(table) == sorted(row["collected"]["yaw=small"])
    assert all(r["quality.flagged"] is True and "plan cli-plan" in r["quality.reason"] for r in table.values())


def test_load_plan_by_file_or_saved_name(ws, tmp_path):
    from roboloop.collect.plan import load_plan

    p = _plan()
    path = save_plan(ws, p, tmp_path / "p.toml")
    assert load_plan(ws, path) == p
    assert load_plan(ws, "plan-ev1") == p
    with pytest.raises(PlanError, match="saved plans: plan-ev1"):
        load_plan(ws, "plan-nope")
