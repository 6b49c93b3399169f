"""Demonstration value: which training demonstrations help or hurt a policy in closed loop (`roboloop value`).

CUPID (Agia et al., CoRL 2025) scores a demonstration d by the first-order effect of up-weighting it on
the policy's expected return, estimated from rollouts::

    value(d) ~ sum_r (R_r - mean R) * < grad log pi(tau_r), -grad L_d >

where L_d is d's training loss and pi(tau_r) the likelihood of rollout r's actions. roboloop's policies
are deterministic L1 regressors of action chunks. An L1 loss is the negative log-likelihood of a Laplace
distribution around the prediction, so "the likelihood of a rollout's actions" is read as minus the
policy's training loss on that rollout: its recorded state at each step against the chunk of actions the
robot *actually executed* over the next K steps (temporal ensembling and the states reached make them
differ from the chunk predicted there; the actions the policy predicted at one step would give a zero
gradient). With that::

    value(d) = < grad L_d , G >,   G = sum_r (R_r - mean R) * grad L_r / |grad L_r| / n_rollouts

at the run's final weights (no Hessian: TracIn-style, one checkpoint), with R_r = strict success (0/1; or,
with `metric="stage"`, partial credit: the furthest stage reached / the last stage, for when nearly every
rollout fails)
and each rollout's gradient normalized so that no single rollout dominates. A positive value: a gradient
step on d makes the policy more likely to act as it did in successful rollouts and less as in failed
ones (it helps); negative: the opposite. Values are divided by the largest absolute value, so they lie in
[-1, 1]; their sign and order are what to read.

**The `kernel` estimator** (`estimator="kernel"`). For a deterministic policy the executed-action loss gradient
above is small and noisy (the robot executed nearly what the policy predicted), and it cannot say *which*
demonstration taught a behaviour. What a gradient step on demonstration d does to the policy's predictions at a
rollout's states is the policy's tangent kernel between the two: `K(d, r) = sum over their samples of
<d f(s_d)/d theta, d f(s_r)/d theta>`. A failed rollout's behaviour was taught by the demonstrations with a large
kernel to it; so::

    value(d) = mean_r (R_r - mean R) * cos(k_d, k_r)

with `k_e` an episode's output gradients, summed over its samples, under K random sign patterns over the
predicted chunk (a Rademacher estimate of the kernel; read through the policy's own L1 `loss` at a target just
beside its prediction, whose gradient is exactly the projection), count-sketched to `SKETCH_WIDTH` values, less
their mean over all the episodes (the component every episode shares moves every prediction alike). It does not
need the rollouts' actions to differ from the predictions, and costs K backward passes per episode.

**The `expert` estimator** (`estimator="expert"`). Both estimators above read "helps" off the rollouts' outcomes.
Where an expert can say what the policy *should* have done at the states it drove into, there is a target: the
task's corrective expert labels every state of the run's own rollouts (`roboloop collect --corrective --run RUN
--mode dagger`: the policy drives, the expert only labels, `/control/expert_action`; on a robot, the steps a person
took over, `/control/source` = 1). Each such episode e gets, instead of a success, the policy's log-likelihood of
the expert's actions at its labelled steps: for an L1 policy (a Laplace distribution around the prediction, its
scale fitted per episode) that is, up to a constant, `l_e = -log(mean |prediction - expert label|)`. Then, as the
`kernel` estimator::

    value(d) = mean_e (l_e - mean l) * cos(k_d, k_e)

a demonstration scores low when the states where the policy acts least like the expert are those whose behaviour
it learned from it. The loss-gradient form of the same target (`<grad L_d, grad L_E>`, TracIn against the expert's
labels) was measured first and ranked the planted demonstrations no better than chance: at the final weights an
L1 demonstration gradient is mostly the sign of fitted noise (benchmarks/README.md, "issue 24, third session").
It needs no outcome contrast, so it works when every rollout fails or succeeds; `signals.value_eval` names the
labels' source, `corrective:DATASET` (the run's corrective episodes in DATASET).

The cost is one backward pass per training demonstration and per rollout (on the CPU: seconds for 50
demonstrations and 60 rollouts), against retraining on subsets (datamodels: K subset policies, each
evaluated on the same seeds, minutes each here): see README "Which demonstrations help" for the
measurement.

The values are written as the signal `signals.value` of each training demonstration (the refine layer
machinery: a new version of its `signals` layer, `signal_versions.value`), with `signals.value_run` and
`signals.value_eval` naming the run and the evaluation they came from, so curation is a query:
`curate --where "signals.value > 0"` or `--order "signals.value desc"`.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from roboloop import schema
from roboloop.analyze.rollouts import rollout_table
from roboloop.analyze.value_signal import describe, stored_values, uses_value
from roboloop.config import Config, check
from roboloop.envs import DEFAULT_TASK, get_task
from roboloop.errors import RoboloopError, UnknownEvaluationError
from roboloop.evaluate.run import eval_row
from roboloop.refine.layers import write_signals
from roboloop.stream import EpisodeStream
from roboloop.train import load_policy, run_info
from roboloop.train.corrective import control_fields, expert_targets, segment_labelling
from roboloop.train.features import ACTION, encode_batch, stream_fields
from roboloop.train.tasks import segment_tasks

__all__ = ["ESTIMATORS", "EXPERT_VERSION", "KERNEL_VERSION", "LABELS_PREFIX", "VALUE_VERSION", "ValueConfig", "DemoValueError", "ValueResult", "demonstration_value", "describe", "episode_gradients", "expert_losses", "expert_values", "influence_values", "kernel_values", "stored_values", "uses_value"]

VALUE_VERSION = 1
"""Version of the estimator, recorded as `signal_versions.value`: 1 the `loss` estimator, 2 the `kernel` one, 3 the `expert` one."""
KERNEL_VERSION = 2
"""`signal_versions.value` of values from the `kernel` estimator."""
EXPERT_VERSION = 3
"""`signal_versions.value` of values from the `expert` estimator."""
LABELS_PREFIX = "corrective:"
"""`signals.value_eval` of `expert` values: this prefix and the dataset of the corrective episodes whose labels were the target."""

Progress = Callable[[int, int], None]

ESTIMATORS = ("loss", "kernel", "expert")
"""`ValueConfig.estimator`: `loss` (the rollouts' executed-action loss gradients), `kernel` (the policy's tangent kernel)
or `expert` (the tangent kernel weighted by how well the policy matches an expert's labels where it drove)."""
SKETCH_WIDTH = 8192
"""Values per count sketch of an output gradient (the `kernel` estimator)."""
PROJECTION_SEED = 24
"""Seed of the `kernel` estimator's random projections (fixed: the same run and evaluation give the same values)."""
LOSS_FLOOR = 1e-9
"""The `expert` estimator's smallest expert loss (a policy that matches the labels exactly: a finite log-likelihood)."""
OFFSET = 1e-3
"""How far beside the prediction the `kernel` estimator's L1 targets lie (relative): only the sign matters."""


class DemoValueError(RoboloopError, ValueError):
    """Demonstration value cannot be estimated from what was given (the message says what to do)."""


@dataclass(frozen=True)
class ValueConfig(Config):
    """`roboloop value`: which run's demonstrations to value, from which of its evaluations."""

    run: str = ""
    """Training run whose demonstrations are valued (its final weights and its selection's train episodes)."""
    eval: str = ""
    """An evaluation of that run: its rollouts' outcomes say what helped (`loss` and `kernel`; `expert` reads `labels` instead)."""
    metric: str = schema.METRIC_SUCCESS
    """The rollout outcome the values contrast: `success` (strict, 0/1) or `stage` (partial credit: furthest stage / last stage; use it when nearly every rollout fails or succeeds)."""
    estimator: str = "kernel"
    """The default `kernel` needs no expert and, on the planted problems measured (benchmarks/README.md, "Demonstration value"), put 0.93-1.00 of the planted demonstrations among the lowest-valued where `loss` put 0.13-0.40. `loss`: a demonstration's loss gradient against the outcome-weighted gradients of the rollouts' executed-action loss (CUPID read for an L1 policy); `kernel`: the outcome-weighted similarity, in the policy's tangent kernel, between the demonstration's states and the rollouts' (which demonstrations taught the behaviour of the failed rollouts); `expert`: as `kernel`, with each of the run's corrective episodes (`roboloop collect --corrective --run RUN --mode dagger`) weighted by the policy's log-likelihood of the expert's labels there instead of a success (which demonstrations taught the behaviour where the policy departs from the expert)."""
    labels: str = ""
    """`expert` only: the dataset holding the run's corrective episodes (`episode.corrected_run` = the run) whose expert labels are the target ("": the run's dataset)."""
    projections: int = 8
    """`kernel` and `expert`: random projections of the predicted chunk that estimate the kernel (more: less noise, proportionally slower)."""
    min_rollouts: int = 10
    """Fewest judged rollouts to estimate anything from."""
    min_each: int = 2
    """Fewest successes and fewest failures among them (with none of one kind there is nothing to contrast)."""
    batch_size: int = 2048
    """Samples per streamed batch while computing gradients."""
    write: bool = True
    """Write `signals.value` into the demonstrations' signals layer (False: only return the values)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(isinstance(self.run, str) and self.run != "", "run must name a training run (roboloop runs lists them)")
        if self.estimator == "expert":
            check(self.eval == "", "the expert estimator reads the run's corrective episodes (labels), not an evaluation: drop eval")
            check(self.metric == schema.METRIC_SUCCESS, "metric applies to the loss and kernel estimators (the expert estimator scores episodes by the expert's labels)")
        else:
            check(isinstance(self.eval, str) and self.eval != "", "eval must name an evaluation of the run (roboloop evals lists them)")
            check(self.labels == "", "labels applies to the expert estimator only")
        check(isinstance(self.min_rollouts, int) and self.min_rollouts >= 2, f"min_rollouts must be an int >= 2, got {self.min_rollouts!r}")
        check(isinstance(self.min_each, int) and self.min_each >= 1, f"min_each must be an int >= 1, got {self.min_each!r}")
        check(isinstance(self.batch_size, int) and self.batch_size >= 1, f"batch_size must be an int >= 1, got {self.batch_size!r}")
        check(self.estimator in ESTIMATORS, f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        check(isinstance(self.projections, int) and self.projections >= 1, f"projections must be an int >= 1, got {self.projections!r}")
        check(self.metric in schema.SEQUENTIAL_METRICS, f"metric must be one of {', '.join(schema.SEQUENTIAL_METRICS)}, got {self.metric!r}")


@dataclass
class ValueResult:
    """Per training demonstration of `run`, its value (in [-1, 1]; `raw`: before scaling) from evaluation `eval`."""

    run: str
    eval: str
    dataset: str
    values: dict[str, float] = field(default_factory=dict)
    raw: dict[str, float] = field(default_factory=dict)
    rollouts: int = 0
    successes: int = 0
    wall_s: float = 0.0
    paths: list[Path] = field(default_factory=list)

    def lowest(self, k: int) -> list[tuple[str, float]]:
        """The `k` lowest-valued demonstrations, lowest first."""
        return sorted(self.values.items(), key=lambda kv: (kv[1], kv[0]))[:k]


def influence_values(demo_grads: Mapping[str, np.ndarray], rollout_grads: Mapping[str, np.ndarray],
                     outcomes: Mapping[str, float]) -> dict[str, float]:
    """The estimator on gradients (pure, for tests and other models): `<g_d, G>`, with `G` the mean over rollouts of
    `(R_r - mean R) * g_r / |g_r|` (module docstring); rollouts with a zero gradient are left out of the sum."""
    mean_r = float(np.mean([outcomes[r] for r in rollout_grads]))
    direction = _direction(((g, outcomes[r] - mean_r) for r, g in rollout_grads.items()), len(rollout_grads))
    return {d: float(np.dot(g, direction)) for d, g in demo_grads.items()}


def kernel_values(demo_sketches: Mapping[str, np.ndarray], rollout_sketches: Mapping[str, np.ndarray],
                  outcomes: Mapping[str, float]) -> dict[str, float]:
    """The `kernel` estimator (pure): `mean_r (R_r - mean R) * cos(k_d, k_r)`, with `k_*` an episode's projected output
    gradients (:func:`episode_gradients` with `projections`) less their mean over all the episodes (the component every
    episode shares moves every prediction alike and says nothing about which one taught what): a demonstration
    scores high when the policy's behaviour in successful rollouts is the one it learned from it, low when the
    failed rollouts' is."""
    mean_r = float(np.mean([outcomes[r] for r in rollout_sketches]))
    shared = np.mean([*demo_sketches.values(), *rollout_sketches.values()], axis=0)
    unit = {r: c / n for r, g in rollout_sketches.items() if (n := float(np.linalg.norm(c := g - shared))) > 0}
    if not unit:
        raise DemoValueError("every rollout's output gradient is the same: the policy's behaviour does not tell the rollouts apart")
    weighted = sum((outcomes[r] - mean_r) * g for r, g in unit.items()) / len(rollout_sketches)
    return {d: float(np.dot(c := g - shared, weighted) / (float(np.linalg.norm(c)) or 1.0)) for d, g in demo_sketches.items()}


def _direction(weighted, n: int) -> np.ndarray:
    total = None
    for g, w in weighted:
        norm = float(np.linalg.norm(g))
        if norm == 0.0:
            continue
        term = (w / norm) * np.asarray(g, dtype=np.float64)
        total = term if total is None else total + term
    if total is None:
        raise DemoValueError("every rollout's loss gradient is zero: the policy predicts exactly what it executed; nothing to contrast")
    return total / max(n, 1)


def demonstration_value(catalog, cfg: ValueConfig, *, progress: Progress | None = None) -> ValueResult:
    """Estimate and (with `cfg.write`) record `signals.value` for every training demonstration of `cfg.run`."""
    t0 = time.perf_counter()
    ws = catalog.workspace
    info = run_info(ws, cfg.run)
    dataset, train_ids = info.get("dataset"), list(info.get("train_ids") or [])
    if not info.get("selection") or not train_ids:
        raise DemoValueError(f"run {cfg.run} has no selection with training episodes recorded (its run.json lists no train_ids): "
                          "value needs a run trained with `roboloop train --selection NAME`")
    if cfg.estimator == "expert":
        evals_ds = cfg.labels or dataset
        outcomes = _corrective_episodes(catalog, cfg, evals_ds)
        source = LABELS_PREFIX + evals_ds
    else:
        outcomes, evals_ds = _rollout_outcomes(catalog, cfg)
        source = cfg.eval
    deployed = load_policy(ws, cfg.run)
    model = deployed.model
    model.eval()
    total = len(train_ids) + len(outcomes)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    if progress is not None:
        progress(0, total)
    raw = _raw_values(catalog, cfg, (evals_ds, outcomes), (dataset, train_ids), deployed, tick)
    scale = max((abs(v) for v in raw.values()), default=0.0) or 1.0
    result = ValueResult(cfg.run, source, dataset, {k: v / scale for k, v in raw.items()}, raw, len(outcomes),
                         sum(v == 1.0 for v in outcomes.values()))
    if cfg.write:
        values = {seg: {schema.SIGNAL_VALUE: v, schema.SIGNAL_VALUE_RUN: cfg.run, schema.SIGNAL_VALUE_EVAL: source}
                  for seg, v in result.values.items()}
        version = {"kernel": KERNEL_VERSION, "expert": EXPERT_VERSION}.get(cfg.estimator, VALUE_VERSION)
        result.paths = write_signals(catalog, dataset, values, {schema.SIGNAL_VALUE: version})
    result.wall_s = time.perf_counter() - t0
    return result


def _raw_values(catalog, cfg: ValueConfig, rollouts: tuple[str, dict[str, float]], demos: tuple[str, list[str]], deployed,
                tick: Callable[[int], None]) -> dict[str, float]:
    """Unscaled values of the demonstrations `demos` (dataset, ids) from `rollouts` (evals dataset, outcomes), by `cfg.estimator`."""
    (evals_ds, outcomes), (dataset, train_ids) = rollouts, demos
    model = deployed.model
    grads = functools.partial(episode_gradients, catalog, model=model, cfg=deployed.cfg, batch_size=cfg.batch_size, tick=tick)
    if cfg.estimator == "kernel":
        rolls = dict(grads(evals_ds, list(outcomes), projections=cfg.projections))
        return kernel_values(dict(grads(dataset, train_ids, projections=cfg.projections)), rolls, outcomes)
    if cfg.estimator == "expert":
        losses = expert_losses(catalog, evals_ds, list(outcomes), model, deployed.cfg, batch_size=cfg.batch_size)
        _enough_labelled(len(losses))
        rolls = dict(grads(evals_ds, [e for e in outcomes if e in losses], projections=cfg.projections))
        return expert_values(dict(grads(dataset, train_ids, projections=cfg.projections)), rolls, losses)
    mean_r = float(np.mean(list(outcomes.values())))
    weighted = ((g, outcomes[seg] - mean_r) for seg, g in grads(evals_ds, list(outcomes)))
    direction = torch.from_numpy(_direction(weighted, len(outcomes)).astype(np.float32))
    return {seg: float(torch.dot(torch.from_numpy(g), direction)) for seg, g in grads(dataset, train_ids)}


def expert_values(demo_sketches: Mapping[str, np.ndarray], labelled_sketches: Mapping[str, np.ndarray],
                  losses: Mapping[str, float]) -> dict[str, float]:
    """The `expert` estimator (pure): :func:`kernel_values` with each labelled episode's outcome replaced by the
    policy's log-likelihood of the expert's labels there, `-log(losses[e])` (`losses`: the mean L1 between the
    policy's predictions and the expert's labels over the episode's labelled steps; a scale-free score, so episodes
    are compared by how far off the policy is relative to each other)."""
    kept = {e: g for e, g in labelled_sketches.items() if e in losses}
    _enough_labelled(len(kept))
    return kernel_values(demo_sketches, kept, {e: -float(np.log(max(losses[e], LOSS_FLOOR))) for e in kept})


def _enough_labelled(n: int) -> None:
    if n < 2:
        raise DemoValueError(f"{n} corrective episode(s) with expert-labelled steps: the expert estimator compares "
                             "at least 2 (collect more: roboloop collect --corrective --run RUN --mode dagger)")


def expert_losses(catalog, dataset: str, ids: Sequence[str], model, cfg, *, batch_size: int = 2048) -> dict[str, float]:
    """Per corrective episode of `dataset` among `ids`: `model`'s mean training loss (L1, eval mode) against the expert's
    labels over its expert-labelled steps (the rule of `roboloop.train.corrective`: every step of a simulated
    corrective episode, the takeover steps of an intervention); episodes without a labelled step are left out."""
    specs = model.specs
    width = next(s for s in specs if s.kind == ACTION).shape[-1]
    stream = EpisodeStream(catalog, (dataset, list(ids)), fields={**stream_fields(specs), **control_fields(cfg.chunk, width)},
                           rate_hz=cfg.rate_hz, batch_size=batch_size, shuffle=False, rank=0, world_size=1, cache_mb=0)
    labelling = segment_labelling(catalog, dataset, stream.segment_ids)
    if labelling is None:
        return {}
    tasks = segment_tasks(catalog, dataset, stream.segment_ids) if getattr(cfg, "tasks", None) else None
    total: dict[int, list[float]] = {}
    with torch.no_grad():
        for batch in stream:
            enc = expert_targets(encode_batch(specs, batch, cfg, tasks), batch, labelling, expert_steps_only=True)
            index = batch["episode_index"].to(torch.int64)
            for ep in torch.unique(index).tolist():
                mask = index == ep
                loss, metrics = model.loss({k: v[mask] for k, v in enc.items()})
                acc = total.setdefault(ep, [0.0, 0.0])
                acc[0] += float(loss) * metrics["n"]
                acc[1] += metrics["n"]
    return {stream.segment_ids[ep]: s / n for ep, (s, n) in total.items() if n > 0}


def _corrective_episodes(catalog, cfg: ValueConfig, dataset: str) -> dict[str, float]:
    """Segment id -> strict success (1.0 / 0.0) of run `cfg.run`'s corrective episodes in `dataset`."""
    kind, run, success = (schema.friendly_column(schema.EPISODE, schema.EPISODE_KIND),
                          schema.friendly_column(schema.EPISODE, schema.EPISODE_CORRECTED_RUN),
                          schema.friendly_column(schema.OUTCOME, schema.OUTCOME_SUCCESS))
    rows = catalog.segment_table(dataset).to_pylist() if dataset in catalog.dataset_names() else []
    found = {r[schema.SEGMENT_ID]: float(bool(r.get(success))) for r in rows
             if r.get(kind) == schema.KIND_CORRECTIVE and r.get(run) == cfg.run}
    if not found:
        raise DemoValueError(f"dataset {dataset} has no corrective episodes of run {cfg.run}: the expert estimator needs the expert's "
                             f"labels at the states the run's policy drives into; collect them with roboloop collect --corrective "
                             f"--run {cfg.run} --mode dagger --grid CELLS --episodes N (or, on a robot, record takeovers: "
                             "README \"Which demonstrations help\")")
    return found


def _rollout_outcomes(catalog, cfg: ValueConfig) -> tuple[dict[str, float], str]:
    """Segment id -> strict success (1.0 / 0.0) of the evaluation's judged rollouts, and its evals dataset."""
    row = eval_row(catalog.workspace, cfg.eval)
    if row is None:
        raise UnknownEvaluationError(f"unknown evaluation {cfg.eval!r} (roboloop evals lists them)")
    if row.get("policy") != cfg.run:
        raise DemoValueError(f"evaluation {cfg.eval} evaluated {row.get('policy')!r}, not run {cfg.run}: "
                          f"value needs rollouts of the run itself (roboloop eval --run {cfg.run} --grid ...)")
    evals_ds = row.get("evals_dataset") or schema.evals_dataset(row["dataset"])
    table = rollout_table(catalog, evals_ds, [cfg.eval])
    ids = table.column(schema.SEGMENT_ID).to_pylist() if table.num_rows else []

    def column(name: str) -> list:
        col = schema.friendly_column(schema.OUTCOME, name)
        return table.column(col).to_pylist() if table.num_rows and col in table.column_names else [None] * len(ids)

    succ = column(schema.OUTCOME_SUCCESS)
    outcomes = {s: float(bool(v)) for s, v in zip(ids, succ) if v is not None}
    n_ok = int(sum(outcomes.values()))
    n_fail = len(outcomes) - n_ok
    if cfg.metric == schema.METRIC_STAGE:
        last = max(1, len(get_task(row.get("task") or DEFAULT_TASK).stages) - 1)
        stage = dict(zip(ids, column(schema.OUTCOME_STAGE)))
        outcomes = {s: (1.0 if ok else float(stage[s] or 0) / last) for s, ok in outcomes.items()}
    counts = Counter(outcomes.values())
    differ = len(outcomes) - max(counts.values(), default=0)
    if len(outcomes) < cfg.min_rollouts or differ < cfg.min_each:
        if cfg.metric == schema.METRIC_STAGE:
            what = f"{differ} of them at another stage than the most common one"
        else:
            what = f"{n_ok} successful and {n_fail} failed"
        hint = "" if cfg.metric == schema.METRIC_STAGE else "; or contrast the stages reached: --metric stage"
        raise DemoValueError(f"evaluation {cfg.eval} has {len(outcomes)} judged rollout(s), {what}: value needs at least "
                             f"{cfg.min_rollouts} with at least {cfg.min_each} of each outcome to contrast (add rollouts: "
                             f"roboloop eval --resume {cfg.eval} -n N, or a harder grid{hint})")
    return outcomes, evals_ds


def episode_gradients(catalog, dataset: str, ids: Sequence[str], model, cfg, *, batch_size: int = 2048,
                      tick: Callable[[int], None] | None = None, projections: int = 0, sketch: int = SKETCH_WIDTH):
    """Yield (segment id, gradient of `model`'s training loss (`loss`, in eval mode: no augmentation) on that episode's
    samples of `dataset`, flattened float32 over the trainable parameters), streaming the episodes in order (each
    episode's samples are contiguous when the stream does not shuffle). `cfg`: the run's TrainConfig (rate, phase).

    With `projections` = K > 0, instead the episode's *output* gradients: for K fixed random sign patterns v_k over
    the predicted chunk, the gradient of the mean of <v_k, prediction> (read through the policy's own L1 `loss`,
    whose gradient at a target just beside the prediction is exactly that), each count-sketched to `sketch` values
    and concatenated (K x `sketch`). Their dot products estimate the policy's tangent kernel between two episodes'
    states: how much a gradient step on one moves the predictions at the other (:func:`kernel_values`)."""
    specs = model.specs
    params = [p for p in model.parameters() if p.requires_grad]
    tick = tick or (lambda n: None)
    project = _Projector(params, model, projections, sketch) if projections else None
    stream = EpisodeStream(catalog, (dataset, list(ids)), fields=stream_fields(specs), rate_hz=cfg.rate_hz,
                           batch_size=batch_size, shuffle=False, rank=0, world_size=1, cache_mb=0)
    tasks = segment_tasks(catalog, dataset, stream.segment_ids) if getattr(cfg, "tasks", None) else None
    open_eps: dict[int, list] = {}  # episode index -> [gradient sum, sample count]
    finished: set[int] = set()
    for batch in stream:
        enc = encode_batch(specs, batch, cfg, tasks)
        index = batch["episode_index"].to(torch.int64)
        present = torch.unique(index).tolist()
        for ep in sorted(open_eps):
            if ep < min(present):
                finished.add(ep)
                yield _finish(stream.segment_ids[ep], open_eps.pop(ep), tick)
        for ep in present:
            if ep in finished:
                raise RuntimeError(f"episode {stream.segment_ids[ep]} came back after the stream moved past it")
            mask = index == ep
            sub = {k: v[mask] for k, v in enc.items()}
            if project is not None:
                flat, n = project(sub)
            else:
                model.zero_grad(set_to_none=True)
                loss, metrics = model.loss(sub)
                n = float(metrics["n"])
                flat = _flat_grad(loss, params) * n
            acc = open_eps.setdefault(ep, [torch.zeros_like(flat), 0.0])
            acc[0] += flat
            acc[1] += n
    for ep in sorted(open_eps):
        yield _finish(stream.segment_ids[ep], open_eps.pop(ep), tick)


def _flat_grad(loss: torch.Tensor, params: list) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


class _Projector:
    """K random-sign projections of a batch's output gradient, count-sketched (see :func:`episode_gradients`)."""

    def __init__(self, params: list, model, k: int, width: int) -> None:
        gen = torch.Generator().manual_seed(PROJECTION_SEED)
        size = sum(p.numel() for p in params)
        self.params, self.model, self.width = params, model, width
        self.bucket = torch.randint(0, width, (size,), generator=gen)
        self.sign = torch.randint(0, 2, (size,), generator=gen).to(torch.float32) * 2 - 1
        self.k = k
        self.gen = gen
        self.signs: torch.Tensor | None = None  # [K, chunk, action width], drawn at the first batch

    def __call__(self, sub: dict) -> tuple[torch.Tensor, float]:
        targets = set(getattr(self.model, "targets", ("action", "action_mask")))
        with torch.no_grad():
            pred = self.model.act({k: v for k, v in sub.items() if k not in targets})
        if self.signs is None:
            self.signs = torch.randint(0, 2, (self.k, *pred.shape[1:]), generator=self.gen).to(pred.dtype) * 2 - 1
        parts, n = [], 0.0
        for v in self.signs:
            # L1 against a target just below (v = +1) or above (v = -1) the prediction: d loss / d pred = v / count
            self.model.zero_grad(set_to_none=True)
            loss, metrics = self.model.loss({**sub, "action": pred - OFFSET * v * (pred.abs() + 1.0)})
            n = float(metrics["n"])
            g = _flat_grad(loss, self.params) * n
            parts.append(torch.zeros(self.width).index_add_(0, self.bucket, self.sign * g))
        return torch.cat(parts), n


def _finish(seg: str, acc: list, tick: Callable[[int], None]) -> tuple[str, np.ndarray]:
    tick(1)
    total, n = acc
    return seg, (total / max(n, 1.0)).numpy()
