"""Benchmark: collection episodes/min with local worker processes vs Ray actors, on this machine.

Both run `collect()` end to end (scripted demonstrator, 300-step episodes, the `top` camera
at 320x240 / 25 Hz, H.264, atomic write, registration as results arrive) with the same
number of workers, in the same run, alternating:

- `local`: `--workers N` spawned worker processes (start-up included);
- `ray (cold)`: `--executor ray --workers N`, starting a local Ray instance and N actors
  (everything `roboloop collect --executor ray` does on a fresh machine);
- `ray (warm)`: the same with a Ray instance already running (as on a cluster), actor
  start-up still included.

    .venv/bin/python benchmarks/bench_executor.py --episodes 12 --workers 2 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

from roboloop.catalog.client import Catalog
from roboloop.collect.run import CollectConfig, RecordingSpec, collect
from roboloop.workspace import Workspace


def run(cat: Catalog, dataset: str, episodes: int, workers: int, executor: str, seed: int) -> tuple[float, int]:
    cfg = CollectConfig(dataset=dataset, episodes=episodes, seed=seed, workers=workers, spec=RecordingSpec(), executor=executor)
    t0 = time.perf_counter()
    rep = collect(cat, cfg)
    wall = time.perf_counter() - t0
    assert len(rep.results) == episodes
    return 60.0 * episodes / wall, rep.successes


def main() -> None:
    import ray

    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    rates: dict[str, list[float]] = {"local": [], "ray (cold)": [], "ray (warm)": []}
    with tempfile.TemporaryDirectory() as tmp, Catalog(Workspace(tmp), url="") as cat:
        for r in range(args.repeats):
            seed = 1000 * r
            rates["local"].append(run(cat, f"local{r}", args.episodes, args.workers, "local", seed)[0])
            rates["ray (cold)"].append(run(cat, f"raycold{r}", args.episodes, args.workers, "ray", seed)[0])
            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                rates["ray (warm)"].append(run(cat, f"raywarm{r}", args.episodes, args.workers, "ray", seed)[0])
            finally:
                ray.shutdown()
    print(f"{args.episodes} episodes x 300 steps, top 320x240 @ 25 Hz, {args.workers} workers, load {os.getloadavg()[0]:.1f}")
    for name, values in rates.items():
        print(f"{name:<11} {statistics.median(values):5.1f} episodes/min   runs {[round(v, 1) for v in values]}")


if __name__ == "__main__":
    main()
