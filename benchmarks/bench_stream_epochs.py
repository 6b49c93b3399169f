"""Benchmark: several training epochs with 2 DataLoader workers, respawned vs persistent.

Same data as `bench_stream.py` (it is generated there, or here on first use). Each
epoch iterates the whole scalar dataset (state + a 10-step action window at 50 Hz,
batch 256); the peer in the same run is the same stream with workers spawned anew
every epoch (PyTorch's default).

    .venv/bin/python benchmarks/bench_stream_epochs.py --epochs 3
"""

from __future__ import annotations

import argparse
import time

from bench_stream import DATA, SC, build
from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.stream import EpisodeStream, Field
from roboloop.workspace import Workspace


def epochs(stream: EpisodeStream, loader, n: int) -> list[float]:
    """Seconds per epoch (each iterates every sample once)."""
    times = []
    for e in range(n):
        stream.set_epoch(e)
        t0 = time.perf_counter()
        count = sum(int(b["state"].shape[0]) for b in loader)
        times.append(time.perf_counter() - t0)
        assert count == stream.num_samples, (count, stream.num_samples)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=40, help="scalar episodes to use (of the generated 200)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    ws = Workspace(DATA / "full")
    build(ws, 200, 3000, 0, 60.0)  # scalar episodes only; bench_stream.py adds the videos it needs
    ids = [f"sc-{i:04d}" for i in range(args.episodes)]
    with Catalog(ws, url="") as cat:
        fields = {"state": schema.JOINT_POSITIONS, "action": Field(schema.JOINT_TARGETS, window=range(10))}
        results = {}
        for persistent in (False, True):
            stream = EpisodeStream(cat, (SC, ids), fields=fields, rate_hz=50, batch_size=256)
            loader = stream.loader(num_workers=args.workers, persistent_workers=persistent)
            results[persistent] = epochs(stream, loader, args.epochs)
            del loader
        n = stream.num_samples
        for persistent, times in results.items():
            label = "persistent workers" if persistent else "respawned workers "
            per = ", ".join(f"{t:.2f}" for t in times)
            print(f"{label}: epochs [{per}] s -> {n * len(times) / sum(times):,.0f} samples/s over {len(times)} epochs of {n:,}")
        ratio = sum(results[False]) / sum(results[True])
        print(f"persistent vs respawned, total time ratio: {ratio:.2f}x faster")


if __name__ == "__main__":
    main()
