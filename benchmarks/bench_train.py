"""Training throughput from the stream vs the same model on the same samples held in memory.

    PYTHONPATH=src python benchmarks/bench_train.py [--episodes 50] [--epochs 10] [--repeats 3] [--workers 0,2] [--ahead]
        [--cache-mb 0,512] [--policy mlp|vision]

One run, one process: 50 episodes x 300 steps (15k samples; joint positions, joint targets
and cube pose at 50 Hz, written by the real recorder) registered in an embedded catalog.
Each side trains the default `mlp` policy (3x256 GELU, batch 256, AdamW, joint noise) for
`--epochs` epochs end to end, through the same `features.encode_batch` and
`policy.loss`:

- stream (workers W): `EpisodeStream(...).loader(num_workers=W, persistent_workers=True)`
  created inside the timed region (worker start-up included), `set_epoch` per epoch;
- memory: every sample read once (outside the timing) into tensors; per epoch a
  permutation sliced into batches of 256.

The two sides train two identical models, sandwiched: half the memory epochs, all the
stream epochs, the other half, so the other engineers' load drift on the 2 shared cores hits
both alike. Reported per repeat:
samples/s on wall time and on process CPU time (for workers=0 the process CPU includes the
in-process catalog server and the stream's fetch thread, i.e. all the work of the stream;
for workers=2 the workers' CPU is not counted, so compare wall). The stream/memory ratio:
median of `--repeats` repeats. torch uses 1 thread (the stream's workers set 1 thread each).

`--cache-mb`: the stream's segment cache budget(s) to measure (`StreamConfig.cache_mb`; 0 = every
epoch queries the catalog). `--policy vision`: the camera policy (`VisionPolicy`, 96x72 top camera)
on episodes that also hold a 96x72 H.264 camera at 25 Hz (synthetic moving shapes, the real
recorder); the stream decodes the H.264 frames every epoch (the cache holds the compressed
samples), the memory side holds the frames pre-decoded (uint8, decoded once outside the timing).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from roboloop import curate, schema
from roboloop.catalog.client import Catalog
from roboloop.record.episode import EpisodeRecorder
from roboloop.stream import EpisodeStream
from roboloop.train import TrainConfig
from roboloop.train.ahead import EpochsAhead
from roboloop.train.features import (
    encode_batch,
    scalar_specs,
    stream_fields,
    stream_stats,
)
from roboloop.train.policies import make_policy
from roboloop.train.protocol import feature_specs
from roboloop.workspace import Workspace

DS = "bench"
CAM_W, CAM_H = 96, 72


def camera_frames(n: int, seed: int) -> list[np.ndarray]:
    """`n` HWC uint8 frames: a red square moving over a fixed textured background (compresses like a simple scene)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 120, size=(CAM_H, CAM_W, 3), dtype=np.uint8)
    out = []
    for i in range(n):
        f = base.copy()
        x, y = (7 * seed + i) % (CAM_W - 8), (3 * seed + i // 2) % (CAM_H - 8)
        f[y : y + 8, x : x + 8] = (220, 30, 30)
        out.append(f)
    return out


def write_episodes(cat: Catalog, n: int, steps: int = 300, camera: bool = False) -> None:
    import rerun as rr

    from roboloop.video import encode_frames

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        sid = f"bench-{i:04d}"
        t = np.arange(steps) / 50.0
        q = np.cumsum(rng.normal(size=(steps, 14)), 0) * 0.01
        path = cat.workspace.segment_path(DS, schema.BASE_LAYER, sid)
        with EpisodeRecorder(path, sid) as rec:
            rec.log_scalar_columns(schema.JOINT_POSITIONS, t, q)
            rec.log_scalar_columns(schema.JOINT_TARGETS, t, q + 0.01)
            rec.log_scalar_columns(schema.CUBE_POSE, t, np.tile([0.05, 0.5, 0.02, 1, 0, 0, 0], (steps, 1)) + rng.normal(size=(steps, 7)) * 1e-3)
            if camera:
                enc = encode_frames(camera_frames(steps // 2, i), schema.CAMERA_HZ)
                cam = schema.camera_path("top")
                rec.log_static(cam, rr.VideoStream(codec=rr.VideoCodec.H264))
                rec.log_columns(cam, t[::2], rr.VideoStream.columns(sample=[e.sample for e in enc], is_keyframe=[e.is_keyframe for e in enc]))
        paths.append(path)
    cat.register_files(DS, paths)


def step_fn(policy, opt, gen):
    def step(inputs):
        loss, _ = policy.loss(inputs, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        opt.step()
    return step


def fresh(cfg, specs, stats):
    torch.manual_seed(0)
    policy = make_policy(cfg, specs)
    policy.normalizer.load_stats(stats)
    policy.train()
    return policy, torch.optim.AdamW(policy.parameters(), lr=1e-3), torch.Generator().manual_seed(0)


def load_memory(cat, sel, specs) -> dict[str, torch.Tensor]:
    stream = EpisodeStream(cat, (DS, list(sel.train_ids)), fields=stream_fields(specs), rate_hz=50, batch_size=4096, shuffle=False)
    parts = list(stream)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


class Clock:
    """Wall and process-CPU seconds spent in a side (process CPU includes the in-process catalog server and fetch thread)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.samples = 0
        self.cache: dict[str, int] = {}

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


def one_repeat(cat, sel, data, cfg, specs, stats, epochs: int, workers: int, ahead: bool = False, cache_mb: float = 512.0) -> tuple[Clock, Clock]:
    """Sandwich: half the memory epochs, all the stream epochs (set-up and worker spawn included), the other half.

    Load drift from other jobs hits both sides alike, and nothing of one side runs while the other is timed
    (the stream's loader and its workers exist only inside its own block).
    """
    mem_policy, mem_opt, mem_gen = fresh(cfg, specs, stats)
    mem_step = step_fn(mem_policy, mem_opt, mem_gen)
    st_policy, st_opt, st_gen = fresh(cfg, specs, stats)
    st_step = step_fn(st_policy, st_opt, st_gen)
    mem, st = Clock(), Clock()
    n_all = len(data["action"])

    def mem_epoch(e: int) -> None:
        with mem:
            perm = torch.randperm(n_all, generator=torch.Generator().manual_seed(e))
            for i in range(0, n_all, cfg.batch_size):
                idx = perm[i : i + cfg.batch_size]
                mem_step(encode_batch(specs, {k: v[idx] for k, v in data.items()}, cfg))
                mem.samples += len(idx)

    def stream_epochs() -> None:
        with st:
            stream = EpisodeStream(cat, (DS, list(sel.train_ids)), fields=stream_fields(specs), rate_hz=50, batch_size=cfg.batch_size, seed=0,
                                   cache_mb=cache_mb)
            loader = stream.loader(num_workers=workers, persistent_workers=workers > 0)
            pre = EpochsAhead(stream, loader, 0, epochs) if ahead else None
            for e in range(epochs):
                if pre is None:
                    stream.set_epoch(e)
                for batch in pre.epoch(e) if pre is not None else loader:
                    inputs = encode_batch(specs, batch, cfg)
                    st_step(inputs)
                    st.samples += len(inputs["action"])
            if pre is not None:
                pre.close()
            st.cache = stream.cache_info()
            del loader  # shuts persistent workers down (inside the timing: part of the work)

    half = epochs // 2
    for e in range(half):
        mem_epoch(e)
    stream_epochs()
    for e in range(half, epochs):
        mem_epoch(e)
    return mem, st


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="0,2", help="stream worker counts to measure")
    ap.add_argument("--ahead", action="store_true", help="stream side with train.ahead.EpochsAhead (what train() uses)")
    ap.add_argument("--cache-mb", default="512", help="stream segment-cache budgets to measure (comma separated; 0 = off)")
    ap.add_argument("--policy", default="mlp", choices=("mlp", "vision"), help="vision: camera episodes, VisionPolicy")
    args = ap.parse_args()
    torch.set_num_threads(1)
    workers = [int(w) for w in args.workers.split(",")]
    caches = [float(c) for c in args.cache_mb.split(",")]
    with tempfile.TemporaryDirectory() as tmp, Catalog(Workspace(tmp), url="") as cat:
        write_episodes(cat, args.episodes, camera=args.policy == "vision")
        sel = curate.save(cat, curate.select(cat, DS), "all")
        cfg = TrainConfig(dataset=DS, selection="all", policy=args.policy)
        specs = feature_specs(cfg)
        stats = stream_stats(EpisodeStream(cat, (DS, list(sel.train_ids)), fields=stream_fields(scalar_specs(specs)), rate_hz=50,
                                           batch_size=8192, shuffle=False), specs)
        data = load_memory(cat, sel, specs)
        nbytes = sum(v.element_size() * v.numel() for v in data.values())
        print(f"{args.policy}: {len(data['action'])} samples in memory ({nbytes / 2**20:.0f} MB), {args.epochs} epochs per measurement, "
              f"{args.repeats} repeats, memory | stream | memory sandwich")
        for w in workers:
            for c in caches:
                measure(cat, sel, data, cfg, specs, stats, args, w, c)


def measure(cat, sel, data, cfg, specs, stats, args, w: int, cache_mb: float) -> None:
    """`--repeats` sandwiches for one (workers, cache) setting; print each and the medians."""
    wall, cpu = [], []
    tag = f"workers={w} cache_mb={cache_mb:g}"
    for r in range(args.repeats):
        mem, st = one_repeat(cat, sel, data, cfg, specs, stats, args.epochs, w, args.ahead, cache_mb)
        wall.append((st.samples / st.wall) / (mem.samples / mem.wall))
        cpu.append((st.samples / st.cpu) / (mem.samples / mem.cpu))
        print(f"{tag} repeat {r}: memory {mem.samples / mem.wall:,.0f}/s wall ({mem.samples / mem.cpu:,.0f}/s cpu), "
              f"stream {st.samples / st.wall:,.0f}/s wall ({st.samples / st.cpu:,.0f}/s cpu of this process); "
              f"ratio wall {100 * wall[-1]:.1f}%, cpu {100 * cpu[-1]:.1f}%; cache holds {st.cache['bytes'] / 2**20:.1f} MB "
              f"({st.cache['hits']} hits, {st.cache['misses']} misses)", flush=True)
    extra = "" if w == 0 else " (workers' own CPU not counted: compare wall)"
    print(f"median stream/memory, {tag}: wall {100 * statistics.median(wall):.1f}%, "
          f"process cpu {100 * statistics.median(cpu):.1f}%{extra}", flush=True)

if __name__ == "__main__":
    main()
