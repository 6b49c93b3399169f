"""Seed reservation: the single way demonstration seeds are handed out (collect, plans and the recording API).

A seed names a randomized start state: two episodes that share a seed (and conditions)
replay one scene. Reservations are written to `datasets/<dataset>/.seeds/` under a
workspace lock before the episodes that use them run, so concurrent writers never share a
seed and a crashed writer's seeds are never handed out again (DESIGN.md "Seeds and cells
have one identity scheme"). Segment ids of seeded episodes carry the seed:
`<dataset>-s<seed:06d>-<6 hex>`.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path

from roboloop import faults, schema
from roboloop.errors import RoboloopError
from roboloop.workspace import Workspace, atomic_write_text

__all__ = ["SEEDS_FOLDER", "SEED_IN_ID", "SeedRangeError", "check_seed_range", "highest_seed_end", "reserve_seeds",
           "seeded_segment_id"]

SEEDS_FOLDER = ".seeds"
"""Reservation files live in `datasets/<dataset>/.seeds/` (hidden: never a layer)."""
SEED_IN_ID = re.compile(r"-s(\d+)-[0-9a-f]{6}(?:\.\d+)?$")


class SeedRangeError(RoboloopError, ValueError):
    """The requested seeds do not fit in the demonstration seed range."""


def _seeds_dir(workspace: Workspace, dataset: str) -> Path:
    return workspace.dataset_dir(dataset) / SEEDS_FOLDER


def highest_seed_end(workspace: Workspace, dataset: str) -> int:
    """One past the highest seed the dataset holds (base file names) or has reserved (reservation files)."""
    end = 0
    for p in workspace.segment_files(dataset, schema.BASE_LAYER):
        m = SEED_IN_ID.search(p.stem)
        if m:
            end = max(end, int(m.group(1)) + 1)
    d = _seeds_dir(workspace, dataset)
    if d.is_dir():
        for p in d.glob("*.json"):
            try:
                end = max(end, int(p.name.split("-", 2)[1]))
            except (IndexError, ValueError):
                continue
    return end


def reserve_seeds(workspace: Workspace, dataset: str, n: int, *, start: int | None = None, floor: int = 0) -> range:
    """Reserve `n` demonstration seeds of `dataset` and return them (the single way seeds are handed out).

    Without `start`: the `n` seeds after the highest seed the dataset holds or has ever
    reserved, and not below `floor` (`collect` passes one past the highest `episode.seed`
    its catalog knows, which also covers imported recordings whose file names carry no
    seed). With `start` (an explicit, user-given seed): exactly `start .. start+n-1`,
    possibly re-using seeds on purpose. Either way the range is written to
    `datasets/<dataset>/.seeds/<start>-<stop>-<pid>-<hex>.json` under the workspace lock
    `seeds-<dataset>` before it is returned, so concurrent callers never get overlapping
    default ranges and a crashed run's range is not handed out again. Raises
    `SeedRangeError` past `schema.DEMO_SEED_LIMIT`.
    """
    schema.validate_dataset_name(dataset)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    with workspace.lock(f"seeds-{dataset}"):
        first = max(highest_seed_end(workspace, dataset), int(floor)) if start is None else int(start)
        check_seed_range(dataset, first, n)
        seeds = range(first, first + n)
        if n:
            body = {"dataset": dataset, "start": first, "stop": first + n, "explicit": start is not None, "pid": os.getpid(), "time": time.time()}
            atomic_write_text(_seeds_dir(workspace, dataset) / f"{first:010d}-{first + n:010d}-{os.getpid()}-{uuid.uuid4().hex[:6]}.json", json.dumps(body))
            faults.point("seeds.reserved")
    return seeds


def check_seed_range(dataset: str, first: int, n: int) -> None:
    if first < 0 or first + n > schema.DEMO_SEED_LIMIT:
        raise SeedRangeError(
            f"seeds {first}..{first + n - 1} of {dataset!r} leave the demonstration seed range [0, {schema.DEMO_SEED_LIMIT}); "
            "give a smaller --seed or collect into a new dataset"
        )


def seeded_segment_id(dataset: str, seed: int) -> str:
    """`<dataset>-s<seed:06d>-<6 hex>`: sortable by seed, unique across re-runs."""
    if seed < 0:
        raise ValueError(f"seeds must be >= 0, got {seed}")
    return schema.validate_segment_id(f"{dataset}-s{seed:06d}-{uuid.uuid4().hex[:6]}")
