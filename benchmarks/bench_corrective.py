"""Corrective collection with the default state policy (mlp): does the expert recover from policy-driven states,
and does a small DAgger round lift a deliberately weak v1 more than the same budget of plain demonstrations?

1. v1: `mlp` trained (150 epochs) on `--demos` scripted demonstrations at yaw none (physics only, no cameras).
2. v1 evaluated on `yaw=none,small` x `--per-cell` unseen seeds (yaw small = +-15 deg: v1 is weak there).
3. Takeover: on `--per-cell` fresh yaw-small scenes, v1 drives until step T, then the corrective expert acts to
   the end (T in `--takeover`); the same scenes with v1 alone and with the expert alone (T = 0) for reference.
4. DAgger: `--dagger` episodes `collect --corrective --mode dagger` from v1 (half yaw none, half yaw small);
   v2-dagger = v1's config on the demos + those episodes (the expert's action as the target).
5. Same budget of plain demonstrations (half yaw none, half yaw small): v2-demos = v1's config on demos + them.
6. Both evaluated on v1's grid and seeds. The gated threshold: the distribution of max |expert - policy| per
   step over the DAgger episodes (what `collect --corrective --mode gated --threshold` compares).

    PYTHONPATH=src MUJOCO_GL=egl .venv/bin/python benchmarks/bench_corrective.py --workspace /tmp/bench-corrective
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

DS = "corr"


class Handoff:
    """v1 drives until step `at`, then the corrective expert acts (a one-way takeover)."""

    def __init__(self, policy_factory, at: int) -> None:
        self.policy_factory, self.at = policy_factory, at

    def __call__(self, sim):
        from roboloop.envs import get_task
        from roboloop.envs.task import corrective_expert

        outer = self

        class _Policy:
            policy_id = f"handoff-at-{outer.at}"

            def __init__(self) -> None:
                self.policy = outer.policy_factory(sim)
                self.expert = corrective_expert(get_task(sim.task), sim)

            def reset(self) -> None:
                self.policy.reset()
                self.expert.reset()

            def action(self, step, obs):
                a_policy, a_expert = self.policy.action(step, obs), self.expert.action(step, obs)
                return a_expert if step >= outer.at else a_policy

        return _Policy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default="/tmp/bench-corrective")
    ap.add_argument("--demos", type=int, default=10)
    ap.add_argument("--dagger", type=int, default=20)
    ap.add_argument("--per-cell", type=int, default=30)
    ap.add_argument("--takeover", default="60,120")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")

    import torch

    from roboloop import curate, schema
    from roboloop.catalog.client import Catalog
    from roboloop.collect.corrective import CONTROL_POLICY_ACTION, CorrectiveConfig, collect_corrective
    from roboloop.collect.run import CollectConfig, RecordingSpec, collect
    from roboloop.envs import get_task
    from roboloop.evaluate.run import EvalConfig, evaluate, parse_grid, resolve_policy
    from roboloop.train import TrainConfig, load_config, train
    from roboloop.workspace import Workspace

    torch.set_num_threads(1)
    root = Path(args.workspace)
    shutil.rmtree(root, ignore_errors=True)
    task = get_task("transfer_cube")
    none, small = task.conditions({"yaw": "none"}), task.conditions({"yaw": "small"})
    spec = RecordingSpec(cameras=())
    out: dict = {"args": vars(args)}
    t_all = time.perf_counter()
    with Catalog(Workspace(root), url="") as cat:
        def timed(label, fn):
            t0 = time.perf_counter()
            value = fn()
            out.setdefault("seconds", {})[label] = round(time.perf_counter() - t0, 1)
            return value

        def trained(selection: str, like: str | None = None) -> str:
            curate.save(cat, curate.select(cat, DS, "outcome.success or episode.kind = 'corrective'", holdout=0.1), selection)
            cfg = (load_config(cat.workspace, like).replace(selection=selection) if like
                   else TrainConfig(dataset=DS, selection=selection, epochs=args.epochs))
            return train(cat, cfg).run_id

        def success(run_id: str, label: str) -> dict:
            rep = evaluate(cat, EvalConfig(dataset=DS, policy=run_id, grid=parse_grid("yaw=none,small"),
                                           episodes_per_cell=args.per_cell, workers=args.workers, cameras=()))
            by = {}
            for r in rep.results:
                cell = r.properties[schema.EPISODE][schema.EPISODE_CELL]
                by.setdefault(cell, [0, 0])
                by[cell][0] += int(r.success)
                by[cell][1] += 1
            out.setdefault("success", {})[label] = {c: f"{s}/{n}" for c, (s, n) in sorted(by.items())}
            return by

        timed("collect demos", lambda: collect(cat, CollectConfig(dataset=DS, episodes=args.demos, conditions=(none,), spec=spec,
                                                                  workers=args.workers, seed=0)))
        v1 = timed("train v1", lambda: trained("v1"))
        timed("eval v1", lambda: success(v1, "v1"))
        source = resolve_policy(cat.workspace, v1)

        # 3. takeover from policy-driven states: the same fresh yaw-small scenes for every T
        seeds = 500_000
        takeover = {}
        for at in [0] + [int(v) for v in args.takeover.split(",")] + [task.episode_steps]:
            rep = collect(cat, CollectConfig(dataset="scratch", episodes=args.per_cell, conditions=(small,), spec=spec,
                                             seed=seeds, kind=schema.KIND_ROLLOUT, workers=args.workers),
                          policy_factory=Handoff(source.factory, at))
            takeover[at] = f"{rep.successes}/{len(rep.results)}"
        out["takeover_yaw_small"] = {("expert alone" if at == 0 else "v1 alone" if at == task.episode_steps else f"v1 until step {at}"): v
                                     for at, v in takeover.items()}

        # 4. DAgger round
        cfg = CorrectiveConfig(run=v1, dataset=DS, mode=schema.MODE_DAGGER, episodes=args.dagger, conditions=(none, small),
                               spec=spec, workers=args.workers)
        rep = timed("collect dagger", lambda: collect_corrective(cat, cfg, policy_factory=source.factory, provenance=source.provenance))
        def distances(report) -> list[np.ndarray]:
            """Per episode, max |expert action - policy action| at every step (what gated mode compares)."""
            found = []
            for r in report.results:
                ds = cat.dataset(DS).filter_segments([r.segment_id])
                vals = {}
                for e in (schema.CONTROL_EXPERT_ACTION, CONTROL_POLICY_ACTION):
                    t = ds.filter_contents([e]).reader(index=schema.TIMELINE).to_arrow_table()
                    vals[e] = np.array(t.column(f"{e}:{schema.SCALARS_COMPONENT}").to_pylist())
                found.append(np.abs(vals[schema.CONTROL_EXPERT_ACTION] - vals[CONTROL_POLICY_ACTION]).max(axis=1))
            return found

        dist = distances(rep)
        ok = [d for d, r in zip(dist, rep.results) if r.success]
        bad = [d for d, r in zip(dist, rep.results) if not r.success]
        pct = lambda ds_: {q: round(float(np.percentile(np.concatenate(ds_), q)), 3) for q in (50, 90, 95, 99)} if ds_ else None  # noqa: E731
        out["dagger_episodes_v1_success"] = f"{sum(r.success for r in rep.results)}/{len(rep.results)}"
        out["distance_percentiles_successful_episodes"] = pct(ok)
        out["distance_percentiles_failed_episodes"] = pct(bad)
        v2d = timed("train v2-dagger", lambda: trained("v2-dagger", like=v1))
        timed("eval v2-dagger", lambda: success(v2d, "v2-dagger"))

        # 5. the same budget of plain demonstrations (into a copy of the demos only: a second dataset)
        timed("collect demos (same budget)", lambda: collect(cat, CollectConfig(
            dataset=DS, episodes=args.dagger, conditions=(none, small), spec=spec, workers=args.workers)))
        curate.save(cat, curate.select(cat, DS, "outcome.success and episode.kind = 'demo'", holdout=0.1), "v2-demos")
        v2p = timed("train v2-demos", lambda: train(cat, load_config(cat.workspace, v1).replace(selection="v2-demos")).run_id)
        timed("eval v2-demos", lambda: success(v2p, "v2-demos"))

        # 7. the gated threshold: |expert - policy| along a good policy's own rollouts (dagger: it drives)
        good = resolve_policy(cat.workspace, v2p)
        cfg = CorrectiveConfig(run=v2p, dataset=DS, mode=schema.MODE_DAGGER, episodes=10, conditions=(none, small), spec=spec,
                               workers=args.workers)
        rep = collect_corrective(cat, cfg, policy_factory=good.factory, provenance=good.provenance)
        ok = [d for d, r in zip(distances(rep), rep.results) if r.success]
        out["good_policy_dagger_success"] = f"{sum(r.success for r in rep.results)}/{len(rep.results)}"
        out["distance_percentiles_good_policy_successful_episodes"] = pct(ok)
    out["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    out["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
