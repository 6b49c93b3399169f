"""Benchmark: roboloop's EpisodeStream vs Rerun's RerunIterableDataset vs a plain Arrow read.

Same run, same data, same in-process catalog server:

* scalars: 200 episodes x 3000 rows at 50 Hz with two 14-float fields
  (`/robot/joint_positions`, `/robot/joint_targets`); a sample = the state at a 50 Hz grid
  point + the next 10 actions (a 10-step window).
* video: 20 episodes of 320x240 H.264 at 25 Hz (60 s each); a sample = one RGB frame
  (uint8 CHW) on a 25 Hz grid.

Peers: `rerun.experimental.dataloader.RerunIterableDataset` in its best shuffle
configuration (BlockShuffle with a post-decode buffer; several fetch block sizes are
tried and the best is reported) and, as the ceiling, a plain Arrow read of the same
columns (scalars) / sequential PyAV decode of the same stream (video).

NOTE: `rerun.experimental.dataloader` imports torchvision only for `pil_to_tensor` in its
JPEG decoder (not used here). torchvision has no CPU build on this machine, so this
script puts a small stand-in module providing that one function into `sys.modules`
before importing it (also in spawned DataLoader workers, since this module's top level
runs there too).

    .venv/bin/python benchmarks/bench_stream.py            # full (first run generates the data)
    .venv/bin/python benchmarks/bench_stream.py --quick    # smaller data, shorter peer runs
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch


def _install_torchvision_stand_in() -> None:
    """A stand-in `torchvision.transforms.functional.pil_to_tensor` (the one function Rerun's loader imports)."""
    if "torchvision" in sys.modules:
        return

    def pil_to_tensor(pic):
        arr = np.array(pic, copy=True)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    fn = types.ModuleType("torchvision.transforms.functional")
    fn.pil_to_tensor = pil_to_tensor
    tv.transforms, tr.functional = tr, fn
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn})


_install_torchvision_stand_in()

from roboloop import schema  # noqa: E402
from roboloop.catalog.client import Catalog  # noqa: E402
from roboloop.record.episode import EpisodeRecorder  # noqa: E402
from roboloop.stream import EpisodeStream, Field  # noqa: E402
from roboloop.video import encode_frames  # noqa: E402
from roboloop.workspace import Workspace  # noqa: E402

DATA = Path(__file__).parent / "_data" / "stream"
CAM = "/cameras/top"
SC, VD = "bench_scalars", "bench_video"


# --- data ---------------------------------------------------------------------------------------

def make_frames(n: int, w: int, h: int, seed: int) -> list[np.ndarray]:
    """Moving textured shapes over a gradient: compresses like a simple scene, not like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 127 // (w + h))], axis=-1).astype(np.uint8)
    tex = rng.integers(0, 60, size=(h, w, 1), dtype=np.uint8)
    base = base // 2 + tex
    frames = []
    for i in range(n):
        f = base.copy()
        for j in range(4):
            s = 24 + 8 * j
            x = int((i * (2 + j) + 40 * j) % (w - s))
            y = int((h // 5) * (j + 0.5) + 10 * np.sin(i / (10 + j))) % (h - s)
            f[y : y + s, x : x + s] = (240 - 40 * j, 60 * j, 200)
        frames.append(f)
    return frames


def build(ws: Workspace, n_scalar: int, rows: int, n_video: int, video_s: float) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(rows) / 50.0
    have = {p.stem for p in ws.segment_files(SC, schema.BASE_LAYER)}
    for i in range(n_scalar):
        sid = f"sc-{i:04d}"
        if sid in have:
            continue
        with EpisodeRecorder(ws.segment_path(SC, schema.BASE_LAYER, sid), sid) as rec:
            rec.log_scalar_columns(schema.JOINT_POSITIONS, t, np.cumsum(rng.normal(size=(rows, 14)), axis=0) * 0.01)
            rec.log_scalar_columns(schema.JOINT_TARGETS, t, np.cumsum(rng.normal(size=(rows, 14)), axis=0) * 0.01)
    import rerun as rr

    have = {p.stem for p in ws.segment_files(VD, schema.BASE_LAYER)}
    n_frames = int(round(video_s * 25))
    tv = np.arange(n_frames) / 25.0
    for i in range(n_video):
        sid = f"vd-{i:04d}"
        if sid in have:
            continue
        print(f"  encoding {sid} ({n_frames} frames)", flush=True)
        enc = encode_frames(make_frames(n_frames, 320, 240, i), 25)
        with EpisodeRecorder(ws.segment_path(VD, schema.BASE_LAYER, sid), sid) as rec:
            rec.log_static(CAM, rr.VideoStream(codec=rr.VideoCodec.H264))
            rec.log_columns(CAM, tv, rr.VideoStream.columns(sample=[e.sample for e in enc], is_keyframe=[e.is_keyframe for e in enc]))


# --- measurements ---------------------------------------------------------------------------------

def run_loader(loader, limit_s: float | None = None, limit_samples: int | None = None) -> dict:
    """Iterate; return samples, total seconds (incl. worker start and shuffle-buffer fill) and a steady rate.

    The steady rate is measured over everything after the first quarter of the samples
    (or of the time limit), so start-up and buffer fill are excluded but no block is skipped.
    """
    t0 = time.perf_counter()
    marks: list[tuple[float, int]] = []
    n = 0
    t_first = None
    for batch in loader:
        b = len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
        n += b
        now = time.perf_counter()
        if t_first is None:
            t_first = now
        marks.append((now, n))
        if (limit_s and now - t_first > limit_s) or (limit_samples and n >= limit_samples):
            break
    t1 = time.perf_counter()
    ts = np.array([m[0] for m in marks])
    ns = np.array([m[1] for m in marks])
    i = int(np.searchsorted(ns, n // 4)) if not limit_s else int(np.searchsorted(ts, t_first + (t1 - t_first) / 4))
    i = min(i, len(ns) - 2)
    steady = (n - ns[i]) / (t1 - ts[i]) if len(ns) > 2 and t1 > ts[i] else n / (t1 - t0)
    return {"samples": n, "seconds": t1 - t0, "rate_total": n / (t1 - t0), "rate": steady, "first_batch_s": (t_first or t1) - t0}


def arrow_ceiling(cat: Catalog, ids: list[str]) -> float:
    """Plain read of the same two columns (reader -> Arrow -> numpy), samples (rows)/s; best of 2 (warms the files)."""
    return max(_arrow_read(cat, ids) for _ in range(2))


def _arrow_read(cat: Catalog, ids: list[str]) -> float:
    ds = cat.dataset(SC)
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(ids), 25):
        tab = ds.filter_segments(ids[i : i + 25]).filter_contents([schema.JOINT_POSITIONS, schema.JOINT_TARGETS]).reader(index="time").to_arrow_table()
        for c in (f"{schema.JOINT_POSITIONS}:Scalars:scalars", f"{schema.JOINT_TARGETS}:Scalars:scalars"):
            tab.column(c).combine_chunks().values.to_numpy().reshape(-1, 14)
        n += tab.num_rows
    return n / (time.perf_counter() - t0)


def rerun_dataset(cat: Catalog, dataset: str, ids: list[str], fields: dict, rate: float, fetch_block: int, buffer: int):
    from rerun.experimental.dataloader import BlockShuffle, DataSource, FixedRateSampling, RerunIterableDataset

    return RerunIterableDataset(
        DataSource(dataset=cat.dataset(dataset), segments=ids),
        "time",
        fields,
        timeline_sampling=FixedRateSampling(rate_hz=rate),
        fetch_block_size=fetch_block,
        shuffle_strategy=BlockShuffle(buffer_size=buffer),
    )


def rerun_loader(ds, workers: int, batch: int):
    opts = {"multiprocessing_context": "spawn"} if workers else {}
    return torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, **opts)


def best_peer(cat, dataset, ids, rfields, rate, fetch_blocks, buffer, workers, batch, peer_s) -> dict:
    """RerunIterableDataset's best run over the given fetch block sizes (time-limited runs)."""
    best = None
    for fb in fetch_blocks:
        ds = rerun_dataset(cat, dataset, ids, rfields, rate, fb, buffer)
        r = run_loader(rerun_loader(ds, workers, batch), limit_s=peer_s)
        r["config"] = f"BlockShuffle(buffer_size={buffer}), fetch_block_size={fb}"
        if best is None or r["rate"] > best["rate"]:
            best = r
    return best


def bench_scalars(cat: Catalog, ids: list[str], workers_list: list[int], peer_s: float) -> dict:
    from rerun.experimental.dataloader import Field as RField
    from rerun.experimental.dataloader import NumericDecoder

    res: dict = {"arrow": arrow_ceiling(cat, ids)}
    fields = {"state": schema.JOINT_POSITIONS, "action": Field(schema.JOINT_TARGETS, window=range(10))}
    for w in workers_list:
        s = EpisodeStream(cat, (SC, ids), fields=fields, rate_hz=50, batch_size=256)
        r = run_loader(s.loader(num_workers=w))
        assert r["samples"] == s.num_samples, (r["samples"], s.num_samples)
        res[f"roboloop_w{w}"] = r
    rfields = {
        "state": RField(f"{schema.JOINT_POSITIONS}:Scalars:scalars", decode=NumericDecoder()),
        "action": RField(f"{schema.JOINT_TARGETS}:Scalars:scalars", decode=NumericDecoder(), window=tuple(i / 50 for i in range(10))),
    }
    for w in workers_list:
        res[f"rerun_w{w}"] = best_peer(cat, SC, ids, rfields, 50, (1024, 8192), 4096, w, 256, peer_s)
    return res


def raw_decode_rate(cat: Catalog, sid: str) -> dict:
    """Sequential PyAV decode of one whole stream on one core (best of 2 passes).

    `rgb24`: decode + `frame.to_ndarray(format="rgb24")` (the plain way);
    `chw`: decode + roboloop's conversion (reused reformatter to planar RGB, written CHW);
    `decode_only`: no conversion at all (an upper bound no loader can reach).
    """
    import av
    import av.video.reformatter

    from roboloop.stream.decode import frame_to_chw

    tab = cat.dataset(VD).filter_segments([sid]).filter_contents([CAM]).reader(index="time").to_arrow_table()
    col = tab.column(f"{CAM}:VideoStream:sample").combine_chunks()
    samples = [bytes(s[0]) for s in col.to_pylist() if s]
    out: dict = {}
    for mode in ("rgb24", "chw", "decode_only"):
        best = 0.0
        for _ in range(2):
            ctx = av.CodecContext.create("h264", "r")
            ctx.thread_count = 1
            ref = av.video.reformatter.VideoReformatter()
            buf = np.empty((3, 240, 320), np.uint8)
            t0 = time.perf_counter()
            n = 0
            for data in samples:
                for frame in ctx.decode(av.Packet(data)):
                    if mode == "rgb24":
                        frame.to_ndarray(format="rgb24")
                    elif mode == "chw":
                        frame_to_chw(frame, buf, ref)
                    n += 1
            best = max(best, n / (time.perf_counter() - t0))
        out[mode] = best
    return out


def bench_video(cat: Catalog, ids: list[str], workers_list: list[int], peer_s: float, limit: int | None) -> dict:
    from rerun.experimental.dataloader import Field as RField
    from rerun.experimental.dataloader import VideoFrameDecoder

    res: dict = {"raw": raw_decode_rate(cat, ids[0])}
    for i in range(0, len(ids), 5):  # warm the lazily registered files
        cat.dataset(VD).filter_segments(ids[i : i + 5]).filter_contents([CAM]).reader(index="time").to_arrow_table()
    for w in workers_list:
        s = EpisodeStream(cat, (VD, ids), fields={"cam": CAM}, rate_hz=25, batch_size=32)
        r = run_loader(s.loader(num_workers=w), limit_samples=limit)
        res[f"roboloop_w{w}"] = r
    rfields = {"cam": RField(f"{CAM}:VideoStream:sample", decode=VideoFrameDecoder())}
    for w in workers_list:
        res[f"rerun_w{w}"] = best_peer(cat, VD, ids, rfields, 25, (128, 1024), 256, w, 32, peer_s)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 scalar episodes, 4 video episodes of 20 s, shorter peer runs")
    ap.add_argument("--workers", default="0,2", help="DataLoader worker counts to compare (comma separated)")
    ap.add_argument("--skip-video", action="store_true")
    ap.add_argument("--skip-scalars", action="store_true")
    args = ap.parse_args()
    n_sc, rows, n_vd, video_s, peer_s = (40, 3000, 4, 20.0, 6.0) if args.quick else (200, 3000, 20, 60.0, 12.0)
    workers = [int(w) for w in args.workers.split(",")]
    ws = Workspace(DATA / ("quick" if args.quick else "full"))
    t0 = time.perf_counter()
    build(ws, n_sc, rows, n_vd, video_s)
    print(f"data ready in {time.perf_counter() - t0:.1f} s ({ws.root})", flush=True)
    cat = Catalog(ws, url="")
    sc_ids = [f"sc-{i:04d}" for i in range(n_sc)]
    vd_ids = [f"vd-{i:04d}" for i in range(n_vd)]
    lines = []

    def show(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    if not args.skip_scalars:
        r = bench_scalars(cat, sc_ids, workers, peer_s)
        show(f"\nscalars ({n_sc} x {rows} rows @ 50 Hz, state + 10-step action window, batch 256)")
        show(f"  plain Arrow read of the same columns: {r['arrow']:,.0f} rows/s")
        for w in workers:
            ours, peer = r[f"roboloop_w{w}"], r[f"rerun_w{w}"]
            show(
                f"  workers={w}: roboloop {ours['rate']:,.0f} samples/s steady ({ours['rate_total']:,.0f} incl. "
                f"{ours['first_batch_s']:.1f} s startup, {ours['samples']:,} samples) | RerunIterableDataset "
                f"{peer['rate']:,.0f}/s [{peer['config']}] | ratio {ours['rate'] / peer['rate']:.0f}x | "
                f"vs Arrow ceiling {ours['rate'] / r['arrow']:.0%}"
            )
    if not args.skip_video:
        r = bench_video(cat, vd_ids, workers, peer_s, None)
        show(f"\nvideo ({n_vd} x {int(video_s * 25)} frames 320x240 H.264 @ 25 Hz, uint8 CHW, batch 32)")
        raw = r["raw"]
        show(
            f"  raw sequential PyAV decode, 1 core: {raw['rgb24']:,.0f} frames/s with to_ndarray(rgb24), "
            f"{raw['chw']:,.0f} with roboloop's CHW conversion, {raw['decode_only']:,.0f} decode only"
        )
        ref = max(raw["rgb24"], raw["chw"])
        for w in workers:
            ours, peer = r[f"roboloop_w{w}"], r[f"rerun_w{w}"]
            per_worker = ours["rate"] / max(1, w)
            show(
                f"  workers={w}: roboloop {ours['rate']:,.0f} frames/s steady ({per_worker:,.0f} per worker = "
                f"{per_worker / ref:.0%} of the best raw; {ours['rate_total']:,.0f} incl. {ours['first_batch_s']:.1f} s startup) | "
                f"RerunIterableDataset {peer['rate']:,.0f}/s [{peer['config']}] | ratio {ours['rate'] / peer['rate']:.1f}x"
            )
    cat.close()


if __name__ == "__main__":
    main()
