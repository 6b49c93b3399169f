"""Scripted demonstrator: strict success rate and speed, physics only.

For each condition set, runs ``--seeds`` episodes (seeds start..start+N-1) of
``ScriptedHandover`` in ``AlohaSim(cameras=())`` and reports the strict success rate
(see roboloop.envs.aloha.success), failures, and steps/s (simulation + demonstrator IK).
Peers in the same process: the bare dm_control physics step rate (10 substeps per
control step, no Python wrapper) and ``AlohaSim.step`` alone with a fixed action;
with ``--camera`` also ``AlohaSim.step`` + one render at 320x240.

    .venv/bin/python benchmarks/bench_demonstrator.py --seeds 200
    .venv/bin/python benchmarks/bench_demonstrator.py --seeds 100 --matrix
    .venv/bin/python benchmarks/bench_demonstrator.py --seeds 50 --region wide --lighting dim
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")


from roboloop.envs.aloha import AlohaSim, SceneConditions
from roboloop.envs.aloha.demonstrator import ScriptedHandover
from roboloop.envs.aloha.success import SuccessTracker

MATRIX = [
    dict(region="default"),
    dict(region="wide"),
    dict(region="left"),
    dict(region="right"),
    dict(region="default", lighting="dim"),
    dict(region="default", lighting="bright", table="wood"),
    dict(region="default", table="light"),
    dict(region="default", distractors="many"),
    dict(region="default", yaw="any"),
    dict(region="wide", yaw="any", distractors="many"),
]


def run(sim: AlohaSim, cond: SceneConditions, seeds: range) -> tuple[int, list, float, int]:
    ok, failures, steps = 0, [], 0
    t0 = time.perf_counter()
    for seed in seeds:
        sim.reset(seed, cond)
        demo = ScriptedHandover(sim)
        tracker = SuccessTracker()
        for t in range(sim.max_steps):
            tracker.update(sim, sim.step(demo.action(t)))
        steps += sim.max_steps
        res = tracker.result()
        if res.success:
            ok += 1
        else:
            failures.append((seed, res.failure_reason, res.failure_step, round(res.final_cube_z, 3)))
    return ok, failures, time.perf_counter() - t0, steps


def bare_rates(n: int = 3000, camera: bool = False) -> dict[str, float]:
    sim = AlohaSim(cameras=())
    sim.reset(0, SceneConditions())
    action = sim.joint_positions()
    physics = sim.physics
    out = {}
    t0 = time.perf_counter()
    for _ in range(n):
        physics.step(sim.n_substeps)
    out["bare dm_control physics.step(10)"] = n / (time.perf_counter() - t0)
    sim.reset(0, SceneConditions())
    t0 = time.perf_counter()
    for _ in range(n):
        sim.step(action)
    out["AlohaSim.step (physics only)"] = n / (time.perf_counter() - t0)
    if camera:
        cam = AlohaSim(cameras=("top",), width=320, height=240)
        cam.reset(0, SceneConditions())
        cam.render("top")  # context creation outside the timing
        m = max(n // 20, 50)
        t0 = time.perf_counter()
        for _ in range(m):
            cam.step(action)
            cam.render("top")
        out["AlohaSim.step + render top 320x240"] = m / (time.perf_counter() - t0)
        cam.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--region", default="default")
    ap.add_argument("--yaw", default="none")
    ap.add_argument("--lighting", default="normal")
    ap.add_argument("--table", default="dark")
    ap.add_argument("--distractors", default="none")
    ap.add_argument("--matrix", action="store_true", help="run the standard grid of conditions")
    ap.add_argument("--camera", action="store_true", help="also measure one 320x240 camera")
    args = ap.parse_args(argv)

    grid = MATRIX if args.matrix else [
        dict(region=args.region, yaw=args.yaw, lighting=args.lighting, table=args.table, distractors=args.distractors)
    ]
    sim = AlohaSim(cameras=())
    seeds = range(args.start, args.start + args.seeds)
    print(f"seeds {seeds.start}..{seeds.stop - 1} (n={len(seeds)}), physics only")
    total_ok = total_n = 0
    total_t = total_steps = 0.0
    worst = 1.0
    for names in grid:
        cond = SceneConditions.from_names(**names)
        ok, failures, dt, steps = run(sim, cond, seeds)
        rate = ok / len(seeds)
        worst = min(worst, rate)
        total_ok += ok
        total_n += len(seeds)
        total_t += dt
        total_steps += steps
        print(f"  {cond.label:<55} {ok:>4}/{len(seeds)} = {100 * rate:5.1f}%   {steps / dt:6.0f} steps/s")
        for f in failures:
            print(f"      fail seed={f[0]} reason={f[1]} step={f[2]} final_z={f[3]}")
    print(f"overall {total_ok}/{total_n} = {100 * total_ok / total_n:.1f}% (worst cell {100 * worst:.1f}%)")
    print(f"demonstrator episodes: {total_steps / total_t:.0f} steps/s (sim + IK), "
          f"{total_n / total_t:.1f} episodes/s")
    for k, v in bare_rates(camera=args.camera).items():
        print(f"peer: {k:<40} {v:8.0f} steps/s")
    return 0 if worst >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
