"""Analysis at scale: `roboloop success`, `compare` and `gaps` cold on N rollouts; the report on an evaluation.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_analysis_scale.py --rollouts 100000
    PYTHONPATH=src .venv/bin/python benchmarks/bench_analysis_scale.py --rollouts 20000 --report

Workspace (built once in `benchmarks/_data/analysis_scale_<N>/`, reused afterwards):

* a demonstration dataset `bench` of `--demos` (60) episodes written by the real recorder
  (`EpisodeRecorder`, 1 s of joints, the `episode` and `scene` property groups a demonstration
  has, start states from `Task.scene_properties` of its seed), and a training run `run-bench`
  (`runs/run-bench/run.json`) trained on them;
* two evaluations `bench-a`, `bench-b` of that run, N / 2 rollouts each in `bench_evals`, on the same
  12 cells (region x lighting x yaw) and the same seeds (`cell_seed`), so `compare` is paired.

Rollouts: what `success`, `compare` and `gaps` read is the rollout index (`catalog.index`), so every
rollout gets its index row through the real index writer (`index.write_row`, the call `evaluate`
makes after registering a rollout; `index.compact` then writes the snapshot as `evaluate` does at its
end), and a base file in `datasets/bench_evals/base/` (the index checks the base folder against its
rows). The base files are hard links to a few real recordings (writing 100k recordings takes ~1 h
here, and no measured command opens a rollout's recording). That is faithful for these commands:
they take their numbers from the index rows, which are exactly what `evaluate` writes.

Measured, each command cold (a new `python -m roboloop.cli` process: Python start, imports, index
read, catalog start where the command needs one, statistics, printing), median of `--repeats`:
`success --by episode.cell`, `compare bench-a bench-b`, `gaps --eval bench-a`. With `--report`:
`roboloop report --eval bench-a --eval bench-b`. Also `python -c "import roboloop.cli"` (start-up floor).
`--src DIR` times another source tree (e.g. `git archive <commit> src | tar -x -C DIR`: before/after in one
session); `--in-process` also times the index read and each statistic once Python is up, and `compare` on
dict rows (its row-by-row count) against Arrow tables. `--real` records every rollout (no hard links: for
the catalog route, e.g. the report; small N only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from roboloop import rows, schema
from roboloop.catalog import index as episode_index
from roboloop.collect.run import EpisodeJob, RecordingSpec, episode_properties, scene_properties
from roboloop.evaluate.run import cell_conditions, cell_key, cell_seed
from roboloop.workspace import Workspace

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "_data"
SRC = ROOT.parent / "src"
DATASET = "bench"
EVALS = schema.evals_dataset(DATASET)
RUN_ID = "run-bench"
EVAL_IDS = ("bench-a", "bench-b")
TASK = "transfer_cube"
CELLS = [{"region": r, "lighting": li, "yaw": y} for r in ("left", "right", "wide") for li in ("normal", "dim")
         for y in ("none", "any")]


def _record(path: Path, sid: str, props: dict, joints: np.ndarray) -> None:
    from roboloop.record.episode import EpisodeRecorder

    with EpisodeRecorder(path, sid) as rec:
        rec.log_scalar_columns(schema.JOINT_POSITIONS, np.arange(len(joints)) / 50.0, joints)
        for group, values in props.items():
            rec.set_properties(group, values)


def _demos(ws: Workspace, n: int, joints: np.ndarray) -> list[str]:
    """Demonstrations in the `left`/`right` regions at yaw 0 (so `wide` and yaw `any` are coverage gaps)."""
    ids = []
    for i in range(n):
        cell = {"region": ("left", "right")[i % 2], "lighting": "normal", "yaw": "none"}
        cond = cell_conditions(cell)
        seed = 1000 + i
        sid = f"demo-{i:04d}"
        path = ws.segment_path(DATASET, schema.BASE_LAYER, sid)
        if not path.exists():
            episode = episode_properties(EpisodeJob(seed, cond, sid), RecordingSpec(cameras=()), kind=schema.KIND_DEMO,
                                         task=TASK, policy_id="scripted")
            outcome = {"success": True, "steps": 300, "stage": 4}
            _record(path, sid, {"episode": episode, "scene": scene_properties(cond, seed), "outcome": outcome}, joints)
        ids.append(sid)
    return ids


def _rollout_props(eval_id: str, cell: dict, index: int, rng) -> dict:
    key = cell_key(cell)
    cond = cell_conditions(cell)
    seed = cell_seed(key, index)
    episode = episode_properties(EpisodeJob(seed, cond, "x"), RecordingSpec(cameras=()), kind=schema.KIND_ROLLOUT,
                                 task=TASK, policy_id=RUN_ID)
    episode.update({"eval_id": eval_id, "run_id": RUN_ID, "checkpoint_sha256": "0" * 64, "selection": "sel",
                    "selection_digest": "d" * 16, "config_digest": "c" * 16, "cell": key, "index_in_cell": index})
    p_ok = {"left": 0.9, "right": 0.7, "wide": 0.2}[cell["region"]] * (0.5 if cell["yaw"] == "any" else 1.0)
    p_ok = min(1.0, p_ok + (0.08 if eval_id == EVAL_IDS[1] else 0.0))
    ok = bool(rng.random() < p_ok)
    stage = 4 if ok else int(rng.integers(0, 4))
    reason = "none" if ok else ("never_touched", "not_lifted", "dropped", "not_handed_over")[stage]
    fail_step = -1 if ok else int(rng.integers(50, 300))
    outcome = {"success": ok, "max_reward": 4.0 if ok else float(stage), "success_step": 250 if ok else -1,
               "steps": 300, "duration_s": 6.0, "failure_step": fail_step, "failure_reason": reason,
               "final_cube_z": 0.2 if ok else 0.02, "stage": stage, "stage_name": schema.STAGES[stage],
               "failure_time_s": fail_step / 50 if fail_step >= 0 else -1.0}
    return {"episode": episode, "scene": scene_properties(cond, seed), "outcome": outcome}


def _eval_row(ws: Workspace, eval_id: str, per_cell: int) -> None:
    rows.write_row(ws, schema.EVALS_TABLE, eval_id, {
        "eval_id": eval_id, "dataset": DATASET, "evals_dataset": EVALS, "status": schema.RUN_STATUS_FINISHED,
        "run_id": RUN_ID, "policy": RUN_ID, "grid": [cell_key(c) for c in CELLS], "episodes_per_cell": per_cell,
        "seed_rule": "cell_seed",
    })


def build(root: Path, n: int, demos: int, *, real: bool = False) -> Workspace:
    """The workspace (module docstring); resumable: a killed build continues where it stopped."""
    ws = Workspace(root)
    if (root / "DONE").exists():
        return ws
    rng = np.random.default_rng(0)
    joints = rng.normal(size=(50, 14))
    train_ids = _demos(ws, demos, joints)
    run_dir = ws.run_dir(RUN_ID)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps({
        "run_id": RUN_ID, "dataset": DATASET, "task": TASK, "policy": "mlp", "cameras": [], "train_ids": train_ids,
        "status": schema.RUN_STATUS_FINISHED, "started_at": "2026-12-05T00:00:00Z"}))
    per_cell = n // (len(EVAL_IDS) * len(CELLS))
    template, t0, done = None, time.perf_counter(), 0
    for eval_id in EVAL_IDS:
        rng = np.random.default_rng(1 + EVAL_IDS.index(eval_id))
        for c, cell in enumerate(CELLS):
            for k in range(per_cell):
                sid = f"{eval_id}-{c:02d}-{k:06d}"
                props = _rollout_props(eval_id, cell, k, rng)
                path = ws.segment_path(EVALS, schema.BASE_LAYER, sid)
                done += 1
                if path.exists():
                    template = template or path
                    continue
                if template is not None and done % 50_000 and not real:  # ext4 allows 65,000 links per file
                    os.link(template, path)
                else:
                    _record(path, sid, props, joints)
                    template = path
                episode_index.write_row(ws, EVALS, sid, props)
                if done % 5000 == 0:
                    print(f"  built {done}/{n} ({time.perf_counter() - t0:.0f} s)", flush=True)
        _eval_row(ws, eval_id, per_cell)
    episode_index.compact(ws, EVALS)
    (root / "DONE").write_text("ok")
    return ws


def _cold(root: Path, args: list[str], repeats: int, src: Path = SRC) -> tuple[float, list[float], str]:
    env = {**os.environ, "PYTHONPATH": str(src), "MUJOCO_GL": "egl"}
    env.pop("ROBOLOOP_CATALOG", None)
    times, out = [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "roboloop.cli", "--workspace", str(root), *args], env=env,
                             capture_output=True, text=True, check=False, cwd=str(root))
        times.append(time.perf_counter() - t0)
        if res.returncode:
            raise SystemExit(f"{args}: exit {res.returncode}\n{res.stderr}")
        out = res.stdout
    return statistics.median(times), times, out


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def in_process(root: Path, repeats: int) -> None:
    """Where the time goes once Python is up: the index read, each statistic, and the row-by-row compare for scale."""
    from roboloop.analyze.compare import compare
    from roboloop.analyze.gaps import gaps
    from roboloop.analyze.rollouts import load_rollouts, success_by
    from roboloop.catalog.client import Catalog

    ws = Workspace(root)
    load = lambda e=None: load_rollouts(ws, EVALS, e, needed=["episode.cell"])  # noqa: E731
    table, ta, tb = load(), load([EVAL_IDS[0]]), load([EVAL_IDS[1]])
    rows_a, rows_b = ta.to_pylist(), tb.to_pylist()
    print(f"in-process (median of {repeats}): index read {_median(load, repeats):.2f} s; "
          f"success_by {_median(lambda: success_by(table, ['episode.cell']), repeats):.3f} s; "
          f"compare (Arrow) {_median(lambda: compare(ta, tb), repeats):.2f} s; "
          f"compare on dict rows (the row-by-row count) {_median(lambda: compare(rows_a, rows_b), repeats):.2f} s", flush=True)
    t0 = time.perf_counter()
    with Catalog(ws, url="", datasets=[DATASET]) as cat:
        up = time.perf_counter() - t0
        t = _median(lambda: gaps(cat, EVAL_IDS[0], rollout_table=lambda _d: table), repeats)
    print(f"in-process gaps: catalog with the demonstrations only {up:.2f} s; gap report from the index {t:.2f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rollouts", type=int, default=100_000)
    ap.add_argument("--demos", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--report", action="store_true", help="also time `roboloop report` on both evaluations")
    ap.add_argument("--only", default="success,compare,gaps", help="commands to time (comma-separated)")
    ap.add_argument("--in-process", action="store_true", help="also time the index read and each statistic in this process")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--src", type=Path, default=SRC, help="the roboloop source tree to time (e.g. an export of an older commit)")
    ap.add_argument("--real", action="store_true", help="a real recording per rollout (no hard links): the catalog route works")
    a = ap.parse_args()
    root = DATA / f"analysis_scale_{a.rollouts}{'_real' if a.real else ''}"
    t0 = time.perf_counter()
    build(root, a.rollouts, a.demos, real=a.real)
    print(f"workspace {root} ready ({time.perf_counter() - t0:.0f} s); load {Path('/proc/loadavg').read_text().strip()}",
          flush=True)
    if a.build_only:
        return
    if a.in_process:
        in_process(root, a.repeats)
    commands = {
        "imports": None,
        "success": ["success", "--dataset", EVALS, "--by", "episode.cell"],
        "compare": ["compare", *EVAL_IDS],
        "gaps": ["gaps", "--eval", EVAL_IDS[0]],
    }
    if a.report:
        commands["report"] = ["report", "--eval", EVAL_IDS[0], "--eval", EVAL_IDS[1], "--output", str(root / "report.html")]
    wanted = set(a.only.split(",")) | ({"report"} if a.report else set())
    env = {**os.environ, "PYTHONPATH": str(a.src)}
    for name, args in commands.items():
        if name == "imports":
            t = []
            for _ in range(a.repeats):
                s = time.perf_counter()
                subprocess.run([sys.executable, "-c", "import roboloop.cli"], env=env, check=True)
                t.append(time.perf_counter() - s)
            print(f"python -c 'import roboloop.cli': median {statistics.median(t):.2f} s", flush=True)
            continue
        if name not in wanted:
            continue
        med, times, _ = _cold(root, args, a.repeats, a.src)
        print(f"cold `roboloop {' '.join(args[:3])}` on {a.rollouts} rollouts: median {med:.2f} s "
              f"(runs {', '.join(f'{x:.2f}' for x in times)}); load {Path('/proc/loadavg').read_text().split()[0]}",
              flush=True)


if __name__ == "__main__":
    main()
