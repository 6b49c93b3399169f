"""`roboloop demo`: the whole experiment loop on the embedded catalog, narrated stage by stage.

collect demonstrations that leave one corner of the evaluation grid uncovered (a planted
gap: every demonstration has the cube at yaw 0, the grid also asks for any yaw) ->
refine -> curate v1 (a query) -> train v1 -> evaluate v1 on the full grid -> success by
condition -> `gaps` finds the failing corner and calls it a coverage gap (nothing tells it
where) -> a plan and targeted collection -> the same query re-run (v2, larger) -> train
v2 with v1's config -> evaluate v2 on the same cells and seeds, sequentially against v1
first, then topped up to the fixed grid -> paired comparison -> open the worst v1
failure -> the HTML report.

Lighting is the grid's control axis: it changes no physics, so the state policy should
show it does *not* matter (FIELD-NOTES measured bit-identical rollouts across lighting).

Every stage reports through `say(text)` (and long stages through `progress(stage, done,
total)`), and prints the command that reproduces it. Re-running reuses what the
workspace holds: demonstrations are topped up, not re-collected; a selection, run or
evaluation made by an earlier demo with the same inputs is found and reused.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roboloop import curate, schema
from roboloop.analyze.compare import compare
from roboloop.analyze.gaps import gaps, make_plan
from roboloop.analyze.rollouts import failures, representative_failure, rollout_table, success_by
from roboloop.catalog.client import Catalog
from roboloop.catalog.links import segment_url
from roboloop.collect.plan import Plan, plan_summary, save_plan
from roboloop.collect.plan_run import execute_plan
from roboloop.collect.pool import reuse_workers
from roboloop.collect.run import CollectConfig, RecordingSpec, collect
from roboloop.config import Config, ConfigError, check
from roboloop.envs import DEFAULT_TASK, get_task
from roboloop.evaluate.run import EvalConfig, eval_row, evaluate, list_evals, parse_grid, resolve_policy
from roboloop.evaluate.until_decided import evaluate_until_decided, sequential_rows
from roboloop.refine.layers import flag, refine
from roboloop.report.render import write_report
from roboloop.stats.sequential import SequentialConfig
from roboloop.train import TrainConfig, VisionConfig, list_runs, load_config, train

COVERED = {"yaw": "none"}
"""The demonstrated corner: every demonstration has the cube at yaw 0 (the planted gap is the rest of the yaw axis)."""
CONTROL_LIGHTINGS = ("normal", "dim")
"""Demonstrations alternate these lightings (the grid's control axis)."""
V1, V2 = "demo-v1", "demo-v2"
QUERY = "outcome.success"
"""The curation query of both selections: every successful, unflagged demonstration."""
CORRECTIVE_QUERY = "outcome.success or episode.kind = 'corrective'"
"""The curation query when the plan adds corrective episodes: their labels are the expert's whatever the outcome."""
PLAN_NAME = "demo-gap-plan"


@dataclass(frozen=True)
class DemoConfig(Config):
    """What the demo builds the loop with (the defaults are the measured full-size demo)."""

    dataset: str = schema.DEFAULT_DATASET
    "Dataset to build the loop on (rollouts go to `<dataset>_evals`, runs to `<dataset>_runs`)."
    demos: int = 50
    "Demonstrations in the covered corner (cube yaw 0, lighting alternating)."
    grid: str = "yaw=none,any lighting=normal,dim"
    "The evaluation grid: the covered corner, the gap, and a control axis."
    episodes_per_cell: int = 30
    "Rollouts per grid cell in the fixed grid (seeds are a function of cell and index)."
    plan_budget: int = 30
    "Demonstrations the collection plan may add where the gap is found (mlp; see vision_plan_budget for the camera policy)."
    epochs: int = 150
    "Training epochs of both policies (mlp; see vision_epochs for the camera policy)."
    policy: str = "mlp"
    "Policy kind to train (mlp: joints + cube pose; vision: camera + joints)."
    corrective: int | None = None
    "Corrective episodes from v1 the plan adds over the failing cells (gaps and covered-yet-failing), split by failures, next to its demonstrations (None: 0 for mlp, vision_corrective otherwise)."
    corrective_mode: str = schema.MODE_DAGGER
    "Who acts in those corrective episodes: dagger (v1; the expert labels), gated or expert (collect --corrective --mode)."
    workers: int = 2
    "Worker processes for collection and evaluation."
    cameras: tuple[str, ...] = ("top",)
    "Cameras recorded with every demonstration and rollout (for looking at them)."
    camera_size: tuple[int, int] = (160, 120)
    "Recorded camera size (width, height)."
    eval_camera_hz: int = 10
    ("Camera rate of the evaluation rollouts when policy = mlp, which never reads the camera: the frames are for looking at "
     "a rollout, and rendering is ~78% of a recorded rollout's CPU (10 Hz instead of 25 halves a rollout's CPU, "
     "benchmarks/bench_rollout_cost.py). Demonstrations keep the full 25 Hz; a camera policy's rollouts record at its own rate.")
    steps: int | None = None
    "Control steps per episode (None: the task's 300; smaller only for quick checks)."
    sequential: bool = True
    "Compare v2 with v1 sequentially (anytime-valid) before topping v2 up to the fixed grid."
    round_size: int = 5
    "Rollouts per cell per round of the sequential comparison."
    report: str = "report.html"
    "Where the report is written, relative to the workspace folder (or absolute)."
    vision_epochs: int = 20
    "Training epochs of both policies when policy = vision (an epoch of the camera policy costs ~100x an mlp epoch on 2 cores; measured in benchmarks/README.md)."
    vision_batch_size: int = 64
    "Batch size of both policies when policy = vision."
    vision_camera_size: tuple[int, int] = (96, 72)
    "Recorded camera size when policy = vision: the size the camera policy trains and deploys at (VisionConfig's image size, no resize)."
    vision_aux_cube: float = 1.0
    "VisionConfig.aux_cube of the demo's camera policies: the training-only cube-position loss (deploy reads only camera + joints; 8/30 vs 1/30 at 50 demos, benchmarks/README.md)."
    vision_brightness: float = 1.0
    "VisionConfig.brightness of the demo's camera policies: brightness/contrast augmentation against its two lightings (dim frames are 0.52x as bright)."
    vision_plan_budget: int = 100
    ("Demonstrations the plan may add in the gap cells when policy = vision (the camera policy needs more data per cell "
     "than the state policy: 50 + 50 corrective gave the gap cells 30-43%, 100 + 100 gives 93-97%; benchmarks/README.md).")
    vision_corrective: int = 100
    "Corrective episodes (dagger, from v1) the plan adds when policy = vision and `corrective` is None: split over the failing cells by their failures."

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            schema.validate_demo_dataset_name(self.dataset)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        check(self.demos >= 2, f"demos must be >= 2, got {self.demos}")
        check(self.episodes_per_cell >= 1, f"episodes_per_cell must be >= 1, got {self.episodes_per_cell}")
        check(self.plan_budget >= 1 and self.vision_plan_budget >= 1, "plan_budget and vision_plan_budget must be >= 1")
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(self.workers >= 1, f"workers must be >= 1, got {self.workers}")
        check(self.round_size >= 1, f"round_size must be >= 1, got {self.round_size}")
        check(self.eval_camera_hz >= 1 and schema.CONTROL_HZ % self.eval_camera_hz == 0,
              f"eval_camera_hz must divide the {schema.CONTROL_HZ} Hz control rate, got {self.eval_camera_hz}")
        check(self.vision_epochs >= 1 and self.vision_batch_size >= 1, "vision_epochs and vision_batch_size must be >= 1")
        check(self.corrective is None or self.corrective >= 0, f"corrective must be >= 0 or None, got {self.corrective}")
        check(self.corrective_mode in schema.CORRECTIVE_MODES,
              f"corrective_mode must be one of {', '.join(schema.CORRECTIVE_MODES)}, got {self.corrective_mode!r}")

    @property
    def corrective_episodes(self) -> int:
        """Corrective episodes the plan asks for (`corrective`, or its default for the policy)."""
        if self.corrective is not None:
            return self.corrective
        return 0 if self.policy == "mlp" else self.vision_corrective

    @property
    def demonstration_budget(self) -> int:
        """Demonstrations the plan may add (`plan_budget`; `vision_plan_budget` for the camera policy)."""
        return self.vision_plan_budget if self.policy == "vision" else self.plan_budget

    @property
    def rollout_camera_hz(self) -> int:
        """The camera rate evaluation rollouts record at (`eval_camera_hz` for mlp; the camera policy's own rate otherwise)."""
        return self.eval_camera_hz if self.policy == "mlp" else schema.CAMERA_HZ

    @property
    def rollout_camera_flag(self) -> str:
        """The `roboloop eval` option the demo's evaluations add for `rollout_camera_hz` ('' at the default rate)."""
        return f" --camera-hz {self.rollout_camera_hz}" if self.rollout_camera_hz != schema.CAMERA_HZ else ""

    @property
    def recorded_camera_size(self) -> tuple[int, int]:
        """The camera size demonstrations and rollouts are recorded at (`vision_camera_size` for the camera policy)."""
        return self.vision_camera_size if self.policy == "vision" else self.camera_size

    @property
    def query(self) -> str:
        """The curation query of both selections (QUERY; CORRECTIVE_QUERY when the plan adds corrective episodes)."""
        return CORRECTIVE_QUERY if self.corrective_episodes else QUERY


@dataclass
class DemoResult:
    """What the demo did and found (also what the tests check against the catalog)."""

    collected: int = 0
    successes: int = 0
    selections: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (train, holdout)
    runs: dict[str, str] = field(default_factory=dict)  # v1/v2 -> run id
    evals: dict[str, str] = field(default_factory=dict)  # v1/v2 -> eval id
    success_by: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # v1/v2 -> rows by cell
    gaps: list[dict[str, Any]] = field(default_factory=list)
    plan: str | None = None
    plan_collected: int = 0
    comparison: list[dict[str, Any]] = field(default_factory=list)
    sequential: dict[str, Any] | None = None
    worst_failure: dict[str, Any] | None = None
    report: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


Say = Callable[[str], None]
Progress = Callable[[str, int, int], None]


def _covered_conditions(cfg: DemoConfig):
    task = get_task(DEFAULT_TASK)
    return tuple(task.conditions({**COVERED, "lighting": light}) for light in CONTROL_LIGHTINGS)


def _spec(cfg: DemoConfig):
    w, h = cfg.recorded_camera_size
    return RecordingSpec(cameras=cfg.cameras, width=w, height=h)


def _count_covered_demos(catalog: Catalog, dataset: str) -> int:
    """Demonstrations already in the covered corner (the planted gap stays planted on re-runs)."""
    if dataset not in catalog.dataset_names():
        return 0
    t = catalog.segment_table(dataset)
    kind, yaw = (schema.friendly_column(schema.EPISODE, schema.EPISODE_KIND), schema.friendly_column(schema.SCENE, "yaw"))
    if t.num_rows == 0 or kind not in t.column_names or yaw not in t.column_names:
        return 0
    return sum(1 for k, y in zip(t.column(kind).to_pylist(), t.column(yaw).to_pylist()) if k == schema.KIND_DEMO and y == COVERED["yaw"])


def _selection(catalog: Catalog, cfg: DemoConfig, name: str, say: Say):
    """Load the selection `name` if a demo made it before, else run the query and save it."""
    try:
        sel = curate.load(catalog, name)
        say(f"      {name}: reusing the saved selection ({len(sel.train_ids)} train / {len(sel.holdout_ids)} holdout)")
        return sel
    except curate.UnknownSelectionError:
        pass
    sel = curate.save(catalog, curate.select(catalog, cfg.dataset, cfg.query, holdout=0.1), name)
    say(f"      {name}: {cfg.query!r} -> {len(sel.train_ids)} train / {len(sel.holdout_ids)} holdout (digest {sel.digest[:12]})")
    return sel


def demo_train_config(cfg: DemoConfig, selection: str) -> TrainConfig:
    """v1's training config (v2 reuses it with `--like`): the demo's epochs for mlp, the camera policy's budget for vision."""
    steps = cfg.steps or TrainConfig.episode_steps
    if cfg.policy != "vision":
        return TrainConfig(dataset=cfg.dataset, selection=selection, policy=cfg.policy, epochs=cfg.epochs, episode_steps=steps)
    w, h = cfg.vision_camera_size
    model = VisionConfig(image_width=w, image_height=h, aux_cube=cfg.vision_aux_cube, brightness=cfg.vision_brightness)
    return TrainConfig(dataset=cfg.dataset, selection=selection, policy="vision", epochs=cfg.vision_epochs,
                       batch_size=cfg.vision_batch_size, episode_steps=steps, model=model)


def _train(catalog: Catalog, cfg: DemoConfig, sel, like: str | None, say: Say, progress: Progress, label: str) -> str:
    """Train on `sel` (with `like`'s exact config when given) unless a finished run on the same ids exists."""
    for info in list_runs(catalog.workspace):
        if info.get("selection") == sel.name and info.get("selection_digest") == sel.digest and info.get("status") == "finished":
            say(f"      reusing finished run {info['run_id']} (same selection and ids)")
            return info["run_id"]
    if like:
        tcfg = load_config(catalog.workspace, like).replace(selection=sel.name)
    else:
        tcfg = demo_train_config(cfg, sel.name)

    def on_progress(p) -> None:
        if p.epoch_end:
            progress(f"train {label}", p.epoch, p.epochs)

    result = train(catalog, tcfg, on_progress=on_progress)
    hold = f", holdout loss {result.final_holdout_loss:.4f}" if result.final_holdout_loss is not None else ""
    say(f"      run {result.run_id}: {result.epochs_done} epochs in {result.wall_s:.0f}s, "
        f"train loss {result.final_train_loss:.4f}{hold}, {result.parameters} parameters")
    return result.run_id


def _find_eval(catalog: Catalog, cfg: DemoConfig, run_id: str, grid) -> dict[str, Any] | None:
    for row in reversed(list_evals(catalog.workspace, cfg.dataset)):
        if (row.get("policy") == run_id and row.get("grid") == grid.to_dict() and row.get("status") == "finished"
                and int(row.get("episodes_per_cell", 0)) >= cfg.episodes_per_cell):
            return row
    return None


def _eval_config(cfg: DemoConfig, run_id: str, grid, **kw):
    return EvalConfig(dataset=cfg.dataset, policy=run_id, grid=grid, episodes_per_cell=cfg.episodes_per_cell,
                      workers=cfg.workers, cameras=cfg.cameras, camera_size=cfg.recorded_camera_size,
                      camera_hz=cfg.rollout_camera_hz, steps=cfg.steps, **kw)


def _evaluate(catalog: Catalog, cfg: DemoConfig, run_id: str, grid, say: Say, progress: Progress, label: str) -> str:
    row = _find_eval(catalog, cfg, run_id, grid)
    if row:
        say(f"      reusing finished evaluation {row['eval_id']}")
        return row["eval_id"]
    total = len(grid.cells()) * cfg.episodes_per_cell
    done = {"n": 0}

    def on_result(_result) -> None:
        done["n"] += 1
        progress(f"eval {label}", done["n"], total)

    rep = evaluate(catalog, _eval_config(cfg, run_id, grid), on_result=on_result)
    say(f"      {rep.eval_id}: {rep.successes}/{rep.n} strict successes in {rep.wall_s:.0f}s")
    return rep.eval_id


def _rollouts(catalog: Catalog, cfg: DemoConfig, eval_id: str):
    return rollout_table(catalog, schema.evals_dataset(cfg.dataset), [eval_id])


def _print_success(rows: list[dict[str, Any]], by: list[str], say: Say) -> None:
    for r in rows:
        label = "  ".join(f"{b.split('.')[-1]}={r[b]}" for b in by)
        mark = "  (small n)" if r.get("small") else ""
        say(f"      {label:<28} {r['successes']:>3}/{r['n']:<3} {r['rate']:>5.0%}  [{r['ci_low']:.2f}, {r['ci_high']:.2f}]{mark}")


def run_demo(
    catalog: Catalog,
    config: DemoConfig | None = None,
    *,
    say: Say = print,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the whole loop on `config.dataset`; returns what happened (see the module docstring).

    Every stage that runs episodes (collect, evaluations, sequential rounds, the plan) shares one pool of
    `config.workers` worker processes, started once (`reuse_workers`)."""
    cfg = config or DemoConfig()
    with reuse_workers(cfg.workers):
        return _run_stages(_DemoRun(catalog, cfg, say, progress or (lambda stage, done, total: None)))


def _run_stages(demo: _DemoRun) -> DemoResult:
    """The twelve steps in order (see the module docstring), each timed (`DemoResult.seconds`)."""
    demo.collect_covered()
    demo.lap("collect")
    demo.refine()
    demo.lap("refine")
    sel1 = demo.curate_v1()
    demo.lap("curate v1")
    run1 = demo.train_v1(sel1)
    demo.lap("train v1")
    eval1 = demo.evaluate_v1(run1)
    demo.lap("eval v1")
    rows1 = demo.success_v1(eval1)
    gap = demo.gaps(eval1)
    demo.lap("analyze v1")
    demo.plan_and_collect(gap, eval1, run1)
    demo.lap("plan + collect")
    sel2 = demo.curate_v2(sel1)
    run2 = demo.train_v2(sel2, run1)
    demo.lap("curate + train v2")
    eval2, rows2 = demo.evaluate_v2(run2, eval1)
    demo.lap("eval v2")
    demo.compare_and_report(eval1, rows1, eval2, rows2)
    demo.lap("compare + report")
    return demo.out


class _DemoRun:
    """The demo's twelve steps, in order, sharing the config, the narration and what was found so far."""

    def __init__(self, catalog: Catalog, cfg: DemoConfig, say: Say, progress: Progress) -> None:
        self.catalog, self.cfg, self.say, self.progress = catalog, cfg, say, progress
        self.out = DemoResult()
        self.ds, self.evals_ds = cfg.dataset, schema.evals_dataset(cfg.dataset)
        self.grid = parse_grid(cfg.grid)
        self.by = [schema.friendly_column(schema.SCENE, axis) for axis in self.grid.to_dict()]
        self.clock = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Record the seconds since the previous lap under `stage`."""
        now = time.perf_counter()
        self.out.seconds[stage] = round(now - self.clock, 1)
        self.clock = now

    def _counter(self, stage: str, total: int) -> Callable[[Any], None]:
        """An `on_result` that reports `stage` progress out of `total`."""
        done = {"n": 0}

        def on_result(result) -> None:
            done["n"] += 1
            self.progress(stage, done["n"], total)
        return on_result

    # 1. collect: the covered corner only -----------------------------------------------------
    def collect_covered(self) -> None:
        cfg, ds, out, say = self.cfg, self.ds, self.out, self.say
        have = _count_covered_demos(self.catalog, ds)
        missing = max(0, cfg.demos - have)
        say(f"[1/12] collect: scripted handovers with the cube at yaw 0 (lighting {' / '.join(CONTROL_LIGHTINGS)}), "
            f"{have} already in '{ds}'")
        say(f"       $ roboloop collect --dataset {ds} --episodes {cfg.demos // 2} --yaw none --lighting normal   (and --lighting dim)")
        if missing:
            rep = collect(self.catalog, CollectConfig(dataset=ds, episodes=missing, conditions=_covered_conditions(cfg),
                                                                      workers=cfg.workers, spec=_spec(cfg), steps=cfg.steps),
                                  on_result=self._counter("collect", missing))
            out.collected, out.successes = len(rep.results), rep.successes
            say(f"       {out.successes}/{out.collected} strict successes, {rep.episodes_per_minute:.0f} episodes/min")

    # 2. refine -----------------------------------------------------------------------------------
    def refine(self) -> None:
        rr = refine(self.catalog, self.ds)
        self.say(f"[2/12] refine: signals for {len(rr.computed)} new episode(s) in layer '{schema.SIGNALS_LAYER}'   $ roboloop refine --dataset {self.ds}")

    # 3. curate v1 ----------------------------------------------------------------------------------
    def curate_v1(self):
        self.say(f"[3/12] curate v1: the training set is a query   $ roboloop curate --dataset {self.ds} --name {V1} --where \"{self.cfg.query}\" --holdout 0.1")
        sel1 = _selection(self.catalog, self.cfg, V1, self.say)
        self.out.selections[V1] = (len(sel1.train_ids), len(sel1.holdout_ids))
        return sel1

    # 4. train v1 ----------------------------------------------------------------------------------
    def train_v1(self, sel1) -> str:
        cfg = self.cfg
        self.say(f"[4/12] train v1 ({cfg.policy}) from the stream   $ roboloop train --dataset {self.ds} --selection {V1} "
                 f"{'--policy vision --epochs ' + str(cfg.vision_epochs) if cfg.policy == 'vision' else '--epochs ' + str(cfg.epochs)}")
        self.out.runs["v1"] = run1 = _train(self.catalog, cfg, sel1, None, self.say, self.progress, "v1")
        return run1

    # 5. evaluate v1 ------------------------------------------------------------------------------
    def evaluate_v1(self, run1: str) -> str:
        cfg = self.cfg
        self.say(f"[5/12] evaluate v1 on {self.grid} x {cfg.episodes_per_cell}   "
                 f"$ roboloop eval --run {run1} --grid '{cfg.grid}' --episodes-per-cell {cfg.episodes_per_cell}{cfg.rollout_camera_flag}")
        self.out.evals["v1"] = eval1 = _evaluate(self.catalog, cfg, run1, self.grid, self.say, self.progress, "v1")
        return eval1

    # 6. success by condition ---------------------------------------------------------------------
    def success_v1(self, eval1: str):
        rows1 = _rollouts(self.catalog, self.cfg, eval1)
        self.out.success_by["v1"] = success_by(rows1, self.by)
        self.say(f"[6/12] success by condition (v1)   $ roboloop success --dataset {self.evals_ds} --eval {eval1} --by {','.join(self.by)}")
        _print_success(self.out.success_by["v1"], self.by, self.say)
        return rows1

    # 7. gaps ---------------------------------------------------------------------------------------
    def gaps(self, eval1: str):
        gap = gaps(self.catalog, eval1)
        self.out.gaps = gap.rows()
        self.say(f"[7/12] gaps: cells ranked by the data (nothing told where the gap is)   $ roboloop gaps --eval {eval1}")
        for c in gap.cells:
            self.say(f"      #{c.rank} {c.cell:<28} {c.verdict:<24} success {c.successes}/{c.n}, "
                     f"training starts within tolerance for {c.covered}/{c.n} rollouts")
        return gap

    # 8. plan and targeted collection ---------------------------------------------------------------
    def plan_and_collect(self, gap, eval1: str, run1: str) -> None:
        cfg, ds, say, catalog = self.cfg, self.ds, self.say, self.catalog
        k = cfg.corrective_episodes
        the_plan = make_plan(gap, cfg.demonstration_budget, name=PLAN_NAME, dataset=ds, corrective=k, run=run1, mode=cfg.corrective_mode)
        self.out.plan = the_plan.name
        plan_file = catalog.workspace.root / f"{PLAN_NAME}.toml"
        save_plan(catalog.workspace, the_plan, plan_file)
        if k:
            n_corr = sum(it.count for it in the_plan.items if it.corrective)
            say(f"[8/12] plan: {the_plan.total - n_corr} demonstration(s) aimed at the gap and {n_corr} corrective episode(s) from v1 "
                f"({cfg.corrective_mode}) in the failing cells   $ roboloop plan --eval {eval1} --budget {cfg.demonstration_budget} --corrective {k} "
                f"-o {plan_file.name} && roboloop collect --plan {plan_file.name}")
        else:
            say(f"[8/12] plan: {the_plan.total} demonstration(s) aimed at the gap   $ roboloop plan --eval {eval1} --budget {cfg.plan_budget} "
                f"-o {plan_file.name} && roboloop collect --plan {plan_file.name}")
        for line in plan_summary(the_plan):
            say(f"      {line}")
        if the_plan.total:
            self._execute(the_plan)
        refine(catalog, ds)

    def _execute(self, the_plan: Plan) -> None:
        """Collect what the plan asks for; flag failed demonstrations; say demonstrations and corrective episodes apart."""
        cfg, catalog, say = self.cfg, self.catalog, self.say
        count, success = self._counter("collect (plan)", the_plan.total), {}

        def on_result(result) -> None:
            success[result.segment_id] = bool(result.success)
            count(result)
        run = execute_plan(catalog, the_plan, workers=cfg.workers, on_result=on_result, spec=_spec(cfg), steps=cfg.steps,
                           policy_source=functools.partial(resolve_policy, catalog.workspace))
        self.out.plan_collected = len(run.new_segment_ids)
        if run.failed_segment_ids:  # a quality problem becomes a flag the curation query already excludes
            flag(catalog, self.ds, reason=f"plan {the_plan.name}: failed strict success", segment_ids=run.failed_segment_ids)
        corrective = {s for it in the_plan.items if it.corrective for s in run.collected.get(it.slot, ())} & set(run.new_segment_ids)
        demos = [s for s in run.new_segment_ids if s not in corrective]
        flagged = f"; {len(run.failed_segment_ids)} failed and were flagged" if run.failed_segment_ids else ""
        if not corrective:
            say(f"      collected {len(demos)} new demonstration(s) ({run.successes} successful){flagged}")
            return
        say(f"      collected {len(demos)} new demonstration(s) ({sum(success.get(s, False) for s in demos)} successful){flagged} "
            f"and {len(corrective)} corrective episode(s) ({sum(success.get(s, False) for s in corrective)} succeeded while v1 drove; "
            "their labels are the expert's either way)")

    # 9. the same query, re-run -------------------------------------------------------------------
    def curate_v2(self, sel1):
        self.say(f"[9/12] curate v2: the same query, re-run   $ roboloop curate --dataset {self.ds} --name {V2} --where \"{self.cfg.query}\" --holdout 0.1")
        sel2 = _selection(self.catalog, self.cfg, V2, self.say)
        self.out.selections[V2] = (len(sel2.train_ids), len(sel2.holdout_ids))
        if sel2.where != sel1.where:
            self.say(f"      note: {V2} was saved with a different predicate ({sel2.where!r})")
        return sel2

    # 10. train v2 like v1 ------------------------------------------------------------------------
    def train_v2(self, sel2, run1: str) -> str:
        self.say(f"[10/12] train v2 with v1's config   $ roboloop train --like {run1} --selection {V2}")
        self.out.runs["v2"] = run2 = _train(self.catalog, self.cfg, sel2, run1, self.say, self.progress, "v2")
        return run2

    # 11. evaluate v2 on the same cells and seeds -------------------------------------------------
    def evaluate_v2(self, run2: str, eval1: str):
        cfg = self.cfg
        eval2 = None
        if cfg.sequential:
            eval2 = _sequential_v2(self.catalog, cfg, run2, eval1, self.grid, self.say, self.progress, self.out)
        if eval2 is None:
            self.say(f"[11/12] evaluate v2 on the same grid and seeds   $ roboloop eval --run {run2} --grid '{cfg.grid}' "
                     f"--episodes-per-cell {cfg.episodes_per_cell}")
            eval2 = _evaluate(self.catalog, cfg, run2, self.grid, self.say, self.progress, "v2")
        self.out.evals["v2"] = eval2
        rows2 = _rollouts(self.catalog, cfg, eval2)
        self.out.success_by["v2"] = success_by(rows2, self.by)
        _print_success(self.out.success_by["v2"], self.by, self.say)
        return eval2, rows2

    # 12. compare, open the worst failure, report ---------------------------------------------------
    def compare_and_report(self, eval1: str, rows1, eval2: str, rows2) -> None:
        out, say = self.out, self.say
        out.comparison = compare(rows1, rows2)
        say(f"[12/12] compare v1 -> v2 (paired on shared seeds, exact McNemar, Holm)   $ roboloop compare {eval1} {eval2}")
        for r in out.comparison:
            p = r.get("p_holm") if r.get("p_holm") is not None else r.get("p")
            say(f"      {str(r.get('group')):<28} {r['rate_a']:>5.0%} -> {r['rate_b']:>5.0%}  diff {r['diff']:+.2f} "
                f"[{r['diff_low']:+.2f}, {r['diff_high']:+.2f}]  p={p if p is None else f'{p:.2g}'}  {r['verdict']}")
        out.worst_failure = _worst_failure(self.catalog, self.evals_ds, rows1, out.success_by["v1"], self.by)
        if out.worst_failure:
            w = out.worst_failure
            say(f"      worst v1 failure: {w['segment_id']} ({w['where']}: {w.get('failure_kind')} at {w['at_s']:.2f}s, "
                f"the largest of its failure modes, {w['mode_count']} of {w['cell_failures']} failures)")
            say(f"        $ {w['open']}")
            if w.get("url"):
                say(f"        live (while this catalog runs): {w['url']}")
        path = Path(self.cfg.report)
        path = path if path.is_absolute() else self.catalog.workspace.root / path
        out.report = write_report(self.catalog, [eval1, eval2], path, labels=["v1", "v2"])
        say(f"      report: {out.report}   $ roboloop report --eval {eval1} --eval {eval2} -o report.html")


def _sequential_v2(catalog, cfg, run2, eval1, grid, say, progress, out) -> str | None:
    """v2 against v1 sequentially (stops per cell when decided), then topped up to the fixed grid."""
    row = _find_eval(catalog, cfg, run2, grid)
    if row:
        say(f"[11/12] evaluate v2: reusing finished evaluation {row['eval_id']}")
        out.sequential = row.get(schema.EVAL_SEQUENTIAL)
        return row["eval_id"]
    seq = SequentialConfig(round_size=cfg.round_size, max_per_cell=cfg.episodes_per_cell)
    say(f"[11/12] evaluate v2 against v1 until decided (paired seeds, anytime-valid, alpha {seq.alpha}, rounds of {seq.round_size})   "
        f"$ roboloop eval --run {run2} --against {eval1} --until-decided --round {seq.round_size} --max-per-cell {seq.max_per_cell}")
    done = {"n": 0}

    def on_result(_r) -> None:
        done["n"] += 1
        progress("eval v2 (sequential)", done["n"], len(grid.cells()) * cfg.episodes_per_cell)

    rep = evaluate_until_decided(catalog, _eval_config(cfg, run2, grid), against=eval1, seq=seq, on_result=on_result)
    eval2 = rep.eval_id
    row = eval_row(catalog.workspace, eval2) or {}
    out.sequential = row.get(schema.EVAL_SEQUENTIAL)
    for c in sequential_rows(row):
        say(f"      {c['cell']:<28} {c['decision']:<14} after {c['rollouts']:>2} paired rollouts "
            f"(round {c['stop_round']}; the fixed grid runs {cfg.episodes_per_cell})")
    gap_cells = {g["cell"] for g in out.gaps if g["verdict"] == "coverage_gap"}
    in_gap = [c for c in sequential_rows(row) if c["cell"] in gap_cells]
    if in_gap:
        used, fixed = sum(c["rollouts"] for c in in_gap), cfg.episodes_per_cell * len(in_gap)
        say(f"      on the gap cells the decision took {used} paired rollouts, the fixed grid {fixed} ({used / fixed:.0%})")
    say(f"      topping v2 up to the fixed grid for the report   $ roboloop eval --resume {eval2} --episodes-per-cell {cfg.episodes_per_cell}")
    evaluate(catalog, _eval_config(cfg, run2, grid, eval_id=eval2), resume=True, on_result=on_result)
    return eval2


def _worst_failure(catalog, evals_ds: str, rows, by_cell: list[dict[str, Any]], by: list[str]) -> dict[str, Any] | None:
    """The representative of the largest failure mode of the worst cell (lowest success), with the
    command and live URL that open it at its moment (`representative_failure`)."""
    fails = failures(rows, dataset=evals_ds, url_for=lambda sid, at: segment_url(catalog, evals_ds, sid, at))
    if not fails:
        return None
    worst = min(by_cell, key=lambda r: (r["rate"], -r["n"])) if by_cell else None
    pick = [f for f in fails if worst and all(f.get(b) == worst[b] for b in by)] or fails
    f = representative_failure(pick)
    if f is None:
        return None
    f["where"] = ", ".join(f"{b.split('.')[-1]}={f.get(b)}" for b in by)
    return f
