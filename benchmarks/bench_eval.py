"""Evaluation benchmarks: recording overhead of rollouts, and analysis at 10k / 100k rollouts.

    .venv/bin/python benchmarks/bench_eval.py overhead [--cells 2 --per-cell 3 --repeats 3]
    .venv/bin/python benchmarks/bench_eval.py scale --rollouts 10000

1. **overhead** (one process, same run, alternating order, median of `--repeats`):
   *recorded* = `evaluate()` end to end (scripted policy + physics + top camera 160x120
   rendered at 25 Hz + H.264 + recording + registration + the rollout index and the
   evaluation row); *unrecorded* = the same rollouts (same cells, seeds, steps, camera
   renders as a vision policy would need) with nothing encoded, written or registered.
   Both sides build their simulator. Overhead = recorded / unrecorded - 1 (target <= 20%).
2. **scale**: N small synthetic rollouts written by the real recorder (`EpisodeRecorder`,
   1 s of joints + the property groups a rollout has) and indexed as `evaluate` does, in
   `benchmarks/_data/eval_scale_<N>/` (built once). Measured: catalog restore; success_by
   through the catalog's segment table (catalog up); success_by from the rollout index
   in-process; `success_by` alone; and a cold `roboloop success` command (a new Python
   process: imports, index read, grouping, printing) with and without `--where`.
   With `--hardlink-base` the base files are hard links to one recording (only the index
   path can be measured then: used for 100k, where writing 100k recordings takes ~1 h here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from roboloop import rows, schema
from roboloop.analyze import rollouts as analyze
from roboloop.catalog import index as episode_index
from roboloop.catalog.client import Catalog
from roboloop.workspace import Workspace

DATA = Path(__file__).parent / "_data"
SRC = Path(__file__).resolve().parent.parent / "src"


# --- overhead ------------------------------------------------------------------------------------

def unrecorded(cfg) -> tuple[float, int]:
    """The rollouts of `cfg` without recording: (wall seconds, successes)."""
    from roboloop.collect.run import ScriptedPolicy, make_sim
    from roboloop.envs.aloha.success import SuccessTracker
    from roboloop.evaluate.run import cell_conditions, plan_pairs

    t0 = time.perf_counter()
    spec = cfg.spec()
    sim = make_sim(spec)
    policy = ScriptedPolicy(sim)
    steps = cfg.steps or sim.max_steps
    ok = 0
    try:
        for _, cell, _, _, seed in plan_pairs(cfg):
            sim.reset(seed, cell_conditions(cell))
            policy.reset()
            tracker = SuccessTracker()
            for k in range(steps):
                sim.joint_positions()
                sim.cube_pose()
                if spec.camera_step(k):
                    for c in spec.cameras:
                        sim.render(c)
                tracker.update(sim, sim.step(policy.action(k, None)))
            ok += tracker.success
    finally:
        sim.close()
    return time.perf_counter() - t0, ok


def overhead(args) -> None:
    import torch

    torch.set_num_threads(1)
    from roboloop.evaluate.run import EvalConfig, evaluate, parse_grid

    grid = parse_grid("region=near,far" if args.cells == 2 else "region=near,far lighting=normal,dim")
    rec, bare = [], []
    with tempfile.TemporaryDirectory() as tmp, Catalog(Workspace(tmp), url="") as cat:
        for r in range(args.repeats):
            cfg = EvalConfig(dataset="bench", grid=grid, episodes_per_cell=args.per_cell, eval_id=f"bench-{r}",
                             cameras=("top",), camera_size=(160, 120))
            order = ("rec", "bare") if r % 2 == 0 else ("bare", "rec")
            for side in order:
                c0 = time.process_time()  # every thread of the process: llvmpipe, encoder, the in-process catalog server
                if side == "rec":
                    t0 = time.perf_counter()
                    rep = evaluate(cat, cfg)
                    rec.append((time.perf_counter() - t0, rep.successes, rep.n, time.process_time() - c0))
                else:
                    wall, ok = unrecorded(cfg)
                    bare.append((wall, ok, len(grid.cells()) * args.per_cell, time.process_time() - c0))
            print(f"repeat {r}: recorded {rec[-1][0]:.2f} s wall / {rec[-1][3]:.2f} s CPU ({rec[-1][1]}/{rec[-1][2]} ok), "
                  f"unrecorded {bare[-1][0]:.2f} s wall / {bare[-1][3]:.2f} s CPU ({bare[-1][1]} ok)", flush=True)
        size = statistics.mean(os.path.getsize(p) for p in cat.workspace.segment_files("bench_evals", "base"))
    r_med = statistics.median(x[0] for x in rec)
    b_med = statistics.median(x[0] for x in bare)
    n = rec[0][2]
    print(f"rollouts per repeat: {n} x 300 steps, top 160x120 @ 25 Hz, {size / 1e6:.2f} MB per rollout")
    print(f"median wall: recorded {r_med:.2f} s ({r_med / n:.2f} s/rollout), unrecorded {b_med:.2f} s ({b_med / n:.2f} s/rollout): "
          f"overhead {100 * (r_med / b_med - 1):+.1f}% (target <= 20%)")
    rc = statistics.median(x[3] for x in rec)
    bc = statistics.median(x[3] for x in bare)
    print(f"median CPU:  recorded {rc:.2f} s, unrecorded {bc:.2f} s: overhead {100 * (rc / bc - 1):+.1f}%")


# --- scale ---------------------------------------------------------------------------------------

def _properties(i: int, rng) -> dict:
    from roboloop.collect.run import (
        EpisodeJob,
        RecordingSpec,
        episode_properties,
        scene_properties,
    )
    from roboloop.evaluate.run import cell_conditions, cell_key, cell_seed

    region = ("left", "right", "wide")[i % 3]
    lighting = ("normal", "dim")[(i // 3) % 2]
    yaw = ("none", "any")[(i // 6) % 2]
    cell = {"region": region, "lighting": lighting, "yaw": yaw}
    key = cell_key(cell)
    index = i // 12
    cond = cell_conditions(cell)
    seed = cell_seed(key, index)
    job = EpisodeJob(seed, cond, f"x-{i}")
    p_ok = {"left": 0.9, "right": 0.6, "wide": 0.3}[region] * (0.8 if lighting == "dim" else 1.0)
    ok = bool(rng.random() < p_ok)
    stage = 4 if ok else int(rng.integers(0, 4))
    reason = "none" if ok else ("never_touched", "not_lifted", "dropped", "not_handed_over")[stage]
    fail_step = -1 if ok else int(rng.integers(50, 300))
    x = float(rng.uniform(cond.x_min, cond.x_max))
    y = float(rng.uniform(cond.y_min, cond.y_max))
    yaw_deg = float(rng.uniform(cond.yaw_min, cond.yaw_max))
    q = [x, y, 0.05, np.cos(np.radians(yaw_deg) / 2), 0.0, 0.0, np.sin(np.radians(yaw_deg) / 2)]
    episode = episode_properties(job, RecordingSpec(cameras=()), kind=schema.KIND_ROLLOUT, task="transfer_cube",
                                 policy_id="run-bench")
    episode.update({"eval_id": f"bench-{i % 2}", "run_id": "run-bench", "checkpoint_sha256": "0" * 64,
                    "selection": "sel", "selection_digest": "d" * 16, "config_digest": "c" * 16,
                    "cell": key, "index_in_cell": index})
    outcome = {"success": ok, "max_reward": 4.0 if ok else float(stage), "success_step": 250 if ok else -1,
               "steps": 300, "duration_s": 6.0, "failure_step": fail_step, "failure_reason": reason,
               "final_cube_z": 0.2 if ok else 0.02, "stage": stage, "stage_name": schema.STAGES[stage],
               "failure_time_s": fail_step / 50 if fail_step >= 0 else -1.0}
    return {"episode": episode, "scene": scene_properties(cond, q), "outcome": outcome}


def build(root: Path, n: int, *, hardlink_base: bool) -> Workspace:
    from roboloop.record.episode import EpisodeRecorder

    ws = Workspace(root)
    ds = "bench_evals"
    done = root / "DONE"
    if done.exists():
        return ws
    rng = np.random.default_rng(0)
    t = np.arange(50) / 50.0
    joints = rng.normal(size=(50, 14))
    template = None
    t0 = time.perf_counter()
    for i in range(n):
        sid = f"bench-{i % 2}-{i:06d}"
        path = ws.segment_path(ds, schema.BASE_LAYER, sid)
        props = _properties(i, rng)
        if path.exists():  # a previous, interrupted build (rerun 0.41 leaks 2 threads per RecordingStream)
            continue
        if hardlink_base and template is not None and i % 50_000:  # ext4 allows 65,000 links per file
            os.link(template, path)
        else:
            with EpisodeRecorder(path, sid) as rec:
                rec.log_scalar_columns(schema.JOINT_POSITIONS, t, joints)
                for group, values in props.items():
                    rec.set_properties(group, values)
            template = path
        episode_index.write_row(ws, ds, sid, props)
        if i % 1000 == 999:
            print(f"  built {i + 1}/{n} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for e in ("bench-0", "bench-1"):
        rows.write_row(ws, schema.EVALS_TABLE, e, {"eval_id": e, "dataset": "bench", "evals_dataset": ds, "status": "finished"})
    done.write_text("ok")
    return ws


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def scale(args) -> None:
    n = args.rollouts
    root = DATA / f"eval_scale_{n}{'_hl' if args.hardlink_base else ''}"
    print(f"workspace {root}", flush=True)
    ws = build(root, n, hardlink_base=args.hardlink_base)
    ds = "bench_evals"
    by = ["scene.region", "scene.lighting"]
    reps = args.repeats

    snap = ws.table_dir(schema.rollout_index_table(ds)) / episode_index.SNAPSHOT_FILE
    if snap.exists():
        snap.unlink()
    t0 = time.perf_counter()
    analyze.indexed_rollout_table(ws, ds)
    print(f"first index read without a snapshot (parses {n} row files, writes the snapshot): "
          f"{time.perf_counter() - t0:.2f} s", flush=True)
    t_idx, table = _median_time(lambda: analyze.indexed_rollout_table(ws, ds), reps)
    assert table.num_rows == n, table.num_rows
    t_by, groups = _median_time(lambda: analyze.success_by(table, by), reps)
    print(f"index route (in-process): rollout table {t_idx:.2f} s + success_by {t_by:.3f} s = {t_idx + t_by:.2f} s "
          f"({len(groups)} groups over {sum(g['n'] for g in groups)} rollouts)", flush=True)
    t_where, sub = _median_time(lambda: analyze.indexed_rollout_table(ws, ds, where="scene.lighting = 'dim'"), reps)
    print(f"index route with --where: {t_where:.2f} s ({sub.num_rows} rows)", flush=True)

    env = {**os.environ, "PYTHONPATH": str(SRC), "MUJOCO_GL": "egl"}
    env.pop("ROBOLOOP_CATALOG", None)
    for extra in ([], ["--where", "scene.lighting = 'dim'"]):
        cmd = [sys.executable, "-m", "roboloop.cli", "--workspace", str(root), "success", "--dataset", ds,
               "--by", ",".join(by), "--format", "csv", *extra]
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - t0)
            if res.returncode:
                raise SystemExit(res.stderr)
        print(f"cold `roboloop success --by {','.join(by)}{' ' + ' '.join(repr(e) for e in extra) if extra else ''}`: "
              f"median {statistics.median(times):.2f} s (runs {', '.join(f'{x:.2f}' for x in times)})", flush=True)
    t_imp = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import roboloop.cli, roboloop.analyze.rollouts, pyarrow"], env=env, check=True)
        t_imp.append(time.perf_counter() - t0)
    print(f"  of which Python start + imports: {statistics.median(t_imp):.2f} s", flush=True)

    if args.hardlink_base:
        return
    t0 = time.perf_counter()
    with Catalog(ws, url="") as cat:
        restore = time.perf_counter() - t0
        print(f"catalog restore: {restore:.2f} s", flush=True)
        t_cat, ctable = _median_time(lambda: analyze.rollout_table(cat, ds), reps)
        t_by2, groups2 = _median_time(lambda: analyze.success_by(ctable, by), reps)
        assert [(g["n"], g["successes"]) for g in groups2] == [(g["n"], g["successes"]) for g in groups]
        print(f"catalog route (catalog up): segment table {t_cat:.2f} s + success_by {t_by2:.3f} s = {t_cat + t_by2:.2f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--cells", type=int, default=2, choices=(2, 4))
    o.add_argument("--per-cell", type=int, default=3)
    o.add_argument("--repeats", type=int, default=3)
    s = sub.add_parser("scale")
    s.add_argument("--rollouts", type=int, default=10_000)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--hardlink-base", action="store_true")
    args = ap.parse_args()
    overhead(args) if args.what == "overhead" else scale(args)


if __name__ == "__main__":
    main()
