"""Where a `vision` training step's time goes, and whether training waits for the stream.

    PYTHONPATH=src MUJOCO_GL=egl python benchmarks/bench_vision_profile.py --workspace WS --dataset cam --selection d50 [--steps 60] [--batch-size 64] [--aux-cube 0]
    PYTHONPATH=src python benchmarks/bench_vision_profile.py --options

`--options`: no data; the forward + backward CPU time of one random batch of 64 for the defaults and a few
`VisionConfig` changes (encoder widths, keypoints, image size, head width, shift off, the aux loss).

On a workspace holding camera demonstrations (e.g. `roboloop collect --cameras top --camera-size 96x72`)
and a saved selection: one process, one torch thread, the `vision` policy of `TrainConfig(policy="vision")`
(its `VisionConfig` defaults, `--aux-cube` for the auxiliary loss), the selection's train episodes streamed
as `train()` streams them (`EpisodeStream`, 0 loader workers: the catalog fetch and the H.264 decode run in
this process). Per step, timed separately: waiting for the stream's next batch (fetch + decode + window
collation), `encode_batch` (uint8 -> float), augmentation (joint noise + random shift), forward + loss,
backward, clip + optimizer step (CPU seconds of the training thread; the stream: wall seconds waiting and the
process's CPU meanwhile). The stream-fed and in-memory loops each time the augmentation once more
on a copy of the generator (outside `forward`, but inside their wall time), alike. Then the same number of steps on the same batches held in memory (no
stream): the stream-fed / in-memory throughput ratio says whether training is loader-bound.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from roboloop import curate
from roboloop.catalog.client import Catalog
from roboloop.stream import EpisodeStream
from roboloop.train import TrainConfig, VisionConfig
from roboloop.train.features import encode_batch, scalar_specs, stream_fields, stream_stats
from roboloop.train.policies import CUBE_AUX, make_policy
from roboloop.train.protocol import feature_specs
from roboloop.workspace import Workspace

PARTS = ("stream", "stream cpu", "encode", "augment", "forward", "backward", "optimizer")


def _step(policy, opt, enc, gen, times: dict[str, list[float]]) -> None:
    """One training step as `train()` runs it, timed in CPU seconds of this thread (torch computes in it with one
    thread, so the numbers hold on a loaded machine); the augmentation is timed on a copy of the generator (the same
    draws), and `forward` is the loss call (which augments again) minus that time."""
    inputs = {k: v for k, v in enc.items() if k not in policy.targets}
    t = time.thread_time()
    policy._augment(inputs, torch.Generator().set_state(gen.get_state()))
    aug = time.thread_time() - t
    times["augment"].append(aug)
    t1 = time.thread_time()
    loss, _ = policy.loss(enc, gen)
    t2 = time.thread_time()
    times["forward"].append(t2 - t1 - aug)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t3 = time.thread_time()
    times["backward"].append(t3 - t2)
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
    opt.step()
    times["optimizer"].append(time.thread_time() - t3)


OPTIONS = [{}, {"channels": (16, 32, 32)}, {"channels": (8, 16, 16, 16)}, {"keypoints": 32}, {"channels": (32, 32, 32, 32)},
           {"image_width": 128, "image_height": 96}, {"shift_px": 0}, {"hidden": 128}, {"aux_cube": 1.0}]


def option_costs(batch: int = 64, repeats: int = 12) -> None:
    """Forward + backward CPU ms (this thread) of one random batch for each `OPTIONS` change to `VisionConfig`."""
    for change in OPTIONS:
        cfg = TrainConfig(dataset="cam", selection="x", policy="vision", model=VisionConfig(**change))
        torch.manual_seed(0)
        policy = make_policy(cfg, feature_specs(cfg))
        policy.normalizer.loaded = True  # identity statistics: the cost does not depend on them
        policy.train()
        m = cfg.model
        data = {"image": torch.rand(batch, 3, m.image_height, m.image_width), "joints": torch.randn(batch, 14),
                "phase": torch.rand(batch, 1), "action": torch.randn(batch, cfg.chunk, 14),
                "action_mask": torch.ones(batch, cfg.chunk, dtype=torch.bool), CUBE_AUX: torch.randn(batch, 7)}
        gen = torch.Generator().manual_seed(0)
        times = []
        for _ in range(repeats):
            t = time.thread_time()
            policy.loss(data, gen)[0].backward()
            times.append(time.thread_time() - t)
        print(f"{str(change or 'defaults'):<45} {1e3 * statistics.median(times[2:]):7.1f} ms CPU  {policy.num_parameters():,} parameters",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--options", action="store_true", help="only the cost of VisionConfig options on random batches")
    ap.add_argument("--workspace")
    ap.add_argument("--dataset")
    ap.add_argument("--selection")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--aux-cube", type=float, default=0.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.options:
        option_costs(args.batch_size)
        return
    if not (args.workspace and args.dataset and args.selection):
        ap.error("--workspace, --dataset and --selection are needed (or --options)")
    with Catalog(Workspace(args.workspace)) as cat:
        sel = curate.load(cat, args.selection)
        cfg = TrainConfig(dataset=args.dataset, selection=args.selection, policy="vision", batch_size=args.batch_size,
                          model=VisionConfig(aux_cube=args.aux_cube))
        specs = feature_specs(cfg)
        stats = stream_stats(EpisodeStream(cat, (sel.dataset, list(sel.train_ids)), fields=stream_fields(scalar_specs(specs)),
                                           rate_hz=cfg.rate_hz, batch_size=8192, shuffle=False), specs)
        torch.manual_seed(0)
        policy = make_policy(cfg, specs)
        policy.normalizer.load_stats(stats)
        policy.train()
        opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(0)
        stream = EpisodeStream(cat, (sel.dataset, list(sel.train_ids)), fields=stream_fields(specs), rate_hz=cfg.rate_hz,
                               batch_size=cfg.batch_size, seed=0, shuffle=True)
        times: dict[str, list[float]] = {p: [] for p in PARTS}
        kept = []
        it = iter(stream)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            t, c = time.perf_counter(), time.process_time()
            batch = next(it)
            times["stream"].append(time.perf_counter() - t)  # wall: waiting for the batch
            times["stream cpu"].append(time.process_time() - c)  # CPU of the whole process meanwhile (fetch thread, decode)
            t1 = time.thread_time()
            enc = encode_batch(specs, batch, cfg)
            times["encode"].append(time.thread_time() - t1)
            _step(policy, opt, enc, gen, times)
            kept.append(batch)
        stream_wall, stream_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        mem: dict[str, list[float]] = {p: [] for p in PARTS}
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for batch in kept:
            t = time.thread_time()
            enc = encode_batch(specs, batch, cfg)
            mem["encode"].append(time.thread_time() - t)
            _step(policy, opt, enc, gen, mem)
        mem_wall, mem_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    n = args.steps * args.batch_size
    print(f"vision policy, {policy.num_parameters():,} parameters, batch {args.batch_size}, {args.steps} steps, aux_cube {args.aux_cube}")
    for p in PARTS:
        if times[p]:
            unit = "wall" if p == "stream" else "cpu"
            print(f"  {p:<10} median {1e3 * statistics.median(times[p]):7.2f} ms/step ({unit})  total {sum(times[p]):6.2f} s")
    print(f"stream-fed: {n / stream_wall:,.0f} samples/s ({stream_wall:.1f} s); in memory: {n / mem_wall:,.0f} samples/s "
          f"({mem_wall:.1f} s); ratio {100 * mem_wall / stream_wall:.1f}% on wall, {100 * mem_cpu / stream_cpu:.1f}% on process CPU "
          f"({stream_cpu:.1f} vs {mem_cpu:.1f} s)")


if __name__ == "__main__":
    main()
