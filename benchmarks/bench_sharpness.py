"""Benchmark: the `sharpness` image signal per episode (read the video, decode H.264, Laplacian per frame).

    .venv/bin/python benchmarks/bench_sharpness.py [--episodes 3] [--regen]

Real ALOHA demonstrations (the scripted demonstrator in MuJoCo, the default recording: the top
camera at 320x240, 25 Hz; 400 steps = 200 frames) are collected once into
benchmarks/_data/sharpness_ws (git-ignored) and reused. Measured per episode: the whole
`refine --signal sharpness` (catalog read + decode + Laplacian + layer write), and its parts
timed apart on the same episodes: the catalog read of the video samples, decoding every frame
to RGB, and the variance of the Laplacian of every frame.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.collect.run import CollectConfig, collect
from roboloop.refine import images
from roboloop.refine import layers as refine
from roboloop.video import decode_samples
from roboloop.workspace import Workspace

DATA = Path(__file__).resolve().parent / "_data" / "sharpness_ws"
DS = "sharp"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--regen", action="store_true")
    args = ap.parse_args()
    if args.regen and DATA.exists():
        shutil.rmtree(DATA)
    ws = Workspace(DATA)
    with Catalog(ws, url="") as cat:
        have = cat.segment_table(DS).num_rows if DS in cat.dataset_names() else 0
        if have < args.episodes:
            t = time.perf_counter()
            collect(cat, CollectConfig(dataset=DS, episodes=args.episodes - have, seed=have))
            print(f"collected {args.episodes - have} episode(s) in {time.perf_counter() - t:.1f}s")
        ids = sorted(cat.segment_table(DS).column(schema.SEGMENT_ID).to_pylist())[: args.episodes]
        ds = cat.dataset(DS)
        entity = schema.camera_path("top")

        t = time.perf_counter()
        rep = refine.refine(cat, DS, segment_ids=ids, signals=[schema.SIGNAL_SHARPNESS])
        whole = (time.perf_counter() - t) / len(ids)

        read, decode, lap, frames = [], [], [], 0
        for seg in ids:
            t0 = time.perf_counter()
            _, samples = refine.read_video(ds, seg, entity)
            t1 = time.perf_counter()
            rgb = list(decode_samples(samples))
            t2 = time.perf_counter()
            for f in rgb:
                images.frame_sharpness(f)
            t3 = time.perf_counter()
            read.append(t1 - t0)
            decode.append(t2 - t1)
            lap.append(t3 - t2)
            frames += len(rgb)
        h, w = rgb[0].shape[:2]
        per = frames / len(ids)
        print(f"{len(ids)} episode(s), {per:.0f} frames of {w}x{h} each; values: "
              + ", ".join(f"{v[f'{schema.SIGNAL_SHARPNESS}_top']:.0f}" for v in rep.values.values()))
        print(f"refine --signal sharpness: {whole:.3f} s per episode (compute {rep.compute_seconds / len(ids):.3f} s)")
        print(f"  read video   {statistics.median(read) * 1e3:7.1f} ms per episode")
        print(f"  decode       {statistics.median(decode) * 1e3:7.1f} ms per episode ({statistics.median(decode) / per * 1e3:.2f} ms/frame)")
        print(f"  laplacian    {statistics.median(lap) * 1e3:7.1f} ms per episode ({statistics.median(lap) / per * 1e3:.2f} ms/frame)")


if __name__ == "__main__":
    main()
