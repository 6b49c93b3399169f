"""Where one recorded episode's CPU goes: rendering, physics, the policy, H.264 encoding, the rest.

Runs `collect.run_episode` in this process (no pool, no catalog) on the transfer cube, a few episodes after one
warm-up, and splits each episode's CPU time (`time.process_time`: every thread of the process, llvmpipe's
rasterizer threads included) by wrapping the simulator's `render` and `step`, the policy's `action` and the
writer's `encode`. The same episodes run again without a camera (`--cameras none` alone does only that).

    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_rollout_cost.py [--run WORKSPACE:RUN_ID] [--episodes 6]

`--run` drives a trained run (what an evaluation rollout costs), else the scripted demonstrator (a demonstration).
The printed actions digest is a function of the policy and the seeds only: compare it across code versions to
check a change left the rollouts bit-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from roboloop.collect.run import EpisodeJob, RecordingSpec, ScriptedPolicy, make_sim, run_episode
from roboloop.envs import DEFAULT_TASK, get_task
from roboloop.envs.aloha.recording import AlohaEpisodeWriter
from roboloop.workspace import Workspace


def _timed(totals: dict[str, float], name: str, fn):
    def wrapper(*args, **kwargs):
        t = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.process_time() - t
    return wrapper


def measure(cameras: tuple[str, ...], run: str | None, episodes: int, size: tuple[int, int],
            camera_hz: int = RecordingSpec.camera_hz) -> dict[str, float | str]:
    """CPU seconds per episode, in total and by part, and a digest of every action taken."""
    totals: dict[str, float] = defaultdict(float)
    spec = RecordingSpec(cameras=cameras, width=size[0], height=size[1], camera_hz=camera_hz)
    sim = make_sim(spec)
    if run:
        import torch

        from roboloop.train.deploy import PolicyFactory

        torch.set_num_threads(1)  # as in a pool worker
        root, run_id = run.rsplit(":", 1)
        policy = PolicyFactory(root, run_id)(sim)
    else:
        policy = ScriptedPolicy(sim)
    actions: list[bytes] = []
    act = policy.action

    def action(step, observation):
        a = act(step, observation)
        actions.append(np.asarray(a, dtype=np.float64).tobytes())
        return a

    sim.render = _timed(totals, "render", sim.render)
    sim.step = _timed(totals, "physics", sim.step)
    policy.action = _timed(totals, "policy", action)
    encode = AlohaEpisodeWriter.encode
    AlohaEpisodeWriter.encode = _timed(totals, "encode", encode)
    try:
        conditions = get_task(DEFAULT_TASK).conditions({"yaw": "any", "lighting": "dim"})
        ws = Workspace(Path(tempfile.mkdtemp(prefix="bench-rollout-")) / "ws")

        def one(i: int) -> None:
            job = EpisodeJob(1000 + i, conditions, f"aloha-s{1000 + i:06d}-bench{i:02d}")
            run_episode(sim, policy, job, workspace=ws, dataset="aloha", spec=spec, kind="rollout")

        one(99)  # warm-up: contexts, JIT, first-call costs
        totals.clear()
        actions.clear()
        t0 = time.process_time()
        for i in range(episodes):
            one(i)
        total = (time.process_time() - t0) / episodes
    finally:
        AlohaEpisodeWriter.encode = encode
        sim.close()
    out: dict[str, float | str] = {"total": total, **{k: v / episodes for k, v in totals.items()}}
    out["other"] = total - sum(v for k, v in out.items() if k != "total")
    out["actions"] = hashlib.sha256(b"".join(actions)).hexdigest()[:16]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="WORKSPACE:RUN_ID of a trained run to drive the episodes (default: the scripted demonstrator)")
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--cameras", default="top", help="comma-separated cameras, or `none`")
    ap.add_argument("--size", default="160x120", help="camera WxH (the demo's)")
    ap.add_argument("--camera-hz", default=str(RecordingSpec.camera_hz),
                    help="comma-separated camera rates to measure, e.g. 25,10 (each must divide the 50 Hz control rate)")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    variants = [tuple(c for c in args.cameras.split(",") if c and c != "none")]
    if variants[0]:
        variants.append(())
    rates = [int(v) for v in args.camera_hz.split(",")]
    for cams, hz in [(c, hz) for c in variants for hz in (rates if c else rates[:1])]:
        r = measure(cams, args.run, args.episodes, size, hz)
        parts = ", ".join(f"{k} {r[k]:.3f}" for k in ("render", "physics", "policy", "encode", "other") if k in r)
        at = f" @ {hz:>2} Hz" if cams else "       "
        print(f"cameras {','.join(cams) or 'none':<5}{at} CPU per episode {r['total']:.3f} s ({parts}); actions {r['actions']}")


if __name__ == "__main__":
    main()
