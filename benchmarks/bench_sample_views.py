"""Overhead of the run's sample views (issue 18, part 3): `train()` with `samples=3` against `samples=0`.

    PYTHONPATH=src python benchmarks/bench_sample_views.py [--episodes 50] [--epochs 20] [--repeats 3]

One process, one embedded catalog: `--episodes` x 300-step episodes (joint positions, targets and cube
pose at 50 Hz, written by the real recorder, as in bench_train.py), a selection with 10% holdout, then
`train(catalog, cfg)` end to end (statistics pass, run registration, epochs, holdout loss, checkpoints,
the final recording) for the default `mlp` policy, alternating the two sides (A B B A A B ...) so load
drift on the shared cores hits both alike. Reports the median wall time of each side, the ratio, and
whether the two sides ended with identical weights (they must: sample logging draws from no training
generator and changes no batch).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from bench_train import DS, write_episodes
from roboloop import curate
from roboloop.catalog.client import Catalog
from roboloop.train import TrainConfig, train
from roboloop.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Catalog(Workspace(tmp), url="") as cat:
        write_episodes(cat, args.episodes)
        curate.save(cat, curate.select(cat, DS, holdout=0.1), "all")
        times: dict[int, list[float]] = {3: [], 0: []}
        digests: dict[int, set[str]] = {3: set(), 0: set()}
        order = [3, 0, 0, 3] * ((args.repeats + 1) // 2)
        for samples in order[: 2 * args.repeats]:
            cfg = TrainConfig(dataset=DS, selection="all", epochs=args.epochs, samples=samples)
            t0 = time.perf_counter()
            res = train(cat, cfg)
            times[samples].append(time.perf_counter() - t0)
            digests[samples].add(res.checkpoint_sha256)
            print(f"samples={samples}: {times[samples][-1]:.2f} s", flush=True)
        with_views, without = statistics.median(times[3]), statistics.median(times[0])
        print(f"median with sample views {with_views:.2f} s, without {without:.2f} s: overhead {100 * (with_views / without - 1):+.1f}%")
        same = len(digests[3] | digests[0]) == 1
        print(f"identical weights with and without: {same}")


if __name__ == "__main__":
    main()
