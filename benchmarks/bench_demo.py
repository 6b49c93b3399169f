"""`roboloop demo` stage by stage: wall and CPU per stage, this process apart from its worker processes.

Runs the same `run_demo` the CLI runs (default `DemoConfig`) on the workspace `ROBOLOOP_WORKSPACE`
(default `./.roboloop`; use a fresh one) and prints, per narrated stage (`[k/12]` lines), the wall
seconds and the CPU seconds of this process (the embedded catalog server's threads included) and of
its descendants (worker processes: reaped ones from `RUSAGE_CHILDREN`, live ones from psutil), then
the demo's numbers (success by cell, sequential pairs, p-values) to check against earlier runs.

    rm -rf /tmp/demo-ws && ROBOLOOP_WORKSPACE=/tmp/demo-ws MUJOCO_GL=egl .venv/bin/python benchmarks/bench_demo.py

A stage mark is taken when its line is printed: `[2/12]` prints after refine ran, `[6/12]` after the
success table was computed, `[8/12]` after the plan was made, `[9/12]` after the plan's collection and
refine, `[12/12]` after the comparison (the rows say which stages each interval covers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import psutil

from roboloop.catalog.client import Catalog
from roboloop.demo import DemoConfig, run_demo
from roboloop.workspace import Workspace


def cpu_split() -> tuple[float, float]:
    """(this process's CPU seconds, its descendants' CPU seconds) so far."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            live += t.user + t.system
        except psutil.Error:
            pass
    return me.ru_utime + me.ru_stime, reaped.ru_utime + reaped.ru_stime + live


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="also write the marks (name, wall, self CPU, children CPU) to this file")
    args = ap.parse_args()
    t0 = time.perf_counter()
    marks = [("start", t0, *cpu_split())]

    def say(text: str) -> None:
        if text.startswith("["):
            marks.append((text.split("]")[0] + "]", time.perf_counter(), *cpu_split()))
        print(f"{time.perf_counter() - t0:7.1f}s {text}", flush=True)

    with Catalog(Workspace(os.environ.get("ROBOLOOP_WORKSPACE", ".roboloop"))) as cat:
        result = run_demo(cat, DemoConfig(), say=say)
        marks.append(("end", time.perf_counter(), *cpu_split()))
    print(f"\n{'interval':<22} {'wall s':>7} {'CPU self':>9} {'CPU workers':>12}")
    for (a, ta, sa, ca), (b, tb, sb, cb) in zip(marks, marks[1:]):
        print(f"{a + ' -> ' + b:<22} {tb - ta:>7.1f} {sb - sa:>9.1f} {cb - ca:>12.1f}")
    _, te, se, ce = marks[-1]
    print(f"{'total':<22} {te - t0:>7.1f} {se - marks[0][2]:>9.1f} {ce - marks[0][3]:>12.1f}   load {os.getloadavg()}")
    print("demo laps (wall s):", result.seconds)
    for label, rows in result.success_by.items():
        print(label, ", ".join(f"{r.get('scene.lighting')}/{r.get('scene.yaw')} {r['successes']}/{r['n']}" for r in rows))
    print("sequential pairs:", {c["cell"]: c["n"] for c in (result.sequential or {}).get("cells", [])})
    print("compare p:", [(r.get("group"), r.get("p")) for r in result.comparison])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"marks": [(n, round(t - t0, 2), round(s, 2), round(c, 2)) for n, t, s, c in marks],
                       "laps": result.seconds}, f, indent=1)


if __name__ == "__main__":
    main()
