"""The loader's pure parts on their own (no catalog): resampling, index and shard planning, the shuffle buffer, configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from roboloop.config import ConfigError
from roboloop.stream import EpisodeSource, Field, StreamConfig
from roboloop.stream.index import SegmentIndex, epoch_segment_order, plan_blocks, shard_bounds
from roboloop.stream.resample import latest_at, latest_indices, linear, window_positions
from roboloop.stream.shuffle import BatchShuffleBuffer

MS = 1_000_000  # ns


# --- resampling --------------------------------------------------------------------------------

def test_latest_at_picks_last_row_at_or_before_and_clamps_before_start():
    times = np.array([0, 20, 40, 60], np.int64) * MS
    values = np.array([[0.0], [1.0], [2.0], [3.0]])
    query = np.array([-5, 0, 19, 20, 39, 41, 100], np.int64) * MS
    assert latest_indices(times, query).tolist() == [-1, 0, 0, 1, 1, 2, 3]
    assert latest_at(times, values, query)[:, 0].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 3.0]


def test_tolerance_makes_grid_points_exact_despite_float_rounding():
    times = np.array([0, 300 * MS + 1], np.int64)  # a row meant for 0.3 s, stored 1 ns late
    values = np.array([[0.0], [7.0]])
    grid = np.array([300 * MS], np.int64)
    assert latest_at(times, values, grid, tol_ns=0)[0, 0] == 0.0
    assert latest_at(times, values, grid, tol_ns=10)[0, 0] == 7.0


def test_linear_interpolates_between_rows_and_holds_at_the_ends():
    times = np.array([0, 100, 300], np.int64) * MS
    values = np.array([[0.0, 10.0], [1.0, 20.0], [3.0, 0.0]])
    query = np.array([-50, 0, 50, 100, 200, 300, 400], np.int64) * MS
    got = linear(times, values, query)
    expected = np.array([[0, 10], [0, 10], [0.5, 15], [1, 20], [2, 10], [3, 0], [3, 0]], np.float64)
    np.testing.assert_allclose(got, expected)


def test_linear_with_one_row_is_constant():
    got = linear(np.array([5], np.int64), np.array([[4.0]]), np.array([0, 5, 10], np.int64))
    assert got[:, 0].tolist() == [4.0, 4.0, 4.0]


def test_window_positions_clip_to_the_episode_and_mask_the_outside():
    offsets = np.array([-2, 0, 3])
    positions, mask, lo, hi = window_positions(0, 3, offsets, n_grid=5)
    assert positions.tolist() == [[0, 0, 3], [0, 1, 4], [0, 2, 4]]
    assert mask.tolist() == [[False, True, True], [False, True, True], [True, True, False]]
    assert (lo, hi) == (0, 4)
    positions, mask, lo, hi = window_positions(2, 4, None, n_grid=5)
    assert positions.tolist() == [2, 3] and mask is None and (lo, hi) == (2, 3)


# --- index and shard planning ------------------------------------------------------------------

def index(sizes: list[int], step_ns: int = 20 * MS) -> SegmentIndex:
    starts = np.arange(len(sizes), dtype=np.int64) * 10**9
    ends = starts + (np.asarray(sizes, np.int64) - 1) * step_ns
    return SegmentIndex([f"s{i}" for i in range(len(sizes))], starts, ends, step_ns)


def test_grid_sizes_count_both_ends():
    idx = index([1, 5, 12])
    assert idx.num_samples.tolist() == [1, 5, 12] and idx.total == 18
    assert SegmentIndex([], np.zeros(0, np.int64), np.zeros(0, np.int64), 1).total == 0


@pytest.mark.parametrize("total, shards", [(0, 3), (10, 1), (10, 3), (7, 7), (5, 8), (1001, 6)])
def test_shard_bounds_partition_exactly_and_balance(total, shards):
    bounds = [shard_bounds(total, s, shards) for s in range(shards)]
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("num_shards, block", [(1, 4), (3, 5), (4, 1000), (7, 3)])
def test_plan_covers_every_grid_sample_exactly_once(shuffle, num_shards, block):
    sizes = [3, 17, 1, 8, 25, 4]
    idx = index(sizes)
    order = epoch_segment_order(len(sizes), shuffle=shuffle, seed=5, epoch=2)
    seen = []
    for shard in range(num_shards):
        blocks = plan_blocks(idx.num_samples, order=order, shard=shard, num_shards=num_shards, block_samples=block)
        assert all(0 < sum(sp.size for sp in b) <= block for b in blocks)
        n = sum(sp.size for b in blocks for sp in b)
        lo, hi = shard_bounds(idx.total, shard, num_shards)
        assert n == hi - lo
        seen += [(sp.seg, k) for b in blocks for sp in b for k in range(sp.k0, sp.k1)]
    expected = [(s, k) for s, size in enumerate(sizes) for k in range(size)]
    assert sorted(seen) == expected  # nothing missing, nothing twice
    if not shuffle:
        assert seen == expected  # in order without shuffling


def test_epoch_order_is_a_seeded_permutation_that_changes_per_epoch():
    a = epoch_segment_order(50, shuffle=True, seed=1, epoch=0)
    assert sorted(a.tolist()) == list(range(50))
    assert a.tolist() == epoch_segment_order(50, shuffle=True, seed=1, epoch=0).tolist()
    assert a.tolist() != epoch_segment_order(50, shuffle=True, seed=1, epoch=1).tolist()
    assert a.tolist() != epoch_segment_order(50, shuffle=True, seed=2, epoch=0).tolist()
    assert epoch_segment_order(5, shuffle=False, seed=1, epoch=3).tolist() == [0, 1, 2, 3, 4]


# --- shuffle buffer ----------------------------------------------------------------------------

def run_buffer(blocks: list[int], *, batch: int, buffer: int, shuffle: bool, drop_last: bool = False, seed: int = 0):
    buf = BatchShuffleBuffer(batch_size=batch, buffer=buffer, max_block=max(blocks), shuffle=shuffle,
                             rng=np.random.default_rng(seed), drop_last=drop_last)
    out, start = [], 0
    for n in blocks:
        ids = np.arange(start, start + n)
        start += n
        out += list(buf.push({"id": ids, "twice": np.stack([ids, 2 * ids], axis=1)}))
    out += list(buf.finish())
    return out, start


def test_fifo_without_shuffle_keeps_order_and_batch_sizes():
    out, total = run_buffer([7, 3, 10, 1], batch=4, buffer=100, shuffle=False)
    ids = np.concatenate([b["id"] for b in out])
    assert ids.tolist() == list(range(total))
    assert [len(b["id"]) for b in out] == [4, 4, 4, 4, 4, 1]
    for b in out:  # fields stay aligned per sample
        assert (b["twice"][:, 1] == 2 * b["id"]).all()


def test_shuffled_batches_emit_every_sample_once_and_mix_blocks():
    out, total = run_buffer([50] * 8, batch=16, buffer=64, shuffle=True)
    ids = np.concatenate([b["id"] for b in out])
    assert sorted(ids.tolist()) == list(range(total))
    assert ids.tolist() != list(range(total))
    for b in out:
        assert (b["twice"][:, 0] == b["id"]).all() and (b["twice"][:, 1] == 2 * b["id"]).all()
    # the first batch already draws from more than the first block
    assert out[0]["id"].max() >= 50
    # memory is bounded: capacity = buffer + block + batch
    assert BatchShuffleBuffer(batch_size=16, buffer=64, max_block=50, shuffle=True, rng=None).capacity == 130


def test_drop_last_and_seeded_determinism():
    out, _ = run_buffer([10, 10, 3], batch=4, buffer=8, shuffle=True, drop_last=True, seed=3)
    assert all(len(b["id"]) == 4 for b in out) and len(out) == 5
    again, _ = run_buffer([10, 10, 3], batch=4, buffer=8, shuffle=True, drop_last=True, seed=3)
    assert [b["id"].tolist() for b in out] == [b["id"].tolist() for b in again]


def test_a_block_in_pieces_gives_the_batches_of_its_concatenation():
    """Pushing a block as pieces (how cached segments arrive) is pushing their concatenation: same batches, same draws."""
    rng = np.random.default_rng(5)
    blocks = [rng.integers(1, 40, size=rng.integers(1, 4)).tolist() for _ in range(12)]  # piece sizes per block
    def run(split: bool):
        buf = BatchShuffleBuffer(batch_size=8, buffer=30, max_block=120, shuffle=True, rng=np.random.default_rng(9))
        out, start = [], 0
        for sizes in blocks:
            pieces = []
            for n in sizes:
                ids = np.arange(start, start + n)
                start += n
                pieces.append({"id": ids, "win": np.stack([ids, -ids, 3 * ids], axis=1).reshape(n, 3, 1).astype(np.float32)})
            block = pieces if split else {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
            out += list(buf.push(block))
        out += list(buf.finish())
        return out, start
    split, total = run(True)
    whole, _ = run(False)
    assert [b["id"].tolist() for b in split] == [b["id"].tolist() for b in whole]
    ids = np.concatenate([b["id"] for b in split])
    assert sorted(ids.tolist()) == list(range(total))
    for b in split:  # each sample's rows stay with it
        assert (b["win"][:, :, 0] == np.stack([b["id"], -b["id"], 3 * b["id"]], axis=1)).all()


def test_oversized_block_is_refused():
    buf = BatchShuffleBuffer(batch_size=2, buffer=0, max_block=3, shuffle=False, rng=None)
    with pytest.raises(ValueError, match="max_block"):
        list(buf.push({"id": np.arange(4)}))


# --- sources and configs -----------------------------------------------------------------------

class _Selection:
    dataset = "aloha"
    train_ids = ["b", "a"]


def test_every_source_form_becomes_one_episode_source():
    want = EpisodeSource("aloha", ("b", "a"))
    assert EpisodeSource.of(("aloha", ["b", "a"])) == want
    assert EpisodeSource.of(_Selection()) == want
    assert EpisodeSource.of(dataset="aloha", segments=["b", "a"]) == want
    assert EpisodeSource.of(want) is want
    assert EpisodeSource.of("aloha") == EpisodeSource("aloha", None)
    with pytest.raises(ValueError, match="unique"):
        EpisodeSource.of(("aloha", ["a", "a"]))
    with pytest.raises(TypeError, match="either"):
        EpisodeSource.of("aloha", dataset="aloha")
    with pytest.raises(TypeError, match="needs a dataset"):
        EpisodeSource.of()


def test_stream_config_round_trips_exactly_and_validates():
    cfg = StreamConfig(
        fields={"state": "/robot/joint_positions", "action": Field("/robot/joint_targets", window=range(10), dtype=np.float32),
                "top": {"path": "/cameras/top", "dtype": "float16"}},
        rate_hz=50, batch_size=256, shuffle_buffer=1000, seed=7, on_missing="skip",
    )
    assert cfg.fields["action"].window == tuple(range(10)) and cfg.fields["action"].dtype == "float32"
    assert cfg.rate_hz == 50.0
    assert StreamConfig.from_dict(cfg.to_dict()) == cfg
    assert StreamConfig.from_json(cfg.to_json()) == cfg
    assert StreamConfig.from_toml(cfg.to_toml()) == cfg
    with pytest.raises(ConfigError, match="rate_hz"):
        StreamConfig(fields={"q": "/q"}, rate_hz=0)
    with pytest.raises(ConfigError, match="on_missing"):
        StreamConfig(fields={"q": "/q"}, rate_hz=10, on_missing="ignore")
    with pytest.raises(ConfigError, match="valid keys: fields, rate_hz"):
        StreamConfig.from_dict({"fields": {}, "rate": 10})


def test_fill_is_the_width_of_a_fields_zeros_and_round_trips():
    f = Field("/state/peg_pose", fill=7)
    assert f.to_dict() == {"path": "/state/peg_pose", "fill": 7} and Field(**f.to_dict()) == f
    assert "fill" not in Field("/state/peg_pose").to_dict()  # configs without it serialize as before
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="fill"):
            Field("/a", fill=bad)
    windowed = Field("/a", fill=3, window=(0, 1))  # a windowed field too (corrective episodes' expert action)
    assert Field(**windowed.to_dict()) == windowed


# --- worker exit -------------------------------------------------------------------------------

def test_a_worker_ends_without_teardown_but_keeps_its_output():
    """A DataLoader worker's exit skips interpreter teardown (what each epoch used to wait ~1 s for) yet exits 0 and
    loses none of its buffered output; exit handlers registered before it (e.g. by a worker_init_fn) do not run."""
    code = (
        "import atexit\n"
        "from roboloop.stream import dataset\n"
        "atexit.register(print, 'teardown ran')\n"
        "dataset._end_worker_without_teardown()\n"
        "dataset._end_worker_without_teardown()\n"  # once per process
        "print('last batch handed over', end='')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "last batch handed over"
