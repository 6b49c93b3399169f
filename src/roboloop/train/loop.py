"""`fit(catalog, cfg)`: behaviour cloning from the stream in one process, top to bottom; the run is a recording.

1. `_build`: resolve the selection; the policy's features (`protocol.feature_specs`; widths the
   config leaves open are read from the first train episode, `infer_widths`); build the train
   stream (`EpisodeStream` over its train ids), one streaming pass for the normalization
   statistics (scalar fields only), the policy.
2. `_open_run`: write `runs/<run_id>/` (config.json, features.json, normalizer.npz, an
   initial checkpoint), then the run recording is registered with status `running`.
3. The loop: stream batches (prefetched across epoch boundaries by `ahead.EpochsAhead`) ->
   `features.encode_batch` -> `policy.loss` -> AdamW + cosine; holdout loss every `holdout_every` epochs; sample views (`SampleViews`) at the
   first, middle and last epoch; a complete checkpoint every `checkpoint_every` epochs
   (model.pt + state.pt, each written atomically; the sample views so far included).
4. Finally (also on Ctrl-C or an exception): a new version of the run recording with
   status `finished` (every property) or `interrupted` (pointing at the
   last complete checkpoint). `fit(..., resume=run_id)` continues an interrupted run
   from that checkpoint with the identical config.

Beyond one process (`cfg.nproc > 1`): `roboloop.train.train` launches `nproc` ranks
(`roboloop.train.distributed`: torch.multiprocessing spawn, gloo) that each run `fit`
inside a process group, with their `rank` and `world` size. Each rank streams its own
shard of every epoch (`EpisodeStream` with `rank`/`world_size`) with `batch_size / nproc` samples per step; the loss of every rank
is weighted by its share of the step's valid entries, so the all-reduced (averaged)
gradient is the gradient of the global batch's loss. Ranks step in lockstep: a rank
whose shard ran out takes zero-weight steps until every rank is done. Only rank 0
computes statistics (broadcast), the holdout loss and the sample views, writes the run
folder and checkpoints, and registers the run recording (once, with `run.config.nproc`).

Determinism: torch and numpy are seeded with `cfg.seed`, the stream's segment order and
shuffle buffer are functions of (seed, epoch), augmentation noise comes from one seeded
generator saved in the checkpoint: same config + selection + seed on CPU = same curve.
The sample views draw from none of these generators (their rows come from numpy generators
of their own, the augmentation they show from a copy of the step's generator) and change
no batch: the weights are the same with any `cfg.samples`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roboloop import curate, envs, faults, rows, schema
from roboloop.catalog.errors import UnknownDatasetError
from roboloop.record.episode import provenance
from roboloop.stream import EpisodeStream, MissingFieldError, UnknownEntityError
from roboloop.train.ahead import EpochsAhead
from roboloop.train.config import TrainConfig, TrainError
from roboloop.train.corrective import EXPERT_FIELD, control_fields, expert_targets, segment_labelling
from roboloop.train.features import (
    ACTION,
    IMAGE,
    NUM_JOINTS,
    PHASE,
    STATE,
    FeatureSpec,
    encode_batch,
    scalar_specs,
    stream_fields,
    stream_stats,
    unresolved,
    with_dims,
)
from roboloop.train.policies import CUBE_AUX, BCPolicy, make_policy
from roboloop.train.protocol import feature_specs
from roboloop.train.runlog import RunLog, save_run_blueprint
from roboloop.train.tasks import registered_task, segment_tasks, selection_tasks, state_for_tasks
from roboloop.workspace import Workspace, atomic_path, atomic_write_text, read_json_file

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
RUN_FILE = schema.RUN_INFO_FILE
FEATURES_FILE = "features.json"
NORMALIZER_FILE = "normalizer.npz"
MODEL_FILE = "model.pt"
STATE_FILE = "state.pt"


@dataclass
class TrainProgress:
    """Reported after every optimizer step (and after each epoch with `epoch_end=True`)."""

    run_id: str
    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    lr: float
    holdout_loss: float | None = None
    epoch_end: bool = False
    cache_bytes: int = 0
    """Bytes the training stream's segment cache holds (all its workers; updated per block in workers, per step here)."""


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    status: str
    epochs_done: int
    steps_done: int
    final_train_loss: float | None
    final_holdout_loss: float | None
    best_holdout_loss: float | None
    wall_s: float
    checkpoint_sha256: str
    parameters: int
    recording: Path
    train_losses: list[float] = field(default_factory=list)
    holdout_losses: list[float] = field(default_factory=list)
    nproc: int = 1
    rank_weights_sha256: list[str] = field(default_factory=list)
    """With nproc > 1: each rank's final weights digest (the launcher checks they are equal: DDP kept them in sync)."""


class NonFiniteLossError(TrainError):
    """The loss became NaN or infinite: the run stops with status `failed` (the message says what to change)."""


def new_run_id() -> str:
    return schema.new_segment_id("run")


def fit(
    catalog,
    cfg: TrainConfig,
    *,
    rank: int = 0,
    world: int = 1,
    on_progress: Callable[[TrainProgress], None] | None = None,
    resume: str | None = None,
    run_id: str | None = None,
) -> TrainResult:
    """Train in this process: the only one (`world == 1`), or rank `rank` of an initialized process group.

    The caller holds the run's writer lock (`roboloop.train.train`). Set up (`_build`, `_open_run`), then
    the loop: batch, forward, loss, backward, step, log; at an epoch's end the holdout loss, sample views
    and a checkpoint at their intervals; finally (also on Ctrl-C or an error) rank 0 records the outcome.
    """
    if world != cfg.nproc:
        raise TrainError(f"this process group has {world} ranks but the config says nproc={cfg.nproc}; start as many ranks as nproc")
    main = rank == 0
    try:
        b = _build(catalog, cfg, rank, world, resume, run_id)
    except (MissingFieldError, UnknownEntityError) as exc:  # the stream's message suggests a library option; say what the CLI offers
        raise _field_error(exc, cfg) from None
    cfg = b.cfg  # default state inputs resolved for the selection's task
    run_id, run_dir, specs, policy, model, opt, sched, gen, holdout, views = (
        b.run_id, b.run_dir, b.specs, b.policy, b.model, b.opt, b.sched, b.gen, b.holdout, b.views)
    log, info, start_epoch, step, epoch_losses, holdout_losses, wall_before = _open_run(catalog, cfg, b, main, world)
    started = time.perf_counter()
    if main:
        _write_status(log, info, schema.RUN_STATUS_RUNNING, run_dir, start_epoch, step, epoch_losses, holdout_losses, wall_before)
    saved = (start_epoch, step, list(epoch_losses), list(holdout_losses))  # the last complete checkpoint
    report = on_progress if main and on_progress is not None else _ignore

    status = schema.RUN_STATUS_INTERRUPTED
    ahead = EpochsAhead(b.stream, b.loader, start_epoch, cfg.epochs)  # next epoch's catalog reads overlap this one's steps
    try:
        for epoch in range(start_epoch, cfg.epochs):
            policy.train()
            total, count = 0.0, 0
            watch = views is not None and epoch in views.epochs
            for batch, weight in _lockstep(ahead.epoch(epoch), world):
                enc = encode_batch(specs, batch, cfg, b.train_tasks)
                if b.train_labelling is not None:  # corrective episodes: the expert's action is the target
                    enc = expert_targets(enc, batch, b.train_labelling, cfg.expert_steps_only)
                if watch:  # the first batch of a watched epoch: a few of its samples, as this step feeds them
                    views.capture(epoch, enc, batch, gen)
                    watch = False
                loss, m = model(enc, gen)
                loss_scaled, loss = _global_loss(loss, m["n"] * weight, world)
                lv = float(loss.detach())
                if not math.isfinite(lv):  # every rank sees the same global loss: all stop here, before a step spreads it
                    raise _diverged(run_id, cfg, lv, step, epoch, opt, saved)
                opt.zero_grad(set_to_none=True)
                loss_scaled.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(b.params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                lr = opt.param_groups[0]["lr"]
                opt.step()
                sched.step()
                step += 1
                total, count = total + lv, count + 1
                _log_step(log, step, epoch, lv, lr, float(gnorm))
                report(TrainProgress(run_id, epoch, cfg.epochs, step, b.total_steps, lv, lr, _last(holdout_losses),
                                     cache_bytes=b.stream.cache_info()["bytes"]))
            epoch_losses.append(total / max(1, count))
            log.scalar(schema.TRAIN_EPOCH_LOSS, step, epoch, epoch_losses[-1])
            cache_bytes = b.stream.cache_info()["bytes"]
            log.scalar(schema.TRAIN_CACHE_MB, step, epoch, cache_bytes / (1 << 20))
            done = epoch + 1
            last = done == cfg.epochs
            if holdout is not None and (done % cfg.holdout_every == 0 or last):
                holdout_losses.append(holdout_loss(policy, holdout, specs, cfg, b.holdout_tasks, b.holdout_labelling))
                log.scalar(schema.HOLDOUT_LOSS, step, epoch, holdout_losses[-1])
            if views is not None and epoch in views.epochs:
                log.samples.extend(views.views(epoch, step))
            if done % cfg.checkpoint_every == 0 or last:
                gens = _gather_generators(gen, world)
                if main:
                    _save_checkpoint(run_dir, policy, opt, sched, gen, done, step, log, epoch_losses, holdout_losses,
                                     wall_before + time.perf_counter() - started, generators=gens)
                saved = (done, step, list(epoch_losses), list(holdout_losses))
            report(TrainProgress(run_id, done, cfg.epochs, step, b.total_steps, epoch_losses[-1], opt.param_groups[0]["lr"],
                                 _last(holdout_losses), epoch_end=True, cache_bytes=cache_bytes))
        status = schema.RUN_STATUS_FINISHED
    except Exception:  # a non-finite loss, an error in a policy's own code, a failed read: `failed` (Ctrl-C/SIGTERM: `interrupted`)
        status = schema.RUN_STATUS_FAILED
        raise
    finally:
        wall = wall_before + time.perf_counter() - started
        _stop_reading(ahead, b.loader)
        recording = _finish(catalog, log, info, status, run_dir, saved, wall) if main else None
    return _result(run_id, run_dir, status, saved, wall, policy, log, recording, main, world)


def _field_error(exc: MissingFieldError | UnknownEntityError, cfg: TrainConfig) -> Exception:
    """What a training stream field with no data, or no such path, raises: the CLI's fix where there is one."""
    if exc.field_name != CUBE_AUX and isinstance(exc, UnknownEntityError):
        return _unknown_path_error(exc, cfg) or exc
    return _missing_field_error(exc, cfg)


def _unknown_path_error(exc: UnknownEntityError, cfg: TrainConfig) -> TrainError | None:
    """A state or action path the dataset lacks, as the CLI's options fix it (None for another field, e.g. a camera).
    Left at its default, the state is ALOHA's (joints + cube pose): another robot's episodes need --state."""
    spec = next((s for s in feature_specs(cfg) if s.name == exc.field_name), None)
    if spec is None or spec.kind not in (STATE, ACTION):
        return None
    what = "action" if spec.kind == ACTION else "state"
    paths = sorted({c.split(":")[0] for c in exc.available})
    default = cfg.state is None if what == "state" else cfg.action == TrainConfig.action
    why = (f" (the {cfg.policy} policy's default {what}, ALOHA's; name your robot's {what} with --{what} PATH"
           f"{', repeatable' if what == 'state' else ''})") if default else ""
    return TrainError(f"{what} path {exc.path!r}{why} is not in dataset {cfg.dataset!r}; its entity paths: "
                      f"{', '.join(paths) or '(none)'} (set --{what} to one of them)")


def _missing_field_error(exc: MissingFieldError | UnknownEntityError, cfg: TrainConfig) -> TrainError:
    """What to do when a training stream field has no data: the CLI's options (the stream's message names a library one)."""
    if exc.field_name == CUBE_AUX:
        return TrainError(
            f"the vision policy's training-only cube-position loss (model.aux_cube = {cfg.model.aux_cube}) needs "
            f"{exc.path} in every training episode, and selection {cfg.selection!r} has episodes without it (the "
            f"simulator records it; hardware data usually does not): set `aux_cube = 0` under [model] in the "
            f"config, or leave those episodes out of the selection")
    return TrainError(
        f"field {exc.field_name!r} ({exc.path}) has no data in segment(s) {', '.join(exc.segment_ids)}; leave them "
        f"out of the selection (`roboloop flag --dataset {cfg.dataset} --segment ID --reason ...`, then `roboloop "
        f"curate ... --replace`), or train on paths every episode logs (--state/--action)")


# --- setting up ----------------------------------------------------------------------------------

@dataclass
class _Built:
    """What `_build` makes for the loop: the run's place, the data, the model and its optimizer."""

    run_id: str
    run_dir: Path
    sel: Any
    cfg: TrainConfig
    tasks: tuple[str, ...]
    state: dict[str, Any] | None
    gen: torch.Generator
    specs: list
    stream: EpisodeStream
    cams: dict[str, Any]
    policy: BCPolicy
    params: list
    opt: torch.optim.Optimizer
    loader: Any
    total_steps: int
    model: torch.nn.Module
    sched: Any
    holdout: EpisodeStream | None
    views: SampleViews | None
    train_tasks: list[str] | None = None  # multi-task: the task of each train stream segment
    holdout_tasks: list[str] | None = None
    train_labelling: np.ndarray | None = None  # corrective episodes: how each train stream segment is labelled
    holdout_labelling: np.ndarray | None = None


def _build(catalog, cfg: TrainConfig, rank: int, world: int, resume: str | None, run_id: str | None) -> _Built:
    """Selection, seeds, the train stream, the policy (normalization statistics, or the resumed checkpoint's
    weights and generators), optimizer and schedule, the holdout stream and the sample views (rank 0)."""
    main = rank == 0
    known = catalog.workspace.datasets()
    if cfg.dataset not in known:
        raise UnknownDatasetError(cfg.dataset, [d for d in known if not d.endswith(("_evals", "_runs"))])
    sel = curate.load(catalog, cfg.selection)
    if sel.dataset != cfg.dataset:
        raise TrainError(f"selection {cfg.selection!r} is over dataset {sel.dataset!r}, the config says {cfg.dataset!r}")
    tasks = selection_tasks(catalog, sel)
    cfg = state_for_tasks(cfg, tasks)
    run_id = resume or run_id or new_run_id()
    run_dir = catalog.workspace.run_dir(run_id)
    state = _load_resume(run_dir, cfg, sel) if resume else None
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + _RANK_SEED_STRIDE * rank)  # rank 0 = the single-process stream

    specs = _resolved_specs(catalog, sel, cfg, run_dir if resume else None)
    if main and state is None and sel.train_ids:
        check_rate(catalog, sel.dataset, sel.train_ids[0], cfg)
    fields = stream_fields(specs)
    if segment_labelling(catalog, sel.dataset, [*sel.train_ids, *sel.holdout_ids]) is not None:
        action = next(s for s in specs if s.kind == ACTION)
        fields = {**fields, **control_fields(cfg.chunk, action.shape[-1])}
    stream = EpisodeStream(catalog, (sel.dataset, list(sel.train_ids)), fields=fields, rate_hz=cfg.rate_hz,
                           batch_size=cfg.batch_size // world, seed=cfg.seed, shuffle=True, rank=rank, world_size=world,
                           cache_mb=cfg.cache_mb)
    cams = _camera_info(catalog, sel, specs)
    policy = make_policy(cfg, specs)
    if state is None:
        stats = _train_stats(catalog, sel, specs, cfg) if main else None
        policy.normalizer.load_stats(_broadcast(stats, world))
    else:
        policy.normalizer.load_arrays(dict(np.load(run_dir / NORMALIZER_FILE)))
        policy.load_state_dict(state["model"])
        gen.set_state(state["generators"][rank] if world > 1 else state["generator"])
        torch.set_rng_state(state["torch_rng"])
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = stream.loader(num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    total_steps = max(1, _max_over_ranks(len(stream), world) * cfg.epochs)
    model = _LossModel(policy) if world == 1 else torch.nn.parallel.DistributedDataParallel(_LossModel(policy), forward_sync_buffers=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    holdout = None
    if sel.holdout_ids and main:
        holdout = EpisodeStream(catalog, (sel.dataset, list(sel.holdout_ids)), fields=fields, rate_hz=cfg.rate_hz,
                                batch_size=128 if _cameras(specs) else 512, shuffle=False, rank=0, world_size=1,
                                cache_mb=0)  # cfg.cache_mb is the train stream's (what progress shows); holdout is read rarely
    views = SampleViews(policy, specs, cfg, stream.segment_ids) if main and cfg.samples else None
    if views is not None and holdout is not None:
        views.holdout = _holdout_samples(catalog, sel, specs, cfg)
    return _Built(run_id, run_dir, sel, cfg, tasks, state, gen, specs, stream, cams, policy, params, opt, loader, total_steps, model, sched,
                  holdout, views, _stream_tasks(catalog, sel.dataset, stream, cfg), _stream_tasks(catalog, sel.dataset, holdout, cfg),
                  _labelling(catalog, sel.dataset, stream, fields), _labelling(catalog, sel.dataset, holdout, fields))


def _labelling(catalog, dataset: str, stream: EpisodeStream | None, fields: dict) -> np.ndarray | None:
    """How each of `stream`'s segments is labelled (`train.corrective`), when the fields stream the control streams."""
    if stream is None or EXPERT_FIELD not in fields:
        return None
    found = segment_labelling(catalog, dataset, stream.segment_ids)
    return found if found is not None else np.zeros(len(stream.segment_ids), np.int64)


def _stream_tasks(catalog, dataset: str, stream: EpisodeStream | None, cfg: TrainConfig) -> list[str] | None:
    """A multi-task run's task of each of `stream`'s segments (by `episode_index`); None for one task."""
    return segment_tasks(catalog, dataset, stream.segment_ids) if cfg.tasks and stream is not None else None


def _resolved_specs(catalog, sel, cfg: TrainConfig, resumed_run_dir: Path | None) -> list[FeatureSpec]:
    """The policy's features with every width known: the config's, a resumed run's `features.json`, or the data's."""
    specs = feature_specs(cfg)
    if not unresolved(specs):
        return specs
    if resumed_run_dir is not None:
        stored = read_json_file(resumed_run_dir / FEATURES_FILE, "the run's feature widths", list)
        return with_dims(specs, {d["name"]: d["shape"][-1] for d in stored})
    if not sel.train_ids:
        raise TrainError(f"selection {sel.name!r} has no train episodes to read the feature widths from")
    if not cfg.tasks:
        return with_dims(specs, infer_widths(catalog, sel.dataset, sel.train_ids[0], unresolved(specs), cfg.rate_hz))
    # multi-task: each width from a train episode of a task that records the path
    dims: dict[str, int] = {}
    first = dict(zip(reversed(segment_tasks(catalog, sel.dataset, sel.train_ids)), reversed(sel.train_ids)))
    for task in cfg.tasks:
        recorded = set(envs.get_task(task).policy_state) | {cfg.action} if task in envs.tasks() else {s.path for s in specs}
        todo = [s for s in unresolved(specs) if s.name not in dims and s.path in recorded]
        if todo and task in first:
            dims.update(infer_widths(catalog, sel.dataset, first[task], todo, cfg.rate_hz))
    lacking = [s.path for s in unresolved(specs) if s.name not in dims]
    if lacking:  # e.g. `--like` a multi-task run on one task's episodes
        raise TrainError(f"no train episode of selection {sel.name!r} records {', '.join(lacking)} (the run's tasks: "
                         f"{', '.join(cfg.tasks)}); train on a selection with episodes of each task, or pass --state")
    return with_dims(specs, dims)


def infer_widths(catalog, dataset: str, segment_id: str, specs: list[FeatureSpec], rate_hz: float) -> dict[str, int]:
    """Feature name -> width (values per step) of `specs` in one episode (the first sample the stream gives).

    A path the dataset does not have raises TrainError naming it and listing the dataset's entity paths.
    """
    try:
        stream = EpisodeStream(catalog, (dataset, [segment_id]), fields=stream_fields(specs), rate_hz=rate_hz, batch_size=1,
                               shuffle=False, rank=0, world_size=1, cache_mb=0)
    except UnknownEntityError as exc:
        paths = sorted({c.split(":")[0] for c in exc.available})
        spec = next(s for s in specs if s.name == exc.field_name)
        what = "action" if spec.kind == "action" else "state"
        raise TrainError(f"{what} path {exc.path!r} is not in dataset {dataset!r}; its entity paths: {', '.join(paths) or '(none)'} "
                         f"(set --{what} to one of them)") from None
    for batch in stream:
        return {s.name: int(batch[s.name].shape[-1]) for s in specs}
    raise TrainError(f"episode {segment_id} of {dataset!r} has no samples at {rate_hz} Hz to read the feature widths from")


RATE_TOLERANCE = 0.1
"""`check_rate` warns when the action stream's rate differs from `rate_hz` by more than this fraction."""


def check_rate(catalog, dataset: str, segment_id: str, cfg: TrainConfig) -> float | None:
    """The action stream's rate in one episode (1 / its median time step; None with fewer than 2 rows); logs a
    warning naming `--rate-hz` when it differs from `cfg.rate_hz` by more than RATE_TOLERANCE (a 30 Hz robot
    trained on a 50 Hz grid repeats its rows and its chunks span the wrong time)."""
    reader = catalog.dataset(dataset).filter_segments([segment_id]).filter_contents([cfg.action]).reader(index=schema.TIMELINE)
    table = reader.to_arrow_table()
    if schema.TIMELINE not in table.column_names or table.num_rows < 2:
        return None
    times = np.unique(table.column(schema.TIMELINE).cast("int64").to_numpy()) / 1e9
    if len(times) < 2:
        return None
    hz = 1.0 / float(np.median(np.diff(times)))
    if abs(hz - cfg.rate_hz) > RATE_TOLERANCE * cfg.rate_hz:
        log.warning("the action %s of %s is logged at %.4g Hz (median step %.4g s; episode %s) but training samples at "
                    "%.4g Hz: pass --rate-hz %.4g (and --episode-steps, the episode length in steps at that rate)",
                    cfg.action, dataset, hz, 1.0 / hz, segment_id, cfg.rate_hz, round(hz))
    return hz


def _cameras(specs: list[FeatureSpec]) -> list[str]:
    """The cameras the image features read (`/cameras/<cam>` -> `cam`)."""
    return [s.path.rsplit("/", 1)[-1] for s in specs if s.kind == IMAGE and s.path]


def _train_stats(catalog, sel, specs, cfg: TrainConfig):
    """Normalization statistics: one streaming pass over the train episodes (scalar fields only)."""
    stats_stream = EpisodeStream(catalog, (sel.dataset, list(sel.train_ids)), fields=stream_fields(scalar_specs(specs)),
                                 rate_hz=cfg.rate_hz, batch_size=8192, shuffle=False, rank=0, world_size=1, cache_mb=0)
    return stream_stats(stats_stream, specs)


def _open_run(catalog, cfg: TrainConfig, b: _Built, main: bool, world: int):
    """A new run: its folder (config, features, normalizer, an initial checkpoint; rank 0) and blueprint.
    A resumed run: the optimizer, schedule, position and logged history of its checkpoint.

    Returns (log, info, start_epoch, step, epoch_losses, holdout_losses, wall_before)."""
    state, run_dir = b.state, b.run_dir
    width = next(s.shape[-1] for s in b.specs if s.name == "action")
    lanes = None if width == NUM_JOINTS else [f"a{i}" for i in range(width)]  # ALOHA's joint labels, else the action index
    log = RunLog(catalog, cfg.dataset, b.run_id, joint_names=lanes) if main else _NoLog()
    info = _run_info_base(catalog.workspace, b.run_id, cfg, b.sel, b.policy, b.cams)
    info.update(task=registered_task(b.tasks), tasks=list(b.tasks))
    if state is None:
        if main:
            _write_run_folder(catalog, cfg, b, log)
        else:
            _gather_generators(b.gen, world)
        return log, info, 0, 0, [], [], 0.0
    info["started_at"] = read_json_file(run_dir / RUN_FILE, "the run's record").get("started_at", info["started_at"])  # a resumed run keeps its start time
    b.opt.load_state_dict(state["optimizer"])
    b.sched.load_state_dict(state["scheduler"])
    log.restore_scalars(state["scalars"])
    log.restore_samples(state.get("samples", []))
    return (log, info, int(state["epoch"]), int(state["step"]), list(state["epoch_losses"]), list(state["holdout_losses"]),
            float(state["wall_s"]))


def _write_run_folder(catalog, cfg: TrainConfig, b: _Built, log) -> None:
    """Rank 0 of a new run: config.json, features.json, normalizer.npz, the epoch-0 checkpoint, the runs blueprint."""
    run_dir = b.run_dir
    atomic_write_text(run_dir / CONFIG_FILE, cfg.to_json())
    atomic_write_text(run_dir / FEATURES_FILE, json.dumps([s.to_dict() for s in b.specs], indent=2))
    with atomic_path(run_dir / NORMALIZER_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **b.policy.normalizer.to_arrays())
    _save_checkpoint(run_dir, b.policy, b.opt, b.sched, b.gen, 0, 0, log, [], [], generators=_gather_generators(b.gen, cfg.nproc))
    save_run_blueprint(catalog, cfg.dataset, cfg.samples, image=any(sp.kind == "image" for sp in b.specs))


def _write_status(log, info, status, run_dir, epochs_done, steps_done, epoch_losses, holdout_losses, wall) -> None:
    """Rank 0: a recording version and run.json with `status` (the first: `running`)."""
    log.summary = _summary(info, status)
    log.write(_groups(info, status, run_dir, epochs_done, steps_done, epoch_losses, holdout_losses, wall))
    atomic_write_text(run_dir / RUN_FILE, json.dumps(_run_json(info, status, run_dir, epochs_done, steps_done, epoch_losses, holdout_losses, wall), indent=2))


# --- inside the loop -----------------------------------------------------------------------------

def _ignore(progress: TrainProgress) -> None:
    """Progress nobody listens to (ranks other than 0, or no callback)."""


def _log_step(log, step: int, epoch: int, loss: float, lr: float, grad_norm: float) -> None:
    log.scalar(schema.TRAIN_LOSS, step, epoch, loss)
    log.scalar(schema.TRAIN_LR, step, epoch, lr)
    log.scalar(schema.TRAIN_GRAD_NORM, step, epoch, grad_norm)


def _last(values: list[float]) -> float | None:
    return values[-1] if values else None


def _diverged(run_id: str, cfg: TrainConfig, loss: float, step: int, epoch: int, opt, saved) -> NonFiniteLossError:
    return NonFiniteLossError(
        f"run {run_id}: the training loss became {loss} at step {step + 1} (epoch {epoch + 1}, learning rate "
        f"{opt.param_groups[0]['lr']:g}); training diverged and stopped with status 'failed'. The run keeps "
        f"its last complete checkpoint (epoch {saved[0]}). Start a new run with a smaller --lr (config lr "
        f"{cfg.lr:g}) or check the selection's data for non-finite values"
    )


def _stop_reading(ahead: EpochsAhead, loader) -> None:
    """Stop the prefetch thread and persistent loader workers now, not at garbage collection."""
    ahead.close()
    if hasattr(loader, "loader") and getattr(loader.loader, "_iterator", None) is not None:
        loader.loader._iterator._shutdown_workers()


def _result(run_id, run_dir, status, saved, wall, policy, log, recording, main: bool, world: int) -> TrainResult:
    e_done, s_done, e_losses, h_losses = saved
    return TrainResult(
        run_id=run_id,
        run_dir=run_dir,
        status=status,
        epochs_done=e_done,
        steps_done=s_done,
        final_train_loss=e_losses[-1] if e_losses else None,
        final_holdout_loss=h_losses[-1] if h_losses else None,
        best_holdout_loss=min(h_losses) if h_losses else None,
        wall_s=wall,
        checkpoint_sha256=sha256_file(run_dir / MODEL_FILE) if main else "",
        parameters=num_parameters(policy),
        recording=recording if recording is not None else Path(),
        train_losses=log.series(schema.TRAIN_LOSS),
        holdout_losses=list(h_losses),
        nproc=world,
        rank_weights_sha256=[weights_sha256(policy)],
    )


@torch.no_grad()
def holdout_loss(policy: BCPolicy, stream: EpisodeStream, specs, cfg, segment_tasks: list[str] | None = None,
                 labelling: np.ndarray | None = None) -> float:
    """Mean L1 (normalized) over every valid window entry of the holdout episodes; no augmentation."""
    was = policy.training
    policy.eval()
    total, n = 0.0, 0.0
    for batch in stream:
        enc = encode_batch(specs, batch, cfg, segment_tasks)
        if labelling is not None:
            enc = expert_targets(enc, batch, labelling, cfg.expert_steps_only)
        loss, m = policy.loss(enc)
        total += float(loss) * m["n"]
        n += m["n"]
    policy.train(was)
    return total / max(n, 1.0)


def _finish(catalog, log, info, status, run_dir, saved, wall) -> Path:
    """Rank 0: the run's last recording version and run.json (the run's commit), with a kill point between."""
    e_done, s_done, e_losses, h_losses = saved
    log.summary = _summary(info, status)
    groups = _groups(info, status, run_dir, e_done, s_done, e_losses, h_losses, wall)
    recording = log.write(groups)
    faults.point("train.registered")  # the final recording is registered, run.json not yet updated
    atomic_write_text(run_dir / RUN_FILE, json.dumps(_run_json(info, status, run_dir, e_done, s_done, e_losses, h_losses, wall), indent=2))
    return recording


# --- more than one process -----------------------------------------------------------------------

_RANK_SEED_STRIDE = 1_000_003
"""Rank r's augmentation generator is seeded `cfg.seed + r * stride` (rank 0 = the single-process run)."""


class _LossModel(torch.nn.Module):
    """The policy's `loss` as `forward`, so DistributedDataParallel hooks the step."""

    def __init__(self, policy: BCPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, batch, generator=None):
        return self.policy.loss(batch, generator)


class _NoLog:
    """What ranks other than 0 log to: nothing (rank 0 owns the run recording)."""

    summary = ""
    samples: list = []

    def scalar(self, *a, **k) -> None:
        pass

    def restore_scalars(self, *a, **k) -> None:
        pass

    def restore_samples(self, *a, **k) -> None:
        pass

    def scalars_state(self) -> dict:
        return {}

    def series(self, path: str) -> list[float]:
        return []

    def write(self, groups) -> None:
        return None


def _broadcast(obj, world: int):
    """Rank 0's `obj` on every rank."""
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _max_over_ranks(n: int, world: int) -> int:
    if world == 1:
        return n
    t = torch.tensor([n], dtype=torch.int64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


def _gather_generators(gen: torch.Generator, world: int) -> list[torch.Tensor] | None:
    """Every rank's augmentation generator state (saved with the checkpoint so a resume continues each rank's noise)."""
    if world == 1:
        return None
    out: list = [None] * world
    torch.distributed.all_gather_object(out, gen.get_state())
    return out


def _lockstep(loader, world: int):
    """(batch, weight) pairs: this rank's batches (weight 1), then, until every rank's shard is done,
    its last batch again with weight 0 (every rank must join every gradient all-reduce)."""
    if world == 1:
        for b in loader:
            yield b, 1.0
        return
    it = iter(loader)
    last = None
    while True:
        batch = next(it, None)
        has = torch.tensor([0 if batch is None else 1], dtype=torch.int64)
        torch.distributed.all_reduce(has)
        if int(has.item()) == 0:
            return
        if batch is not None:
            last = batch
            yield batch, 1.0
        elif last is None:
            raise TrainError("a training rank got no samples this epoch: the selection has fewer samples than ranks x workers; use fewer processes")
        else:
            yield last, 0.0


def _global_loss(loss: torch.Tensor, n: float, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to backpropagate, the global batch's loss): weights this rank's mean loss by its entries `n`
    over the step's total, times `world` (DDP averages gradients), so the result is the global mean's gradient.
    In one process both are the batch's loss."""
    if world == 1:
        return loss, loss
    t = torch.tensor([float(n), float(loss.detach()) * float(n)], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    total = max(float(t[0]), 1.0)
    return loss * (float(n) * world / total), torch.tensor(float(t[1]) / total)


# --- checkpoints ---------------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def num_parameters(policy) -> int:
    """Number of parameter values of a policy (any `torch.nn.Module`)."""
    return sum(p.numel() for p in policy.parameters())


def weights_sha256(policy) -> str:
    """Digest of a policy's parameter values (compares ranks' replicas)."""
    h = hashlib.sha256()
    for k, v in sorted(policy.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_checkpoint(run_dir, policy, opt, sched, gen, epoch, step, log, epoch_losses, holdout_losses, wall_s=0.0, generators=None) -> None:
    """state.pt (everything to resume) then model.pt (the deployable weights), each atomically."""
    weights = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    state = {
        "model": weights,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "epoch": int(epoch),
        "step": int(step),
        "epoch_losses": list(epoch_losses),
        "holdout_losses": list(holdout_losses),
        "scalars": log.scalars_state(),
        "samples": list(log.samples),
        "wall_s": float(wall_s),
    }
    if generators is not None:
        state["generators"] = list(generators)
    with atomic_path(run_dir / STATE_FILE) as tmp:
        torch.save(state, tmp)
    with atomic_path(run_dir / MODEL_FILE) as tmp:
        torch.save(weights, tmp)


def _load_resume(run_dir: Path, cfg: TrainConfig, sel) -> dict[str, Any]:
    if not (run_dir / STATE_FILE).is_file():
        raise TrainError(f"cannot resume: {run_dir} has no checkpoint ({STATE_FILE}); start a new run instead")
    saved = TrainConfig.from_json((run_dir / CONFIG_FILE).read_text())
    if saved != cfg:
        raise TrainError(f"cannot resume {run_dir.name} with a different config; use `load_config` to get its own")
    info = read_json_file(run_dir / RUN_FILE, "the run's record")
    if info.get("selection_digest") != sel.digest:
        raise TrainError(f"cannot resume {run_dir.name}: selection {sel.name!r} changed since the run started (digest differs)")
    if info.get("status") == schema.RUN_STATUS_FINISHED:
        raise TrainError(f"run {run_dir.name} already finished; nothing to resume")
    return torch.load(run_dir / STATE_FILE, weights_only=True)


def load_config(workspace: Workspace, run_id: str) -> TrainConfig:
    """The exact config a run used (`--like RUN_ID`, `--resume RUN_ID`)."""
    path = workspace.run_dir(run_id) / CONFIG_FILE
    if not path.is_file():
        known = sorted(p.name for p in workspace.runs_dir.iterdir()) if workspace.runs_dir.is_dir() else []
        raise TrainError(f"unknown run {run_id!r} (no {path}); known runs: {', '.join(known) or '(none)'}")
    return TrainConfig.from_json(path.read_text())


# --- what the run records ------------------------------------------------------------------------

def _camera_info(catalog, sel, specs: list[FeatureSpec]) -> dict[str, Any]:
    """Cameras the policy needs at deploy and the size/rate they were recorded at (checked equal over train ids)."""
    cameras = _cameras(specs)
    if not cameras:
        return {"cameras": [], "camera_size": None, "camera_hz": None}
    table = catalog.segment_table(sel.dataset)
    ids = set(sel.train_ids)
    rows = [r for r in table.select([c for c in ("segment_id", "episode.camera_size", "episode.camera_hz") if c in table.column_names]).to_pylist()
            if r["segment_id"] in ids]
    sizes = {r.get("episode.camera_size") for r in rows}
    hz = {r.get("episode.camera_hz") for r in rows}
    if len(sizes) != 1 or None in sizes:
        raise TrainError(f"a camera policy needs every training episode recorded at one camera size; found {sorted(map(str, sizes))} "
                         f"(episode.camera_size): curate a selection of one size (--where \"episode.camera_size = 'WxH'\"); "
                         f"episodes recorded with record.episode get it from their /cameras/<name> frames, all of one size")
    w, h = (int(v) for v in next(iter(sizes)).split("x"))
    return {"cameras": cameras, "camera_size": [w, h], "camera_hz": int(next(iter(hz)) or schema.CAMERA_HZ)}


def _run_info_base(ws, run_id, cfg: TrainConfig, sel, policy: BCPolicy, cams) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "dataset": cfg.dataset,
        "runs_dataset": schema.runs_dataset(cfg.dataset),
        "selection": cfg.selection,
        "selection_digest": sel.digest,
        "predicate": sel.where or "",
        "config": cfg.to_dict(),
        "config_digest": cfg.digest(),
        "policy": cfg.policy,
        "policy_class": f"{type(policy).__module__}:{type(policy).__qualname__}",
        "parameters": num_parameters(policy),
        "epochs": cfg.epochs,
        "train_ids": list(sel.train_ids),
        "holdout_ids": list(sel.holdout_ids),
        "checkpoint_path": str((ws.run_dir(run_id) / MODEL_FILE).relative_to(ws.root)),
        "software_version": provenance()[schema.EPISODE_SOFTWARE_VERSION],
        "provenance": provenance(),  # of the process that wrote this version (a resumed run: the resuming one)
        "started_at": rows.now_iso(),
        **cams,
    }


def _run_json(info, status, run_dir, epochs_done, steps_done, epoch_losses, holdout_losses, wall) -> dict[str, Any]:
    out = dict(info)
    out.update(
        status=status,
        epochs_done=epochs_done,
        steps_done=steps_done,
        final_train_loss=epoch_losses[-1] if epoch_losses else None,
        final_holdout_loss=holdout_losses[-1] if holdout_losses else None,
        best_holdout_loss=min(holdout_losses) if holdout_losses else None,
        wall_s=round(wall, 3),
        checkpoint_sha256=sha256_file(run_dir / MODEL_FILE),
        updated_at=rows.now_iso(),
    )
    return out


def _groups(info, status, run_dir, epochs_done, steps_done, epoch_losses, holdout_losses, wall) -> dict[str, dict[str, Any]]:
    """The recording's property groups: `run` (everything, flattened config) and `episode` (kind run)."""
    cfg = TrainConfig.from_dict(info["config"])
    prov = info["provenance"]
    run = {
        schema.RUN_ID: info["run_id"],
        schema.RUN_DATASET: info["dataset"],
        schema.RUN_SELECTION: info["selection"],
        schema.RUN_SELECTION_DIGEST: info["selection_digest"],
        schema.RUN_PREDICATE: info["predicate"] or "(all)",
        schema.RUN_NUM_TRAIN: len(info["train_ids"]),
        schema.RUN_NUM_HOLDOUT: len(info["holdout_ids"]),
        schema.RUN_CONFIG_JSON: cfg.to_json(),
        schema.RUN_CONFIG_DIGEST: info["config_digest"],
        schema.RUN_FIELDS: json.dumps(info["config"]["fields"], sort_keys=True),
        schema.RUN_POLICY: info["policy"],
        schema.RUN_PARAMETERS: int(info["parameters"]),
        schema.RUN_EPOCHS: int(info["epochs"]),
        schema.RUN_EPOCHS_DONE: int(epochs_done),
        schema.RUN_STEPS_DONE: int(steps_done),
        schema.RUN_BEST_HOLDOUT_LOSS: min(holdout_losses) if holdout_losses else None,
        schema.RUN_FINAL_HOLDOUT_LOSS: holdout_losses[-1] if holdout_losses else None,
        schema.RUN_FINAL_TRAIN_LOSS: epoch_losses[-1] if epoch_losses else None,
        schema.RUN_WALL_S: float(wall),
        schema.RUN_CHECKPOINT_PATH: info["checkpoint_path"],
        schema.RUN_CHECKPOINT_SHA256: sha256_file(run_dir / MODEL_FILE),
        schema.RUN_SOFTWARE_VERSION: prov[schema.EPISODE_SOFTWARE_VERSION],
        schema.RUN_STATUS: status,
        schema.RUN_STARTED_AT: info["started_at"],
        schema.RUN_CAMERAS: ",".join(info["cameras"]) or "none",
        schema.RUN_CAMERA_SIZE: "x".join(map(str, info["camera_size"])) if info["camera_size"] else "none",
    }
    for k, v in cfg.flat().items():
        run[schema.RUN_CONFIG_PREFIX + k] = v
    episode = {
        schema.EPISODE_KIND: schema.KIND_RUN,
        schema.EPISODE_POLICY: info["run_id"],
        **prov,
    }
    return {schema.RUN: run, schema.EPISODE: episode}


def _summary(info, status) -> str:
    return (
        f"# run {info['run_id']}: {status}\n\n"
        f"- policy **{info['policy']}** ({info['parameters']:,} parameters), {info['epochs']} epochs\n"
        f"- selection `{info['selection']}` of `{info['dataset']}`: {len(info['train_ids'])} train, "
        f"{len(info['holdout_ids'])} holdout episodes; predicate `{info['predicate'] or '(all)'}`\n"
        f"- config digest `{info['config_digest'][:12]}`, selection digest `{info['selection_digest'][:12]}`\n"
        "- sample views (first, middle and last epoch): random training samples as their step fed them and fixed random "
        "holdout samples; predicted (orange) vs target (grey) chunk per joint, in normalized units; move the `epoch` "
        "cursor to see earlier epochs\n"
    )


def sample_epochs(epochs: int) -> tuple[int, ...]:
    """The epochs (0-based) whose samples the run recording shows: first, middle and last."""
    return tuple(sorted({0, (epochs - 1) // 2, epochs - 1}))


def _pick_rows(mask: torch.Tensor, episodes: torch.Tensor, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` random rows (sorted): rows of different episodes first, rows whose whole action window is valid
    (not past the episode end) preferred."""
    full = np.flatnonzero(mask.reshape(mask.shape[0], -1).all(dim=1).numpy())
    pool = full if len(full) >= n else np.arange(mask.shape[0])
    seen: set[int] = set()
    first, rest = [], []
    for r in rng.permutation(pool):
        e = int(episodes[r])
        (rest if e in seen else first).append(r)
        seen.add(e)
    return np.sort(np.asarray((first + rest)[:n], dtype=np.int64))


def _holdout_samples(catalog, sel, specs, cfg) -> dict[str, Any] | None:
    """`cfg.samples` random holdout windows, chosen once (from up to `cfg.samples` random holdout episodes) and shown
    at every watched epoch, so the views show one window's prediction improving. Its own generator: the training
    RNGs are untouched."""
    rng = np.random.default_rng([cfg.seed, 2])
    ids = list(sel.holdout_ids)
    segs = [ids[i] for i in sorted(rng.choice(len(ids), size=min(cfg.samples, len(ids)), replace=False))]
    s = EpisodeStream(catalog, (sel.dataset, segs), fields=stream_fields(specs), rate_hz=cfg.rate_hz, batch_size=1 << 16, shuffle=False, cache_mb=0)
    batches = list(s)
    if not batches:
        return None
    batch = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    rows = torch.from_numpy(_pick_rows(batch["action_mask"], batch["episode_index"], cfg.samples, rng))
    enc = encode_batch(specs, {k: v[rows] for k, v in batch.items()}, cfg, _stream_tasks(catalog, sel.dataset, s, cfg))
    return {"enc": enc, "segments": [s.segment_ids[int(i)] for i in batch["episode_index"][rows]],
            "time_s": [float(t) for t in batch["timestamp"][rows]]}


class SampleViews:
    """Rank 0: what the run recording shows of a few samples at the watched epochs (`sample_epochs`).

    Training samples: `cfg.samples` random rows of the epoch's first batch, with the inputs that step fed the
    network (augmented by a copy of the step's generator, then normalized); holdout samples: fixed random windows
    (`_holdout_samples`), unaugmented as in the holdout loss. At the epoch's end the model predicts their chunks.
    Nothing here draws from the training generators or changes the batch order or the model's mode: the rows come
    from a numpy generator of its own, the augmentation from a copy, predictions run under no_grad.
    """

    def __init__(self, policy: BCPolicy, specs, cfg: TrainConfig, segment_ids: list[str]) -> None:
        self.policy, self.specs, self.cfg = policy, specs, cfg
        self.segment_ids = list(segment_ids)
        self.epochs = sample_epochs(cfg.epochs)
        self.holdout: dict[str, Any] | None = None
        self._train: dict[str, Any] | None = None

    def capture(self, epoch: int, enc: dict[str, torch.Tensor], batch, gen: torch.Generator) -> None:
        rng = np.random.default_rng([self.cfg.seed, epoch, 1])  # its own generator: the training RNGs are untouched
        rows = torch.from_numpy(_pick_rows(enc["action_mask"], batch["episode_index"], self.cfg.samples, rng))
        inputs = {k: v for k, v in enc.items() if k not in ("action", "action_mask")}
        seen = self.policy.training_inputs(inputs, torch.Generator().set_state(gen.get_state()))
        self._train = {
            "seen": {k: v[rows] for k, v in seen.items()},
            "action": enc["action"][rows],
            "mask": enc["action_mask"][rows],
            "segments": [self.segment_ids[int(i)] for i in batch["episode_index"][rows]],
            "time_s": [float(t) for t in batch["timestamp"][rows]],
        }

    @torch.no_grad()
    def views(self, epoch: int, step: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._train is not None:
            out += self._views("train", self._train, epoch, step)
            self._train = None
        if self.holdout is not None:
            h = self.holdout
            inputs = {k: v for k, v in h["enc"].items() if k not in ("action", "action_mask")}
            seen = self.policy.normalized_inputs(inputs)
            out += self._views("holdout", {"seen": seen, "action": h["enc"]["action"], "mask": h["enc"]["action_mask"],
                                           "segments": h["segments"], "time_s": h["time_s"]}, epoch, step)
        return out

    def _views(self, split: str, d: dict[str, Any], epoch: int, step: int) -> list[dict[str, Any]]:
        norm = self.policy.normalizer
        pred_n = self.policy.network(d["seen"])
        target_n = norm.norm("action", d["action"])
        pred = norm.unnorm("action", pred_n)
        vector = [s.name for s in self.specs if s.kind in (STATE, PHASE) and s.name in d["seen"]]
        out = []
        for k in range(pred.shape[0]):
            m = d["mask"][k].to(torch.float32)[:, None]
            l1 = float(((pred_n[k] - target_n[k]).abs() * m).sum() / (m.sum() * pred.shape[-1]).clamp_min(1.0))
            image = None
            if "image" in d["seen"]:
                image = (d["seen"]["image"][k].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8)
            out.append({
                "split": split, "k": k, "epoch": int(epoch), "step": int(step),
                "predicted": pred[k].clone(), "target": d["action"][k].clone(),
                "predicted_norm": pred_n[k].clone(), "target_norm": target_n[k].clone(), "mask": d["mask"][k].clone(),
                "input": torch.cat([d["seen"][n][k].reshape(-1) for n in vector]).clone(),
                "input_names": ",".join(vector), "image": image,
                "info": f"{split} sample {k}, epoch {epoch + 1}: segment `{d['segments'][k]}` at {d['time_s'][k]:.2f} s; "
                        f"L1 (normalized) {l1:.4f}",
            })
        return out
