"""The camera-only policy's curve: corrective (DAgger) episodes vs the same budget of plain demonstrations.

    PYTHONPATH=src MUJOCO_GL=egl python benchmarks/bench_vision_loop.py --workspace WS [--corrective 25,25] [--rollouts 30]
        [--config extra.toml] [--v1 RUN] [--skip-plain] [--workers 2]

Everything through the real CLI (`roboloop ...` subprocesses) on one workspace, region default, yaw none:

1. `collect`: demonstrations with the top camera at 96x72 on seeds 0..N-1 (N = 50 + the corrective budget),
   2 workers (skipped when the dataset holds them);
2. `curate`: `d50` = seeds < 50 (holdout 0.1); `train` v1 on it with `--policy vision` (its `VisionConfig`
   defaults; `--config` adds a TOML file of TrainConfig fields, e.g. `[model] aux_cube = 1.0`);
3. for each step of `--corrective` (e.g. 25,25): `collect --corrective --run PREV --mode dagger` (the previous
   policy drives, the scripted expert labels every step) that many episodes, `curate` the 50 demos + every
   corrective episode so far, `train` the next version with the same config; and, beside it (a second
   process), `train` on the same number of plain demonstrations (seeds < 50 + the corrective so far);
4. `eval` every run: `--grid "region=default yaw=none"`, `--rollouts` per cell (unseen seeds:
   `cell_seed`), `--workers` processes; strict success counted from the catalog.

Prints one JSON line per point (episodes, wall times, successes) and appends them to WS/curve.jsonl. The
machine's load is printed at the start and end of every step (`/proc/loadavg`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from roboloop.catalog.client import Catalog
from roboloop.evaluate.run import eval_row, evals_dataset_of, finished_pairs
from roboloop.workspace import Workspace

DS = "cam"
GRID = "region=default yaw=none"
CLI = [sys.executable, "-m", "roboloop.cli"]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cli(ws: str, *args: str, background: bool = False):
    cmd = [*CLI, "-w", ws, *args]
    print(f"$ roboloop {' '.join(args)}   (load {loadavg()})", flush=True)
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if out.returncode:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(args)}\n{out.stdout[-3000:]}")
    return out.stdout


def run_id_of(output: str) -> str:
    """The run id `roboloop train` printed (`run-...`)."""
    for tok in output.replace("`", " ").replace(",", " ").split():
        if tok.startswith("run-") and len(tok) > 8:
            return tok.strip(".:;")
    raise SystemExit(f"no run id in the train output:\n{output[-2000:]}")


def train(ws: str, selection: str, config: str | None, background: bool = False):
    args = ["train", "-d", DS, "--selection", selection, "--policy", "vision"]
    if config:
        args += ["--config", config]
    return cli(ws, *args, background=background)


def evaluate(ws: str, run: str, rollouts: int, workers: int) -> dict:
    name = f"ev-{run}"
    t0 = time.perf_counter()
    if eval_row(Workspace(ws), name) is None:  # a run evaluated before (an earlier invocation) is counted, not re-run
        cli(ws, "eval", "--run", run, "--grid", GRID, "-n", str(rollouts), "--workers", str(workers), "--name", name, "--cameras", "")
    wall = time.perf_counter() - t0
    with Catalog(Workspace(ws)) as cat:
        pairs = finished_pairs(cat, evals_dataset_of(cat.workspace, name), name)
    return {"eval": name, "successes": sum(pairs.values()), "rollouts": len(pairs), "eval_s": round(wall, 1)}


def timed_train(ws: str, selection: str, config: str | None) -> tuple[str, float]:
    t0 = time.perf_counter()
    out = train(ws, selection, config)
    return run_id_of(out), time.perf_counter() - t0


def record(ws: str, point: dict) -> None:
    point = {**point, "load_end": loadavg()}
    print(json.dumps(point), flush=True)
    with open(Path(ws) / "curve.jsonl", "a") as f:
        f.write(json.dumps(point) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--corrective", default="25,25", help="corrective episodes added per DAgger round")
    ap.add_argument("--rollouts", type=int, default=30)
    ap.add_argument("--config", default=None, help="TOML with TrainConfig fields for every run (same config for all)")
    ap.add_argument("--v1", default=None, help="reuse this run as v1 (trained on d50 with the same config)")
    ap.add_argument("--workers", type=int, default=2, help="evaluation worker processes")
    ap.add_argument("--skip-plain", action="store_true", help="only the corrective branch")
    args = ap.parse_args()
    ws = args.workspace
    os.environ.setdefault("MUJOCO_GL", "egl")
    rounds = [int(x) for x in args.corrective.split(",") if x]
    need = 50 + sum(rounds)
    with Catalog(Workspace(ws)) as cat:
        have = len(cat.dataset(DS).segment_ids()) if DS in cat.dataset_names() else 0
    if have < need:
        t0 = time.perf_counter()
        cli(ws, "collect", "-d", DS, "-n", str(need - have), "--region", "default", "--yaw", "none", "--seed", str(have),
            "--workers", "2", "--cameras", "top", "--camera-size", "96x72")
        record(ws, {"step": "collect demos", "episodes": need - have, "collect_s": round(time.perf_counter() - t0, 1)})
    cli(ws, "curate", "-d", DS, "-n", "d50", "--where", "episode.seed < 50 and episode.kind = 'demo'", "--holdout", "0.1", "--replace")
    if args.v1:
        prev = args.v1
    else:
        prev, wall = timed_train(ws, "d50", args.config)
        record(ws, {"point": "50 demos", "run": prev, "train_s": round(wall, 1)})
    record(ws, {"point": "50 demos", "run": prev, **evaluate(ws, prev, args.rollouts, args.workers)})
    corrective = 0
    for n in rounds:
        t0 = time.perf_counter()
        cli(ws, "collect", "-d", DS, "--corrective", "--run", prev, "--mode", "dagger", "-n", str(n), "--grid", GRID,
            "--workers", "2")
        corrective += n
        record(ws, {"step": f"collect {n} corrective (dagger) from {prev}", "collect_s": round(time.perf_counter() - t0, 1)})
        sel = f"d50c{corrective}"
        cli(ws, "curate", "-d", DS, "-n", sel, "--where", "(episode.seed < 50 and episode.kind = 'demo') or episode.kind = 'corrective'",
            "--holdout", "0.1", "--replace")
        plain = None
        if not args.skip_plain:
            psel = f"d{50 + corrective}"
            cli(ws, "curate", "-d", DS, "-n", psel, "--where", f"episode.seed < {50 + corrective} and episode.kind = 'demo'",
                "--holdout", "0.1", "--replace")
            t_plain = time.perf_counter()
            plain = train(ws, psel, args.config, background=True)
        run, wall = timed_train(ws, sel, args.config)
        record(ws, {"point": f"50 demos + {corrective} corrective", "run": run, "train_s": round(wall, 1)})
        if plain is not None:
            out, _ = plain.communicate()
            if plain.returncode:
                raise SystemExit(f"plain training failed:\n{out[-3000:]}")
            prun = run_id_of(out)
            record(ws, {"point": f"{50 + corrective} demos", "run": prun, "train_s": round(time.perf_counter() - t_plain, 1)})
        record(ws, {"point": f"50 demos + {corrective} corrective", "run": run, **evaluate(ws, run, args.rollouts, args.workers)})
        if plain is not None:
            record(ws, {"point": f"{50 + corrective} demos", "run": prun, **evaluate(ws, prun, args.rollouts, args.workers)})
        prev = run


if __name__ == "__main__":
    main()
