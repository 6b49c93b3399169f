"""Deployment: a trained run as a `collect` policy (`reset()`, `action(step, observation)`).

`load_policy(catalog_or_workspace, run_id)` rebuilds the policy from `runs/<run_id>/`
(config.json -> its policy class, by the name or import path the run recorded -> features,
with the widths features.json kept -> model; model.pt weights; normalizer.npz arrays,
every key checked) and wraps it, whatever the policy class: encode (the same `features` code as training) -> normalize ->
model -> un-normalize -> temporal ensembling (ACT: the chunks predicted at the last K
steps are averaged for the current step with weights exp(-m * i), i = 0 the oldest).
`reset()` clears the ensembler and the encoder's held frames.

`PolicyFactory(workspace_root, run_id)` is picklable and builds the policy inside a
collect/evaluate worker (`collect(..., policy_factory=PolicyFactory(root, run_id))`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from roboloop import schema
from roboloop.catalog.errors import UnknownDatasetError
from roboloop.train.config import TrainConfig, TrainError
from roboloop.train.features import ObservationEncoder, unresolved, with_dims
from roboloop.train.loop import (
    CONFIG_FILE,
    FEATURES_FILE,
    MODEL_FILE,
    NORMALIZER_FILE,
    RUN_FILE,
    load_config,
)
from roboloop.train.policies import BCPolicy, make_policy
from roboloop.train.protocol import feature_specs
from roboloop.workspace import WRITER_RUN, DamagedFileError, Workspace, read_json_file

log = logging.getLogger(__name__)


class TemporalEnsembler:
    """ACT-style temporal ensembling of overlapping action chunks."""

    def __init__(self, chunk: int, m: float) -> None:
        self.chunk = chunk
        self.m = m
        self.reset()

    def reset(self) -> None:
        self._chunks: list[tuple[int, np.ndarray]] = []  # (step predicted at, [K, 14])

    def add(self, step: int, chunk: np.ndarray) -> np.ndarray:
        """Add the chunk predicted at `step`; return the ensembled action for `step`."""
        self._chunks = [(s, c) for s, c in self._chunks if step - s < self.chunk]
        self._chunks.append((step, np.asarray(chunk, dtype=np.float64)))
        acts = np.stack([c[step - s] for s, c in self._chunks])  # oldest first
        w = np.exp(-self.m * np.arange(len(acts)))
        return (w[:, None] * acts).sum(0) / w.sum()


class DeployedPolicy:
    """A trained run as a `collect.Policy`: `policy_id` (= run id), `reset()`, `action(step, observation)`."""

    def __init__(self, workspace: Workspace, run_id: str) -> None:
        run_dir = workspace.run_dir(run_id)
        cfg = load_config(workspace, run_id)  # imports the run's policy class (a clear error if it is gone)
        specs = feature_specs(cfg)
        stored = read_json_file(run_dir / FEATURES_FILE, f"run {run_id}'s feature widths", list)
        if unresolved(specs):  # widths the run read from its data
            try:
                specs = with_dims(specs, {d["name"]: d["shape"][-1] for d in stored if d.get("shape")})
            except KeyError as exc:
                raise TrainError(f"run {run_id}: {FEATURES_FILE} has no width for feature {exc}; the run folder was edited") from None
        if stored != [s.to_dict() for s in specs]:
            raise TrainError(f"run {run_id}: {FEATURES_FILE} does not match the features its config derives; the run folder was edited")
        info = run_info(workspace, run_id)
        model: BCPolicy = make_policy(cfg, specs)
        model.load_state_dict(torch.load(run_dir / MODEL_FILE, weights_only=True))
        with np.load(run_dir / NORMALIZER_FILE) as npz:
            model.normalizer.load_arrays({k: npz[k] for k in npz.files})
        model.eval()
        self.cfg: TrainConfig = cfg
        self.model = model
        self.info = info
        self.policy_id = run_id
        self.encoder = ObservationEncoder(specs, cfg, camera_hz=info.get("camera_hz") or 25)
        self.ensembler = TemporalEnsembler(cfg.chunk, cfg.ensemble_m)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.info.get("cameras") or ())

    def reset(self) -> None:
        self.encoder.reset()
        self.ensembler.reset()

    def predict_chunk(self, observation) -> np.ndarray:
        """The raw action chunk [K, action width] for one observation (no ensembling)."""
        with torch.no_grad():
            return self.model.act(self.encoder.encode(observation))[0].numpy()

    def action(self, step: int, observation) -> np.ndarray:
        return self.ensembler.add(step, self.predict_chunk(observation))


def _workspace(catalog_or_workspace: Any) -> Workspace:
    if isinstance(catalog_or_workspace, Workspace):
        return catalog_or_workspace
    if hasattr(catalog_or_workspace, "workspace"):
        return catalog_or_workspace.workspace
    return Workspace(catalog_or_workspace)


def load_policy(catalog_or_workspace: Any, run_id: str) -> DeployedPolicy:
    """The deployment object of a run (a Catalog, a Workspace or a workspace path)."""
    return DeployedPolicy(_workspace(catalog_or_workspace), run_id)


def run_info(workspace: Any, run_id: str) -> dict[str, Any]:
    """`runs/<run_id>/run.json` of a Catalog, Workspace or workspace path (`Workspace.run_info`)."""
    return _workspace(workspace).run_info(run_id)


def list_runs(workspace: Any, dataset: str | None = None) -> list[dict[str, Any]]:
    """Every run's run.json (only those on `dataset` when given), newest first. A `dataset` the workspace does not
    have (and no run names) raises UnknownDatasetError listing the datasets (a typo is not "no runs yet")."""
    ws = _workspace(workspace)
    out = []
    for p in sorted(ws.runs_dir.iterdir()) if ws.runs_dir.is_dir() else []:
        if (p / RUN_FILE).is_file():
            try:
                out.append(read_json_file(p / RUN_FILE, f"run {p.name}'s record"))
            except DamagedFileError as exc:  # one damaged run never hides the others; it is named, not silently left out
                log.warning("%s", exc)
    if dataset is not None:
        if dataset not in ws.datasets() and all(r.get("dataset") != dataset for r in out):
            raise UnknownDatasetError(dataset, [d for d in ws.datasets() if not d.endswith(("_evals", "_runs"))])
        out = [r for r in out if r.get("dataset") == dataset]
    for r in out:  # a `running` run whose process is gone (its lifetime lock is free) is shown as dead
        r["status"] = run_status(ws, r.get("run_id", ""), r.get("status"))
    return sorted(out, key=lambda r: r.get("started_at", ""), reverse=True)


def run_status(workspace: Any, run_id: str, stored: str | None) -> str | None:
    """A run's status as it is now: `stored`, except `running` with no live training process -> `schema.STATUS_DEAD`."""
    if stored != schema.RUN_STATUS_RUNNING or not run_id:
        return stored
    return _workspace(workspace).live_status(WRITER_RUN, run_id, stored)


class PolicyFactory:
    """Picklable `policy_factory` for `collect`: `factory(sim) -> DeployedPolicy`, built in the worker."""

    def __init__(self, workspace_root: str | os.PathLike[str], run_id: str) -> None:
        self.workspace_root = str(workspace_root)
        self.run_id = run_id
        ws = Workspace(self.workspace_root)
        if (ws.run_dir(run_id) / CONFIG_FILE).is_file():  # here, not in a worker: a policy class that no longer imports is a clear error
            load_config(ws, run_id)

    def __call__(self, sim) -> DeployedPolicy:
        torch.set_num_threads(1)
        policy = load_policy(Workspace(self.workspace_root), self.run_id)
        policy.encoder.task = getattr(sim, "task", None)  # a multi-task policy's `task` input: the simulated task
        hz = getattr(sim, "control_hz", None)
        if hz is not None and float(policy.cfg.rate_hz) != float(hz):
            raise TrainError(
                f"run {self.run_id} was trained at {policy.cfg.rate_hz:g} Hz and this simulator steps at {hz:g} Hz: a chunk "
                f"is executed one step per control step, so train at the simulator's rate (roboloop train --rate-hz {hz:g})"
            )
        need = policy.cameras
        if need:
            missing = [c for c in need if c not in getattr(sim, "cameras", ())]
            if missing:
                raise TrainError(f"run {self.run_id} needs camera(s) {', '.join(missing)}; record them (RecordingSpec(cameras=...))")
            size = policy.info.get("camera_size")
            if size and (sim.width, sim.height) != tuple(size):
                raise TrainError(
                    f"run {self.run_id} was trained on {size[0]}x{size[1]} frames; render at that size "
                    f"(RecordingSpec(width={size[0]}, height={size[1]})), not {sim.width}x{sim.height}"
                )
        return policy

    def __repr__(self) -> str:
        return f"PolicyFactory({self.workspace_root!r}, {self.run_id!r})"


__all__ = ["DeployedPolicy", "PolicyFactory", "TemporalEnsembler", "list_runs", "load_policy", "run_info", "run_status"]
