"""Multi-task training (issue 22 item 2): one policy on transfer cube and insertion demos, evaluated per task.

Collects `--demos` scripted transfer-cube handovers (yaw none, lighting normal / dim, like the demo's v1) and
`--demos` scripted insertions (default conditions, lighting normal / dim, like bench_insertion_loop.py) into ONE
dataset (a selection is over one dataset), refines, curates the strict successes (10% holdout), trains the
default `mlp` once with the demo's v1 config (`--epochs`, 150; a multi-task run: the union of both tasks' state
paths, zeros where a task lacks one, plus a one-hot task input), and evaluates it per task with `--per-cell`
unseen seeds per cell: transfer cube on `yaw=none lighting=normal,dim`, insertion on `lighting=normal,dim`
(the same cell keys, hence the same first seeds, as the single-task benchmarks).

    PYTHONPATH=src MUJOCO_GL=egl .venv/bin/python benchmarks/bench_multitask_loop.py --workspace /tmp/mt-loop
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_insertion_loop import run  # the same CLI runner

DATASET = "multitask"
SELECTION = "mt-v1"
EVALS = {"transfer_cube": "yaw=none lighting=normal,dim", "insertion": "lighting=normal,dim"}


def success(ws: Path, eval_id: str) -> dict:
    from roboloop.catalog import Catalog
    from roboloop.workspace import Workspace

    with Catalog(Workspace(ws)) as cat:
        rows = [r for r in cat.segment_table(f"{DATASET}_evals").to_pylist() if r.get("episode.eval_id") == eval_id]
    return {
        "tasks": sorted({r.get("episode.task") for r in rows}),
        "strict_success": f"{sum(bool(r.get('outcome.success')) for r in rows)}/{len(rows)}",
        "by_cell": {f"{c} {'ok' if s else 'fail'}": v for (c, s), v in sorted(collections.Counter(
            (r.get("episode.cell"), bool(r.get("outcome.success"))) for r in rows).items())},
        "failures": dict(collections.Counter(r.get("outcome.failure_reason") for r in rows if not r.get("outcome.success"))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--demos", type=int, default=50, help="demos per task")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--per-cell", type=int, default=15)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    ws, wall = a.workspace, {}
    half = a.demos // 2
    t = time.perf_counter()
    for task, extra in (("transfer_cube", ["--yaw", "none"]), ("insertion", [])):
        for lighting, n, seed in (("normal", half, 0), ("dim", a.demos - half, half)):
            run(ws, "collect", "--dataset", DATASET, "--task", task, "--episodes", str(n), "--lighting", lighting,
                "--seed", str(seed), "--workers", str(a.workers), *extra)
    wall["collect"] = time.perf_counter() - t
    run(ws, "refine", "--dataset", DATASET)
    run(ws, "curate", "--dataset", DATASET, "--name", SELECTION, "--where", "outcome.success", "--holdout", "0.1", "--replace")
    t = time.perf_counter()
    run(ws, "train", "--dataset", DATASET, "--selection", SELECTION, "--epochs", str(a.epochs))
    wall["train"] = time.perf_counter() - t
    from roboloop.train import list_runs
    from roboloop.workspace import Workspace

    info = sorted((r for r in list_runs(Workspace(ws)) if r.get("selection") == SELECTION), key=lambda r: r.get("started_at", ""))[-1]
    out = {"run": info["run_id"], "tasks": info.get("tasks"), "state": info["config"].get("state"),
           "train": len(info["train_ids"]), "holdout": len(info["holdout_ids"]),
           "final_train_loss": info.get("final_train_loss"), "final_holdout_loss": info.get("final_holdout_loss")}
    for task, grid in EVALS.items():
        t = time.perf_counter()
        eval_id = f"mt-{task}-{info['run_id']}"
        run(ws, "eval", "--run", info["run_id"], "--task", task, "--grid", grid, "--episodes-per-cell", str(a.per_cell),
            "--name", eval_id, "--workers", str(a.workers))
        wall[f"eval {task}"] = time.perf_counter() - t
        out[task] = success(ws, eval_id)
    out["wall_s"] = {k: round(v, 1) for k, v in wall.items()}
    out["load_avg"] = os.getloadavg()
    print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main()
