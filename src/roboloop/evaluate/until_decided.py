"""Evaluate until decided: a challenger rolled out on a baseline evaluation's seeds, paired, sequentially.

Library use::

    from roboloop.evaluate.run import EvalConfig, load_config
    from roboloop.evaluate.until_decided import evaluate_until_decided
    from roboloop.stats.sequential import SequentialConfig

    base = load_config(cat.workspace, "eval-v1")
    cfg = EvalConfig.from_dict({**base.to_dict(), "policy": "run-v2", "eval_id": None})
    rep = evaluate_until_decided(cat, cfg, against="eval-v1", seq=SequentialConfig(metric="stage"))
    rep.decisions            # {cell key: improved | regressed | no_difference | undecided}

**Pairs.** Pair ``i`` of a cell is the baseline's and the challenger's rollout on
``cell_seed(cell, i)`` (the evaluation seed rule: both face the identical scene). Pairs
enter the test in index order, ``seq.round_size`` per cell per round, all active cells
interleaved in one ``collect`` call per policy per round (workers stay busy; every round runs
on one pool of worker processes, started once: `roboloop.collect.pool.reuse_workers`). Where the
baseline evaluation lacks index ``i`` (it ran fewer rollouts than the test needs), the
baseline policy runs it first, recorded into the *baseline* evaluation (its eval id and
provenance, seed from the same rule; its row gains ``extended_by``/``extra_rollouts``).
A cell stops when its test decides or at ``seq.max_per_cell`` pairs; the evaluation when
every cell has. ``cfg.episodes_per_cell`` is not used by the sequential run: it is the
fixed grid that ``evaluate(cfg, resume=True)`` later tops the evaluation up to (only the
missing indices run), e.g. to show a full grid after deciding early.

**Row.** The challenger's evals row is the usual one (same provenance as ``evaluate``)
plus ``against`` and ``schema.EVAL_SEQUENTIAL``: ``SequentialDriver.result()`` (per cell
``decision``, ``n`` = pairs = challenger rollouts used, ``decided_at``, ``stop_round``,
``stopped``, the anytime-valid interval; ``overall``; ``config``; ``done``) plus
``metric``, ``against``, ``fixed_n`` (the baseline's episodes per cell) and ``pairs``
(per cell, the ``[baseline, challenger]`` values in index order).

**Resume** (``resume=True`` with ``cfg.eval_id``): the recorded pairs are replayed in index
order (the test is a deterministic function of the ordered pairs, so the sequence
continues: no restart, no extra looks that inflate the error). A cell replays at most the
pairs it had when last written plus the round it was in (a round cut short by an
interruption is finished first, reusing rollouts that finished; pairs added later, e.g. by
a top-up to a full grid, are never read as sequential evidence).

All input is checked before anything is written: a bad ``against`` (unknown, other
dataset, grid, steps or task), bad sequential settings, an existing eval id, an unknown
run raise :class:`SequentialEvalError` and leave no row and no rollout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from roboloop import rows, schema
from roboloop.catalog.index import load as load_index
from roboloop.catalog.index import write_row as write_index_row
from roboloop.collect.pool import reuse_workers
from roboloop.collect.run import EpisodeResult
from roboloop.envs import get_task
from roboloop.evaluate.run import (
    EvalConfig,
    EvalReport,
    EvaluateError,
    Grid,
    PolicySource,
    cell_key,
    cell_seed,
    cell_task,
    check_new,
    collect_rollouts,
    eval_row_base,
    final_status,
    load_config,
    new_eval_id,
    no_run_provenance,
    resolve_policy,
    resumable_row,
    rollout_jobs,
    rollout_outcomes,
    run_dataset,
    source_camera,
    writing_evals,
)
from roboloop.evaluate.table import (
    DECISION_COLUMNS,
    attach_decisions,
    eval_row,
    sequential_between,
    sequential_of,
    sequential_rows,
)
from roboloop.stats.sequential import (
    CellProgress,
    SequentialConfig,
    SequentialDriver,
    SequentialError,
    plan_eval,
    stage_distributions,
    stage_score,
)

__all__ = [
    "DECISION_COLUMNS",
    "RoundEvent",
    "SequentialEvalError",
    "SequentialReport",
    "attach_decisions",
    "challenger_config",
    "evaluate_until_decided",
    "metric_value",
    "plan_from_eval",
    "sequential_between",
    "sequential_of",
    "sequential_rows",
]


class SequentialEvalError(EvaluateError):
    """A sequential evaluation that cannot run as asked (nothing was written); the message says what to change."""


@dataclass
class RoundEvent:
    """What `on_round` receives: before a round runs (`finished` False) and after it was fed to the tests."""

    round: int
    """Round number (1-based; a round cut short by an interruption keeps its number)."""
    finished: bool
    request: dict[str, int]
    """Pairs each active cell gets this round."""
    progress: list[CellProgress]
    """Every cell's state (decision, pairs, stop round)."""

    @property
    def active(self) -> int:
        return sum(p.stopped is None for p in self.progress)

    def decisions(self) -> dict[str, int]:
        """Decision -> number of cells (undecided included)."""
        out = dict.fromkeys(schema.DECISIONS, 0)
        for p in self.progress:
            out[p.state.decision] += 1
        return out


@dataclass
class SequentialReport(EvalReport):
    """What one `evaluate_until_decided` call did (results = the challenger's new rollouts)."""

    against: str = ""
    seq: SequentialConfig | None = None
    sequential: dict[str, Any] = field(default_factory=dict)
    """The row's `schema.EVAL_SEQUENTIAL` value (see the module docstring)."""
    baseline_results: list[EpisodeResult] = field(default_factory=list)
    """Baseline rollouts run by this call (top-ups recorded into the baseline evaluation)."""

    @property
    def decisions(self) -> dict[str, str]:
        return {c["cell"]: c["decision"] for c in self.sequential.get("cells", [])}

    @property
    def overall(self) -> dict[str, Any]:
        return dict(self.sequential.get("overall") or {})

    @property
    def done(self) -> bool:
        return bool(self.sequential.get("done"))


def metric_value(outcome: Mapping[str, Any], metric: str, n_stages: int = len(schema.STAGES)) -> float:
    """A rollout's value for the test: 0/1 success, or the stage score in [0, 1] (its task has `n_stages` stages)."""
    if metric == schema.METRIC_SUCCESS:
        if outcome.get(schema.OUTCOME_SUCCESS) is None:
            raise SequentialEvalError("a rollout has no outcome (unlabelled): label it with `roboloop label` first; "
                                      "an unlabelled rollout is never counted as a failure")
        return float(bool(outcome[schema.OUTCOME_SUCCESS]))
    stage = outcome.get(schema.OUTCOME_STAGE)
    if stage is None:
        raise SequentialEvalError("a rollout lacks outcome.stage: the stage metric needs rollouts recorded with stages; use --metric success")
    return stage_score(int(stage), n_stages)


# --- validation (nothing written) ------------------------------------------------------------------

def _as_seq(seq: SequentialConfig | Mapping[str, Any]) -> SequentialConfig:
    try:
        out = seq if isinstance(seq, SequentialConfig) else SequentialConfig.from_dict(seq)
    except (TypeError, ValueError) as exc:
        raise SequentialEvalError(str(exc)) from None
    if out.max_per_cell < out.round_size:
        raise SequentialEvalError(f"max_per_cell ({out.max_per_cell}) is smaller than the round size ({out.round_size}): "
                                  "raise --max-per-cell or lower --round")
    return out


def _baseline(ws, against: str, cfg: EvalConfig) -> tuple[dict[str, Any], EvalConfig]:
    row = eval_row(ws, against) if isinstance(against, str) and against else None
    if row is None:
        known = [r[rows.KEY_FIELD] for r in rows.read_rows(ws, schema.EVALS_TABLE)]
        raise SequentialEvalError(f"no evaluation {against!r} to compare against in {ws.root}; "
                                  f"evaluations: {', '.join(known) or '(none)'} (list them with `roboloop evals`)")
    base = EvalConfig.from_dict(row["config"])
    if base.dataset != cfg.dataset:
        raise SequentialEvalError(f"--against {against} evaluated dataset {base.dataset!r}, not {cfg.dataset!r}: "
                                  f"compare on the same dataset (--dataset {base.dataset})")
    if base.grid != cfg.grid:
        raise SequentialEvalError(f"--against {against} ran on grid '{base.grid}', not '{cfg.grid}': a paired comparison "
                                  "needs the same cells; drop --grid to use the baseline's")
    for name in ("steps", "task"):
        if getattr(base, name) != getattr(cfg, name):
            raise SequentialEvalError(f"--against {against} ran with {name}={getattr(base, name)!r}, not "
                                      f"{getattr(cfg, name)!r}: paired rollouts must run the same episode")
    if cfg.eval_id is not None and cfg.eval_id == against:
        raise SequentialEvalError(f"an evaluation cannot be compared against itself ({against!r})")
    return row, base


def _source(ws, cfg: EvalConfig, factory) -> PolicySource:
    source = (PolicySource(cfg.policy, factory, provenance=no_run_provenance())
              if factory is not None else resolve_policy(ws, cfg.policy))
    if source.dataset and source.dataset != cfg.dataset:
        raise SequentialEvalError(f"run {cfg.policy!r} was trained on dataset {source.dataset!r}, not {cfg.dataset!r}")
    return source


def _contiguous(values: Mapping[tuple[str, int], Any], cell: str) -> int:
    n = 0
    while (cell, n) in values:
        n += 1
    return n


# --- the run -----------------------------------------------------------------------------------

def evaluate_until_decided(
    catalog,
    cfg: EvalConfig,
    *,
    against: str,
    seq: SequentialConfig | Mapping[str, Any] | None = None,
    on_result: Callable[[EpisodeResult], None] | None = None,
    on_round: Callable[[RoundEvent], None] | None = None,
    resume: bool = False,
    policy_factory: Callable[[Any], Any] | None = None,
    baseline_factory: Callable[[Any], Any] | None = None,
) -> SequentialReport:
    """Roll out `cfg.policy` (challenger) against evaluation `against` (baseline) until every cell is decided.

    See the module docstring. `on_result(result)` after every registered rollout (baseline
    top-ups included: `result.properties["episode"]["eval_id"]` tells which);
    `on_round(RoundEvent)` before and after each round. `policy_factory` replaces the
    challenger's policy (tests, custom policies; run provenance "none");
    `baseline_factory` the baseline's (needed only when the baseline must be topped up
    and its policy is not `scripted` or a training run).
    The process holds the writer locks of both evaluations throughout (it may top the
    baseline up): another live writer of either is refused (`writing_evals`).
    """
    if not resume and cfg.eval_id is None:
        cfg = EvalConfig.from_dict({**cfg.to_dict(), "eval_id": new_eval_id()})
    if cfg.eval_id is None:
        raise SequentialEvalError("resume needs the eval id of the sequential evaluation to continue")
    ids = [str(cfg.eval_id)] + ([against] if isinstance(against, str) and against else [])
    with writing_evals(catalog.workspace, *ids, error=SequentialEvalError):
        return _until_decided(catalog, cfg, against=against, seq=seq, on_result=on_result, on_round=on_round,
                              resume=resume, policy_factory=policy_factory, baseline_factory=baseline_factory)


def _until_decided(catalog, cfg: EvalConfig, *, against, seq, on_result, on_round, resume, policy_factory,
                   baseline_factory) -> SequentialReport:
    """:func:`evaluate_until_decided` under the writer locks of both evaluations."""
    ws = catalog.workspace
    seq = _as_seq(seq if seq is not None else SequentialConfig())
    base_row, base_cfg = _baseline(ws, against, cfg)
    previous = _previous_row(ws, cfg, against, seq) if resume else None
    if not resume:
        try:
            check_new(ws, cfg)
        except EvaluateError as exc:
            raise SequentialEvalError(str(exc)) from None
    source = _source(ws, cfg, policy_factory)
    if cfg.eval_id is None:
        cfg = EvalConfig.from_dict({**cfg.to_dict(), "eval_id": new_eval_id()})
    run = _SequentialRun(catalog, cfg, against, seq, base_row, base_cfg, source, previous,
                         on_result=on_result, on_round=on_round)
    run.load_recorded(resume)
    run.prepare_baseline(baseline_factory)
    with reuse_workers(cfg.workers):  # one pool of workers for every round (and baseline top-up), started once
        return run.run()


def _previous_row(ws, cfg: EvalConfig, against: str, seq: SequentialConfig) -> dict[str, Any]:
    """The row of the sequential evaluation to resume, checked against the settings it is resumed with."""

    def sequential_settings(previous: dict[str, Any]) -> None:
        stored = previous.get(schema.EVAL_SEQUENTIAL)
        if not stored:
            raise SequentialEvalError(f"{cfg.eval_id!r} is not a sequential evaluation; resume it with plain `eval --resume`")
        if previous.get("against") != against:
            raise SequentialEvalError(f"{cfg.eval_id!r} was compared against {previous.get('against')!r}, not {against!r}")
        if SequentialConfig.from_dict(stored["config"]) != seq:
            raise SequentialEvalError(f"cannot resume {cfg.eval_id!r} with other sequential settings "
                                      f"(stored: {stored['config']}); resume it with those")

    try:
        return resumable_row(ws, cfg, also=sequential_settings)
    except SequentialEvalError:
        raise
    except EvaluateError as exc:
        raise SequentialEvalError(str(exc)) from None


def _replayed_pairs(keys: list[str], previous: Mapping[str, Any] | None, seq: SequentialConfig,
                    base_vals: Mapping[tuple[str, int], float],
                    chal_vals: Mapping[tuple[str, int], float]) -> dict[str, list[tuple[float, float]]]:
    """The recorded pairs per cell, in index order, capped where the live run stood (module docstring)."""
    stored_cells = {c["cell"]: c for c in ((previous or {}).get(schema.EVAL_SEQUENTIAL) or {}).get("cells", [])}
    observed: dict[str, list[tuple[float, float]]] = {}
    for k in keys:
        st = stored_cells.get(k, {})
        n0 = int(st.get("n") or 0)
        cap = n0 if st.get("stopped") else n0 + min(seq.round_size - n0 % seq.round_size, seq.max_per_cell - n0)
        pairs = []
        while len(pairs) < cap and (k, len(pairs)) in base_vals and (k, len(pairs)) in chal_vals:
            pairs.append((base_vals[(k, len(pairs))], chal_vals[(k, len(pairs))]))
        observed[k] = pairs
    return observed


class _SequentialRun:
    """One sequential evaluation once its input is checked: the recorded pairs, the driver, the rounds, the row."""

    def __init__(self, catalog, cfg: EvalConfig, against: str, seq: SequentialConfig, base_row: dict[str, Any],
                 base_cfg: EvalConfig, source: PolicySource, previous: dict[str, Any] | None, *,
                 on_result: Callable[[EpisodeResult], None] | None,
                 on_round: Callable[[RoundEvent], None] | None) -> None:
        self.catalog, self.ws, self.cfg, self.against, self.seq = catalog, catalog.workspace, cfg, against, seq
        self.base_row, self.base_cfg, self.source, self.previous = base_row, base_cfg, source, previous
        self.on_result, self.on_round = on_result, on_round
        self.spec = cfg.spec(*source_camera(source))
        self.eval_id = str(cfg.eval_id)
        self.evals_ds = cfg.evals_dataset
        cells = cfg.grid.cells()
        self.keys = [cell_key(c, cfg.task) for c in cells]
        self.number = {k: i for i, k in enumerate(self.keys)}
        self.by_key = dict(zip(self.keys, cells))
        self.n_stages = {k: len(get_task(cell_task(c, cfg.task)).stages) for k, c in self.by_key.items()}
        self.base_source: PolicySource | None = None
        self.base_spec = None

    # --- before anything is written

    def load_recorded(self, resume: bool) -> None:
        """Read both evaluations' recorded rollouts and start the driver on the pairs to replay."""
        outcomes = rollout_outcomes(self.catalog, self.evals_ds, [self.against, self.eval_id])
        self.base_out, self.chal_out = outcomes[self.against], outcomes[self.eval_id] if resume else {}
        self.base_vals = {p: self.value(p, o) for p, o in self.base_out.items()}
        self.chal_vals = {p: self.value(p, o) for p, o in self.chal_out.items()}
        self.observed = _replayed_pairs(self.keys, self.previous, self.seq, self.base_vals, self.chal_vals)
        try:
            self.drv = SequentialDriver(self.keys, self.seq, observed=self.observed)
        except SequentialError as exc:
            raise SequentialEvalError(str(exc)) from None

    def prepare_baseline(self, baseline_factory) -> None:
        """Resolve the baseline's policy when some running cell may need a pair the baseline lacks."""
        running = {p.cell for p in self.drv.progress() if p.stopped is None}
        if not any(_contiguous(self.base_vals, k) < self.seq.max_per_cell for k in running):
            return
        try:
            self.base_source = _source(self.ws, self.base_cfg, baseline_factory)
        except EvaluateError as exc:
            raise SequentialEvalError(
                f"the baseline {self.against!r} has fewer rollouts than the test may need and its policy cannot be run: {exc}"
            ) from None
        self.base_spec = self.base_cfg.spec(*source_camera(self.base_source))

    # --- from here on, rows and rollouts are written

    def run(self) -> SequentialReport:
        """Run rounds until the driver has none left, writing the row after each."""
        self.report = SequentialReport(self.eval_id, self.cfg, self.keys, skipped=sum(len(v) for v in self.observed.values()),
                                       against=self.against, seq=self.seq)
        self.wall_before = float(self.previous.get("wall_s", 0.0)) if self.previous else 0.0
        self.row = {
            **eval_row_base(self.cfg, self.eval_id, self.source, self.spec, self.keys, self.previous),
            "against": self.against,
        }
        t0 = time.perf_counter()
        with final_status(self.report, self.write, t0, self.ws):  # an interrupt from here on leaves the row `interrupted`
            self.write("running")
            while req := self.drv.next_round():
                round_no = max(-(-(self.drv.tests[k].n + n) // self.seq.round_size) for k, n in req.items())
                if self.on_round is not None:
                    self.on_round(RoundEvent(round_no, False, dict(req), self.drv.progress()))
                self.run_round(req)
                self.report.wall_s = time.perf_counter() - t0
                self.write("running")
                if self.on_round is not None:
                    self.on_round(RoundEvent(round_no, True, dict(req), self.drv.progress()))
        return self.report

    def run_round(self, req: Mapping[str, int]) -> None:
        """Roll out the pairs `req` asks for (baseline top-ups first) and feed them to the tests."""
        drv = self.drv
        wanted = sorted(((k, i) for k, n in req.items() for i in range(drv.tests[k].n, drv.tests[k].n + n)),
                        key=lambda ki: (ki[1], self.number[ki[0]]))  # cells interleaved: index 0 of every cell first
        todo_base = [self.job(k, i) for k, i in wanted if (k, i) not in self.base_vals]
        if todo_base:
            self.top_up_baseline(todo_base)
        todo_chal = [self.job(k, i) for k, i in wanted if (k, i) not in self.chal_vals]
        if todo_chal:
            cfg = self.cfg
            collect_rollouts(self.catalog, self.evals_ds, rollout_jobs(self.eval_id, self.source, todo_chal, self.cfg.task), spec=self.spec,
                             task=cfg.task, policy_factory=self.source.factory, steps=cfg.steps, workers=cfg.workers,
                             on_result=self.recorder(self.chal_vals, self.chal_out, self.report.results))
        drv.add_round({k: [(self.base_vals[(k, i)], self.chal_vals[(k, i)]) for i in range(drv.tests[k].n, drv.tests[k].n + n)]
                       for k, n in req.items()})

    def job(self, k: str, i: int) -> tuple:
        return (self.number[k], self.by_key[k], k, i, cell_seed(k, i))

    def top_up_baseline(self, todo: list[tuple]) -> None:
        """Run the baseline's missing pairs, recorded into the baseline evaluation (its row says by whom)."""
        base_cfg, base_source = self.base_cfg, self.base_source
        n_before = len(self.report.baseline_results)
        try:
            collect_rollouts(self.catalog, self.evals_ds, rollout_jobs(self.against, base_source, todo, base_cfg.task), spec=self.base_spec,
                             task=base_cfg.task, policy_factory=base_source.factory, steps=base_cfg.steps,
                             workers=self.cfg.workers, on_result=self.recorder(self.base_vals, self.base_out, self.report.baseline_results))
        finally:
            if len(self.report.baseline_results) > n_before:
                self.extend_baseline(len(self.report.baseline_results) - n_before)

    def value(self, pair: tuple[str, int], outcome: Mapping[str, Any]) -> float:
        """The test value of a rollout of `pair` (cell key, index): the stage score counts its cell's task's stages."""
        return metric_value(outcome, self.seq.metric, self.n_stages.get(pair[0], len(schema.STAGES)))

    def recorder(self, values: dict, outs: dict, sink: list) -> Callable[[EpisodeResult], None]:
        """What each finished rollout goes through: indexed, its outcome and test value kept, passed on."""
        def done(result: EpisodeResult) -> None:
            write_index_row(self.ws, self.evals_ds, result.segment_id, result.properties)
            ep = result.properties[schema.EPISODE]
            pair = (str(ep[schema.EPISODE_CELL]), int(ep[schema.EPISODE_INDEX_IN_CELL]))
            outs[pair] = dict(result.outcome)
            values[pair] = self.value(pair, result.outcome)
            sink.append(result)
            if self.on_result is not None:
                self.on_result(result)
        return done

    def seq_result(self) -> dict[str, Any]:
        res = self.drv.result()
        res.update(metric=self.seq.metric, against=self.against, fixed_n=self.base_cfg.episodes_per_cell,
                   pairs={k: [[a, b] for a, b in self.pairs_of(k)] for k in self.keys})
        return res

    def pairs_of(self, k: str) -> list[tuple[float, float]]:
        return [(self.base_vals[(k, i)], self.chal_vals[(k, i)]) for i in range(self.drv.tests[k].n)]

    def write(self, status: str) -> None:
        """The challenger's evals row, with the sequential result so far."""
        drv, keys = self.drv, self.keys
        self.report.sequential = self.seq_result()
        rows.write_row(self.ws, schema.EVALS_TABLE, self.eval_id, {
            **self.row, "status": status, "planned": sum(drv.tests[k].n for k in keys) + sum(drv.pending.values()),
            "finished": len(self.chal_vals), "successes": sum(bool(o[schema.OUTCOME_SUCCESS]) for o in self.chal_out.values()),
            "wall_s": round(self.wall_before + self.report.wall_s, 3), "updated_at": rows.now_iso(),
            schema.EVAL_SEQUENTIAL: self.report.sequential,
        })

    def extend_baseline(self, n_new: int) -> None:
        latest = eval_row(self.ws, self.against) or self.base_row
        extended = sorted(set(latest.get("extended_by") or []) | {self.eval_id})
        rows.write_row(self.ws, schema.EVALS_TABLE, self.against, {
            **latest, "extended_by": extended, "extra_rollouts": int(latest.get("extra_rollouts") or 0) + n_new,
            "updated_at": rows.now_iso(),
        })


# --- reading and planning --------------------------------------------------------------------------

def challenger_config(workspace, against: str, *, run: str | None = None, dataset: str | None = None,
                      grid: Grid | None = None, **options: Any) -> EvalConfig:
    """The config of a challenger evaluated against evaluation `against`: the baseline's grid, episodes per cell,
    steps, task and recorded cameras (names, size, rate) unless given; the dataset is the run's (or the baseline's);
    `options` that are not None (EvalConfig fields) replace the defaults, as :func:`roboloop.config.resolve` does."""
    base = load_config(workspace, against)
    if dataset is None:
        dataset = run_dataset(workspace, run) if run else base.dataset
    given = {k: v for k, v in options.items() if v is not None}
    return EvalConfig.from_dict({
        "episodes_per_cell": base.episodes_per_cell, "steps": base.steps, "task": base.task,
        "cameras": base.cameras, "camera_size": base.camera_size, "camera_hz": base.camera_hz, **given,
        "dataset": dataset, "policy": run or schema.POLICY_SCRIPTED, "grid": grid if grid is not None else base.grid,
    })


def plan_from_eval(
    workspace,
    eval_id: str,
    *,
    effect: float = 0.15,
    alpha: float = 0.05,
    power: float = 0.8,
    metric: str = schema.METRIC_SUCCESS,
    margin: float = 0.1,
    max_per_cell: int = 400,
    round_size: int = 1,
    n_sim: int = 1000,
    catalog: Any = None,
) -> list[dict[str, Any]]:
    """`sequential.plan_eval` over the baseline evaluation's observed per-cell rates (success) or stage distributions.

    Reads the rollout index (`catalog`, a Catalog or a function returning one, rebuilds it
    when stale). Rows: cell, baseline n, plus plan_eval's fields (fixed_n, sequential_mean,
    sequential_p90, ...).
    """
    row = eval_row(workspace, eval_id)
    if row is None:
        known = [r[rows.KEY_FIELD] for r in rows.read_rows(workspace, schema.EVALS_TABLE)]
        raise SequentialEvalError(f"no evaluation {eval_id!r} in {workspace.root}; evaluations: {', '.join(known) or '(none)'}")
    cell_col = f"{schema.EPISODE}.{schema.EPISODE_CELL}"
    ev_col = f"{schema.EPISODE}.{schema.EPISODE_EVAL_ID}"
    ok_col = f"{schema.OUTCOME}.{schema.OUTCOME_SUCCESS}"
    rollouts = [r for r in load_index(workspace, row["evals_dataset"], catalog) if r.get(ev_col) == eval_id]
    if not rollouts:
        raise SequentialEvalError(f"evaluation {eval_id!r} has no recorded rollouts to plan from")
    counts: dict[str, list[int]] = {}
    for r in rollouts:
        if r.get(ok_col) is None:
            continue  # unlabelled (no outcome): not a failure, not in any rate
        c = counts.setdefault(str(r[cell_col]), [0, 0])
        c[0] += 1
        c[1] += int(bool(r.get(ok_col)))
    order = [k for k in row.get("cells") or sorted(counts) if k in counts]
    if metric == schema.METRIC_STAGE:
        dists = stage_distributions(rollouts)
        spec: dict[str, Any] = {k: dists[k] for k in order}
    else:
        spec = {k: counts[k][1] / counts[k][0] for k in order}
    try:
        plan = plan_eval(spec, effect, alpha, power, metric=metric, margin=margin, max_per_cell=max_per_cell,
                         round_size=round_size, n_sim=n_sim)
    except SequentialError as exc:
        raise SequentialEvalError(str(exc)) from None
    for p in plan:
        p["baseline_n"] = counts[p["cell"]][0]
    return plan
