"""Stream fields <-> policy inputs: ONE list of feature specs, used by training and deployment alike.

A policy's `features(cfg)` (see `roboloop.train.protocol`) builds its list from the builders
here; the built-in policies' lists, for ALOHA (`TrainConfig.state` None):

==========  ======  ==================  =========================================================
name        kind    shape               source (training: stream field / deploy: `Observation`)
==========  ======  ==================  =========================================================
`joints`    state   [14]                `/robot/joint_positions` / `obs.state[path]`
`cube`      state   [7]                 `/state/cube_pose` / `obs.state[path]`          (mlp only)
`phase`     phase   [1]                 stream `timestamp` / `obs.time`, * rate_hz / episode_steps
`image`     image   [3, h, w]           `/cameras/<cam>` (H.264) / `obs.images[cam]` (vision only)
`action`    action  [K, 14]             `/robot/joint_targets` window 0..K-1 (+ mask); training target
`cube_aux`  aux     [7]                 `/state/cube_pose` / never read      (vision with `aux_cube` > 0)
==========  ======  ==================  =========================================================

An `aux` feature is a training-only target (an auxiliary loss's): streamed and normalized in
training like a state, never an input of the network and never read at deploy.

Multi-task (`TrainConfig.tasks`, set when a selection spans tasks): the state inputs are the
union of the tasks' `policy_state` paths, each `optional` (zeros where an episode / an
observation of another task lacks it), and a `task` input (kind `task`, shape [number of
tasks]) is the one-hot of the episode's task over `labels` (training: each segment's
`episode.task`; deploy: the encoder's `task`, set from the simulator's task).

Any robot: `TrainConfig.state` lists the entity paths of the state inputs and
`TrainConfig.action` the action's; a state feature is named after its path (`joints` and
`cube` for ALOHA's two, else the path with `/` -> `_`, e.g. `arm_joint_positions`). Their
widths are not in the config: they are `INFERRED` until the training run reads them from
the data (`with_dims`), and the run's `features.json` keeps them for deployment.

`encode_batch` turns a stream batch into the policy's input dict; `ObservationEncoder`
turns one deploy `Observation` into the same dict (batch of one) through the same
functions (`_phase`, `image_transform`), so the two paths cannot disagree. Deploy frames
arrive only on camera steps: the encoder holds the latest one, exactly what the stream's
latest-at resampling gives at the steps in between; with `deploy_codec` it is first passed
through the recording's H.264 encode/decode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import av
import av.video.reformatter
import numpy as np
import torch
import torch.nn.functional as F

from roboloop import schema
from roboloop.errors import RoboloopError
from roboloop.stream import Field
from roboloop.stream.decode import frame_to_chw
from roboloop.video import H264Encoder


class ObservationError(RoboloopError, ValueError):
    """A deploy observation lacks what the policy was trained on (a state path, a camera) or has another width."""


class NonFiniteDataError(RoboloopError, ValueError):
    """Training data holding NaN/inf: the message names the segment, the stream and the time."""


STATE = "state"
PHASE = "phase"
IMAGE = "image"
ACTION = "action"
TASK = "task"
AUX = "aux"

NUM_JOINTS = 14
"""ALOHA's joints (both arms): the width of its joint state and action."""
INFERRED = -1
"""A width the config does not fix: read from the data when training starts (`with_dims`)."""
NORMALIZED_KINDS = (STATE, ACTION, AUX)
"""Feature kinds standardized by the policy's normalizer (statistics from one streaming pass)."""
_KNOWN_WIDTHS = {schema.JOINT_POSITIONS: NUM_JOINTS, schema.CUBE_POSE: 7, schema.JOINT_TARGETS: NUM_JOINTS}
_KNOWN_NAMES = {schema.JOINT_POSITIONS: "joints", schema.CUBE_POSE: "cube"}


@dataclass(frozen=True)
class FeatureSpec:
    """One policy input (or the target): its name, kind, shape and the stream field it comes from."""

    name: str
    kind: str
    shape: tuple[int, ...]
    path: str | None = None
    window: tuple[int, ...] | None = None
    optional: bool = False
    """A state some tasks' episodes lack: zeros there (multi-task runs)."""
    labels: tuple[str, ...] | None = None
    """The task names a `task` one-hot is over."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "path": self.path,
            "window": None if self.window is None else list(self.window),
        }
        if self.optional:
            out["optional"] = True
        if self.labels is not None:
            out["labels"] = list(self.labels)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        return cls(d["name"], d["kind"], tuple(d["shape"]), d.get("path"), None if d.get("window") is None else tuple(d["window"]),
                   bool(d.get("optional", False)), None if d.get("labels") is None else tuple(d["labels"]))


# --- builders (a policy's `features(cfg)` composes these) -------------------------------------

def feature_name(path: str) -> str:
    """The input name of a state path: `joints` / `cube` for ALOHA's, else the path with `/` -> `_`."""
    return _KNOWN_NAMES.get(path) or "".join(c if c.isalnum() else "_" for c in path.strip("/"))


def state_specs(paths: tuple[str, ...] | list[str], *, aloha: bool = True) -> list[FeatureSpec]:
    """One state feature per entity path: ALOHA's known widths when `aloha` (the policy's default
    inputs), else `INFERRED` (paths a team names may reuse ALOHA's names with another width)."""
    known = _KNOWN_WIDTHS if aloha else {}
    return [FeatureSpec(feature_name(p), STATE, (known.get(p, INFERRED),), p) for p in paths]


def task_spec(names: tuple[str, ...]) -> FeatureSpec:
    """The one-hot `task` input over the run's task names (multi-task runs)."""
    return FeatureSpec("task", TASK, (len(names),), labels=tuple(names))


def phase_spec() -> FeatureSpec:
    return FeatureSpec("phase", PHASE, (1,))


def image_spec(camera: str, height: int, width: int) -> FeatureSpec:
    return FeatureSpec("image", IMAGE, (3, height, width), schema.camera_path(camera))


def aux_spec(name: str, path: str, width: int) -> FeatureSpec:
    """A training-only target read from `path` at each sample's time (an auxiliary loss's; deploy never reads it)."""
    return FeatureSpec(name, AUX, (width,), path)


def action_spec(path: str, chunk: int, *, aloha: bool = True) -> FeatureSpec:
    """The target: `chunk` steps of the action stream at `path` (window 0..chunk-1); its width is
    ALOHA's when `aloha`, else `INFERRED`."""
    width = _KNOWN_WIDTHS.get(path, INFERRED) if aloha else INFERRED
    return FeatureSpec("action", ACTION, (chunk, width), path, tuple(range(chunk)))


def unresolved(specs: list[FeatureSpec]) -> list[FeatureSpec]:
    """The features whose width is still `INFERRED`."""
    return [s for s in specs if s.shape and s.shape[-1] == INFERRED]


def with_dims(specs: list[FeatureSpec], dims: Mapping[str, int]) -> list[FeatureSpec]:
    """`specs` with every `INFERRED` width replaced by `dims[name]` (a missing name raises KeyError)."""
    return [s if s.shape[-1] != INFERRED else dataclasses.replace(s, shape=(*s.shape[:-1], int(dims[s.name])))
            for s in specs]


def fields_spec(cfg, specs: list[FeatureSpec]) -> dict[str, Any]:
    """The stream fields spec saved in the config: rate + every feature's source (widths as the config knows them)."""
    return {
        "rate_hz": cfg.rate_hz,
        "timeline": schema.TIMELINE,
        "features": [s.to_dict() for s in specs],
    }


def stream_fields(specs: list[FeatureSpec]) -> dict[str, Any]:
    """`EpisodeStream(fields=...)` for these features (phase comes from the stream's timestamps)."""
    out: dict[str, Any] = {}
    for s in specs:
        if s.path is None:
            continue
        if s.window is not None:
            out[s.name] = Field(s.path, window=s.window)
        elif s.optional and s.shape[-1] != INFERRED:
            out[s.name] = Field(s.path, fill=s.shape[-1])
        else:
            out[s.name] = Field(s.path)
    return out


def scalar_specs(specs: list[FeatureSpec]) -> list[FeatureSpec]:
    """The features that need normalization statistics (no cameras: a stats pass never decodes video)."""
    return [s for s in specs if s.kind in NORMALIZED_KINDS]


# --- the shared transforms ---------------------------------------------------------------------

def _phase(time_s: torch.Tensor, cfg) -> torch.Tensor:
    """Episode phase from time since the episode start: step / episode_steps, where step = time * the stream's
    rate (`cfg.rate_hz`, the control rate) and `cfg.episode_steps` is the task's episode length in steps."""
    return (time_s.to(torch.float64) * (cfg.rate_hz / cfg.episode_steps)).to(torch.float32).reshape(-1, 1)


def image_transform(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float [B, 3, h, w] in [0, 1] (area resize when the size differs)."""
    x = frames.to(torch.float32) / 255.0
    h, w = size
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="area")
    return x


def task_one_hot(spec: FeatureSpec, names) -> torch.Tensor:
    """float [len(names), len(spec.labels)]: the one-hot of each task name over the run's tasks."""
    unknown = sorted({n for n in names if n not in spec.labels})
    if unknown:
        raise ObservationError(f"task {', '.join(unknown)} is not one the policy was trained on ({', '.join(spec.labels)})")
    idx = torch.tensor([spec.labels.index(n) for n in names], dtype=torch.int64)
    return F.one_hot(idx, len(spec.labels)).to(torch.float32)


def encode_batch(specs: list[FeatureSpec], batch: Mapping[str, torch.Tensor], cfg,
                 segment_tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
    """A stream batch -> the policy's input dict (+ `action`, `action_mask`); `segment_tasks`: the
    task of each of the stream's segments (by `episode_index`), for a `task` input."""
    out: dict[str, torch.Tensor] = {}
    for s in specs:
        if s.kind == TASK:
            if segment_tasks is None:
                raise ValueError("a multi-task policy's batch needs segment_tasks (the task of each stream segment)")
            out[s.name] = task_one_hot(s, segment_tasks)[batch["episode_index"].to(torch.int64)]
        elif s.kind in (STATE, AUX):
            out[s.name] = batch[s.name].to(torch.float32)
        elif s.kind == PHASE:
            out[s.name] = _phase(batch["timestamp"], cfg)
        elif s.kind == IMAGE:
            out[s.name] = image_transform(batch[s.name], s.shape[1:])
        elif s.kind == ACTION:
            out[s.name] = batch[s.name].to(torch.float32)
            out[f"{s.name}_mask"] = batch[f"{s.name}_mask"].to(torch.bool)
    return out


class ObservationEncoder:
    """Deploy side: one `collect.Observation` -> the policy's input dict (batch of one).

    Holds the latest camera frame between camera steps; `reset()` clears it (and the codec).
    `task`: the task observed (a multi-task policy's `task` input; set it before encoding).
    """

    def __init__(self, specs: list[FeatureSpec], cfg, *, camera_hz: int = schema.CAMERA_HZ, task: str | None = None) -> None:
        self.specs = [s for s in specs if s.kind not in (ACTION, AUX)]  # targets: training only
        self.cfg = cfg
        self.camera_hz = int(camera_hz)
        self.task = task
        self._frames: dict[str, np.ndarray] = {}
        self._codecs: dict[str, _FrameCodec] = {}

    def reset(self) -> None:
        self._frames.clear()
        for c in self._codecs.values():
            c.close()
        self._codecs.clear()

    def encode(self, obs) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for s in self.specs:
            if s.kind == STATE:
                src = self._state(s, obs)
                # the stream reads float64 scalars and casts to float32: do exactly that
                out[s.name] = torch.from_numpy(np.asarray(src, dtype=np.float64).astype(np.float32).reshape(1, -1))
            elif s.kind == PHASE:
                out[s.name] = _phase(torch.tensor([float(obs.time)], dtype=torch.float64), self.cfg)
            elif s.kind == TASK:
                if self.task is None:
                    raise ObservationError(f"the policy was trained on tasks {', '.join(s.labels)}: set the encoder's task "
                                           "(deployed through collect/eval it is the simulator's task)")
                out[s.name] = task_one_hot(s, [self.task])
            elif s.kind == IMAGE:
                chw = torch.from_numpy(self._frame(s, obs))[None]
                out[s.name] = image_transform(chw, s.shape[1:])
        return out

    @staticmethod
    def _state(s: FeatureSpec, obs) -> np.ndarray:
        state = getattr(obs, "state", None) or {}
        if s.optional and s.path not in state:  # another task's state (multi-task): zeros, as in training
            return np.zeros(s.shape[-1])
        if s.path not in state:
            raise ObservationError(
                f"the policy reads state {s.path!r} ({s.name}) but the observation has "
                f"{', '.join(sorted(state)) or 'no state'}; put it in Observation.state keyed by that entity path"
            )
        value = np.asarray(state[s.path])
        if value.size != s.shape[-1]:
            raise ObservationError(f"state {s.path!r} has {value.size} values at deploy, the policy was trained on {s.shape[-1]}")
        try:
            finite = np.isfinite(value.astype(np.float64)).all()
        except (TypeError, ValueError):
            finite = False
        if not finite:
            raise ObservationError(f"state {s.path!r} holds non-numeric or non-finite values {value.reshape(-1).tolist()} at "
                                   f"deploy; the policy would return NaN actions: pass the last finite reading (or stop)")
        return value

    def _frame(self, s: FeatureSpec, obs) -> np.ndarray:
        cam = s.path.rsplit("/", 1)[-1]
        img = obs.images.get(cam) if obs.images else None
        if img is not None:
            img = np.asarray(img, dtype=np.uint8)
            if getattr(self.cfg.model, "deploy_codec", False):
                codec = self._codecs.get(cam)
                if codec is None:
                    codec = self._codecs[cam] = _FrameCodec(img.shape[1], img.shape[0], self.camera_hz)
                chw = codec(img)
            else:
                chw = np.ascontiguousarray(img.transpose(2, 0, 1))
            self._frames[cam] = chw  # uint8 [3, H, W], as the stream yields it
        if cam not in self._frames:
            raise ValueError(
                f"the policy needs camera {cam!r} but the first observation has no {cam!r} frame; "
                f"record/render it at deploy (RecordingSpec(cameras=({cam!r},), ...))"
            )
        return self._frames[cam]


class _FrameCodec:
    """The recording's H.264 round trip (same encoder settings, the stream's YUV -> RGB conversion), frame by frame."""

    def __init__(self, width: int, height: int, fps: int) -> None:
        self.enc = H264Encoder(width, height, fps, gop=fps)
        self.dec = av.CodecContext.create("h264", "r")
        self.dec.thread_count = 1
        self.reformatter = av.video.reformatter.VideoReformatter()
        self.shape = (3, height, width)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """HWC uint8 frame -> CHW uint8 frame after encode + decode."""
        out = None
        for sample in self.enc.encode(rgb):
            for frame in self.dec.decode(av.Packet(sample.sample)):
                out = np.empty(self.shape, np.uint8)
                frame_to_chw(frame, out, self.reformatter)
        if out is None:  # the decoder held the frame back: should not happen without B-frames
            raise RuntimeError("H.264 round trip produced no frame for this step")
        return out

    def close(self) -> None:
        self.dec = None
        self.enc = None


# --- normalization statistics (one streaming pass) -------------------------------------------

def _check_finite(stream, batch, s: FeatureSpec, x: torch.Tensor) -> None:
    """A non-finite value in the training data stops training with the segment, stream and time that hold it."""
    bad = ~torch.isfinite(x)
    if s.kind == ACTION:
        bad &= batch[f"{s.name}_mask"].to(torch.bool)[..., None]
    if not bool(bad.any()):
        return
    row = int(bad.reshape(bad.shape[0], -1).any(1).nonzero()[0])
    where = ""
    if "episode_index" in batch and "timestamp" in batch:
        seg = stream.segment_ids[int(batch["episode_index"][row])]
        t = float(batch["timestamp"][row])
        if s.kind == ACTION:  # the first bad step of the action window starting at t
            t += int(bad[row].any(-1).nonzero()[0]) / float(stream.rate_hz)
        where = f" in segment {seg} at {t:.6g} s after its start"
    raise NonFiniteDataError(f"field {s.name!r} ({s.path}) holds a non-finite value (NaN/inf){where}; fix or drop that "
                     f"episode (e.g. curate a selection without it) and train again")


def stream_stats(stream, specs: list[FeatureSpec]) -> dict[str, dict[str, np.ndarray]]:
    """Mean and std of every normalized feature over one pass of `stream` (float64 sums).

    The action statistics are per joint over the valid (masked) window entries. A std
    below 1e-4 (a constant input, e.g. qx of a cube that never tilts) becomes 1.
    """
    acc: dict[str, list] = {}
    for batch in stream:
        for s in scalar_specs(specs):
            x = batch[s.name].to(torch.float64)
            _check_finite(stream, batch, s, x)
            if s.kind == ACTION:
                x = x[batch[f"{s.name}_mask"].to(torch.bool)]
            x = x.reshape(-1, x.shape[-1])
            a = acc.setdefault(s.name, [0, torch.zeros(x.shape[-1], dtype=torch.float64), torch.zeros(x.shape[-1], dtype=torch.float64)])
            a[0] += x.shape[0]
            a[1] += x.sum(0)
            a[2] += (x * x).sum(0)
    out: dict[str, dict[str, np.ndarray]] = {}
    for s in scalar_specs(specs):
        if s.name not in acc or acc[s.name][0] == 0:
            raise ValueError(f"no samples for feature {s.name!r}: is the selection empty?")
        n, sm, sq = acc[s.name]
        mean = sm / n
        var = (sq / n - mean * mean).clamp_min(0.0)
        std = var.sqrt()
        std = torch.where(std < 1e-4, torch.ones_like(std), std)
        out[s.name] = {"mean": mean.numpy().astype(np.float32), "std": std.numpy().astype(np.float32)}
    return out
