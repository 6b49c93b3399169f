"""Shared fixtures: a temporary workspace, a real in-process catalog over it, synthetic episodes."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from roboloop import schema
from roboloop.catalog import Catalog
from roboloop.episode import EpisodeRecorder
from roboloop.video import encode_frames
from roboloop.workspace import Workspace


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture
def catalog(ws) -> Iterator[Catalog]:
    cat = Catalog(ws, url="")  # "" = embedded even if ROBOLOOP_CATALOG is set
    try:
        yield cat
    finally:
        cat.close()


@dataclass
class SyntheticEpisode:
    """What a synthetic episode logged, kept for independent expectations in tests."""

    segment_id: str
    streams: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # entity -> (times_s, values[N, D])
    frames: dict[str, tuple[np.ndarray, list[np.ndarray]]] = field(default_factory=dict)  # entity -> (times_s, rgb frames)
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)


def write_synthetic_episode(
    ws: Workspace,
    dataset: str,
    segment_id: str,
    *,
    duration_s: float = 2.0,
    scalar_streams: Mapping[str, tuple[float, int]] | None = None,
    video_streams: Mapping[str, tuple[float, int, int]] | None = None,
    properties: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
) -> tuple[SyntheticEpisode, Any]:
    """Write one episode with scalar streams {entity: (hz, width)} and videos {entity: (hz, w, h)}.

    Values are smooth random walks (seeded) so interpolation and latest-at differ.
    Returns the SyntheticEpisode and the written path (not registered).
    """
    import rerun as rr

    rng = np.random.default_rng(seed)
    scalar_streams = scalar_streams or {schema.JOINT_POSITIONS: (50.0, 14), schema.JOINT_TARGETS: (50.0, 14)}
    ep = SyntheticEpisode(segment_id)
    path = ws.segment_path(dataset, schema.BASE_LAYER, segment_id)
    with EpisodeRecorder(path, segment_id) as rec:
        for entity, (hz, width) in scalar_streams.items():
            n = int(round(duration_s * hz))
            t = np.arange(n) / hz
            v = np.cumsum(rng.normal(size=(n, width)), axis=0) * 0.1
            rec.log_scalar_columns(entity, t, v)
            ep.streams[entity] = (t, v)
        for entity, (hz, w, h) in (video_streams or {}).items():
            n = int(round(duration_s * hz))
            t = np.arange(n) / hz
            frames = [_test_frame(i, w, h) for i in range(n)]
            enc = encode_frames(frames, int(hz))
            rec.log_static(entity, rr.VideoStream(codec=rr.VideoCodec.H264))
            rec.log_columns(
                entity,
                t,
                rr.VideoStream.columns(sample=[e.sample for e in enc], is_keyframe=[e.is_keyframe for e in enc]),
            )
            ep.frames[entity] = (t, frames)
        for group, values in (properties or {}).items():
            rec.set_properties(group, values)
            ep.properties[group] = dict(values)
    return ep, path


def _test_frame(i: int, w: int, h: int) -> np.ndarray:
    """A frame whose content identifies its index: a moving bright square on a gradient."""
    f = np.zeros((h, w, 3), np.uint8)
    f[:, :, 2] = np.linspace(0, 200, w, dtype=np.uint8)[None, :]
    s = max(4, h // 6)
    x = (i * 3) % max(1, w - s)
    f[h // 3 : h // 3 + s, x : x + s] = (250, 250, 40)
    return f


@pytest.fixture
def synthetic_episode():
    """The `write_synthetic_episode` helper, as a fixture."""
    return write_synthetic_episode
