"""The least any loader with spawned DataLoader workers pays before its first sample (used by bench_stream.py).

An epoch of a `DataLoader` over a dataset that yields nothing, `num_workers` spawned workers that import
only torch (this module) and end without interpreter teardown, as roboloop's workers do: process spawn,
`import torch`, the worker loop's start and shutdown. No loader whose workers are spawned DataLoader workers
can deliver an epoch faster than this, whatever it does per sample.

    python benchmarks/_loader_floor.py 2                 # prints the seconds
    python benchmarks/_loader_floor.py 2 rerun.catalog   # workers also import what reading the catalog needs
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import time

import torch.multiprocessing
import torch.utils.data


class Nothing(torch.utils.data.IterableDataset):
    """Yields nothing; each worker first imports `modules` (e.g. `rerun.catalog`, which a worker reading the catalog needs)."""

    def __init__(self, modules: tuple[str, ...] = ()) -> None:
        self.modules = modules

    def __iter__(self):
        for m in self.modules:
            importlib.import_module(m)
        atexit.register(os._exit, 0)
        return iter(())


def epoch_seconds(workers: int, modules: tuple[str, ...] = ()) -> float:
    t0 = time.perf_counter()
    ctx = torch.multiprocessing.get_context("spawn")
    for _ in torch.utils.data.DataLoader(Nothing(modules), num_workers=workers, multiprocessing_context=ctx):
        pass
    return time.perf_counter() - t0


if __name__ == "__main__":
    print(f"{epoch_seconds(int(sys.argv[1]) if len(sys.argv) > 1 else 2, tuple(sys.argv[2:])):.3f}")
