"""Benchmark: a command's start-up on a 10,000-segment workspace, with and without `roboloop serve`.

The workspace holds N small segments written by the real recorder (1 s of 14 joints at
50 Hz; with `--layers 2` also a `signals` layer each, the shape of bench_restore.py). Note:
the Rerun server keeps one file descriptor open per registered file, so a workspace of more
files than `ulimit -n` (20,000 here) cannot be restored completely by one process. Each measurement is
the wall time of a whole `roboloop` process (interpreter start, imports, catalog, the
command) as a user sees it, median of the repeats:

- `sql "SELECT 1 AS x"`: a command whose own work is negligible, so the time is start-up;
- `ls`: lists every dataset with its segment and layer counts (a segment-table query over
  all N segments, the same work with or without a server);

once with no server (every process starts an embedded catalog and restores the whole
workspace) and once while `roboloop serve` runs for the workspace (every process attaches).
Also reported: `Catalog(ws)` in-process, both ways, and how long `serve` took to come up.

    .venv/bin/python benchmarks/bench_attach.py --segments 10000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).parent / "_data" / "attach"
SRC = str(Path(__file__).resolve().parents[1] / "src")

_BUILD = r"""
import sys
import numpy as np
from roboloop import schema
from roboloop.record.episode import EpisodeRecorder, write_layer_properties
from roboloop.workspace import Workspace
ws = Workspace(sys.argv[1]); lo, hi, layers = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(lo)
t = np.arange(50) / 50.0
for i in range(lo, hi):
    sid = f"ep-{i:05d}"
    if ws.segment_path("demo", schema.BASE_LAYER if layers == 1 else schema.SIGNALS_LAYER, sid).exists():
        continue
    with EpisodeRecorder(ws.segment_path("demo", schema.BASE_LAYER, sid), sid) as rec:
        rec.log_scalar_columns(schema.JOINT_POSITIONS, t, rng.normal(size=(50, 14)))
        rec.set_properties(schema.EPISODE, {"seed": i, "kind": "demo"})
    if layers == 2:
        write_layer_properties(ws.segment_path("demo", schema.SIGNALS_LAYER, sid), sid, {schema.SIGNALS: {"x": float(i)}})
"""


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("ROBOLOOP_CATALOG", None)
    return env


def build(root: Path, n: int, layers: int, chunk: int = 2000) -> None:
    """Write the workspace in chunks of `chunk` segments per process (one process runs out of threads at ~4000)."""
    for lo in range(0, n, chunk):
        subprocess.run([sys.executable, "-c", _BUILD, str(root), str(lo), str(min(n, lo + chunk)), str(layers)], check=True, env=_env())


def run_cli(root: Path, *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "roboloop.cli", "--workspace", str(root), *args], check=True, env=_env(), capture_output=True)
    return time.perf_counter() - t0


def in_process(root: Path) -> float:
    from roboloop.catalog.client import Catalog
    from roboloop.workspace import Workspace

    t0 = time.perf_counter()
    with Catalog(Workspace(root)) as cat:
        elapsed = time.perf_counter() - t0
        assert "demo" in cat.dataset_names()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layers", type=int, choices=(1, 2), default=1, help="1: base only; 2: base + signals (2 files per segment)")
    ap.add_argument("--workspace", type=Path, default=None, help="Existing workspace to use (default: benchmarks/_data/attach/<N>x<layers>)")
    args = ap.parse_args()
    os.environ.pop("ROBOLOOP_CATALOG", None)
    root = (args.workspace or DATA / f"{args.segments}x{args.layers}").resolve()
    n_files = len(list((root / "datasets/demo/base").glob("*.rrd"))) if (root / "datasets/demo/base").is_dir() else 0
    if n_files < args.segments:
        t0 = time.perf_counter()
        build(root, args.segments, args.layers)
        print(f"built {args.segments} segments x {args.layers} layer(s) in {time.perf_counter() - t0:.0f}s")

    commands = {"sql": ("sql", "SELECT 1 AS x"), "ls": ("ls",)}
    results: dict[tuple[str, str], list[float]] = {}
    for name, cmd in commands.items():
        results[("embedded", name)] = [run_cli(root, *cmd) for _ in range(args.repeats)]
    results[("embedded", "Catalog()")] = [in_process(root) for _ in range(args.repeats)]

    from roboloop.catalog.server import live_server
    from roboloop.workspace import Workspace

    ws = Workspace(root)
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "roboloop.cli", "--workspace", str(root), "serve", "--port", "0"], env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while live_server(ws, timeout=0.2) is None:
            if server.poll() is not None:
                raise SystemExit("roboloop serve exited")
            time.sleep(0.1)
        serve_up = time.perf_counter() - t0
        for name, cmd in commands.items():
            results[("attached", name)] = [run_cli(root, *cmd) for _ in range(args.repeats)]
        results[("attached", "Catalog()")] = [in_process(root) for _ in range(args.repeats)]
    finally:
        server.terminate()
        server.wait(timeout=60)

    print(f"workspace: {args.segments} segments x {args.layers} layer(s) ({root})")
    print(f"roboloop serve up (restore + record) after {serve_up:.2f}s")
    for name in [*commands, "Catalog()"]:
        e = statistics.median(results[("embedded", name)])
        a = statistics.median(results[("attached", name)])
        print(f"{name:<10} no server {e:6.2f}s   with server {a:6.2f}s   ({e / a:.1f}x)   "
              f"runs {[round(x, 2) for x in results[('embedded', name)]]} / {[round(x, 2) for x in results[('attached', name)]]}")


if __name__ == "__main__":
    main()
