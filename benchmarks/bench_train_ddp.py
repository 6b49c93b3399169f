"""`train` with nproc=1 vs nproc=2 (DDP, gloo, spawn) on the same selection: wall time end to end.

    PYTHONPATH=src python benchmarks/bench_train_ddp.py [--episodes 50] [--epochs 10] [--nproc 1,2]

Episodes as in `bench_train.py` (50 x 300 steps = 15k samples, default mlp policy, global
batch 256, no holdout, no DataLoader workers). Each `train(...)` call is timed end to end
from the calling process: for nproc=2 that includes spawning the ranks (each imports torch
and roboloop, attaches to the catalog by URL, builds its stream), the statistics pass, the
epochs and rank 0's registration. Also printed: `wall_s` of the run itself (rank 0's loop).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from bench_train import DS, write_episodes
from roboloop import curate
from roboloop.catalog.client import Catalog
from roboloop.train import TrainConfig, train
from roboloop.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--nproc", default="1,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp, Catalog(Workspace(tmp), url="") as cat:
        write_episodes(cat, args.episodes)
        curate.save(cat, curate.select(cat, DS), "all")
        for n in (int(x) for x in args.nproc.split(",")):
            cfg = TrainConfig(dataset=DS, selection="all", epochs=args.epochs, samples=0, nproc=n)
            t0 = time.perf_counter()
            res = train(cat, cfg)
            wall = time.perf_counter() - t0
            print(f"nproc={n}: {wall:.1f} s end to end, loop {res.wall_s:.1f} s, {res.steps_done} steps, "
                  f"final train loss {res.final_train_loss:.4f}", flush=True)


if __name__ == "__main__":
    main()
