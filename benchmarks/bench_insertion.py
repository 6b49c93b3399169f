"""Scripted insertion demonstrator: strict success over unseen seeds across the conditions, and speed.

Runs ``ScriptedInsertion`` in ``InsertionSim`` for ``--seeds`` episodes (seeds ``--start`` ..), cycling
over the condition sets of ``MATRIX`` (every peg/socket region, every yaw, lighting and table), judged
by ``InsertionTracker`` (roboloop.envs.insertion.success); prints the success rate, every failure
(seed, cell, kind, moment, final depth/lateral) and steps/s. ``--camera W H`` also renders the
``top`` camera at that size on every step (the speed of a camera policy's rollouts).

    .venv/bin/python benchmarks/bench_insertion.py --seeds 200 --start 100000
    .venv/bin/python benchmarks/bench_insertion.py --seeds 10 --camera 96 72
    .venv/bin/python benchmarks/bench_insertion.py --seeds 40 --start 700000 --noise 0.005
"""

from __future__ import annotations

import argparse
import collections
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from roboloop.envs.insertion import InsertionConditions, InsertionSim, InsertionTracker, ScriptedInsertion, demonstrator
from roboloop.envs.insertion.success import fit

MATRIX = [
    dict(),
    dict(peg_region="wide", socket_region="wide"),
    dict(peg_region="near", socket_region="far"),
    dict(peg_region="far", socket_region="near"),
    dict(peg_region="front", socket_region="back", yaw="small"),
    dict(peg_region="back", socket_region="front", yaw="large"),
    dict(yaw="large", lighting="dim", table="wood"),
    dict(peg_region="wide", socket_region="wide", yaw="large", lighting="bright", table="blue"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--start", type=int, default=100_000, help="first seed (demonstration seeds of a dataset start at 0)")
    ap.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                    help="execution error (rad): every arm joint target gets a per-episode offset ~ N(0, SIGMA) "
                         "plus per-step noise ~ N(0, SIGMA/2), drawn from the seed (how forgiving the task is)")
    ap.add_argument("--no-servo", action="store_true", help="the expert without its push correction (SERVO_GAIN = 0)")
    ap.add_argument("--camera", type=int, nargs=2, metavar=("W", "H"), help="also render the top camera every step")
    args = ap.parse_args()
    if args.no_servo:
        demonstrator.SERVO_GAIN = 0.0
    cams = ("top",) if args.camera else ()
    w, h = args.camera or (320, 240)
    sim = InsertionSim(cameras=cams, width=w, height=h)
    ok, failures, kinds, steps, fits = 0, [], collections.Counter(), 0, []
    t0 = time.perf_counter()
    for i, seed in enumerate(range(args.start, args.start + args.seeds)):
        cond = InsertionConditions.from_names(**MATRIX[i % len(MATRIX)])
        sim.reset(seed, cond)
        demo, tracker = ScriptedInsertion(sim), InsertionTracker()
        rng = np.random.default_rng(seed)
        arms = np.r_[np.ones(6), 0.0, np.ones(6), 0.0]
        bias = rng.normal(0.0, args.noise, 14) * arms
        for t in range(sim.max_steps):
            action = demo.action(t)
            if args.noise:
                action = action + bias + rng.normal(0.0, args.noise / 2, 14) * arms
            if cams:
                sim.render("top")
            tracker.update(sim, sim.step(action), action)
        steps += sim.max_steps
        res = tracker.result()
        if res.success:
            ok += 1
            fits.append((res.final_depth, res.final_lateral, fit(sim.peg_pose(), sim.socket_pose())[2]))
        else:
            kinds[res.failure_reason] += 1
            failures.append(f"FAIL seed={seed} [{cond.label}] {res.failure_reason} at step {res.failure_step} "
                            f"(stage {res.stage_name}) depth={res.final_depth:.4f} lateral={res.final_lateral:.4f}")
    dt = time.perf_counter() - t0
    for f in failures:
        print(f)
    if fits:
        lo, hi = np.min(fits, axis=0), np.max(fits, axis=0)
        print(f"successes end with depth {lo[0] * 100:.2f}-{hi[0] * 100:.2f} cm, lateral {lo[1] * 1000:.1f}-{hi[1] * 1000:.1f} mm, "
              f"angle {lo[2]:.2f}-{hi[2]:.2f} deg")
    print(f"strict success {ok}/{args.seeds} = {ok / max(args.seeds, 1):.1%}; failures by kind: {dict(kinds)}")
    print(f"{steps} steps in {dt:.1f} s = {steps / dt:.0f} steps/s ({f'top {w}x{h}' if cams else 'physics only'}, "
          "demonstrator IK and success tracking included)")


if __name__ == "__main__":
    main()
