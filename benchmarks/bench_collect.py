"""Collection benchmark: recorded episodes vs bare simulator stepping, same run.

    .venv/bin/python benchmarks/bench_collect.py [--episodes 6] [--cameras top] [--size 320x240]

1. **Overhead** (one process, interleaved per seed so both see the same machine state):
   *bare* = `sim.reset` + the scripted demonstrator's actions + `sim.step` + rendering
   the same cameras on the same steps (25 Hz), nothing kept; *recorded* = `run_episode`
   (the same loop plus state reads, 3D scene poses, H.264 encoding, success tracking and
   the atomic RRD write) + registration in the embedded catalog.
   Overhead = recorded / bare - 1 (target <= 20%).
2. **Throughput**: `collect()` end to end (episodes per minute, registration included)
   with 1 and 2 worker processes (spawn; worker start-up included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

from roboloop.catalog.client import Catalog
from roboloop.collect.run import CollectConfig, RecordingSpec, ScriptedPolicy, collect, make_sim, plan_jobs, run_episode
from roboloop.workspace import Workspace


def _clock() -> tuple[float, float]:
    """(wall, process CPU) seconds; CPU time includes every thread (llvmpipe's render threads too)."""
    return time.perf_counter(), time.process_time()


def bare_episode(sim, policy, seed: int, spec: RecordingSpec, steps: int) -> tuple[float, float]:
    w0, c0 = _clock()
    sim.reset(seed)
    policy.reset()
    for k in range(steps):
        if spec.camera_step(k):
            for c in spec.cameras:
                sim.render(c)
        sim.step(policy.action(k, None))
    w1, c1 = _clock()
    return w1 - w0, c1 - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=10, help="episodes per variant (overhead part)")
    ap.add_argument("--throughput-episodes", type=int, default=8)
    ap.add_argument("--cameras", default="top")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--camera-hz", type=int, default=25)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    spec = RecordingSpec(cameras=tuple(c for c in args.cameras.split(",") if c), width=w, height=h, camera_hz=args.camera_hz)
    print(f"cameras={spec.cameras} {w}x{h} @ {spec.camera_hz} Hz, scene @ {spec.scene_hz} Hz, cpus={os.cpu_count()}")

    with tempfile.TemporaryDirectory() as tmp, Catalog(Workspace(tmp), url="") as cat:
        sim = make_sim(spec)
        policy = ScriptedPolicy(sim)
        steps = sim.max_steps
        bare_episode(sim, policy, 999, spec, steps)  # warm-up (GL context, imports)
        jobs = plan_jobs("bench", args.episodes, seed=0)
        bare, rec, reg, ok = [], [], [], 0

        def recorded(job) -> tuple[float, float]:
            nonlocal ok
            w0, c0 = _clock()
            res = run_episode(sim, policy, job, workspace=cat.workspace, dataset="bench", spec=spec)
            r0 = time.perf_counter()
            cat.register_files("bench", [res.path], validate=False)
            reg.append(time.perf_counter() - r0)
            w1, c1 = _clock()
            ok += res.success
            return w1 - w0, c1 - c0

        for i, job in enumerate(jobs):  # interleaved, alternating order, same seeds
            if i % 2:
                rec.append(recorded(job))
                bare.append(bare_episode(sim, policy, job.seed, spec, steps))
            else:
                bare.append(bare_episode(sim, policy, job.seed, spec, steps))
                rec.append(recorded(job))
        sim.close()
        size = statistics.mean(os.path.getsize(p) for p in cat.workspace.segment_files("bench", "base"))
        print(f"overhead ({args.episodes} episodes x {steps} steps each variant; registration {1000 * statistics.median(reg):.0f} ms/episode; "
              f"successes {ok}/{len(jobs)}; {size / 1e6:.2f} MB/episode):")
        for label, idx in (("wall", 0), ("CPU", 1)):
            b = statistics.median(x[idx] for x in bare)
            r = statistics.median(x[idx] for x in rec)
            ratio = sum(x[idx] for x in rec) / sum(x[idx] for x in bare)
            print(f"  {label:4s} medians: bare {b:.3f} s/episode ({steps / b:.0f} steps/s), recorded+registered {r:.3f} s/episode "
                  f"({steps / r:.0f} steps/s): overhead {100 * (r / b - 1):+.1f}% (ratio of sums {100 * (ratio - 1):+.1f}%)")

    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp, Catalog(Workspace(tmp), url="") as cat:
            cfg = CollectConfig(dataset="bench", episodes=args.throughput_episodes, seed=1000, workers=workers, spec=spec)
            rep = collect(cat, cfg)
            print(f"collect --workers {workers}: {len(rep.results)} episodes in {rep.wall_s:.1f} s = "
                  f"{rep.episodes_per_minute:.1f} episodes/min (start-up included), successes {rep.successes}/{len(rep.results)}")


if __name__ == "__main__":
    main()
