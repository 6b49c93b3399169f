"""Issue 24: the planted quality problem and the quality branch of the loop, measured (one command).

1. **harm**: collect `--clean` scripted handovers (`collect --operator clean`) and sloppy ones
   (`collect --operator sloppy`: hesitations, a detour, a jittery approach; they still succeed), then
   train the default `mlp` (v1's config) on a clean set and on a mixed set of the same size (`--share`
   sloppy), and evaluate both on the same unseen seeds (`--grid`, `--per-cell` per cell; paired).
2. **loop**: on the mixed run (v1): `value --run v1 --eval E1`; curate v3 = the mixed set minus its
   lowest-valued demonstrations (as many as were planted), and two controls of the same size: random
   removal and removal by the best hand-made signal (the one of jerk, duration, idle fraction whose
   ranking finds most planted demos); train all with v1's config (`train --like`); evaluate on v1's grid
   and seeds; compare paired (exact McNemar).

`hidden.operator` (the planted truth) is read here only to build the sets and to score, never by roboloop.

`--operator fragile` plants the fragile operator instead of the sloppy one; `--zone LO,HI` gives it one part of
the table (its demonstrations are those whose cube starts at x in [LO, HI); the mixed set's clean ones come from
elsewhere, and the clean set has as many clean ones in the zone); `--estimator kernel` values with the kernel
estimator, `--estimator expert` with the expert estimator (it first collects `--labels` dagger episodes of v1 per cell,
`collect --corrective --mode dagger`; `--also` scores further estimators for precision only); `--oracle` adds the
bound (the mixed set minus exactly the planted ones); `--no-video` collects without the camera (the state policy
never reads it).

    PYTHONPATH=src MUJOCO_GL=egl .venv/bin/python benchmarks/bench_value_loop.py --workspace /tmp/value-loop
    PYTHONPATH=src MUJOCO_GL=egl .venv/bin/python benchmarks/bench_value_loop.py --workspace /tmp/value-loop --share 0.6 \
        --operator fragile --no-video --estimator kernel --oracle --tag=-frag60
    PYTHONPATH=src MUJOCO_GL=egl .venv/bin/python benchmarks/bench_value_loop.py --workspace /tmp/value-loop --share 0.3 \
        --operator turned --sloppy-seed 30000 --no-video --estimator expert --also loss,kernel --oracle --tag=-turn30

A finished run on the same training ids is reused (every run here has v1's config), so the controls are trained once
for all estimators.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from roboloop import curate, schema
from roboloop.analyze.compare import compare
from roboloop.analyze.rollouts import rollout_table
from roboloop.analyze.value import DemoValueError, ValueConfig, demonstration_value
from roboloop.catalog.client import Catalog
from roboloop.collect.corrective import CorrectiveConfig, collect_corrective
from roboloop.collect.run import CollectConfig, RecordingSpec, collect
from roboloop.envs.aloha.conditions import SceneConditions
from roboloop.envs.aloha.env import sample_cube_pose
from roboloop.evaluate.run import EvalConfig, cell_conditions, evaluate, list_evals, parse_grid, resolve_policy
from roboloop.refine.layers import refine
from roboloop.stats.intervals import wilson
from roboloop.train import TrainConfig, list_runs, load_config, train
from roboloop.workspace import Workspace

DATASET = "quality"
HIDDEN = f"{schema.HIDDEN}.{schema.HIDDEN_OPERATOR}"
HEURISTICS = ("jerk_peak", "jerk_mean", "duration_s", "idle_fraction")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def table(cat: Catalog, dataset: str) -> list[dict]:
    return cat.segment_table(dataset).to_pylist()


def in_zone(seed: int, zone: tuple[float, float] | None, inside: bool = True) -> bool:
    """Whether episode `seed`'s cube starts with x in [lo, hi) = `zone` (default scene; None: everywhere), or
    (`inside` False) outside it."""
    if zone is None:
        return True
    x = float(sample_cube_pose(seed, SceneConditions())[0])
    return (zone[0] <= x < zone[1]) == inside


def ensure_demos(cat: Catalog, operator: str, n_success: int, first_seed: int, workers: int, video: bool = True,
                 zone: tuple[float, float] | None = None, inside: bool = True) -> list[dict]:
    """At least `n_success` successful demos of `operator` (seeds from `first_seed`; with `zone`, only those whose cube
    starts in it (or, `inside` False, outside it) count), collected once (`video`: with the default top camera; the
    state policy never reads it)."""
    spec = RecordingSpec() if video else RecordingSpec(cameras=())
    width = 1.0 if zone is None else (min(zone[1], 0.2) - max(zone[0], 0.0)) / 0.2
    share = max(0.05, width if inside else 1.0 - width)

    def current() -> tuple[list[dict], list[dict]]:
        have = [r for r in (table(cat, DATASET) if DATASET in cat.dataset_names() else [])
                if r.get(HIDDEN) == operator and r["episode.seed"] >= first_seed]
        return have, [r for r in have if r.get("outcome.success") and in_zone(r["episode.seed"], zone, inside)]

    have, ok = current()
    while len(ok) < n_success:
        need = n_success - len(ok)
        extra = need // 5 + 1 if operator != "clean" else 0
        collect(cat, CollectConfig(dataset=DATASET, episodes=min(500, round((need + extra) / share)),
                                   seed=first_seed + len(have), workers=workers, operator=operator, spec=spec))
        have, ok = current()
    return sorted(ok, key=lambda r: r["episode.seed"])[:n_success]


def selection(cat: Catalog, name: str, ids: list[str]) -> curate.Selection:
    rows = {r["segment_id"]: r for r in table(cat, DATASET)}
    where = "episode.seed in (" + ", ".join(str(rows[i]["episode.seed"]) for i in sorted(ids)) + ")"
    sel = curate.select(cat, DATASET, where, holdout=0.0)
    assert set(sel.train_ids) == set(ids), (name, len(sel.train_ids), len(ids))
    return curate.save(cat, sel, name, replace=True)


def train_on(cat: Catalog, sel: curate.Selection, like: str | None, epochs: int) -> str:
    for info in list_runs(cat.workspace):  # a re-run reuses a finished run on the same ids (every run here has v1's config)
        if info.get("selection_digest") == sel.digest and info.get("status") == "finished":
            log(f"train {sel.name}: reusing run {info['run_id']}")
            return info["run_id"]
    cfg = (load_config(cat.workspace, like).replace(selection=sel.name) if like
           else TrainConfig(dataset=DATASET, selection=sel.name, epochs=epochs))
    t = time.perf_counter()
    res = train(cat, cfg)
    log(f"train {sel.name}: run {res.run_id} in {time.perf_counter() - t:.0f}s, loss {res.final_train_loss:.4f}")
    return res.run_id


def eval_on(cat: Catalog, run_id: str, grid: str, per_cell: int, workers: int) -> tuple[str, list[dict]]:
    t = time.perf_counter()
    cfg = EvalConfig(dataset=DATASET, policy=run_id, grid=parse_grid(grid), episodes_per_cell=per_cell, workers=workers, cameras=())
    done = [r for r in list_evals(cat.workspace, DATASET) if r.get("policy") == run_id and r.get("status") == "finished"
            and r.get("grid") == cfg.grid.to_dict() and int(r.get("episodes_per_cell", 0)) == per_cell]
    eval_id = done[-1]["eval_id"] if done else evaluate(cat, cfg).eval_id
    rows = rollout_table(cat, schema.evals_dataset(DATASET), [eval_id]).to_pylist()
    k, n = sum(bool(r.get("outcome.success")) for r in rows), len(rows)
    lo, hi = wilson(k, n)
    log(f"eval {run_id}: {k}/{n} = {k / n:.2f} [{lo:.2f}, {hi:.2f}] in {time.perf_counter() - t:.0f}s ({eval_id})")
    return eval_id, rows


def summary(rows: list[dict]) -> dict:
    k, n = sum(bool(r.get("outcome.success")) for r in rows), len(rows)
    lo, hi = wilson(k, n)
    return {"successes": k, "n": n, "rate": round(k / n, 3), "wilson95": [round(lo, 3), round(hi, 3)]}


def paired(cat: Catalog, eval_a: str, eval_b: str) -> dict:
    """B against A on shared (cell, seed) pairs: difference, 95% interval, exact McNemar p, verdict."""
    ds = schema.evals_dataset(DATASET)
    res = compare(rollout_table(cat, ds, [eval_a]), rollout_table(cat, ds, [eval_b]))
    overall = res[-1]
    return {k: overall.get(k) for k in ("n_pairs", "diff", "diff_low", "diff_high", "discordant_a", "discordant_b", "p", "test", "verdict")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--demos", type=int, default=50, help="training demonstrations per arm")
    ap.add_argument("--share", type=float, default=0.3, help="share of sloppy demonstrations in the mixed set")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--grid", default="lighting=normal,dim")
    ap.add_argument("--per-cell", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stage", choices=("harm", "loop", "all", "value"), default="all",
                    help="value: v1, its evaluation and the estimators' precision, without the curated trainings")
    ap.add_argument("--seed", type=int, default=0, help="random-removal control's seed")
    ap.add_argument("--sloppy-seed", type=int, default=20_000, help="first seed of the sloppy demos (an earlier variant's live below)")
    ap.add_argument("--metric", default="success", help="value's rollout outcome: success or stage")
    ap.add_argument("--tag", default="", help="suffix of the selection names (a second variant in the same workspace)")
    ap.add_argument("--operator", default="sloppy", help="the planted operator: sloppy or fragile")
    ap.add_argument("--zone", default=None, help="LO,HI: the planted operator's part of the table (cube start x in [LO, HI) m): "
                    "its demonstrations are those there, the clean ones of the mixed set those elsewhere, and the clean set "
                    "has as many clean ones there")
    ap.add_argument("--estimator", default="loss", help="value's estimator (the one v3 is curated by): loss, kernel or expert")
    ap.add_argument("--also", default="", help="further estimators scored for precision only (comma-separated)")
    ap.add_argument("--labels", type=int, default=30, help="expert estimator: dagger episodes of v1 per grid cell (the expert's "
                    "labels; their own seeds, not the evaluation's)")
    ap.add_argument("--loop-tag", default="", help="a further suffix of the curated selections' names (another estimator on the same v1)")
    ap.add_argument("--oracle", action="store_true", help="also train on the mixed set minus exactly the planted demonstrations (the bound)")
    ap.add_argument("--no-video", action="store_true", help="collect without the top camera (the state policy never reads it)")
    a = ap.parse_args()
    out: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}}
    t_all = time.perf_counter()
    n_sloppy = round(a.demos * a.share)
    zone = tuple(float(v) for v in a.zone.split(",")) if a.zone else None
    with Catalog(Workspace(a.workspace), url="") as cat:
        t = time.perf_counter()
        video = not a.no_video
        if zone is None:
            clean = ensure_demos(cat, "clean", a.demos, 0, a.workers, video=video)
        else:  # the clean demos outside the zone first (the mixed set takes the first n - planted), then as many in it
            clean = (ensure_demos(cat, "clean", a.demos - n_sloppy, 0, a.workers, video=video, zone=zone, inside=False)
                     + ensure_demos(cat, "clean", n_sloppy, 0, a.workers, video=video, zone=zone))
        sloppy = ensure_demos(cat, a.operator, n_sloppy, a.sloppy_seed, a.workers, video=video, zone=zone)
        refine(cat, DATASET)
        out["wall_collect_s"] = round(time.perf_counter() - t)
        clean_ids = [r["segment_id"] for r in clean]
        mixed_ids = clean_ids[: a.demos - n_sloppy] + [r["segment_id"] for r in sloppy]
        planted = {r["segment_id"] for r in sloppy}
        sel_mixed = selection(cat, f"q-v1-mixed{a.tag}", mixed_ids)
        run_v1 = train_on(cat, sel_mixed, None, a.epochs)
        eval_v1, rows_v1 = eval_on(cat, run_v1, a.grid, a.per_cell, a.workers)
        out["v1_mixed"] = summary(rows_v1)
        if a.stage in ("harm", "all"):
            sel_clean = selection(cat, "q-clean" + (a.tag if zone else ""), clean_ids)  # the same clean demos for every unzoned variant
            run_c = train_on(cat, sel_clean, run_v1, a.epochs)
            eval_c, rows_c = eval_on(cat, run_c, a.grid, a.per_cell, a.workers)
            out["clean"] = summary(rows_c)
            out["clean_vs_mixed"] = paired(cat, eval_v1, eval_c)
        if a.stage in ("loop", "all", "value"):
            out.update(loop(cat, a, run_v1, eval_v1, mixed_ids, planted, n_sloppy))
    out["wall_total_s"] = round(time.perf_counter() - t_all)
    print(json.dumps(out, indent=2, default=str))


def dagger_labels(cat: Catalog, a, run_v1: str) -> dict:
    """`a.labels` dagger episodes of v1 per grid cell (v1 drives, the corrective expert labels; seeds reserved like
    demonstrations', so not the evaluation's), collected once."""
    kind, run = f"{schema.EPISODE}.{schema.EPISODE_KIND}", f"{schema.EPISODE}.{schema.EPISODE_CORRECTED_RUN}"
    have = [r for r in table(cat, DATASET) if r.get(kind) == schema.KIND_CORRECTIVE and r.get(run) == run_v1]
    cells = parse_grid(a.grid).cells()
    t = time.perf_counter()
    if len(have) < a.labels * len(cells):
        source = resolve_policy(cat.workspace, run_v1)
        cfg = CorrectiveConfig(run=run_v1, dataset=DATASET, mode=schema.MODE_DAGGER, episodes=a.labels * len(cells),
                               conditions=tuple(cell_conditions(c) for c in cells), workers=a.workers, spec=RecordingSpec(cameras=()))
        collect_corrective(cat, cfg, policy_factory=source.factory, provenance=source.provenance)
        have = [r for r in table(cat, DATASET) if r.get(kind) == schema.KIND_CORRECTIVE and r.get(run) == run_v1]
    ok = sum(bool(r.get("outcome.success")) for r in have)
    log(f"dagger labels: {len(have)} episodes of {run_v1} ({ok} successful) in {time.perf_counter() - t:.0f}s")
    return {"episodes": len(have), "successes": ok, "wall_s": round(time.perf_counter() - t)}


def value_of(cat: Catalog, a, run_v1: str, eval_v1: str, estimator: str, write: bool):
    if estimator == "expert":
        return demonstration_value(cat, ValueConfig(run=run_v1, estimator="expert", write=write))
    try:
        return demonstration_value(cat, ValueConfig(run=run_v1, eval=eval_v1, metric=a.metric, estimator=estimator, write=write))
    except DemoValueError as exc:  # nearly every rollout failed (or succeeded): contrast the stages reached
        log(f"value: {exc}; using --metric stage")
        return demonstration_value(cat, ValueConfig(run=run_v1, eval=eval_v1, metric="stage", estimator=estimator, write=write))


def loop(cat: Catalog, a, run_v1: str, eval_v1: str, mixed_ids: list[str], planted: set[str], n_drop: int) -> dict:
    out: dict = {}
    also = [e for e in a.also.split(",") if e]
    if "expert" in [a.estimator, *also]:
        out["labels"] = dagger_labels(cat, a, run_v1)
    out["value_by_estimator"] = {}
    for estimator in [*also, a.estimator]:  # the curating one last: its values are the ones written
        t = time.perf_counter()
        res = value_of(cat, a, run_v1, eval_v1, estimator, write=estimator == a.estimator)
        wall = round(time.perf_counter() - t, 1)
        values = res.values
        lowest = sorted(values, key=values.get)[:n_drop]
        hits = len(set(lowest) & planted)
        log(f"value {estimator} ({wall}s): {hits} of the {n_drop} lowest-valued are planted")
        out["value_by_estimator"][estimator] = {"precision": round(hits / n_drop, 3), "wall_s": wall,
                                                "planted_values": sorted(round(values[i], 3) for i in planted),
                                                "clean_values": sorted(round(v, 3) for i, v in values.items() if i not in planted)}
    out["wall_value_s"] = wall
    out["value_precision"] = round(hits / n_drop, 3)
    out["value_recall"] = round(hits / len(planted), 3)
    rows = {r["segment_id"]: r for r in table(cat, DATASET)}
    heur = {}
    for name in HEURISTICS:  # "bad" = high jerk / long / idle: drop the highest
        col = f"signals.{name}"
        ranked = sorted(mixed_ids, key=lambda i: -(rows[i].get(col) or 0.0))[:n_drop]
        heur[name] = len(set(ranked) & planted) / n_drop
    best = max(heur, key=heur.get)
    out["heuristic_precision"] = {k: round(v, 3) for k, v in heur.items()}
    out["best_heuristic"] = best
    if a.stage == "value":
        return out
    drops = {
        "v3-value": set(lowest),
        "random": set(random.Random(a.seed).sample(mixed_ids, n_drop)),
        f"heuristic-{best}": set(sorted(mixed_ids, key=lambda i: -(rows[i].get(f"signals.{best}") or 0.0))[:n_drop]),
    }
    if a.oracle:  # what a perfect value would do: drop exactly the planted ones (reads the hidden truth: a bound, not a method)
        drops["oracle"] = set(planted)
    for name, drop in drops.items():
        sel = selection(cat, f"q-{name}{a.tag}{a.loop_tag}", [i for i in mixed_ids if i not in drop])
        run = train_on(cat, sel, run_v1, a.epochs)
        ev, rows_e = eval_on(cat, run, a.grid, a.per_cell, a.workers)
        out[name] = {"dropped_planted": len(drop & planted), **summary(rows_e), "vs_v1": paired(cat, eval_v1, ev)}
        out[name]["eval"] = ev
    out["v3_vs_random"] = paired(cat, out["random"]["eval"], out["v3-value"]["eval"])
    out["v3_vs_heuristic"] = paired(cat, out[f"heuristic-{best}"]["eval"], out["v3-value"]["eval"])
    return out


if __name__ == "__main__":
    sys.exit(main())
