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

Headline rates (`incl. start-up`) run from before the dataset's construction to the last
batch: loader set-up, worker spawn, buffer fill, every fetch and every decode. A steady-state
rate is printed only when it is trustworthy: measured after the first max(n/4, B) samples,
over a window of >= 10 x B samples, where B = what the pipeline can hold ahead of the consumer
(shuffle buffers, blocks fetched ahead, batches in flight, per worker; so buffers full at the
window's start can inflate it by <= 10%), and not above the hardware ceiling (single-core
raw decode x decoding threads (1 in-process, 1 per worker, at most the cores) for video;
Arrow read x cores for scalars). Otherwise it prints why not.
The peer runs stop `peer_s` after their first batch; the ratio is of the rates with start-up.

    .venv/bin/python benchmarks/bench_stream.py            # full (first run generates the data)
    .venv/bin/python benchmarks/bench_stream.py --quick    # smaller data, shorter peer runs
"""

from __future__ import annotations

import argparse
import os
import subprocess
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
CORES = os.cpu_count() or 1
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

WINDOW_FACTOR = 10
"""A steady-state rate is reported only over a window holding >= this many times the items the pipeline buffers:
buffers full at the window's start and empty at its end can then inflate the rate by at most 1 / WINDOW_FACTOR."""


def run_loader(make, buffered: int, ceiling: float | None = None, limit_s: float | None = None, limit_samples: int | None = None) -> dict:
    """Build the loader with `make()` and iterate it; the headline `rate_total` counts everything from the call.

    `rate_total` = samples / seconds from before `make()` (dataset + loader construction, worker spawn, buffer fill,
    every fetch and decode) to the last batch. `rate` (steady) is measured after the first `max(n/4, buffered)`
    samples, and only kept when that window holds >= WINDOW_FACTOR x `buffered` samples and the rate does not
    exceed `ceiling` (what the hardware can do: single-core decode-only or Arrow-read rate x cores); otherwise
    it is None and `steady_note` says why.
    """
    t0 = time.perf_counter()
    loader = make()
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
    del loader
    ts = np.array([m[0] for m in marks])
    ns = np.array([m[1] for m in marks])
    i = min(int(np.searchsorted(ns, max(n // 4, buffered))), len(ns) - 1)
    window = n - int(ns[i])
    steady, note = None, ""
    if window < WINDOW_FACTOR * buffered or t1 <= ts[i]:
        note = f"n/a: window {window:,} < {WINDOW_FACTOR} x {buffered:,} buffered"
    else:
        steady = window / (t1 - ts[i])
        if ceiling is not None and steady > ceiling:
            steady, note = None, f"n/a: {window / (t1 - ts[i]):,.0f}/s exceeds the ceiling {ceiling:,.0f}/s"
    return {"samples": n, "seconds": t1 - t0, "rate_total": n / (t1 - t0), "rate": steady, "steady_note": note,
            "first_batch_s": (t_first or t1) - t0, "buffered": buffered}


def ours_buffered(stream: EpisodeStream, workers: int, prefetch_factor: int = 4) -> int:
    """Samples `EpisodeStream` can hold ahead of the consumer: per worker the shuffle buffer, the raw blocks fetched
    ahead + the one being materialized, a batch being gathered, and the batches in flight (DataLoader prefetch +
    the shared ring's slots)."""
    batch = stream.batch_size or 1
    per = stream._buffer_for(stream.sample_bytes or 1, batch) + (stream.prefetch + 1) * stream.block_samples + batch
    if workers:
        per += (prefetch_factor + prefetch_factor + 3) * batch
    return per * max(1, workers)


def peer_buffered(buffer: int, fetch_block: int, workers: int, batch: int) -> int:
    """Samples `RerunIterableDataset` can hold ahead: per worker its emission buffer, the block being processed and
    the one fetched ahead, and the DataLoader's prefetched batches (2 per worker)."""
    return (buffer + 2 * fetch_block + (2 * batch if workers else 0)) * max(1, workers)


def fmt_steady(r: dict) -> str:
    return f"{r['rate']:,.0f}/s steady" if r["rate"] is not None else f"steady {r['steady_note']}"


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


def best_peer(cat, dataset, ids, rfields, rate, fetch_blocks, buffer, workers, batch, peer_s, ceiling=None) -> dict:
    """RerunIterableDataset's best run (by the rate including start-up) over the given fetch block sizes.

    Each run stops `peer_s` seconds after its first batch (a full epoch would take minutes); its rate still counts
    its start-up (construction, worker spawn, buffer fill) once, as ours does over our whole epoch.
    """
    best = None
    for fb in fetch_blocks:
        def make(fb=fb):
            return rerun_loader(rerun_dataset(cat, dataset, ids, rfields, rate, fb, buffer), workers, batch)

        r = run_loader(make, peer_buffered(buffer, fb, workers, batch), ceiling, limit_s=peer_s)
        r["config"] = f"BlockShuffle(buffer_size={buffer}), fetch_block_size={fb}"
        if best is None or r["rate_total"] > best["rate_total"]:
            best = r
    return best


def bench_scalars(cat: Catalog, ids: list[str], workers_list: list[int], peer_s: float) -> dict:
    from rerun.experimental.dataloader import Field as RField
    from rerun.experimental.dataloader import NumericDecoder

    res: dict = {"arrow": arrow_ceiling(cat, ids)}
    ceiling = res["arrow"] * CORES
    fields = {"state": schema.JOINT_POSITIONS, "action": Field(schema.JOINT_TARGETS, window=range(10))}
    for w in workers_list:
        holder: dict = {}

        def make(w=w, holder=holder):
            holder["s"] = EpisodeStream(cat, (SC, ids), fields=fields, rate_hz=50, batch_size=256)
            return holder["s"].loader(num_workers=w)

        probe = EpisodeStream(cat, (SC, ids), fields=fields, rate_hz=50, batch_size=256)
        r = run_loader(make, ours_buffered(probe, w), ceiling)
        assert r["samples"] == probe.num_samples, (r["samples"], probe.num_samples)
        res[f"roboloop_w{w}"] = r
    for w in workers_list:
        if w:
            res[f"floor_w{w}"] = loader_floor(w)
            res[f"floor_catalog_w{w}"] = loader_floor(w, ("rerun.catalog",))
    rfields = {
        "state": RField(f"{schema.JOINT_POSITIONS}:Scalars:scalars", decode=NumericDecoder()),
        "action": RField(f"{schema.JOINT_TARGETS}:Scalars:scalars", decode=NumericDecoder(), window=tuple(i / 50 for i in range(10))),
    }
    for w in workers_list:
        res[f"rerun_w{w}"] = best_peer(cat, SC, ids, rfields, 50, (1024, 8192), 4096, w, 256, peer_s, ceiling)
    return res


def loader_floor(workers: int, modules: tuple[str, ...] = (), repeats: int = 3) -> float:
    """Seconds of the fastest of `repeats` empty epochs of a DataLoader with `workers` spawned workers that import torch
    and `modules` (`_loader_floor.py`, a fresh process each): what any such loader pays before its first sample."""
    script = Path(__file__).parent / "_loader_floor.py"
    runs = [float(subprocess.run([sys.executable, str(script), str(workers), *modules], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(repeats)]
    return min(runs)


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
    single = max(res["raw"].values())  # decode-only should be the fastest; under load the best mode measured

    def ceiling(w: int) -> float:
        return single * min(CORES, max(1, w))  # one decoding thread per worker (the main thread with none)

    for w in workers_list:
        def make(w=w):
            return EpisodeStream(cat, (VD, ids), fields={"cam": CAM}, rate_hz=25, batch_size=32).loader(num_workers=w)

        probe = EpisodeStream(cat, (VD, ids), fields={"cam": CAM}, rate_hz=25, batch_size=32)
        res[f"roboloop_w{w}"] = run_loader(make, ours_buffered(probe, w), ceiling(w), limit_samples=limit)
    rfields = {"cam": RField(f"{CAM}:VideoStream:sample", decode=VideoFrameDecoder())}
    for w in workers_list:
        res[f"rerun_w{w}"] = best_peer(cat, VD, ids, rfields, 25, (128, 1024), 256, w, 32, peer_s, ceiling(w))
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
            ratio = ours["rate_total"] / peer["rate_total"]
            show(
                f"  workers={w}: roboloop {ours['rate_total']:,.0f} samples/s incl. start-up ({ours['samples']:,} samples in "
                f"{ours['seconds']:.2f} s, first batch {ours['first_batch_s']:.2f} s; {fmt_steady(ours)}) | RerunIterableDataset "
                f"{peer['rate_total']:,.0f}/s incl. start-up ({fmt_steady(peer)}) [{peer['config']}] | ratio {ratio:.1f}x"
                + (f" (target >= 50x: {'met' if ratio >= 50 else 'not met'})" if w == 2 else "")
            )
            for key, what in (("floor", "only torch"), ("floor_catalog", "torch and rerun.catalog (to read the catalog)")) if w else ():
                floor = r[f"{key}_w{w}"]
                best = ours["samples"] / floor
                show(
                    f"    floor: an empty epoch of a DataLoader with {w} spawned workers importing {what} takes {floor:.2f} s "
                    f"(best of 3), so no such loader delivers these {ours['samples']:,} samples faster than {best:,.0f}/s "
                    f"= {best / peer['rate_total']:.1f}x the peer; roboloop reaches {ours['rate_total'] / best:.0%} of that bound"
                )
    if not args.skip_video:
        r = bench_video(cat, vd_ids, workers, peer_s, None)
        show(f"\nvideo ({n_vd} x {int(video_s * 25)} frames 320x240 H.264 @ 25 Hz, uint8 CHW, batch 32)")
        raw = r["raw"]
        show(
            f"  raw sequential PyAV decode, 1 core: {raw['rgb24']:,.0f} frames/s with to_ndarray(rgb24), "
            f"{raw['chw']:,.0f} with roboloop's CHW conversion, {raw['decode_only']:,.0f} decode only"
        )
        for w in workers:
            ours, peer = r[f"roboloop_w{w}"], r[f"rerun_w{w}"]
            ratio = ours["rate_total"] / peer["rate_total"]
            show(
                f"  workers={w}: roboloop {ours['rate_total']:,.0f} frames/s incl. start-up ({ours['samples']:,} frames in "
                f"{ours['seconds']:.2f} s; {fmt_steady(ours)}) | RerunIterableDataset {peer['rate_total']:,.0f}/s incl. start-up "
                f"({fmt_steady(peer)}) [{peer['config']}] | ratio {ratio:.1f}x"
                + (f" (target >= 2x: {'met' if ratio >= 2 else 'not met'})" if w == 2 else "")
            )
        show(f"  ceiling for a steady rate: the fastest single-core raw decode {max(raw.values()):,.0f} frames/s x "
             f"min({CORES} cores, max(1, workers)) decoding threads")
    cat.close()


if __name__ == "__main__":
    main()
