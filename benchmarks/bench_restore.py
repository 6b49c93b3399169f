"""Benchmark: time to restore a workspace of N small segments with two layers each.

roboloop's restore (per-file integrity check, batched registration, base layer first,
then the other layers, tables, blueprints) is compared with the peer in the same run:
a bare Rerun server told about the same folders (`Server(datasets=...)` for base plus
`register_prefix` for the second layer), which does no integrity checking.

    .venv/bin/python benchmarks/bench_restore.py --segments 1000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.record.episode import EpisodeRecorder, write_layer_properties
from roboloop.workspace import Workspace

DATA = Path(__file__).parent / "_data" / "restore"


def build(ws: Workspace, n: int) -> None:
    """Write n small episodes (1 s of 14-float joints at 50 Hz) plus a signals layer each."""
    rng = np.random.default_rng(0)
    t = np.arange(50) / 50.0
    for i in range(n):
        sid = f"ep-{i:05d}"
        with EpisodeRecorder(ws.segment_path("demo", schema.BASE_LAYER, sid), sid) as rec:
            rec.log_scalar_columns(schema.JOINT_POSITIONS, t, rng.normal(size=(50, 14)))
            rec.set_properties(schema.EPISODE, {"seed": i, "kind": "demo"})
        write_layer_properties(ws.segment_path("demo", schema.SIGNALS_LAYER, sid), sid, {schema.SIGNALS: {"x": float(i)}})


def time_roboloop(ws: Workspace, n: int) -> float:
    t0 = time.perf_counter()
    cat = Catalog(ws, url="")
    elapsed = time.perf_counter() - t0
    table = cat.segment_table("demo")
    assert table.num_rows == n, table.num_rows
    assert cat.report.segments == {("demo", "base"): n, ("demo", "signals"): n}, cat.report.segments
    cat.close()
    return elapsed


def time_bare_rerun(ws: Workspace, n: int) -> float:
    import rerun as rr
    from rerun.catalog import OnDuplicateSegmentLayer

    t0 = time.perf_counter()
    server = rr.server.Server(host="127.0.0.1", port=0, datasets={"demo": str(ws.layer_dir("demo", "base"))})
    ds = server.client().get_dataset("demo")
    ds.register_prefix(ws.layer_dir("demo", "signals").resolve().as_uri(), layer_name="signals", on_duplicate=OnDuplicateSegmentLayer.REPLACE).wait()
    elapsed = time.perf_counter() - t0
    assert len(ds.segment_ids()) == n
    server.shutdown()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    root = DATA / f"n{args.segments}"
    if args.rebuild and root.exists():
        shutil.rmtree(root)
    ws = Workspace(root)
    if len(ws.segment_files("demo", schema.SIGNALS_LAYER)) != args.segments:
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        build(ws, args.segments)
        print(f"built {args.segments} segments x 2 layers in {time.perf_counter() - t0:.1f}s")
    ours = [time_roboloop(ws, args.segments) for _ in range(args.repeat)]
    bare = [time_bare_rerun(ws, args.segments) for _ in range(args.repeat)]
    o, b = statistics.median(ours), statistics.median(bare)
    print(f"segments={args.segments} layers=2 cores={os.cpu_count()}")
    print(f"roboloop restore (Catalog start):  median {o:.3f}s  runs {[round(x, 3) for x in ours]}")
    print(f"bare Rerun server + register_prefix: median {b:.3f}s  runs {[round(x, 3) for x in bare]}")
    print(f"ratio roboloop / bare: {o / b:.2f}x   target: <= 3 s -> {'MET' if o <= 3.0 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
