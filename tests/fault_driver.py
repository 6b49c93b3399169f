"""Runs one roboloop stage in its own process for tests/test_faults.py and prints an `ACK` line for every
write the stage has acknowledged (returned to its caller), so a kill -9 at any moment tells the test
exactly which writes must survive.

    python tests/fault_driver.py WORKSPACE collect|refine|flag|curate TAG

Kill points come from `ROBOLOOP_FAULT` (see `roboloop.faults`). Add train/evaluate here when they land.
"""

from __future__ import annotations

import sys

from roboloop import collect, curate, refine, schema
from roboloop.catalog import Catalog
from roboloop.workspace import Workspace

DATASET = "f"
EPISODES = 2
STEPS = 5


def ack(kind: str, key: str, value: object) -> None:
    print(f"ACK {kind} {key} {value}", flush=True)


def ids(cat: Catalog) -> list[str]:
    table = cat.segment_table(DATASET)
    return sorted(table.column(schema.SEGMENT_ID).to_pylist()) if table.num_rows else []


def main(root: str, command: str, tag: str) -> None:
    ws = Workspace(root)
    with Catalog(ws, url="") as cat:
        if command == "collect":
            cfg = collect.CollectConfig(dataset=DATASET, episodes=EPISODES, steps=STEPS, spec=collect.RecordingSpec(cameras=()))
            collect.collect(cat, cfg, on_result=lambda r: ack("episode", r.segment_id, r.seed))
        elif command == "refine":
            for seg in ids(cat):
                refine.refine(cat, DATASET, segment_ids=[seg])
                ack("signals", seg, ws.segment_versions(DATASET, schema.SIGNALS_LAYER, seg)[-1].name)
        elif command == "flag":
            for seg in ids(cat):
                refine.flag(cat, DATASET, segment_ids=[seg], reason=tag)
                ack("quality", seg, tag)
        elif command == "curate":
            for j in range(3):
                sel = curate.save(cat, curate.select(cat, DATASET, where=f"episode.seed >= {j}", holdout=0.3, include_flagged=True), f"{tag}-{j}")
                ack("selection", sel.name, sel.digest)
            sel = curate.save(cat, curate.select(cat, DATASET, holdout=0.3, include_flagged=True), "latest", replace=True)
            ack("selection", sel.name, sel.digest)
        else:
            raise SystemExit(f"unknown command {command!r}")
    print("DONE", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
