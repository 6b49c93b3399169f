"""Training throughput from the stream vs the same model on the same samples held in memory.

    PYTHONPATH=src python benchmarks/bench_train.py [--episodes 50] [--epochs 5] [--repeats 3]

One run, one process: 50 episodes x 300 steps (15k samples; joint positions, joint targets
and cube pose at 50 Hz, written by the real recorder) registered in an embedded catalog.
Each side trains the default `mlp` policy (3x256 GELU, batch 256, AdamW, joint noise) for
`--epochs` epochs end to end, through the same `features.encode_batch` and
`policy.compute_loss`:

- stream (workers W): `EpisodeStream(...).loader(num_workers=W, persistent_workers=True)`
  created inside the timed region (worker start-up included), `set_epoch` per epoch;
- memory: every sample read once (outside the timing) into tensors; per epoch a
  permutation sliced into batches of 256.

Samples/s per side; the ratio stream/memory; median of `--repeats` repeats, sides
interleaved. torch uses 1 thread (the stream's workers set 1 thread each).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from roboloop import curate, schema
from roboloop.catalog import Catalog
from roboloop.episode import EpisodeRecorder
from roboloop.stream import EpisodeStream
from roboloop.train import TrainConfig
from roboloop.train.features import (
    encode_batch,
    feature_specs,
    scalar_specs,
    stream_fields,
    stream_stats,
)
from roboloop.train.policies import make_policy
from roboloop.workspace import Workspace

DS = "bench"


def write_episodes(cat: Catalog, n: int, steps: int = 300) -> None:
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
        paths.append(path)
    cat.register_files(DS, paths)


def step_fn(policy, opt, gen):
    def step(inputs):
        loss, _ = policy.compute_loss(inputs, gen)
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


def run_stream(cat, sel, cfg, specs, stats, epochs, workers) -> float:
    policy, opt, gen = fresh(cfg, specs, stats)
    step = step_fn(policy, opt, gen)
    t0 = time.perf_counter()
    stream = EpisodeStream(cat, (DS, list(sel.train_ids)), fields=stream_fields(specs), rate_hz=50, batch_size=cfg.batch_size, seed=0)
    loader = stream.loader(num_workers=workers, persistent_workers=workers > 0)
    n = 0
    for e in range(epochs):
        stream.set_epoch(e)
        for batch in loader:
            inputs = encode_batch(specs, batch, cfg)
            step(inputs)
            n += len(inputs["joints"])
    dt = time.perf_counter() - t0
    del loader
    return n / dt


def load_memory(cat, sel, specs) -> dict[str, torch.Tensor]:
    stream = EpisodeStream(cat, (DS, list(sel.train_ids)), fields=stream_fields(specs), rate_hz=50, batch_size=1 << 16, shuffle=False)
    parts = list(stream)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def run_memory(data, cfg, specs, stats, epochs) -> float:
    policy, opt, gen = fresh(cfg, specs, stats)
    step = step_fn(policy, opt, gen)
    n_all = len(data["joints"])
    t0 = time.perf_counter()
    n = 0
    for e in range(epochs):
        perm = torch.randperm(n_all, generator=torch.Generator().manual_seed(e))
        for i in range(0, n_all, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            inputs = encode_batch(specs, {k: v[idx] for k, v in data.items()}, cfg)
            step(inputs)
            n += len(idx)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="0,2", help="stream worker counts to measure")
    args = ap.parse_args()
    torch.set_num_threads(1)
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp, Catalog(Workspace(tmp), url="") as cat:
        write_episodes(cat, args.episodes)
        sel = curate.save(cat, curate.select(cat, DS), "all")
        cfg = TrainConfig(dataset=DS, selection="all")
        specs = feature_specs(cfg)
        stats = stream_stats(EpisodeStream(cat, (DS, list(sel.train_ids)), fields=stream_fields(scalar_specs(specs)), rate_hz=50,
                                           batch_size=8192, shuffle=False), specs)
        data = load_memory(cat, sel, specs)
        print(f"{len(data['joints'])} samples in memory, {args.epochs} epochs per measurement, {args.repeats} repeats")
        res: dict[str, list[float]] = {"memory": [], **{f"stream w={w}": [] for w in workers}}
        for r in range(args.repeats):
            res["memory"].append(run_memory(data, cfg, specs, stats, args.epochs))
            for w in workers:
                res[f"stream w={w}"].append(run_stream(cat, sel, cfg, specs, stats, args.epochs, w))
            print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in res.items()), flush=True)
        mem = statistics.median(res["memory"])
        print(f"median memory: {mem:,.0f} samples/s")
        for w in workers:
            s = statistics.median(res[f"stream w={w}"])
            print(f"median stream workers={w}: {s:,.0f} samples/s = {100 * s / mem:.1f}% of memory")


if __name__ == "__main__":
    main()
