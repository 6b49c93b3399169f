"""`TrainConfig` and the policy configs: frozen, self-validating, exact JSON round trip.

A run stores `TrainConfig.to_dict()` as `runs/<run_id>/config.json`; `--like RUN` rebuilds
the identical config with `TrainConfig.from_dict` (an unknown or misspelled key is an
error, never ignored). The dict also carries `fields`, the stream fields spec the
features derive from the config (entity path, window in steps at `rate_hz`): it is
checked on load, so a config whose fields would stream differently does not load.

The policy name resolves to a class (`roboloop.train.protocol.policy_class`: built-in, entry
point, or `package.module:Class`) whose `Config` is the model config; a `[model]` table in a
config file fills it. `state` / `action` name the entity paths the features read (any robot);
widths the config does not fix are read from the data when the run starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import tomli_w

from roboloop import schema
from roboloop.config import Config
from roboloop.errors import ConfigError as _ConfigError
from roboloop.errors import RoboloopError
from roboloop.train.features import feature_name, fields_spec
from roboloop.train.protocol import UnknownPolicyError, feature_specs, policy_class


class TrainError(RoboloopError):
    """A training problem the user can act on; the message says what to do."""


class ConfigError(TrainError, _ConfigError):
    """A config value or key that is not valid; the message names it and the valid choices."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class MLPConfig(Config):
    """State policy: joint positions + cube pose + phase -> the next `chunk` joint targets."""

    hidden: int = 256
    """Width of every hidden layer."""
    layers: int = 3
    """Number of hidden layers (GELU)."""
    joint_noise: float = 0.01
    """Std of Gaussian noise added to the joint-position inputs while training (rad; decisive, see FIELD-NOTES)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.hidden >= 1, f"model.hidden must be >= 1, got {self.hidden}")
        _check(self.layers >= 1, f"model.layers must be >= 1, got {self.layers}")
        _check(self.joint_noise >= 0, f"model.joint_noise must be >= 0, got {self.joint_noise}")


@dataclass(frozen=True)
class VisionConfig(Config):
    """Camera policy: a small CNN with spatial-softmax keypoints on one camera + joints + phase (no cube pose)."""

    camera: str = "top"
    """Camera the policy sees (must be recorded in every training episode and rendered at deploy)."""
    image_width: int = 96
    """Width the frames are resized to before the CNN (equal to the recorded width: no resize)."""
    image_height: int = 72
    """Height the frames are resized to before the CNN."""
    channels: tuple[int, ...] = (16, 32, 32, 32)
    """Output channels of the 3x3 conv layers (the first two have stride 2)."""
    keypoints: int = 16
    """Spatial-softmax keypoints (each gives an x, y feature)."""
    hidden: int = 256
    """Width of every hidden layer of the head."""
    layers: int = 3
    """Number of hidden layers of the head (GELU)."""
    joint_noise: float = 0.01
    """Std of Gaussian noise added to the joint-position inputs while training."""
    shift_px: int = 4
    """Random shift augmentation in pixels while training (replicate padding + random crop); 0 = off."""
    brightness: float = 0.0
    """Random brightness/contrast augmentation while training, applied with the shift; 0 = off. Each image is
    multiplied by a gain drawn log-uniformly in [1 / (1 + b), 1 + b] and its contrast about its mean by a factor
    in [1 / sqrt(1 + b), sqrt(1 + b)], then clipped to [0, 1]. 1.0 spans the transfer cube's `dim` lighting, whose
    top-camera frames are 0.52x as bright as `normal` (mean 0.082 vs 0.159 at 96x72)."""
    deploy_codec: bool = True
    """Pass deploy frames through the recording's H.264 encode/decode, so deploy sees what training saw."""
    aux_cube: float = 0.0
    """Weight of a training-only auxiliary loss: a linear map of the keypoints predicts the recorded cube position
    (`/state/cube_pose`, normalized x, y, z; L1). Deploy never reads the cube pose; 0 = off (no cube pose streamed).
    1.0 measured 8/30 vs 1/30 at 50 demonstrations (benchmarks/README.md); off by default because it needs the cube
    pose in every training episode, which the simulator records and other tasks, robots and hardware data lack."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        _check(bool(self.channels) and all(c >= 1 for c in self.channels), f"model.channels must be positive, got {self.channels}")
        _check(self.image_width >= 8 and self.image_height >= 8, f"image size must be >= 8x8, got {self.image_width}x{self.image_height}")
        _check(self.keypoints >= 1, f"model.keypoints must be >= 1, got {self.keypoints}")
        _check(self.hidden >= 1 and self.layers >= 1, "model.hidden and model.layers must be >= 1")
        _check(self.joint_noise >= 0 and self.shift_px >= 0, "model.joint_noise and model.shift_px must be >= 0")
        _check(self.aux_cube >= 0, f"model.aux_cube must be >= 0 (0 = off), got {self.aux_cube}")
        _check(self.brightness >= 0, f"model.brightness must be >= 0 (0 = off), got {self.brightness}")
        _check(bool(self.camera), "model.camera must name a camera, e.g. 'top'")


@dataclass(frozen=True)
class TrainConfig(Config):
    """Everything a training run needs besides the data: saved with the run, reused by `--like`."""

    dataset: str
    """Demonstration dataset the selection belongs to."""
    selection: str
    """Saved selection (curate) to train on: its train ids train, its holdout ids give the holdout loss."""
    policy: str = "mlp"
    """Policy: 'mlp' (state + cube pose), 'vision' (camera + joints), a name registered under the entry point group roboloop.policies, or an import path package.module:Class."""
    model: Config | None = None
    """The policy's model config, its class's `Config` (None = its defaults; a config file's [model] table sets fields)."""
    state: tuple[str, ...] | None = None
    """Entity paths of the state inputs, e.g. ('/arm/joint_positions',) (None = the policy's default: ALOHA's joints, and the cube pose for mlp); widths are read from the data."""
    tasks: tuple[str, ...] | None = None
    """Multi-task run: the tasks of its selection (set by train when a selection spans tasks): a one-hot `task` input over them, and a state path a task's episodes lack reads zeros. None: one task."""
    action: str = schema.JOINT_TARGETS
    """Entity path of the action the policy predicts (its width is read from the data)."""
    chunk: int = 10
    """Action chunk: the policy predicts the next `chunk` joint targets, in control steps."""
    rate_hz: float = float(schema.CONTROL_HZ)
    """Training grid rate: the robot's control rate (ALOHA's 50 Hz by default), so a window of `chunk` steps is
    what the policy executes; `eval` refuses a run whose rate differs from the simulator's."""
    episode_steps: int = 300
    """Phase input = step / episode_steps (the task's episode length)."""
    epochs: int = 150
    """Passes over the training episodes."""
    batch_size: int = 256
    """Samples per optimizer step."""
    lr: float = 1e-3
    """Peak AdamW learning rate (cosine decay to 0 over all steps)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 10.0
    """Clip the gradient norm to this value (0 = no clipping)."""
    seed: int = 0
    """Seeds torch, numpy and the stream's shuffling: same config + selection + seed on CPU = same loss curve."""
    num_workers: int = 0
    """DataLoader worker processes (persistent, spawn); 0 streams in the training process (measured faster for mlp)."""
    cache_mb: float = 512.0
    """Memory (MB) the training stream may keep fetched episodes in as ready samples, so epochs after the first neither
    query the catalog nor decode video (total over its DataLoader workers; 0 = off). Does not change training: the
    batches are identical."""
    threads: int = 1
    """torch threads of the training process: 1 by default (two threads on two busy cores measured up to 8x slower)."""
    holdout_every: int = 5
    """Compute the holdout loss every this many epochs (and after the last)."""
    checkpoint_every: int = 10
    """Write a complete checkpoint every this many epochs (and after the last)."""
    ensemble_m: float = 0.01
    """Temporal ensembling weight exp(-m * i) at deploy (ACT; i = 0 is the oldest prediction)."""
    samples: int = 3
    """Sample views per split in the run recording (random training samples and fixed random holdout windows, at the first, middle and last epoch); 0 = none. Does not change training."""
    nproc: int = 1
    """Training processes (DDP, gloo): each streams its shard with batch_size / nproc samples per step (global batch unchanged)."""
    expert_steps_only: bool = False
    """Corrective episodes: train only on steps whose label came from the expert or a person (an intervention's takeover steps; every step of a simulated corrective episode and of a demonstration)."""

    def __post_init__(self) -> None:
        try:
            cls = policy_class(self.policy).Config
        except UnknownPolicyError as exc:
            raise ConfigError(str(exc)) from None
        if self.model is None:
            object.__setattr__(self, "model", cls())
        elif isinstance(self.model, Mapping):  # the kind picks the class (the shared converter would pick the first)
            try:
                object.__setattr__(self, "model", cls.from_dict(self.model))
            except _ConfigError as exc:
                raise ConfigError(f"model: {exc}") from None
        _check(isinstance(self.model, cls), f"policy {self.policy!r} needs a {cls.__name__}, got {type(self.model).__name__}")
        super().__post_init__()
        try:
            schema.validate_demo_dataset_name(self.dataset)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        _check(bool(self.selection), "selection must name a saved selection (see `roboloop curate ls`)")
        _check(self.chunk >= 1, f"chunk must be >= 1, got {self.chunk}")
        self._check_paths()
        _check(
            isinstance(self.rate_hz, (int, float)) and 0 < self.rate_hz <= 1000,
            f"rate_hz must be the robot's control rate in Hz (0 < rate <= 1000; a chunk of K steps is executed one step "
            f"per control step at deploy), got {self.rate_hz!r}",
        )
        _check(self.episode_steps >= 1, f"episode_steps must be >= 1, got {self.episode_steps}")
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0 and self.grad_clip >= 0, "weight_decay and grad_clip must be >= 0")
        _check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        _check(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        _check(self.cache_mb >= 0, f"cache_mb must be >= 0 megabytes (0 = no cache), got {self.cache_mb}")
        _check(isinstance(self.threads, int) and self.threads >= 1, f"threads must be an int >= 1, got {self.threads!r}")
        _check(self.holdout_every >= 1 and self.checkpoint_every >= 1, "holdout_every and checkpoint_every must be >= 1")
        _check(self.ensemble_m >= 0, f"ensemble_m must be >= 0, got {self.ensemble_m}")
        _check(self.samples >= 0, f"samples must be >= 0, got {self.samples}")
        _check(self.nproc >= 1, f"nproc must be >= 1, got {self.nproc}")
        _check(
            self.batch_size % self.nproc == 0,
            f"batch_size {self.batch_size} must be a multiple of nproc {self.nproc} (it is the global batch; each process takes batch_size / nproc)",
        )
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int",) and isinstance(v, bool):
                raise ConfigError(f"{f.name} must be an integer, got {v!r}")

    def _check_paths(self) -> None:
        _check(isinstance(self.action, str) and self.action.startswith("/"), f"action must be an entity path like /robot/joint_targets, got {self.action!r}")
        _check(self.tasks is None or (len(self.tasks) >= 2 and all(isinstance(t, str) and t for t in self.tasks)),
               f"tasks names a multi-task run's tasks (two or more), got {self.tasks!r}")
        if self.state is None:
            return
        _check(len(self.state) >= 1, "state must name at least one entity path (or be left unset for the policy's default)")
        for p in self.state:
            _check(isinstance(p, str) and p.startswith("/") and len(p) > 1, f"state paths must be entity paths like /arm/joint_positions, got {p!r}")
        names = [feature_name(p) for p in self.state]
        _check(len(set(names)) == len(names), f"state paths {list(self.state)} give clashing input names {names}; pass each path once")
        _check(not {"phase", "image", "action"} & set(names), f"state paths may not be named phase, image or action: {names}")

    # --- JSON / TOML (roboloop.config.Config), plus the derived `fields` spec ------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (model as a dict, plus the derived stream `fields` spec)."""
        out = super().to_dict()
        out["fields"] = fields_spec(self, feature_specs(self))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys and a `fields` spec that does not match raise ConfigError."""
        d = dict(d)
        spec = d.pop("fields", None)
        try:
            cfg = super().from_dict(d)
        except ConfigError:
            raise
        except _ConfigError as exc:
            raise ConfigError(str(exc)) from None
        if spec is not None:
            derived = fields_spec(cfg, feature_specs(cfg))
            if _plain(spec) != derived:
                raise ConfigError(
                    "the config's stored stream fields spec differs from what this version of roboloop derives from it; "
                    f"stored {json.dumps(spec)}, derived {json.dumps(derived)}"
                )
        return cfg

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    def to_toml(self) -> str:
        """TOML without the derived `fields` spec (TOML has no null: `state` None is left out; `fields` is re-derived on load)."""
        d = self.to_dict()
        d.pop("fields")
        return tomli_w.dumps({k: v for k, v in d.items() if v is not None})

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again); `policy` changes reset the model config."""
        if "policy" in changes and changes["policy"] != self.policy and "model" not in changes:
            changes["model"] = None
        return dataclasses.replace(self, **changes)

    def digest(self) -> str:
        """SHA-256 of the training recipe: everything except dataset and selection.

        Two runs with the same digest trained the same way (a `--like` re-train on a new
        selection keeps the digest; so does `nproc`, which splits the same global batch);
        the selection digest tells what they trained on.
        """
        d = self.to_dict()
        d.pop("dataset")
        d.pop("selection")
        d.pop("nproc")  # how many processes share a step does not change the recipe (global batch, averaged gradients)
        if d["state"] is None and d["action"] == schema.JOINT_TARGETS:  # the policy's default features: digests as before state/action existed
            d.pop("state")
            d.pop("action")
        if d["tasks"] is None:  # one task: digests as before multi-task runs existed
            d.pop("tasks")
        if not d["expert_steps_only"]:  # the default: digests as before corrective episodes existed
            d.pop("expert_steps_only")
        if self.policy == "vision" and not d["model"].get("aux_cube"):  # off: vision digests as before the option existed
            d["model"].pop("aux_cube", None)
        if self.policy == "vision" and not d["model"].get("brightness"):  # off: vision digests as before the option existed
            d["model"].pop("brightness", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def flat(self) -> dict[str, Any]:
        """Flattened `key -> scalar` view (`model_hidden`, `lr`, ...) for run properties."""
        out: dict[str, Any] = {}
        for k, v in self.to_dict().items():
            if k == "fields":
                continue
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    out[f"{k}_{k2}"] = ",".join(map(str, v2)) if isinstance(v2, list) else v2
            elif k == "state":  # the entity paths, or `default` (the policy's own)
                out[k] = ",".join(v) if v is not None else "default"
            elif k == "tasks":  # a multi-task run's tasks (one task: no property)
                if v is not None:
                    out[k] = ",".join(v)
            elif k == "expert_steps_only":  # a property only when set (runs keep their columns)
                if v:
                    out[k] = v
            else:
                out[k] = v
        return out


def _plain(v: Any) -> Any:
    """Tuples -> lists, recursively (what JSON gives back)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
