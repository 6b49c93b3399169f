"""Benchmark: refine 1000 episodes (target < 10 s) and resolve a selection over them (target < 1 s).

    .venv/bin/python benchmarks/bench_curate.py [--episodes 1000] [--regen]

Synthetic episodes shaped like the ALOHA demos (300 steps at 50 Hz: 14-d joint
positions and joint targets, 7-d cube pose, episode/scene/outcome properties) are
written once to benchmarks/_data/curate_ws (git-ignored) and reused. Each run drops
the derived layers and saved selections first, so refine always starts from scratch.

Measured: catalog start (restore), `refine` over every episode (one catalog query per
batch of segments), the same signals read one segment per query for a sample (the
peer: what "opening episodes one by one" through the catalog costs), `curate.select`
with a predicate over properties and signals plus a holdout split, saving it, and
loading it back after a restart.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from roboloop import curate, schema
from roboloop.catalog.client import Catalog
from roboloop.record.episode import EpisodeRecorder
from roboloop.refine import layers as refine
from roboloop.workspace import Workspace

DATA = Path(__file__).resolve().parent / "_data" / "curate_ws"
DS = "bench"
STEPS = 300
REGIONS = ["near", "far", "left", "right"]


def generate(ws: Workspace, n: int) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(STEPS) / schema.CONTROL_HZ
    paths = []
    t0 = time.perf_counter()
    for i in range(n):
        seg = f"ep-{i:05d}"
        q = np.cumsum(rng.normal(scale=0.01, size=(STEPS, 14)), axis=0)
        q[:, [6, 13]] = np.clip(0.5 + np.cumsum(rng.normal(scale=0.05, size=(STEPS, 2)), axis=0), 0, 1)
        cube = np.zeros((STEPS, 7))
        cube[:, 2] = 0.02 + np.maximum(0, np.sin(np.linspace(0, np.pi, STEPS))) * rng.uniform(0, 0.2)
        with EpisodeRecorder(ws.segment_path(DS, schema.BASE_LAYER, seg), seg) as rec:
            rec.log_scalar_columns(schema.JOINT_POSITIONS, t, q)
            rec.log_scalar_columns(schema.JOINT_TARGETS, t, q + rng.normal(scale=0.001, size=q.shape))
            rec.log_scalar_columns(schema.CUBE_POSE, t, cube)
            rec.set_properties(schema.EPISODE, {"kind": "demo", "task": "transfer_cube", "seed": i, "policy": "scripted"})
            rec.set_properties(schema.SCENE, {"region": REGIONS[i % 4], "lighting": float(rng.choice([0.3, 1.0]))})
            rec.set_properties(schema.OUTCOME, {"success": bool(rng.random() < 0.9), "steps": STEPS})
        paths.append(ws.segment_path(DS, schema.BASE_LAYER, seg))
    print(f"generated {n} episodes in {time.perf_counter() - t0:.1f}s -> {ws.root}")


def timed(fn, repeat: int = 1):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--regen", action="store_true", help="rewrite the synthetic episodes")
    ap.add_argument("--peer-sample", type=int, default=50, help="segments read one query each, for the peer")
    args = ap.parse_args()

    ws = Workspace(DATA)
    have = len(ws.segment_files(DS, schema.BASE_LAYER))
    if args.regen or have != args.episodes:
        shutil.rmtree(DATA, ignore_errors=True)
        generate(ws, args.episodes)
    for layer in (schema.SIGNALS_LAYER, schema.QUALITY_LAYER):
        shutil.rmtree(ws.layer_dir(DS, layer), ignore_errors=True)
    shutil.rmtree(ws.tables_dir, ignore_errors=True)

    results: dict[str, str] = {}
    cat, (t_start,) = timed(lambda: Catalog(ws, url=""))
    results["catalog start (restore 1000 base segments)"] = f"{t_start:.2f} s"
    try:
        rep, (t_refine,) = timed(lambda: refine.refine(cat, DS))
        assert len(rep.computed) == args.episodes
        results[f"refine {args.episodes} episodes ({len(rep.signals)} signals)"] = (
            f"{t_refine:.2f} s (read wait {rep.read_seconds:.2f}, compute {rep.compute_seconds:.2f}, write {rep.write_seconds:.2f}, "
            f"register {rep.register_seconds:.2f}) = {args.episodes / t_refine:.0f} episodes/s"
        )
        noop, (t_noop,) = timed(lambda: refine.refine(cat, DS))
        assert not noop.computed
        results["refine again (nothing new)"] = f"{t_noop:.3f} s"

        # peer: the same reads, one catalog query per segment
        ds = cat.dataset(DS)
        entities = sorted({e for s in refine.SIGNALS.values() for e in s.streams})
        sample = rep.computed[: args.peer_sample]
        _, (t_one,) = timed(lambda: [refine.read_streams(ds, [s], entities) for s in sample])
        _, (t_batch,) = timed(lambda: refine.read_streams(ds, sample, entities))
        results[f"peer: read {len(sample)} segments one query each"] = (
            f"{t_one:.2f} s ({t_one / len(sample) * 1000:.1f} ms/segment, ~{t_one / len(sample) * args.episodes:.1f} s per 1000) "
            f"vs one batched query {t_batch:.3f} s ({t_one / t_batch:.0f}x)"
        )

        where = "signals.arm_activity_right > 1.0 and scene.region in ('near', 'far') and outcome.success"
        sel, t_sel = timed(lambda: curate.select(cat, DS, where=where, holdout=0.1), repeat=5)
        results[f"curate.select over {args.episodes} (predicate + holdout 0.1)"] = (
            f"median {statistics.median(t_sel) * 1000:.0f} ms, max {max(t_sel) * 1000:.0f} ms "
            f"-> {len(sel.train_ids)} train / {len(sel.holdout_ids)} holdout"
        )
        _, t_st = timed(lambda: cat.segment_table(DS), repeat=5)
        results["peer: Catalog.segment_table alone (server side)"] = (
            f"median {statistics.median(t_st) * 1000:.0f} ms (select = {statistics.median(t_sel) / statistics.median(t_st):.2f}x of it)"
        )
        _, t_ord = timed(lambda: curate.select(cat, DS, where=where, order="signals.jerk_peak asc", limit=200, holdout=0.1), repeat=5)
        results["curate.select with order + limit 200"] = f"median {statistics.median(t_ord) * 1000:.0f} ms"
        _, (t_save,) = timed(lambda: curate.save(cat, sel, "bench"))
        results["curate.save (first: creates the table)"] = f"{t_save * 1000:.0f} ms"
        refine.flag(cat, DS, where="signals.jerk_peak > 0 and episode.seed < 100", reason="bench")
        _, t_flag = timed(lambda: curate.select(cat, DS, where=where, holdout=0.1), repeat=5)
        results["curate.select with 100 flagged segments"] = f"median {statistics.median(t_flag) * 1000:.0f} ms"
    finally:
        cat.close()
    cat2, (t_restart,) = timed(lambda: Catalog(ws, url=""))
    try:
        results["restart (restore base + signals + quality + table)"] = f"{t_restart:.2f} s"
        loaded, t_load = timed(lambda: curate.load(cat2, "bench"), repeat=5)
        assert loaded.digest == sel.digest
        results["curate.load after restart"] = f"median {statistics.median(t_load) * 1000:.0f} ms"
    finally:
        cat2.close()

    width = max(len(k) for k in results)
    for k, v in results.items():
        print(f"{k:<{width}}  {v}")
    ok_refine = t_refine < 10.0
    ok_select = statistics.median(t_sel) < 1.0
    print(f"targets: refine < 10 s: {'PASS' if ok_refine else 'FAIL'}; select < 1 s: {'PASS' if ok_select else 'FAIL'}")
    return 0 if ok_refine and ok_select else 1


if __name__ == "__main__":
    sys.exit(main())
