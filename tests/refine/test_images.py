"""The `sharpness` image signal on real H.264 recordings: planted blur shows, and a curation query excludes exactly it."""

from __future__ import annotations

import numpy as np
import pytest
import rerun as rr
from scipy.ndimage import gaussian_filter

from roboloop import curate, schema
from roboloop.record import api as record_api
from roboloop.record.episode import EpisodeRecorder
from roboloop.refine import images
from roboloop.refine import layers as refine
from roboloop.video import decode_samples, encode_frames
from tests.reliability.test_hostile_inputs import _invoke

DS = "cams"
HZ = 10
N_FRAMES = 20
W, H = 96, 72
BLURRED = {"ep1", "ep4"}  # frames 8..13 of these episodes are blurred (30% of the episode, in its middle)


def signals_of(catalog, segment_id: str) -> dict:
    row = next(r for r in catalog.segment_table(DS).to_pylist() if r["segment_id"] == segment_id)
    return {k.split(".", 1)[1]: v for k, v in row.items() if k.startswith("signals.")}


def scene(i: int, rng: np.random.Generator) -> np.ndarray:
    """A textured frame (blocks of random grey levels plus a moving bar): plenty of edges."""
    tex = rng.integers(0, 256, size=(H // 4, W // 4), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    f = np.stack([tex, tex[:, ::-1], tex[::-1]], axis=-1).copy()
    f[:, (3 * i) % W : (3 * i) % W + 6] = (250, 40, 40)
    return f


def blur(rgb: np.ndarray) -> np.ndarray:
    return np.clip(gaussian_filter(rgb.astype(np.float64), sigma=(2.5, 2.5, 0)), 0, 255).round().astype(np.uint8)


def record(ws, segment_id: str, seed: int) -> dict[str, list[bytes]]:
    """An episode of a made-up 6-joint robot with two cameras; returns the H.264 samples written per camera."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_FRAMES) / HZ
    written = {}
    with EpisodeRecorder(ws.segment_path(DS, schema.BASE_LAYER, segment_id), segment_id) as rec:
        rec.log_scalar_columns(schema.JOINT_POSITIONS, t, rng.normal(size=(N_FRAMES, 6)))
        for cam in ("top", "wrist"):
            frames = [scene(i, rng) for i in range(N_FRAMES)]
            if cam == "top" and segment_id in BLURRED:
                frames[8:14] = [blur(f) for f in frames[8:14]]
            enc = encode_frames(frames, HZ)
            entity = schema.camera_path(cam)
            rec.log_static(entity, rr.VideoStream(codec=rr.VideoCodec.H264))
            rec.log_columns(entity, t, rr.VideoStream.columns(sample=[e.sample for e in enc], is_keyframe=[e.is_keyframe for e in enc]))
            written[cam] = [e.sample for e in enc]
        rec.set_properties(schema.EPISODE, {"kind": "demo", "seed": seed})
    return written


def laplacian_variance(rgb: np.ndarray) -> float:
    """Written out: 5-point Laplacian of the luma, borders mirrored (edge sample repeated), variance."""
    g = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    p = np.pad(g, 1, mode="symmetric")
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * g
    return float(np.mean((lap - lap.mean()) ** 2))


def expected_sharpness(samples: list[bytes]) -> float:
    values = sorted(laplacian_variance(f.astype(np.float64)) for f in decode_samples(samples))
    # 10th percentile, linear interpolation between closest ranks
    pos = 0.1 * (len(values) - 1)
    lo = int(np.floor(pos))
    return values[lo] + (values[min(lo + 1, len(values) - 1)] - values[lo]) * (pos - lo)


def test_sharpness_finds_planted_blur_and_a_query_excludes_exactly_it(catalog, ws):
    ids = [f"ep{i}" for i in range(6)]
    written = {seg: record(ws, seg, seed=i) for i, seg in enumerate(ids)}
    catalog.register_files(DS, [ws.segment_path(DS, schema.BASE_LAYER, s) for s in ids])

    # the defaults never decode video: no sharpness without asking for it
    default = refine.refine(catalog, DS)
    assert "sharpness" not in default.signals and "signals.sharpness_top" not in catalog.segment_table(DS).column_names

    report = refine.refine(catalog, DS, signals=["sharpness"])
    assert report.computed == ids and report.not_applicable == {}
    for seg in ids:
        got = signals_of(catalog, seg)
        for cam in ("top", "wrist"):
            assert got[f"sharpness_{cam}"] == pytest.approx(expected_sharpness(written[seg][cam]), rel=1e-4), (seg, cam)
        assert got["duration_s"] == pytest.approx((N_FRAMES - 1) / HZ)  # the default run's value is kept

    top = {seg: signals_of(catalog, seg)["sharpness_top"] for seg in ids}
    sharp_min = min(v for s, v in top.items() if s not in BLURRED)
    blurred_max = max(v for s, v in top.items() if s in BLURRED)
    assert blurred_max < 0.5 * sharp_min  # the blurred stretch pulls the episode's summary well down
    threshold = (sharp_min + blurred_max) / 2
    sel = curate.select(catalog, DS, where=f"signals.sharpness_top > {threshold}")
    assert set(sel.segment_ids) == set(ids) - BLURRED
    # the unblurred camera does not separate them
    wrist = [signals_of(catalog, seg)["sharpness_wrist"] for seg in ids]
    assert min(wrist) > blurred_max

    # recomputing the default signals everywhere keeps the sharpness values
    refine.refine(catalog, DS, all_segments=True)
    assert {seg: signals_of(catalog, seg)["sharpness_top"] for seg in ids} == top

    # re-running the unchanged signal is a no-op, reported as such on the command line
    code, out = _invoke(ws.root, "refine", "-d", DS, "--signal", "sharpness")
    assert code == 0 and "every segment already has sharpness at their current version(s) (6)" in out


def test_sharpness_is_skipped_without_cameras_and_frames_need_declaring(catalog, ws, synthetic_episode):
    _, p = synthetic_episode(ws, DS, "nocam", duration_s=0.4)
    catalog.register_files(DS, [p])
    report = refine.refine(catalog, DS, signals=["sharpness"])
    assert report.computed == ["nocam"]
    assert report.not_applicable == {"sharpness": ("needs a camera (an H.264 video stream under /cameras/); the dataset has none", 1)}
    assert images.camera_name("/cameras/left_wrist") == "left_wrist"
    assert images.camera_name("/cameras/rig/front-left") == "rig_front_left"


def test_a_png_camera_gets_a_skip_line_next_to_the_h264_ones_sharpness(catalog, ws):
    rng = np.random.default_rng(0)
    with record_api.episode(catalog, DS) as ep:
        for k in range(6):
            ep.log_video_frame("/cameras/wrist", k / HZ, scene(k, rng))
            ep.log_image("/cameras/overview", k / HZ, scene(k, rng))
    report = refine.refine(catalog, DS, signals=["sharpness"])
    assert report.computed == [ep.segment_id]
    assert signals_of(catalog, ep.segment_id)["sharpness_wrist"] > 0
    assert "sharpness_overview" not in signals_of(catalog, ep.segment_id)
    reason = ("/cameras/overview holds images (log_image, PNG), not an H.264 video stream; record that camera "
              "with log_video_frame")
    assert report.not_applicable == {"sharpness (/cameras/overview)": (reason, 1)}
    code, out = _invoke(ws.root, "refine", "-d", DS, "--signal", "sharpness", "--all")
    assert code == 0 and f"  sharpness (/cameras/overview): skipped on 1 episode(s): {reason}" in out
