"""`roboloop plan --corrective N` through the CLI, over a real catalog: which cells get corrective episodes, how many,
and the error when no failing cell's task has a corrective expert.

The world (synthetic recordings with the agreed properties, like tests/system/test_loop_glue.py's): 4 transfer-cube
demonstrations at yaw 0, and an evaluation whose cells succeed by construction: two cells at yaw 30 (far from every
demonstration: coverage gaps), one at yaw 0 that fails anyway (covered: policy_or_data_quality), one at yaw 0 that
succeeds (fine).
"""

from __future__ import annotations

import json
import tomllib

from typer.testing import CliRunner

from roboloop import rows, schema
from roboloop.cli import build_app

DEMO_XY = [(0.05, 0.5), (0.06, 0.45), (0.15, 0.55), (0.1, 0.5)]
PER_CELL = 5
CELLS = {  # cell -> (task, cube yaw of its rollouts, successes of PER_CELL)
    "lighting=normal,yaw=any": ("transfer_cube", 30.0, 0),  # gap, 5 failures
    "lighting=dim,yaw=any": ("transfer_cube", 30.0, 1),  # gap, 4 failures
    "lighting=normal,yaw=none": ("transfer_cube", 0.0, 2),  # covered yet failing (2/5 < 50%), 3 failures
    "lighting=dim,yaw=none": ("transfer_cube", 0.0, 5),  # fine
}


def _write(ws, synthetic_episode, dataset, sid, props):
    return synthetic_episode(ws, dataset, sid, duration_s=0.2, properties=props)[1]


def _rollout_scene(task: str, x: float, y: float, yaw: float, labels: dict[str, str]) -> dict:
    if task == "insertion":
        return {"peg_x": x + 0.1, "peg_y": y, "peg_yaw_deg": yaw, "socket_x": -x - 0.1, "socket_y": y, "socket_yaw_deg": 0.0, **labels}
    return {"cube_x": x + 0.001, "cube_y": y, "cube_yaw_deg": yaw, **labels}


def _world(ws, catalog, synthetic_episode, eval_id: str, cells: dict[str, tuple[str, float, int]]) -> None:
    """The demonstrations, run-1 trained on them, and evaluation `eval_id` of run-1 over `cells` (each dataset's episodes
    registered in one call: a registration costs about as much as a few episodes' files)."""
    demos = [f"aloha-s{i:06d}-aaaaaa" for i in range(len(DEMO_XY))]
    catalog.register_files("aloha", [_write(ws, synthetic_episode, "aloha", sid, {
        "episode": {"kind": "demo", "seed": i},
        "scene": {"cube_x": x, "cube_y": y, "cube_yaw_deg": 0.0, "yaw": "none", "region": "default", "lighting": "normal"},
        "outcome": {"success": True},
    }) for i, (sid, (x, y)) in enumerate(zip(demos, DEMO_XY))])
    ws.run_dir("run-1").mkdir(parents=True, exist_ok=True)
    (ws.run_dir("run-1") / "run.json").write_text(json.dumps({
        "run_id": "run-1", "dataset": "aloha", "selection": "v1", "selection_digest": "", "config_digest": "x",
        "checkpoint_sha256": "y", "policy": "mlp", "cameras": [], "camera_size": None, "train_ids": demos, "status": "finished",
    }))
    paths = []
    for c, (cell, (task, yaw, successes)) in enumerate(cells.items()):
        labels = dict(kv.split("=") for kv in cell.split(","))
        for j in range(PER_CELL):
            x, y = DEMO_XY[j % len(DEMO_XY)]
            ok = j < successes
            paths.append(_write(ws, synthetic_episode, "aloha_evals", f"aloha_evals-{eval_id}-{c}-{j}", {
                "episode": {"kind": "rollout", "task": task, "seed": schema.EVAL_SEED_BASE + 100 * c + j, "eval_id": eval_id,
                            "run_id": "run-1", "cell": cell, "index_in_cell": j, "policy": "run-1"},
                "scene": _rollout_scene(task, x, y, yaw, {k: v for k, v in labels.items() if k != schema.TASK_AXIS}),
                "outcome": {"success": ok, "failure_time_s": -1.0 if ok else 1.0, "failure_reason": "none" if ok else "never_touched",
                            "stage": 4 if ok else 0, "stage_name": "handover" if ok else "none"},
            }))
    catalog.register_files("aloha_evals", paths)
    rows.write_row(ws, schema.EVALS_TABLE, eval_id, {
        "eval_id": eval_id, "dataset": "aloha", "evals_dataset": "aloha_evals", "policy": "run-1", "run_id": "run-1",
        "episodes_per_cell": PER_CELL, "cells": list(cells), "created_at": "2026-12-05T12:00:00+00:00", "status": "finished",
    })


def _plan(ws, *args: str):
    app = build_app(["loop_cmds"])
    return CliRunner().invoke(app, ["--workspace", str(ws.root), "--catalog", "", "plan", *args], env={"COLUMNS": "250"})


def test_plan_corrective_splits_the_episodes_over_every_failing_cell_by_failures(ws, catalog, synthetic_episode, tmp_path):
    _world(ws, catalog, synthetic_episode, "ev1", CELLS)
    res = _plan(ws, "--eval", "ev1", "--budget", "6", "--corrective", "10", "-o", str(tmp_path / "p.toml"))
    assert res.exit_code == 0, res.output
    plan = tomllib.loads((tmp_path / "p.toml").read_text())
    corrective = {",".join(f"{k}={v}" for k, v in sorted(it["conditions"].items())): it for it in plan["items"]
                  if it.get("kind") == schema.KIND_CORRECTIVE}
    # failures per failing cell: 5, 4 (the gaps), 3 (covered yet failing); the fine cell gets none.
    # 10 episodes: one per failing cell, the other 7 by failures (7 x 5/12 = 2.92, 2.33, 1.75: 2, 2, 1 and the
    # two largest remainders, the first and the third cell, one more each) -> 4, 3, 3
    assert {k: it["count"] for k, it in corrective.items()} == {
        "lighting=normal,yaw=any": 4, "lighting=dim,yaw=any": 3, "lighting=normal,yaw=none": 3}
    assert all(it["run"] == "run-1" and it["mode"] == schema.MODE_DAGGER for it in corrective.values())
    demos = [it for it in plan["items"] if "kind" not in it]  # the demonstrations go to the gaps only
    assert sum(it["count"] for it in demos) == 6 and {it["conditions"]["yaw"] for it in demos} == {"any"}
    assert "plan plan-ev1: 16 episode(s)" in res.stdout and res.stdout.count("corrective (dagger) from run-1") == 3
    assert "Traceback" not in res.output


def test_plan_corrective_refuses_when_no_failing_cell_has_a_corrective_expert(ws, catalog, synthetic_episode, tmp_path):
    _world(ws, catalog, synthetic_episode, "ev-ins", {"task=insertion,yaw=large": ("insertion", 30.0, 0),
                                                      "lighting=dim,yaw=none": ("transfer_cube", 0.0, 5)})
    res = _plan(ws, "--eval", "ev-ins", "--budget", "4", "--corrective", "5", "-o", str(tmp_path / "p.toml"))
    assert res.exit_code == 1, res.output
    assert "no failing cell's task has a corrective expert" in res.output and "--corrective 0" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "p.toml").exists()
    res = _plan(ws, "--eval", "ev-ins", "--budget", "4", "-o", str(tmp_path / "p.toml"))  # demonstrations only: a plan
    assert res.exit_code == 0, res.output
    plan = tomllib.loads((tmp_path / "p.toml").read_text())
    assert [(it["conditions"], it["count"]) for it in plan["items"]] == [({"task": "insertion", "yaw": "large"}, 4)]
