"""EpisodeStream against an independent numpy resampling of the raw logged arrays.

One real in-process catalog (module-scoped, to keep the suite fast) with episodes of
different lengths: a 50 Hz state and action, a 25 Hz H.264 camera and a 5 Hz signal.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.stream import EpisodeStream, Field, MissingFieldError, UnknownEntityError
from roboloop.workspace import Workspace
from tests.fixtures.episodes import write_synthetic_episode

DS = "streamtest"
CAM = "/cameras/top"
SIG = "/signals/progress"
DURATIONS = [2.0, 3.0, 2.4]
W, H = 64, 48


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("stream") / "ws")
    cat = Catalog(ws, url="")
    eps, paths = {}, []
    for i, d in enumerate(DURATIONS):
        ep, path = write_synthetic_episode(
            ws,
            DS,
            f"ep{i}",
            duration_s=d,
            scalar_streams={schema.JOINT_POSITIONS: (50.0, 14), schema.JOINT_TARGETS: (50.0, 14), SIG: (5.0, 1)},
            video_streams={CAM: (25.0, W, H)},
            seed=i,
        )
        eps[ep.segment_id] = ep
        paths.append(path)
    # a segment without the 5 Hz signal (for the missing-field policy)
    ep, path = write_synthetic_episode(
        ws, DS, "nosig", duration_s=1.0, scalar_streams={schema.JOINT_POSITIONS: (50.0, 14)}, seed=9
    )
    eps[ep.segment_id] = ep
    paths.append(path)
    cat.register_files(DS, paths)
    try:
        yield cat, eps
    finally:
        cat.close()


IDS = ["ep0", "ep1", "ep2"]


def collect(stream) -> dict[str, np.ndarray]:
    """All batches of one epoch, concatenated and sorted by (episode, frame)."""
    parts: dict[str, list[np.ndarray]] = {}
    for b in stream:
        for k, v in b.items():
            parts.setdefault(k, []).append(v.numpy())
    out = {k: np.concatenate(v) for k, v in parts.items()}
    order = np.lexsort((out["frame_index"], out["episode_index"]))
    return {k: v[order] for k, v in out.items()}


# --- independent expectations (float seconds, plain numpy) ------------------------------------

def grid(duration_end: float, hz: float) -> np.ndarray:
    return np.arange(int(np.floor(duration_end * hz + 1e-9)) + 1) / hz


def expect_latest(t: np.ndarray, v: np.ndarray, g: np.ndarray) -> np.ndarray:
    i = np.searchsorted(t, g + 1e-9, side="right") - 1
    return v[np.maximum(i, 0)]


def expect_linear(t: np.ndarray, v: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(g, t, v[:, d]) for d in range(v.shape[1])], axis=1)


def seg_end(ep) -> float:
    return max(float(t[-1]) for t, _ in list(ep.streams.values()) + list(ep.frames.values()))


# --- tests -------------------------------------------------------------------------------------

def test_multirate_alignment_on_10hz_grid(env):
    """50 Hz state (latest-at and linear), 25 Hz camera, 5 Hz signal, all on a 10 Hz grid."""
    cat, eps = env
    stream = EpisodeStream(
        cat,
        (DS, IDS),
        fields={
            "state": schema.JOINT_POSITIONS,
            "state_lin": Field(schema.JOINT_POSITIONS, resample="linear"),
            "sig": Field(SIG, resample="linear"),
            "sig_latest": SIG,
            "cam": CAM,
        },
        rate_hz=10,
        batch_size=7,
        shuffle=True,
        seed=3,
    )
    got = collect(stream)
    assert stream.num_samples == sum(len(grid(seg_end(eps[s]), 10)) for s in IDS)
    assert len(got["state"]) == stream.num_samples
    for e, sid in enumerate(IDS):
        ep = eps[sid]
        g = grid(seg_end(ep), 10)
        sel = got["episode_index"] == e
        assert np.array_equal(got["frame_index"][sel], np.arange(len(g)))
        np.testing.assert_allclose(got["timestamp"][sel], g, atol=1e-9)
        t, v = ep.streams[schema.JOINT_POSITIONS]
        exp = expect_latest(t, v, g)
        np.testing.assert_allclose(got["state"][sel], exp, rtol=1e-6, atol=1e-6)
        # every 10 Hz grid point is a 50 Hz row: linear equals latest-at there (exact alignment)
        np.testing.assert_allclose(got["state_lin"][sel], exp, rtol=1e-6, atol=1e-6)
        ts, vs = ep.streams[SIG]
        np.testing.assert_allclose(got["sig"][sel], expect_linear(ts, vs, g), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["sig_latest"][sel], expect_latest(ts, vs, g), rtol=1e-6, atol=1e-6)
        tc, frames = ep.frames[CAM]
        idx = np.searchsorted(tc, g + 1e-9, side="right") - 1
        cam = got["cam"][sel]
        assert cam.shape == (len(g), 3, H, W) and cam.dtype == np.uint8
        for k in range(len(g)):
            expected = frames[idx[k]].transpose(2, 0, 1).astype(np.int16)
            assert np.abs(cam[k].astype(np.int16) - expected).mean() < 4.0


def test_linear_between_rows(env):
    """On a 40 Hz grid most points fall between 50 Hz rows: interpolation vs np.interp."""
    cat, eps = env
    stream = EpisodeStream(
        cat, (DS, ["ep1"]), fields={"q": Field(schema.JOINT_POSITIONS, resample="linear", dtype=torch.float64)},
        rate_hz=40, batch_size=64, shuffle=False,
    )
    got = collect(stream)
    t, v = eps["ep1"].streams[schema.JOINT_POSITIONS]
    g = grid(seg_end(eps["ep1"]), 40)
    assert got["q"].dtype == np.float64
    np.testing.assert_allclose(got["q"], expect_linear(t, v, g), rtol=1e-9, atol=1e-9)


def test_windows_and_masks_at_episode_boundaries(env):
    cat, eps = env
    offsets = (-3, -1, 0, 1, 2, 5)
    stream = EpisodeStream(
        cat,
        (DS, IDS),
        fields={"action": Field(schema.JOINT_TARGETS, window=offsets), "past_cam": Field(CAM, window=(-2, 0))},
        rate_hz=25,
        batch_size=32,
        shuffle=True,
    )
    got = collect(stream)
    off = np.asarray(offsets)
    for e, sid in enumerate(IDS):
        ep = eps[sid]
        g = grid(seg_end(ep), 25)
        n = len(g)
        sel = got["episode_index"] == e
        kk = np.arange(n)[:, None] + off[None, :]
        exp_mask = (kk >= 0) & (kk < n)
        assert np.array_equal(got["action_mask"][sel], exp_mask)
        t, v = ep.streams[schema.JOINT_TARGETS]
        per_grid = expect_latest(t, v, g)
        exp = per_grid[np.clip(kk, 0, n - 1)]  # edge padding outside the episode
        np.testing.assert_allclose(got["action"][sel], exp, rtol=1e-6, atol=1e-6)
        # past frames: window of the camera at 25 Hz = previous frames exactly
        cam = got["past_cam"][sel]
        assert cam.shape == (n, 2, 3, H, W)
        assert np.array_equal(got["past_cam_mask"][sel][:, 0], np.arange(n) >= 2)
        tc, frames = ep.frames[CAM]
        for k in (0, 1, 2, n // 2, n - 1):
            for j, o in enumerate((-2, 0)):
                src = min(max(k + o, 0), n - 1)
                src = np.searchsorted(tc, g[src] + 1e-9, side="right") - 1
                expected = frames[src].transpose(2, 0, 1).astype(np.int16)
                assert np.abs(cam[k, j].astype(np.int16) - expected).mean() < 4.0


def test_decoded_video_frames_match_encoded(env):
    """At the camera's own rate every frame comes out, in order, equal within codec tolerance."""
    cat, eps = env
    stream = EpisodeStream(
        cat, (DS, ["ep2"]), fields={"cam": CAM, "camf": Field(CAM, dtype=torch.float32)},
        rate_hz=25, batch_size=16, shuffle=False, block_samples=20,  # blocks split GOPs: decoder sessions continue
    )
    got = collect(stream)
    tc, frames = eps["ep2"].frames[CAM]
    assert len(got["cam"]) == len(frames)
    for k, f in enumerate(frames):
        diff = np.abs(got["cam"][k].astype(np.int16) - f.transpose(2, 0, 1).astype(np.int16))
        assert diff.mean() < 3.0 and np.percentile(diff, 99) < 40, k
        # the frame content identifies its index (moving square): nearest frame is itself
        errs = [np.abs(got["cam"][k].astype(np.int16) - frames[j].transpose(2, 0, 1)).mean() for j in range(max(0, k - 2), min(len(frames), k + 3))]
        assert int(np.argmin(errs)) == k - max(0, k - 2)
    assert got["camf"].dtype == np.float32
    np.testing.assert_allclose(got["camf"], got["cam"] / 255.0, atol=1e-6)


def test_exactly_once_across_two_spawned_workers(env):
    cat, eps = env
    stream = EpisodeStream(
        cat, (DS, IDS), fields={"state": schema.JOINT_POSITIONS, "action": Field(schema.JOINT_TARGETS, window=range(10))},
        rate_hz=50, batch_size=32, block_samples=40, shuffle=True, seed=1,
    )
    keys = []
    for b in stream.loader(num_workers=2):
        assert b["state"].shape[1:] == (14,) and b["action"].shape[1:] == (10, 14)
        keys += list(zip(b["episode_index"].tolist(), b["frame_index"].tolist()))
    expected = {(e, k) for e, sid in enumerate(IDS) for k in range(int(stream.index.num_samples[e]))}
    assert len(keys) == len(expected) == stream.num_samples
    assert set(keys) == expected


def test_persistent_workers_reshuffle_each_epoch_without_respawn(env):
    """Workers spawned once serve every epoch exactly once, and set_epoch reaches them."""
    cat, _ = env
    stream = EpisodeStream(
        cat, (DS, IDS), fields={"state": schema.JOINT_POSITIONS}, rate_hz=50, batch_size=16, block_samples=30, seed=3,
    )
    loader = stream.loader(num_workers=2, persistent_workers=True)
    expected = {(e, k) for e in range(len(IDS)) for k in range(int(stream.index.num_samples[e]))}
    orders, worker_pids, caches = [], [], []
    for epoch in (0, 1, 1):
        stream.set_epoch(epoch)
        keys = []
        for b in loader:
            keys += list(zip(b["episode_index"].tolist(), b["frame_index"].tolist()))
        assert len(keys) == len(expected) and set(keys) == expected
        orders.append(keys)
        caches.append(stream.cache_info())
        it = loader.loader._iterator if hasattr(loader, "loader") else loader._iterator
        worker_pids.append(sorted(w.pid for w in it._workers))
    assert orders[0] != orders[1], "set_epoch did not reach the persistent workers"
    assert worker_pids[0] == worker_pids[1] == worker_pids[2], "workers were respawned"
    # The same epoch twice gives the same order (shuffles are seeded by (seed, epoch, rank, worker)).
    assert orders[1] == orders[2]
    # Each worker caches its own shard in half the stream's budget (the numbers are the workers' sums):
    # the repeated epoch has the same shards, so it is served from the caches without a catalog query.
    assert caches[0]["budget_bytes"] == 2 * (stream.cache_bytes // 2) and caches[0]["hits"] == 0
    assert caches[0]["misses"] >= len(IDS) and 0 < caches[0]["bytes"] <= caches[0]["budget_bytes"]
    visits = caches[1]["hits"] + caches[1]["misses"] - caches[0]["misses"]  # segment visits of epoch 1
    assert caches[2]["misses"] == caches[1]["misses"] and caches[2]["hits"] == caches[1]["hits"] + visits


def test_exactly_once_across_ranks_and_workers_plan(env):
    """The epoch plan partitions the samples over 2 ranks x 3 workers; set_epoch reshuffles."""
    cat, _ = env
    seen = []
    orders = []
    for epoch in (0, 1):
        keys_epoch = []
        for rank in range(2):
            s = EpisodeStream(cat, (DS, IDS), fields={"q": schema.JOINT_POSITIONS}, rate_hz=50, batch_size=8,
                              block_samples=37, rank=rank, world_size=2, seed=5)
            s.set_epoch(epoch)
            counts = []
            for w in range(3):
                spans = [sp for block in s.plan(w, 3) for sp in block]
                assert all(sum(sp.size for sp in b) <= 37 for b in s.plan(w, 3))
                ks = [(sp.seg, k) for sp in spans for k in range(sp.k0, sp.k1)]
                counts.append(len(ks))
                keys_epoch += ks
            assert max(counts) - min(counts) <= 1
        assert len(keys_epoch) == len(set(keys_epoch)) == s.num_samples
        orders.append(keys_epoch)
        seen.append(set(keys_epoch))
    assert seen[0] == seen[1] and orders[0] != orders[1]
    # in-process iteration of one rank covers exactly its shard
    s = EpisodeStream(cat, (DS, IDS), fields={"q": schema.JOINT_POSITIONS}, rate_hz=50, batch_size=8, rank=1, world_size=2)
    got = collect(s)
    lo = s.num_samples // 2
    assert len(got["q"]) == s.num_samples - lo


def test_shuffle_and_set_epoch_change_batches(env):
    cat, _ = env
    s = EpisodeStream(cat, (DS, IDS), fields={"q": schema.JOINT_POSITIONS}, rate_hz=50, batch_size=16, block_samples=64)
    first = next(iter(s))["frame_index"].tolist()
    assert first == next(iter(s))["frame_index"].tolist()  # same epoch, same order
    s.set_epoch(1)
    assert first != next(iter(s))["frame_index"].tolist()
    assert len(set(next(iter(s))["episode_index"].tolist())) >= 1
    ns = EpisodeStream(cat, (DS, IDS), fields={"q": schema.JOINT_POSITIONS}, rate_hz=50, batch_size=16, shuffle=False)
    b = next(iter(ns))
    assert b["frame_index"].tolist() == list(range(16)) and set(b["episode_index"].tolist()) == {0}


def test_unknown_entity_path_lists_available_paths(env):
    cat, _ = env
    with pytest.raises(UnknownEntityError) as err:
        EpisodeStream(cat, (DS, IDS), fields={"q": "/robot/joint_positionz"}, rate_hz=10)
    msg = str(err.value)
    assert "/robot/joint_positionz" in msg and f"{schema.JOINT_POSITIONS}:Scalars:scalars" in msg and CAM in msg
    with pytest.raises(UnknownEntityError):
        EpisodeStream(cat, (DS, IDS), fields={"q": Field(schema.JOINT_POSITIONS, component="Points3D:positions")}, rate_hz=10)
    with pytest.raises(KeyError, match="not-a-segment"):
        EpisodeStream(cat, (DS, ["ep0", "not-a-segment"]), fields={"q": schema.JOINT_POSITIONS}, rate_hz=10)
    with pytest.raises(ValueError, match="linear"):
        EpisodeStream(cat, (DS, IDS), fields={"c": Field(CAM, resample="linear")}, rate_hz=10)


def test_missing_field_policy(env):
    cat, eps = env
    ids = IDS + ["nosig"]
    s = EpisodeStream(cat, (DS, ids), fields={"q": schema.JOINT_POSITIONS, "sig": SIG}, rate_hz=10, batch_size=8)
    with pytest.raises(MissingFieldError, match="nosig"):
        collect(s)
    s = EpisodeStream(cat, (DS, ids), fields={"q": schema.JOINT_POSITIONS, "sig": SIG}, rate_hz=10, batch_size=8, on_missing="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = collect(s)
    assert any("nosig" in str(w.message) for w in caught)
    assert set(got["episode_index"].tolist()) == {0, 1, 2}
    assert len(got["q"]) == sum(int(n) for n in s.index.num_samples[:3])


def test_sources_and_unbatched_samples(env):
    cat, _ = env

    @dataclasses.dataclass
    class Selection:  # what curate hands over
        dataset: str
        train_ids: list

    a = EpisodeStream(cat, Selection(DS, ["ep0"]), fields={"q": schema.JOINT_POSITIONS}, rate_hz=10, shuffle=False)
    b = EpisodeStream(cat.url, dataset=DS, segments=["ep0"], fields={"q": schema.JOINT_POSITIONS}, rate_hz=10, shuffle=False)
    sa, sb = list(a), list(b)
    assert len(sa) == len(sb) == a.num_samples == len(a)
    assert sa[3]["q"].shape == (14,) and torch.equal(sa[3]["q"], sb[3]["q"])
    assert int(sa[3]["frame_index"]) == 3


def test_worker_ring_transport_matches_in_process(env):
    """Batches handed over through the shared ring equal the in-process ones (1 spawned worker)."""
    cat, _ = env
    kw = dict(
        fields={"q": schema.JOINT_POSITIONS, "a": Field(schema.JOINT_TARGETS, window=range(3)), "c": Field(CAM, dtype=torch.float32)},
        rate_hz=25, batch_size=16, block_samples=30, shuffle=False,
    )
    local = list(EpisodeStream(cat, (DS, ["ep0"]), **kw))
    remote = list(EpisodeStream(cat, (DS, ["ep0"]), **kw).loader(num_workers=1, prefetch_factor=2))
    assert len(local) == len(remote) > 3
    for x, y in zip(local, remote):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), k


def test_jpeg_encoded_images(tmp_path):
    """EncodedImage (JPEG) streams decode to uint8 CHW at the latest-at frame."""
    import io

    import rerun as rr
    from PIL import Image

    from roboloop.record.episode import EpisodeRecorder
    from tests.fixtures.episodes import _test_frame

    ws = Workspace(tmp_path / "ws")
    frames = [_test_frame(i, W, H) for i in range(10)]
    blobs = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=95)
        blobs.append(buf.getvalue())
    t = np.arange(10) / 10.0
    path = ws.segment_path("jpg", schema.BASE_LAYER, "j0")
    with EpisodeRecorder(path, "j0") as rec:
        rec.log_scalar_columns(schema.JOINT_POSITIONS, np.arange(50) / 50.0, np.zeros((50, 2)))
        rec.log_columns("/cameras/wrist", t, rr.EncodedImage.columns(blob=blobs, media_type=["image/jpeg"] * 10))
    with Catalog(ws, url="") as cat:
        got = collect(EpisodeStream(cat, ("jpg", ["j0"]), fields={"img": "/cameras/wrist"}, rate_hz=5, batch_size=4, shuffle=False))
    g = grid(0.98, 5)
    idx = np.searchsorted(t, g + 1e-9, side="right") - 1
    assert got["img"].shape == (len(g), 3, H, W)
    for k in range(len(g)):
        assert np.abs(got["img"][k].astype(np.int16) - frames[idx[k]].transpose(2, 0, 1)).mean() < 4.0
