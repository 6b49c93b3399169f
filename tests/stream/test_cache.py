"""The stream's fetch-once segment cache (`StreamConfig.cache_mb`) on a real in-process catalog.

Queries are counted on the real dataset entry (a pass-through wrapper that records the
segment ids of every `filter_segments` call, then calls the real client).
"""

from __future__ import annotations

import pytest
import torch

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.config import ConfigError
from roboloop.stream import EpisodeStream, Field, StreamConfig
from roboloop.workspace import Workspace
from tests.fixtures.episodes import write_synthetic_episode

DS = "cachetest"
CAM = "/cameras/top"
IDS = [f"ep{i}" for i in range(5)]
FIELDS = {"q": schema.JOINT_POSITIONS, "a": Field(schema.JOINT_TARGETS, window=range(4)), "cam": CAM}


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("cache") / "ws")
    catalog = Catalog(ws, url="")
    paths = []
    for i, sid in enumerate(IDS):
        _, path = write_synthetic_episode(
            ws, DS, sid, duration_s=1.0 + 0.2 * i,
            scalar_streams={schema.JOINT_POSITIONS: (50.0, 14), schema.JOINT_TARGETS: (50.0, 14)},
            video_streams={CAM: (25.0, 32, 24)}, seed=i,
        )
        paths.append(path)
    catalog.register_files(DS, paths)
    try:
        yield catalog
    finally:
        catalog.close()


class CountingEntry:
    """The real dataset entry, with every queried segment id recorded."""

    def __init__(self, entry) -> None:
        self.entry = entry
        self.queried: list[str] = []

    def filter_segments(self, ids):
        self.queried.extend(ids)
        return self.entry.filter_segments(ids)

    def __getattr__(self, name):
        return getattr(self.entry, name)


def counted(stream: EpisodeStream) -> CountingEntry:
    stream._entry = CountingEntry(stream._dataset_entry())
    return stream._entry


def epochs(stream: EpisodeStream, n: int, entry: CountingEntry) -> tuple[list[list[dict]], list[int]]:
    """The batches of epochs 0..n-1 and the segments queried in each."""
    out, queried = [], []
    for e in range(n):
        stream.set_epoch(e)
        before = len(entry.queried)
        out.append(list(stream))
        queried.append(len(entry.queried) - before)
    return out, queried


def assert_same(a: list[list[dict]], b: list[list[dict]]) -> None:
    assert len(a) == len(b)
    for ea, eb in zip(a, b):
        assert len(ea) == len(eb) > 1
        for x, y in zip(ea, eb):
            assert x.keys() == y.keys()
            for k in x:
                assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), k


def make(cat, **kw) -> EpisodeStream:
    return EpisodeStream(cat, (DS, IDS), fields=FIELDS, rate_hz=50, batch_size=16, block_samples=40, seed=5, **kw)


def test_lazy_then_fetched_once_and_same_batches(cat):
    cached, plain = make(cat), make(cat, cache_mb=0)
    c_entry, p_entry = counted(cached), counted(plain)
    assert cached.cache_info()["bytes"] == 0 and c_entry.queried == []  # nothing fetched before the loop asks
    got, c_queries = epochs(cached, 3, c_entry)
    want, p_queries = epochs(plain, 3, p_entry)
    assert_same(got, want)  # same batches, same order, every epoch (shuffled differently per epoch)
    assert [b["episode_index"].tolist() for b in got[0]] != [b["episode_index"].tolist() for b in got[1]]
    assert p_queries == [len(IDS)] * 3  # without the cache every epoch queries every segment
    assert c_queries == [len(IDS), 0, 0]  # with it, only the first
    info = cached.cache_info()
    assert info["segments"] == len(IDS) and info["hits"] == 2 * len(IDS) and info["dropped"] == 0
    arrays = [a for held, _ in cached._cache._items.values() for a in held.values()]
    assert all(a.base is None for a in arrays)  # arrays of their own, not views into a bigger buffer: bytes held = bytes counted
    assert info["bytes"] == sum(a.nbytes for a in arrays) > 0


def test_budget_respected_what_does_not_fit_is_dropped(cat):
    """Over budget, a segment fetched once the cache is full is not kept: the resident part serves every later epoch."""
    full = make(cat, shuffle=False)
    list(full)
    sizes = [full._cache._items[s][1] for s in IDS]
    budget = sizes[0] + max(sizes[1:]) + min(sizes) // 2  # room for the first segment and any other one, never three
    resident, used = [], 0
    for sid, n in zip(IDS, sizes):  # unshuffled: segments are fetched in order; each is kept if it still fits
        if used + n <= budget:
            resident.append(sid)
            used += n
    small = make(cat, cache_mb=budget / (1 << 20), shuffle=False)
    got, queried = epochs(small, 3, counted(small))
    plain = make(cat, cache_mb=0, shuffle=False)
    want, _ = epochs(plain, 3, counted(plain))
    assert_same(got, want)
    info = small.cache_info()
    assert info["budget_bytes"] == int(budget / (1 << 20) * (1 << 20))
    assert sorted(small._cache._items) == resident and len(resident) == 2
    assert info["bytes"] == used <= info["budget_bytes"]
    assert queried == [len(IDS)] + [len(IDS) - len(resident)] * 2  # later epochs query only what is not resident
    assert info["dropped"] == 3 * (len(IDS) - len(resident)) and info["hits"] == 2 * len(resident)


def test_cache_mb_must_be_non_negative():
    with pytest.raises(ConfigError, match="cache_mb"):
        StreamConfig(fields={"q": schema.JOINT_POSITIONS}, cache_mb=-1)
