"""Efficacy of the trained policies: collect demos in one region, curate, train, roll out on unseen seeds.

    PYTHONPATH=src MUJOCO_GL=egl python benchmarks/efficacy_train.py --workspace /tmp/train-eff --policy mlp
    PYTHONPATH=src MUJOCO_GL=egl python benchmarks/efficacy_train.py --workspace /tmp/train-eff --policy vision --rollouts 30

Demos: the scripted demonstrator, region `left`, seeds 0..N-1 (vision: top camera recorded
natively at 96x72). Selection: every successful demo, holdout fraction 0.1. Rollouts: the
trained run through `collect.collect(..., kind="rollout", policy_factory=PolicyFactory(...))`
in the same region on seeds EVAL_SEED_BASE + i (never used for training), strict success.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from roboloop import curate, schema
from roboloop.catalog.client import Catalog
from roboloop.collect.run import CollectConfig, EpisodeJob, RecordingSpec, collect, episode_segment_id
from roboloop.envs.aloha import SceneConditions
from roboloop.train import PolicyFactory, TrainConfig, train
from roboloop.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--policy", default="mlp", choices=["mlp", "vision"])
    ap.add_argument("--demos", type=int, default=55)
    ap.add_argument("--rollouts", type=int, default=50)
    ap.add_argument("--region", default="left")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run", default=None, help="roll out this existing run instead of training a new one")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cond = SceneConditions.from_names(region=args.region)
    vision = args.policy == "vision"
    spec = RecordingSpec(cameras=("top",), width=96, height=72) if vision else RecordingSpec(cameras=())
    ds = f"{args.region}_{'cam' if vision else 'state'}"
    out: dict = {"policy": args.policy, "region": args.region, "dataset": ds}
    with Catalog(Workspace(args.workspace), url="") as cat:
        if ds not in cat.dataset_names() or len(cat.dataset(ds).segment_ids()) < args.demos:
            t0 = time.perf_counter()
            rep = collect(cat, CollectConfig(dataset=ds, episodes=args.demos, conditions=cond, seed=0, workers=args.workers, spec=spec))
            out["collect_s"] = round(time.perf_counter() - t0, 1)
            out["demo_successes"] = f"{rep.successes}/{len(rep.results)}"
        sel_name = f"{ds}-v1"
        try:
            sel = curate.load(cat, sel_name)
        except curate.UnknownSelectionError:
            sel = curate.save(cat, curate.select(cat, ds, "outcome.success", holdout=0.1), sel_name)
        out["train_episodes"], out["holdout_episodes"] = len(sel.train_ids), len(sel.holdout_ids)
        kw = {}
        if args.epochs:
            kw["epochs"] = args.epochs
        if args.batch_size:
            kw["batch_size"] = args.batch_size
        if args.run:
            res = argparse.Namespace(run_id=args.run)
            out["run_id"] = args.run
        else:
            cfg = TrainConfig(dataset=ds, selection=sel_name, policy=args.policy, seed=args.seed, **kw)
            t0 = time.perf_counter()
            res = train(cat, cfg)
            out["train_s"] = round(time.perf_counter() - t0, 1)
            out.update(run_id=res.run_id, epochs=cfg.epochs, batch_size=cfg.batch_size, final_train_loss=res.final_train_loss,
                       final_holdout_loss=res.final_holdout_loss, parameters=res.parameters)
        print(json.dumps(out), flush=True)
        evals = schema.evals_dataset(ds) + (f"_{res.run_id.replace('-', '_')}")
        jobs = [EpisodeJob(schema.EVAL_SEED_BASE + i, cond, episode_segment_id(evals, schema.EVAL_SEED_BASE + i)) for i in range(args.rollouts)]
        t0 = time.perf_counter()
        rep = collect(cat, CollectConfig(dataset=evals, workers=args.workers, spec=spec, kind=schema.KIND_ROLLOUT), jobs=jobs,
                      policy_factory=PolicyFactory(str(cat.workspace.root), res.run_id))
        out["rollout_s"] = round(time.perf_counter() - t0, 1)
        out["success"] = f"{rep.successes}/{len(rep.results)}"
        reasons: dict[str, int] = {}
        for r in rep.results:
            reasons[r.outcome[schema.OUTCOME_FAILURE_REASON]] = reasons.get(r.outcome[schema.OUTCOME_FAILURE_REASON], 0) + 1
        out["outcomes"] = reasons
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
