"""Cold `roboloop` commands timed before and after a change, alternating per repeat (same command, same load).

    git archive <commit> src | tar -x -C /tmp/before
    PYTHONPATH=src .venv/bin/python benchmarks/bench_cold_alternating.py --before /tmp/before/src \\
        benchmarks/_data/analysis_scale_100000 import success compare gaps
    PYTHONPATH=src .venv/bin/python benchmarks/bench_cold_alternating.py --before /tmp/before/src \\
        benchmarks/_data/analysis_scale_10000_real report

Each run is a new `python -m roboloop.cli --workspace WS ...` process (wall clock: start-up, imports, reads,
statistics, printing) on a workspace of `bench_analysis_scale.py`; `import` times `python -c "import roboloop.cli"`.
On a shared machine the load moves between runs: alternating the two trees keeps the comparison fair.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AFTER = Path(__file__).resolve().parent.parent / "src"
COMMANDS = {
    "import": None,
    "success": ["success", "--dataset", "bench_evals", "--by", "episode.cell"],
    "compare": ["compare", "bench-a", "bench-b"],
    "gaps": ["gaps", "--eval", "bench-a"],
    "report": ["report", "--eval", "bench-a", "--eval", "bench-b", "--output", "{out}"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workspace", type=Path)
    ap.add_argument("commands", nargs="+", choices=sorted(COMMANDS))
    ap.add_argument("--before", type=Path, required=True, help="the source tree before the change")
    ap.add_argument("--after", type=Path, default=AFTER, help="the source tree after it (default: this checkout)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    out_dir = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    times: dict[tuple[str, str], list[float]] = {}
    for name in a.commands:
        for r in range(a.repeats):
            for side, src in (("before", a.before), ("after", a.after)):
                env = {**os.environ, "PYTHONPATH": str(src), "MUJOCO_GL": "egl", "ROBOLOOP_CATALOG": "", "COLUMNS": "200"}
                if COMMANDS[name] is None:
                    argv = [sys.executable, "-c", "import roboloop.cli"]
                else:
                    args = [x.format(out=out_dir / f"{name}-{side}.html") for x in COMMANDS[name]]
                    argv = [sys.executable, "-m", "roboloop.cli", "--workspace", str(a.workspace), *args]
                t0 = time.perf_counter()
                res = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
                dt = time.perf_counter() - t0
                if res.returncode:
                    raise SystemExit(f"{name} ({side}): exit {res.returncode}\n{res.stderr[-2000:]}")
                (out_dir / f"{name}-{side}.out").write_text(res.stdout)
                times.setdefault((name, side), []).append(dt)
                print(f"{name} {side} run {r}: {dt:.2f} s (load {Path('/proc/loadavg').read_text().split()[0]})", flush=True)
    for (name, side), ts in times.items():
        print(f"{name} {side}: median {statistics.median(ts):.2f} s (runs {', '.join(f'{t:.2f}' for t in ts)})")
    print(f"outputs (stdout of the last run of each) in {out_dir}")


if __name__ == "__main__":
    main()
