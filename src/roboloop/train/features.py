"""Stream fields <-> policy inputs: ONE list of feature specs, used by training and deployment alike.

`feature_specs(cfg)` says what a policy consumes and where it comes from:

==========  ======  ==================  =========================================================
name        kind    shape               source (training: stream field / deploy: `Observation`)
==========  ======  ==================  =========================================================
`joints`    state   [14]                `/robot/joint_positions` / `obs.joint_positions`
`cube`      state   [7]                 `/state/cube_pose` / `obs.cube_pose`            (mlp only)
`phase`     phase   [1]                 stream `timestamp` / `obs.time`, * control_hz / episode_steps
`image`     image   [3, h, w]           `/cameras/<cam>` (H.264) / `obs.images[cam]` (vision only)
`action`    action  [K, 14]             `/robot/joint_targets` window 0..K-1 (+ mask); training target
==========  ======  ==================  =========================================================

`encode_batch` turns a stream batch into the policy's input dict; `ObservationEncoder`
turns one deploy `Observation` into the same dict (batch of one) through the same
functions (`_phase`, `image_transform`), so the two paths cannot disagree. Deploy frames
arrive only on camera steps: the encoder holds the latest one, exactly what the stream's
latest-at resampling gives at the steps in between; with `deploy_codec` it is first passed
through the recording's H.264 encode/decode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import av
import av.video.reformatter
import numpy as np
import torch
import torch.nn.functional as F

from roboloop import schema
from roboloop.stream import Field
from roboloop.stream.decode import frame_to_chw
from roboloop.video import H264Encoder

STATE = "state"
PHASE = "phase"
IMAGE = "image"
ACTION = "action"

NUM_JOINTS = 14
NORMALIZED = ("joints", "cube", "action")
"""Features standardized by the policy's normalizer (statistics from one streaming pass)."""


@dataclass(frozen=True)
class FeatureSpec:
    """One policy input (or the target): its name, kind, shape and the stream field it comes from."""

    name: str
    kind: str
    shape: tuple[int, ...]
    path: str | None = None
    window: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "path": self.path,
            "window": None if self.window is None else list(self.window),
        }


def feature_specs(cfg) -> list[FeatureSpec]:
    """The features of `cfg.policy` (inputs first, the `action` target last)."""
    specs = [FeatureSpec("joints", STATE, (NUM_JOINTS,), schema.JOINT_POSITIONS)]
    if cfg.policy == "mlp":
        specs.append(FeatureSpec("cube", STATE, (7,), schema.CUBE_POSE))
    elif cfg.policy == "vision":
        m = cfg.model
        specs.insert(0, FeatureSpec("image", IMAGE, (3, m.image_height, m.image_width), schema.camera_path(m.camera)))
    specs.append(FeatureSpec("phase", PHASE, (1,)))
    specs.append(FeatureSpec("action", ACTION, (cfg.chunk, NUM_JOINTS), schema.JOINT_TARGETS, tuple(range(cfg.chunk))))
    return specs


def fields_spec(cfg) -> dict[str, Any]:
    """The stream fields spec saved in the config: rate + every feature's source."""
    return {
        "rate_hz": cfg.rate_hz,
        "timeline": schema.TIMELINE,
        "features": [s.to_dict() for s in feature_specs(cfg)],
    }


def stream_fields(specs: list[FeatureSpec]) -> dict[str, Any]:
    """`EpisodeStream(fields=...)` for these features (phase comes from the stream's timestamps)."""
    out: dict[str, Any] = {}
    for s in specs:
        if s.path is None:
            continue
        out[s.name] = Field(s.path, window=s.window) if s.window is not None else Field(s.path)
    return out


def scalar_specs(specs: list[FeatureSpec]) -> list[FeatureSpec]:
    """The features that need normalization statistics (no cameras: a stats pass never decodes video)."""
    return [s for s in specs if s.name in NORMALIZED]


# --- the shared transforms ---------------------------------------------------------------------

def _phase(time_s: torch.Tensor, cfg) -> torch.Tensor:
    """Episode phase from time since the episode start: step / episode_steps."""
    return (time_s.to(torch.float64) * (schema.CONTROL_HZ / cfg.episode_steps)).to(torch.float32).reshape(-1, 1)


def image_transform(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float [B, 3, h, w] in [0, 1] (area resize when the size differs)."""
    x = frames.to(torch.float32) / 255.0
    h, w = size
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="area")
    return x


def encode_batch(specs: list[FeatureSpec], batch: Mapping[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """A stream batch -> the policy's input dict (+ `action`, `action_mask`)."""
    out: dict[str, torch.Tensor] = {}
    for s in specs:
        if s.kind == STATE:
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
    """

    def __init__(self, specs: list[FeatureSpec], cfg, *, camera_hz: int = schema.CAMERA_HZ) -> None:
        self.specs = [s for s in specs if s.kind != ACTION]
        self.cfg = cfg
        self.camera_hz = int(camera_hz)
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
                src = obs.joint_positions if s.name == "joints" else obs.cube_pose
                # the stream reads float64 scalars and casts to float32: do exactly that
                out[s.name] = torch.from_numpy(np.asarray(src, dtype=np.float64).astype(np.float32).reshape(1, -1))
            elif s.kind == PHASE:
                out[s.name] = _phase(torch.tensor([float(obs.time)], dtype=torch.float64), self.cfg)
            elif s.kind == IMAGE:
                chw = torch.from_numpy(self._frame(s, obs))[None]
                out[s.name] = image_transform(chw, s.shape[1:])
        return out

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

def stream_stats(stream, specs: list[FeatureSpec]) -> dict[str, dict[str, np.ndarray]]:
    """Mean and std of every normalized feature over one pass of `stream` (float64 sums).

    The action statistics are per joint over the valid (masked) window entries. A std
    below 1e-4 (a constant input, e.g. qx of a cube that never tilts) becomes 1.
    """
    acc: dict[str, list] = {}
    for batch in stream:
        for s in scalar_specs(specs):
            x = batch[s.name].to(torch.float64)
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
