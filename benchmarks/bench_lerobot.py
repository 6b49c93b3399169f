"""Benchmark: LeRobot export and import of ALOHA-sized episodes.

N synthetic episodes written by the real recorder (6 s: joints, targets and cube pose at
50 Hz, one 320x240 H.264 camera at 25 Hz) are exported as a LeRobot v3.0 dataset at 50 fps
(every camera frame resampled onto the 50 Hz grid, decoded and re-encoded) and imported back
into a new dataset. Reports wall time and frames/s of each direction, median of the repeats.

    .venv/bin/python benchmarks/bench_lerobot.py --episodes 10 --repeats 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def build(ws, n: int, width: int, height: int) -> list[str]:
    import rerun as rr

    from roboloop import schema
    from roboloop.record.episode import EpisodeRecorder
    from roboloop.video import encode_frames

    rng = np.random.default_rng(0)
    ids = []
    t50 = np.arange(300) / 50.0
    t25 = np.arange(150) / 25.0
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(n):
        sid = f"ep-{i:04d}"
        frames = []
        for k in range(150):
            f = np.zeros((height, width, 3), np.uint8)
            f[..., 0] = (xx * 200 // width).astype(np.uint8)
            f[..., 1] = (yy * 200 // height).astype(np.uint8)
            x0 = (k * 2 + i * 7) % (width - 20)
            f[100:120, x0 : x0 + 20] = (240, 30, 30)
            frames.append(f)
        enc = encode_frames(frames, 25)
        with EpisodeRecorder(ws.segment_path("bench", schema.BASE_LAYER, sid), sid) as rec:
            rec.log_scalar_columns(schema.JOINT_POSITIONS, t50, np.cumsum(rng.normal(size=(300, 14)), axis=0) * 0.01)
            rec.log_scalar_columns(schema.JOINT_TARGETS, t50, np.cumsum(rng.normal(size=(300, 14)), axis=0) * 0.01)
            rec.log_scalar_columns(schema.CUBE_POSE, t50, rng.normal(size=(300, 7)))
            rec.log_static(schema.camera_path("top"), rr.VideoStream(codec=rr.VideoCodec.H264))
            rec.log_columns(
                schema.camera_path("top"),
                t25,
                rr.VideoStream.columns(sample=[e.sample for e in enc], is_keyframe=[e.is_keyframe for e in enc]),
            )
            rec.set_properties(schema.EPISODE, {"kind": "demo", "task": "transfer_cube"})
        ids.append(sid)
    return ids


def main() -> None:
    import torch

    from roboloop import curate
    from roboloop.catalog.client import Catalog
    from roboloop.interop import export_lerobot, import_lerobot
    from roboloop.workspace import Workspace

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="320x240")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="bench-lerobot-"))
    try:
        ws = Workspace(root / "ws")
        build(ws, args.episodes, w, h)
        exp, imp = [], []
        with Catalog(ws, url="") as cat:
            curate.save(cat, curate.select(cat, "bench"), "all")
            for r in range(args.repeats):
                out = root / f"out{r}"
                t0 = time.perf_counter()
                rep = export_lerobot(cat, "all", out, 50)
                exp.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                back = import_lerobot(cat, out, f"back{r}")
                imp.append(time.perf_counter() - t0)
                assert len(back.segment_ids) == args.episodes and back.frames == rep.frames
        frames = rep.frames
        e, i = statistics.median(exp), statistics.median(imp)
        print(f"{args.episodes} episodes x 300 frames at 50 fps, camera {w}x{h}: {frames} frames")
        print(f"export: {e:.2f} s  ({frames / e:.0f} frames/s, {args.episodes / e * 60:.0f} episodes/min)  runs {[round(x, 2) for x in exp]}")
        print(f"import: {i:.2f} s  ({frames / i:.0f} frames/s, {args.episodes / i * 60:.0f} episodes/min)  runs {[round(x, 2) for x in imp]}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
