"""Runs one roboloop stage in its own process for tests/reliability/test_faults.py and prints an `ACK` line for every
write the stage has acknowledged (returned to its caller), so a kill -9 at any moment tells the test
exactly which writes must survive.

    python tests/reliability/fault_driver.py WORKSPACE collect|refine|flag|curate|train|train-long|resume|eval-workers TAG

Kill points come from `ROBOLOOP_FAULT` (see `roboloop.faults`). `train` trains a tiny mlp on every
episode (selection `train-all`, saved by the test beforehand) and acknowledges the finished run with the sha256
of its checkpoint. `train-long` is the same with many epochs (a run to kill or terminate while it trains),
`resume` continues run TAG. `eval-workers` runs (or resumes) evaluation TAG of the scripted policy with two
worker processes, prints `WORKERS <pid> <pid>` at its first rollout and acknowledges every registered rollout.
SIGTERM is handled as the `roboloop` command handles it (like Ctrl-C); an interrupted command prints
`INTERRUPTED` and exits 130.
"""

from __future__ import annotations

import signal
import sys

from roboloop import curate, schema
from roboloop.catalog.client import Catalog
from roboloop.collect import run as collect
from roboloop.errors import on_sigterm
from roboloop.refine import layers as refine
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
        elif command in ("train", "train-long"):
            import torch

            from roboloop.train import MLPConfig, TrainConfig, train

            torch.set_num_threads(1)
            long = command == "train-long"
            cfg = TrainConfig(dataset=DATASET, selection="train-all", chunk=3, episode_steps=STEPS, epochs=3000 if long else 2,
                              batch_size=8, samples=1, checkpoint_every=100 if long else 1, holdout_every=1000 if long else 1,
                              model=MLPConfig(hidden=16, layers=1))
            res = train(cat, cfg)
            ack("run", res.run_id, res.checkpoint_sha256)
        elif command == "resume":
            import torch

            from roboloop.train import load_config, train

            torch.set_num_threads(1)
            res = train(cat, load_config(ws, tag), resume=tag)
            ack("run", res.run_id, res.checkpoint_sha256)
        elif command == "eval-workers":
            import multiprocessing

            from roboloop.evaluate.run import EvalConfig, eval_row, evaluate, parse_grid

            shown = []

            def on_result(r) -> None:
                if not shown:
                    shown.append(True)
                    print("WORKERS " + " ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
                ack("rollout", r.segment_id, r.seed)

            cfg = EvalConfig(dataset=DATASET, policy="scripted", grid=parse_grid("region=default,right"), episodes_per_cell=4,
                             eval_id=tag, workers=2, steps=40, cameras=())
            evaluate(cat, cfg, on_result=on_result, resume=eval_row(ws, tag) is not None)
        else:
            raise SystemExit(f"unknown command {command!r}")
    print("DONE", flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_sigterm)  # as `roboloop.cli.main` does
    try:
        main(*sys.argv[1:4])
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        sys.exit(130)
